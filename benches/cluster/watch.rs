//! Watchers and `--state-dir` in a crash failover (issue 15): how soon a
//! watcher reads the new master once the survivors agree, what 64
//! watchers on every node add to the failover, and what `--state-dir`
//! adds to it (the new master persists its epoch before it claims, and
//! each follower before it reports the new one).
//!
//! Six cases, each a fresh 5-node cluster per run whose master gets
//! SIGKILL, run in turn so that the machine's load falls on all alike:
//! no watchers; one watcher per node that reads; 64 per node (the most a
//! node takes: one that reads, 63 that hold their connection and read
//! only after the run); 64 on one follower and one on each other node;
//! 64 on the master and one on each other node (what the kernel's close
//! of the killed master's 64 connections costs the survivors, which no
//! survivor can save); `--state-dir` on each node, with one reading
//! watcher per node. The last three are compared with the second case.
//! A reading watcher
//! stamps each line as it arrives, on a thread of its own; the new
//! master's watcher reads its claim only once the claim's epoch is on
//! disk, so it times the claim.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    Cluster, Console, DEADLINE, Extras, PORT, Proc, agreed, fresh_net, load1, master_of, median,
    span,
};
use crate::util::{ms, percentile, sorted};
use crate::{Build, Builds};

/// Nodes per cluster, as in the crash failover bench.
const NODES: usize = 5;

/// Watchers per node in the busy case: the most a node takes.
const MAX_WATCHERS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Plain,
    OneWatcher,
    Watchers64,
    Watchers64OnOne,
    Watchers64OnMaster,
    StateDir,
}

impl Case {
    const ALL: [Case; 6] = [
        Case::Plain,
        Case::OneWatcher,
        Case::Watchers64,
        Case::Watchers64OnOne,
        Case::Watchers64OnMaster,
        Case::StateDir,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Plain => "no watchers",
            Case::OneWatcher => "1 watcher per node",
            Case::Watchers64 => "64 watchers per node",
            Case::Watchers64OnOne => "64 watchers on one follower, 1 on the others",
            Case::Watchers64OnMaster => "64 watchers on the master, 1 on the others",
            Case::StateDir => "--state-dir, 1 watcher per node",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Case::Plain => "plain",
            Case::OneWatcher => "watch1",
            Case::Watchers64 => "watch64",
            Case::Watchers64OnOne => "watch64_on_one",
            Case::Watchers64OnMaster => "watch64_on_master",
            Case::StateDir => "state_dir",
        }
    }

    /// The case this one is compared with: the same but for what it adds.
    fn base(self) -> usize {
        match self {
            Case::StateDir | Case::Watchers64OnOne | Case::Watchers64OnMaster => 1,
            _ => 0,
        }
    }

    /// Watchers on node `i`. Node 0 starts first, so under `oldest` it is
    /// the master that gets the fault, node 1 the next master, and the
    /// last one stays a follower.
    fn watchers_on(self, i: usize) -> usize {
        match self {
            Case::Plain => 0,
            Case::OneWatcher | Case::StateDir => 1,
            Case::Watchers64 => MAX_WATCHERS,
            Case::Watchers64OnOne if i == NODES - 1 => MAX_WATCHERS,
            Case::Watchers64OnOne => 1,
            Case::Watchers64OnMaster if i == 0 => MAX_WATCHERS,
            Case::Watchers64OnMaster => 1,
        }
    }

    fn watched(self) -> bool {
        self != Case::Plain
    }
}

/// One run's times, in ms from the SIGKILL.
struct Run {
    /// The poll round that saw the survivors agree ended.
    agreed: f64,
    /// The new master's reading watcher read its claim (the line is
    /// written after the claim's epoch is on disk).
    claimed: Option<f64>,
    /// The last survivor's reading watcher read its new master's line.
    watched: Option<f64>,
}

/// A watcher that reads: each line after the status line, with the time
/// it arrived.
pub fn reading_watcher(addr: SocketAddr) -> Receiver<(Instant, String)> {
    let mut s = TcpStream::connect(addr).expect("connect a watcher");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(b"-w\n").expect("send -w");
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).expect("the status line");
    assert!(status.starts_with("id="), "{status}");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            if tx.send((Instant::now(), line.clone())).is_err() {
                return;
            }
            line.clear();
        }
    });
    rx
}

/// A watcher that holds its connection and does not read during the run.
struct IdleWatcher {
    s: TcpStream,
    got: Vec<u8>,
}

impl IdleWatcher {
    /// Watching, once its status line came.
    fn open(addr: SocketAddr) -> IdleWatcher {
        let mut s = TcpStream::connect(addr).expect("connect a watcher");
        s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
        s.write_all(b"-w\n").expect("send -w");
        let mut w = IdleWatcher { s, got: Vec::new() };
        w.read_until(|lines| lines.next().is_some_and(|l| l.starts_with("id=")));
        w
    }

    /// Reads until `done` holds for the complete lines read so far.
    fn read_until(&mut self, done: impl Fn(&mut dyn Iterator<Item = &str>) -> bool) {
        let mut buf = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&self.got);
            let complete = text.rsplit_once('\n').map_or("", |(c, _)| c);
            if !complete.is_empty() && done(&mut complete.lines()) {
                return;
            }
            let n = self.s.read(&mut buf).expect("an idle watcher reads");
            assert!(n > 0, "an idle watcher was closed");
            self.got.extend_from_slice(&buf[..n]);
        }
    }
}

/// The epoch of a `-j` line (`... epoch=N ...`).
pub fn epoch_of(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("epoch="))
        .and_then(|e| e.parse().ok())
}

/// `n` nodes on a fresh network, each alone, the node at `addr` with
/// `args(addr)`. A network where something listens already (another
/// bench running beside this one) is passed over.
pub fn start(bin: &str, n: usize, args: impl Fn(SocketAddr) -> Vec<String>) -> Cluster {
    let addr = |x: u8, i: usize| SocketAddr::from((Ipv4Addr::new(127, 77, x, 1 + i as u8), PORT));
    let x = (0..254)
        .map(|_| fresh_net())
        .find(|&x| (0..n).all(|i| TcpListener::bind(addr(x, i)).is_ok()))
        .expect("a free network 127.77.X.0/24");
    let mut nodes: Vec<Proc> = (0..n)
        .map(|i| {
            let addr = addr(x, i);
            let a = args(addr);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            Proc::spawn(bin, addr, &a, Extras::default())
        })
        .collect();
    let consoles = nodes.iter_mut().map(Console::open).collect();
    Cluster { nodes, consoles }
}

/// One crash failover of a fresh cluster under `case`.
fn run(bin: &str, case: Case) -> Run {
    let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("watch-bench-state-{}", std::process::id()));
    let mut c = start(bin, NODES, |addr| match case {
        Case::StateDir => vec![
            "--state-dir".into(),
            state.join(addr.ip().to_string()).display().to_string(),
        ],
        _ => Vec::new(),
    });
    c.join_all(Duration::ZERO, DEADLINE)
        .expect("the cluster forms");
    let addrs: Vec<SocketAddr> = c.nodes.iter().map(|p| p.addr).collect();
    let readers: Vec<Option<Receiver<(Instant, String)>>> = addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| (case.watchers_on(i) > 0).then(|| reading_watcher(a)))
        .collect();
    let mut idle: Vec<IdleWatcher> = Vec::new();
    for (i, &a) in addrs.iter().enumerate() {
        for _ in 1..case.watchers_on(i) {
            idle.push(IdleWatcher::open(a));
        }
    }
    // A steady cluster, as in the crash failover bench.
    thread::sleep(Duration::from_millis(300));
    let all: Vec<usize> = (0..NODES).collect();
    let before = c.statuses(&all);
    let master = master_of(&before);
    let survivors: Vec<usize> = (0..NODES).filter(|&i| i != master).collect();
    let (old_epoch, old_id) = (before[master].epoch, before[master].id.clone());
    let t0 = Instant::now();
    c.nodes[master].signal(libc::SIGKILL);
    let m = c
        .wait(&survivors, t0, Duration::ZERO, DEADLINE, |s| {
            agreed(s, NODES - 1) && s[0].epoch > old_epoch && s[0].master.as_ref() != Some(&old_id)
        })
        .unwrap_or_else(|why| panic!("no failover: {why}"));
    // Each survivor's first line of the new epoch, and when it came.
    let news: Vec<(f64, String)> = if case.watched() {
        survivors
            .iter()
            .map(|&i| {
                let rx = readers[i].as_ref().expect("a reading watcher");
                loop {
                    let (at, line) = rx
                        .recv_timeout(DEADLINE)
                        .unwrap_or_else(|e| panic!("node {i}'s watcher read no change: {e}"));
                    if epoch_of(&line).is_some_and(|e| e > old_epoch) {
                        return (at.duration_since(t0).as_secs_f64() * 1e3, line);
                    }
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let claimed = news
        .iter()
        .find(|(_, line)| line.contains("->master "))
        .map(|(at, _)| *at);
    let watched = news.iter().map(|(at, _)| *at).reduce(f64::max);
    // The idle watchers got the change too, once they read.
    // The idle watchers of the survivors got the change too, once they read.
    for w in idle
        .iter_mut()
        .filter(|w| w.s.peer_addr().ok() != Some(addrs[master]))
    {
        w.read_until(|lines| {
            lines
                .skip(1)
                .any(|l| epoch_of(l).is_some_and(|e| e > old_epoch))
        });
    }
    drop(c);
    if case == Case::StateDir {
        let _ = std::fs::remove_dir_all(&state);
    }
    Run {
        claimed,
        agreed: m.elapsed_ms,
        watched,
    }
}

/// The cases, `runs` times each, and one table.
pub fn failovers(builds: &Builds, runs: usize) {
    let mut runs_of: Vec<Vec<Vec<Run>>> = builds
        .iter()
        .map(|_| Case::ALL.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut load = Vec::new();
    for _ in 0..runs {
        for (j, &case) in Case::ALL.iter().enumerate() {
            for (k, b) in builds.iter().enumerate() {
                load.push(load1());
                runs_of[k][j].push(run(&b.bin, case));
            }
        }
    }
    let mut t = builds.table(&[
        "case",
        "runs",
        "failover p50 ms",
        "p90 ms",
        "p99 ms",
        "claim read p50 ms",
        "all read p50 ms",
        "watch - agreed p50 ms",
        "p90 ms",
        "max ms",
    ]);
    for (k, b) in builds.iter().enumerate() {
        let p50 = |j: usize| median(runs_of[k][j].iter().map(|r| r.agreed).collect());
        for (j, &case) in Case::ALL.iter().enumerate() {
            builds.row(&mut t, b, row(case, &runs_of[k][j]));
            println!(
                "RESULT {}={:.3} {}={:.3}",
                builds.key(b, &format!("watch_{}_p50_ms", case.key())),
                p50(j),
                builds.key(b, &format!("watch_{}_added_ms", case.key())),
                p50(j) - p50(case.base()),
            );
        }
        summary(b, &runs_of[k]);
    }
    t.print(&format!(
        "Crash failover with watchers and --state-dir: SIGKILL of the master, {NODES} nodes, 100/500 (load {})",
        span(&load)
    ));
    println!(
        "(failover: until a poll round saw the survivors agree; claim read: until the new master's watcher read its claim; all read: until the last survivor's watcher read its change; watch - agreed < 0 when the watchers read it before the poll saw it)"
    );
}

/// A case's table row.
fn row(case: Case, runs: &[Run]) -> Vec<String> {
    let agreed = sorted(runs.iter().map(|r| r.agreed).collect());
    let claimed = sorted(runs.iter().filter_map(|r| r.claimed).collect());
    let watched: Vec<f64> = runs.iter().filter_map(|r| r.watched).collect();
    let lag = sorted(
        runs.iter()
            .filter_map(|r| Some(r.watched? - r.agreed))
            .collect(),
    );
    let watched = sorted(watched);
    let or_dash = |s: &[f64], p: f64| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            ms(percentile(s, p))
        }
    };
    vec![
        case.name().to_owned(),
        runs.len().to_string(),
        ms(percentile(&agreed, 50.0)),
        ms(percentile(&agreed, 90.0)),
        ms(percentile(&agreed, 99.0)),
        or_dash(&claimed, 50.0),
        or_dash(&watched, 50.0),
        or_dash(&lag, 50.0),
        or_dash(&lag, 90.0),
        or_dash(&lag, 100.0),
    ]
}

/// What 64 watchers and `--state-dir` add to the failover's p50, and
/// `--state-dir` to the claim's.
fn summary(b: &Build, runs: &[Vec<Run>]) {
    let p50 = |j: usize| median(runs[j].iter().map(|r| r.agreed).collect());
    let claim = |j: usize| median(runs[j].iter().filter_map(|r| r.claimed).collect());
    let label = if b.label.is_empty() {
        String::new()
    } else {
        format!("{}: ", b.label)
    };
    println!(
        "{label}64 watchers per node add {} ms to the failover p50 (target <= 0.1), 64 on one follower {} ms, 64 on the master {} ms; --state-dir adds {} ms to the claim p50 (target <= 2) and {} ms to the failover p50 (the last three against 1 watcher per node)",
        ms(p50(2) - p50(0)),
        ms(p50(3) - p50(1)),
        ms(p50(4) - p50(1)),
        ms(claim(5) - claim(1)),
        ms(p50(5) - p50(1)),
    );
}
