//! Real `bossd` processes on loopback: how fast a cluster forms, how fast
//! it fails over, and what a node costs at rest.
//!
//! Every node listens on its own address `127.77.X.host` (a range the tests
//! never use, so this runs beside them), where `X` is new for each cluster.
//! Every process started is killed when its guard drops, even when the
//! bench panics. Times are measured by polling the nodes' `-s` over open
//! console connections, one pipelined round over all of them at a time;
//! the time of one round is printed as the resolution. Nothing here
//! asserts a timing: the numbers are printed for docs/BENCHMARKS.md.
//!
//! `cargo bench --bench cluster [-- --quick] [-- --only crash --runs 30 --strict]`
//!
//! `--only` takes `converge`, `crash`, `silent`, `idle`, `queries`. For
//! failovers, `--runs` sets the runs, `--nodes N` the cluster size (5),
//! `--timing HEARTBEAT,TIMEOUT` the flags (100,500), and `--strict` adds
//! `--strict` with a majority quorum (compare_etcd.sh uses these). For
//! convergence and idle CPU, `--nodes N` runs N nodes only (`--slow`:
//! convergence with heartbeat 1000 / timeout 5000). Lines starting `RESULT` are for scripts.
//! `BOSSD_BIN=PATH` runs another build of bossd instead (before and after
//! a change).

#[path = "util/mod.rs"]
mod util;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bossd::console::StatusLine as Status;
use util::{Table, ms, percentile, rate, sorted};

/// The binary under test: cargo builds it with the bench profile
/// (`target/release/bossd`) before it runs a bench, and says where.
const BOSSD: &str = env!("CARGO_BIN_EXE_bossd");

/// The binary to run: `BOSSD_BIN` if set (to compare a build before and
/// after a change), else [`BOSSD`].
fn bossd_bin() -> String {
    std::env::var("BOSSD_BIN").unwrap_or_else(|_| BOSSD.to_owned())
}

/// The port every node listens on; each node has its own IP.
const PORT: u16 = 7000;

/// How long anything may take before the bench gives up on it: far more
/// than any healthy run needs, so a loaded machine does not abort it.
const DEADLINE: Duration = Duration::from_secs(60);

/// Default heartbeat and timeout (docs/GUARANTEES.md, running bossd), for the silent failover bound.
const HEARTBEAT_MS: f64 = 100.0;
const TIMEOUT_MS: f64 = 500.0;

fn main() {
    let quick = util::quick();
    let only = util::flag_value("--only");
    let strict = std::env::args().any(|a| a == "--strict");
    let runs = util::flag_value("--runs").map(|r| r.parse::<usize>().expect("--runs N"));
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let _logs = LogDir::create();
    println!("# cluster bench: {}", util::machine());
    println!(
        "binary: {}{}",
        bossd_bin(),
        if quick { " (--quick)" } else { "" }
    );

    let mut rss_big = None;
    if wants("converge") {
        rss_big = converge(quick);
    }
    if wants("crash") {
        failover(
            Fault::Crash,
            runs.unwrap_or(if quick { 3 } else { 40 }),
            strict,
        );
    }
    if wants("silent") {
        failover(
            Fault::Freeze,
            runs.unwrap_or(if quick { 1 } else { 20 }),
            false,
        );
    }
    if wants("idle") {
        let one = util::flag_value("--nodes").map(|n| vec![n.parse().expect("--nodes N")]);
        let sizes = one.unwrap_or(if quick { vec![5] } else { vec![5, 10, 20, 50] });
        idle(&sizes, if quick { 2 } else { 10 }, rss_big);
    }
    if wants("queries") {
        queries(if quick { 0.5 } else { 3.0 });
    }
}

// ---------------------------------------------------------------------------
// The measurements
// ---------------------------------------------------------------------------

/// Heartbeat and timeout slow enough that 100 nodes' heartbeats fit on
/// two cores (see `idle`): 10 times the defaults.
const SLOW: &[&str] = &["--heartbeat", "1000", "--timeout", "5000"];

/// How long a cluster may take to converge before the run counts as failed.
const CONVERGE_LIMIT: Duration = Duration::from_secs(15);

/// Pause between polling rounds while waiting for convergence: polling
/// 100 consoles back to back would take a core from the nodes.
const CONVERGE_PAUSE: Duration = Duration::from_millis(5);

/// N nodes start alone; then all but the first are told `-c` to the first
/// at once. The time from the first `-c` until every node reports the same
/// master and epoch with `peers=N-1`. Returns the size of the largest
/// cluster that converged and the RSS (KiB) of each of its nodes.
fn converge(quick: bool) -> Option<(usize, Vec<Memory>)> {
    let runs = if quick { 1 } else { 3 };
    // `--nodes N [--slow]` runs one case, for a profiler.
    let one = util::flag_value("--nodes").map(|n| n.parse::<usize>().expect("--nodes N"));
    let slow = std::env::args().any(|a| a == "--slow");
    let cases: Vec<(usize, &[&str])> = if let Some(n) = one {
        vec![(n, if slow { SLOW } else { &[] })]
    } else if quick {
        vec![(3, &[]), (10, &[])]
    } else {
        vec![
            (3, &[]),
            (10, &[]),
            (50, &[]),
            (100, &[]),
            (50, SLOW),
            (100, SLOW),
        ]
    };
    let mut t = Table::new(&[
        "nodes",
        "heartbeat/timeout ms",
        "runs",
        "median ms",
        "min ms",
        "max ms",
        "poll round ms",
    ]);
    let mut rss = None;
    for (n, args) in cases {
        let mut times = Vec::new();
        let mut round = Vec::new();
        let mut failed = None;
        for _ in 0..runs {
            let mut c = Cluster::start(n, args);
            match c.join_all(CONVERGE_PAUSE, CONVERGE_LIMIT) {
                Ok(m) => {
                    times.push(m.elapsed_ms);
                    round.push(m.round_ms);
                    if rss.as_ref().is_none_or(|(k, _)| *k <= n) {
                        rss = Some((n, c.nodes.iter().map(|p| p.rss_kib()).collect()));
                    }
                }
                Err(why) => {
                    failed = Some(why);
                    break;
                }
            }
        }
        let timing = if args.is_empty() {
            "100/500".to_string()
        } else {
            format!("{}/{}", args[1], args[3])
        };
        if let Some(why) = failed {
            println!("{n} nodes ({timing}) did not converge:\n{why}");
            t.row(vec![
                n.to_string(),
                timing,
                format!("{} of {runs}", times.len()),
                format!("not within {} s", CONVERGE_LIMIT.as_secs()),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        let s = sorted(times);
        t.row(vec![
            n.to_string(),
            timing.clone(),
            runs.to_string(),
            ms(percentile(&s, 50.0)),
            ms(s[0]),
            ms(s[s.len() - 1]),
            ms(median(round)),
        ]);
        println!(
            "RESULT converge_{n}_{}_median_ms={:.2}",
            timing.replace('/', "_"),
            percentile(&s, 50.0)
        );
    }
    t.print("Convergence: N-1 nodes join one node at once (-c), until all agree with a full mesh");
    rss
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL: the kernel closes the master's connections.
    Crash,
    /// SIGSTOP: the master goes silent with its connections open.
    Freeze,
}

/// A fresh 5-node cluster per run; the master gets the fault, and the time
/// until the 4 survivors agree on a new master (higher epoch, `peers=3`).
fn failover(fault: Fault, runs: usize, strict: bool) {
    // `--nodes N` and `--timing HEARTBEAT,TIMEOUT` change the cluster, for
    // compare_etcd.sh; a strict cluster gets a majority quorum.
    let n: usize = util::flag_value("--nodes").map_or(5, |v| v.parse().expect("--nodes N"));
    let mut args: Vec<String> = Vec::new();
    if strict {
        args.extend([
            "--strict".into(),
            "--quorum".into(),
            (n / 2 + 1).to_string(),
        ]);
    }
    let timing = util::flag_value("--timing");
    let (heartbeat_ms, timeout_ms) = match &timing {
        Some(t) => {
            let (h, o) = t.split_once(',').expect("--timing HEARTBEAT,TIMEOUT");
            args.extend(["--heartbeat".into(), h.into(), "--timeout".into(), o.into()]);
            (h.parse::<f64>().expect("ms"), o.parse::<f64>().expect("ms"))
        }
        None => (HEARTBEAT_MS, TIMEOUT_MS),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let args = args.as_slice();
    let mut times = Vec::new();
    let mut round = Vec::new();
    for _ in 0..runs {
        let mut c = Cluster::start(n, args);
        c.join_all(Duration::ZERO, DEADLINE)
            .expect("the cluster forms");
        // Let heartbeats run for a while: a steady cluster, not a fresh one.
        thread::sleep(Duration::from_millis(300));
        let before = c.statuses(&(0..n).collect::<Vec<_>>());
        let master = before
            .iter()
            .position(|s| s.role == "master")
            .expect("a master");
        let survivors: Vec<usize> = (0..n).filter(|&i| i != master).collect();
        let old_epoch = before[master].epoch;
        let old_id = before[master].id.clone();
        let t0 = Instant::now();
        c.nodes[master].signal(match fault {
            Fault::Crash => libc::SIGKILL,
            Fault::Freeze => libc::SIGSTOP,
        });
        let m = c
            .wait(&survivors, t0, Duration::ZERO, DEADLINE, |s| {
                agreed(s, n - 1) && s[0].epoch > old_epoch && s[0].master.as_ref() != Some(&old_id)
            })
            .unwrap_or_else(|why| panic!("no failover: {why}"));
        times.push(m.elapsed_ms);
        round.push(m.round_ms);
    }
    let s = sorted(times);
    let key = match (fault, strict) {
        (Fault::Crash, false) => "crash",
        (Fault::Crash, true) => "crash_strict",
        (Fault::Freeze, _) => "silent",
    };
    let name = format!(
        "{} failover: {} of the master, {n} nodes, heartbeat {heartbeat_ms} ms, timeout {timeout_ms} ms{}",
        if fault == Fault::Crash {
            "Crash"
        } else {
            "Silent"
        },
        if fault == Fault::Crash {
            "SIGKILL"
        } else {
            "SIGSTOP"
        },
        if strict { ", --strict" } else { "" }
    );
    let mut t = Table::new(&[
        "runs",
        "over 10 ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "min ms",
        "max ms",
        "poll round ms",
    ]);
    t.row(vec![
        runs.to_string(),
        s.iter().filter(|&&v| v > 10.0).count().to_string(),
        ms(percentile(&s, 50.0)),
        ms(percentile(&s, 90.0)),
        ms(percentile(&s, 99.0)),
        ms(s[0]),
        ms(s[s.len() - 1]),
        ms(median(round)),
    ]);
    t.print(&name);
    if fault == Fault::Freeze {
        println!(
            "(guarantee 5 in docs/GUARANTEES.md allows timeout + 2 x heartbeat = {} ms; the target is timeout + 1 heartbeat = {} ms)",
            timeout_ms + 2.0 * heartbeat_ms,
            timeout_ms + heartbeat_ms
        );
    }
    println!(
        "RESULT {key}_p50_ms={:.3} {key}_p99_ms={:.3} {key}_runs={runs}",
        percentile(&s, 50.0),
        percentile(&s, 99.0)
    );
}

/// CPU used by each node of idle clusters over `secs` seconds, and the
/// nodes' resident memory.
fn idle(sizes: &[usize], secs: u64, rss_big: Option<(usize, Vec<Memory>)>) {
    let mut t = Table::new(&[
        "nodes",
        "window s",
        "median % of a core",
        "max %",
        "all nodes %",
        "still agreed",
    ]);
    let mut rss = Table::new(&[
        "cluster",
        "VmRSS KiB",
        "max VmRSS",
        "RssAnon KiB",
        "max RssAnon",
        "Pss KiB",
    ]);
    let mut rss_row = |name: String, v: Vec<Memory>| {
        let med = |f: fn(&Memory) -> u64| {
            let s = sorted(v.iter().map(|m| f(m) as f64).collect());
            (percentile(&s, 50.0), s[s.len() - 1])
        };
        let (rss_med, rss_max) = med(|m| m.rss);
        let (anon_med, anon_max) = med(|m| m.anon);
        let (pss_med, _) = med(|m| m.pss);
        rss.row(vec![
            name,
            format!("{rss_med:.0}"),
            format!("{rss_max:.0}"),
            format!("{anon_med:.0}"),
            format!("{anon_max:.0}"),
            format!("{pss_med:.0}"),
        ]);
    };
    let alone = Cluster::start(1, &[]);
    rss_row("1 node alone".into(), vec![alone.nodes[0].rss_kib()]);
    drop(alone);
    for &n in sizes {
        let mut c = Cluster::start(n, &[]);
        c.join_all(CONVERGE_PAUSE, DEADLINE)
            .expect("the cluster forms");
        // The console connections stay open but silent until the end.
        thread::sleep(Duration::from_secs(1));
        let before: Vec<u64> = c.nodes.iter().map(|p| p.cpu_ns()).collect();
        let t0 = Instant::now();
        thread::sleep(Duration::from_secs(secs));
        let window = t0.elapsed().as_nanos() as f64;
        let pct: Vec<f64> = c
            .nodes
            .iter()
            .zip(&before)
            .map(|(p, b)| (p.cpu_ns() - b) as f64 / window * 100.0)
            .collect();
        let all: Vec<usize> = (0..n).collect();
        let still = agreed(&c.statuses(&all), n);
        let s = sorted(pct.clone());
        t.row(vec![
            n.to_string(),
            secs.to_string(),
            format!("{:.3}", percentile(&s, 50.0)),
            format!("{:.3}", s[s.len() - 1]),
            format!("{:.1}", pct.iter().sum::<f64>()),
            if still { "yes" } else { "no" }.into(),
        ]);
        println!("RESULT idle_cpu_{n}_median_pct={:.4}", percentile(&s, 50.0));
        rss_row(
            format!("{n} nodes, idle"),
            c.nodes.iter().map(|p| p.rss_kib()).collect(),
        );
    }
    t.print("Idle CPU per node (heartbeat 100 ms; /proc/PID/schedstat, ns)");
    if let Some((n, v)) = rss_big {
        rss_row(format!("{n} nodes, just converged"), v);
    }
    rss.print("Memory per node (medians unless max)");
}

/// `-s` queries answered per second on one TCP console connection, with
/// many queries in flight, and one at a time for comparison.
fn queries(secs: f64) {
    let mut c = Cluster::start(5, &[]);
    c.join_all(Duration::ZERO, DEADLINE)
        .expect("the cluster forms");
    let addr = c.nodes[0].addr;
    let mut t = Table::new(&["in flight", "queries/s", "MB/s answered", "seconds"]);
    for window in [1u64, 64, 1024] {
        let (n, bytes, d) = pipeline(addr, window, Duration::from_secs_f64(secs));
        let s = d.as_secs_f64();
        t.row(vec![
            window.to_string(),
            rate(n as f64 / s),
            format!("{:.1}", bytes as f64 / s / 1e6),
            format!("{s:.1}"),
        ]);
        println!("RESULT queries_window_{window}_per_s={:.0}", n as f64 / s);
    }
    t.print("Pipelined -s queries on one connection (to the master of 5 nodes)");
}

/// Sends `-s` lines with up to `window` unanswered, for `span`; returns
/// the queries answered, the answer bytes and the time taken.
fn pipeline(addr: SocketAddr, window: u64, span: Duration) -> (u64, u64, Duration) {
    /// Queries written per write call, at most.
    const BATCH: u64 = 256;
    let stream = TcpStream::connect(addr).expect("connect to the console");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = stream.try_clone().expect("clone");
    let mut writer = stream;
    let answered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let reading = {
        let (answered, done, bytes) = (answered.clone(), done.clone(), bytes.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut lines = 0u64;
            while !done.load(Ordering::Relaxed) {
                let n = reader.read(&mut buf).expect("read answers");
                assert!(n > 0, "the node closed the console connection");
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                // Each answer is the status line and `OK`.
                answered.store(lines / 2, Ordering::Release);
            }
        })
    };
    let t0 = Instant::now();
    let mut sent = 0u64;
    let batch = "-s\n".repeat(BATCH as usize);
    while t0.elapsed() < span {
        let room = window - (sent - answered.load(Ordering::Acquire));
        if room == 0 {
            std::hint::spin_loop();
            continue;
        }
        let k = room.min(BATCH);
        writer
            .write_all(&batch.as_bytes()[..3 * k as usize])
            .expect("write queries");
        sent += k;
    }
    // Wait for what is in flight, then stop the reader.
    while answered.load(Ordering::Acquire) < sent {
        thread::yield_now();
    }
    let d = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    writer
        .write_all(b"-s\n")
        .expect("a last query wakes the reader");
    reading.join().expect("reader");
    (sent, bytes.load(Ordering::Relaxed), d)
}

// ---------------------------------------------------------------------------
// Processes and clusters
// ---------------------------------------------------------------------------

/// Per-bench log directory, removed at the end unless the bench panicked.
struct LogDir;

impl LogDir {
    fn path() -> PathBuf {
        std::env::temp_dir().join(format!("bossd-bench-{}", std::process::id()))
    }

    fn create() -> LogDir {
        std::fs::create_dir_all(LogDir::path()).expect("create the log directory");
        LogDir
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("node logs kept in {}", LogDir::path().display());
        } else {
            let _ = std::fs::remove_dir_all(LogDir::path());
        }
    }
}

/// A process's memory, in KiB.
#[derive(Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
    pss: u64,
}

/// One `bossd` process, killed and reaped when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Proc {
    fn spawn(addr: SocketAddr, args: &[&str]) -> Proc {
        let log = LogDir::path().join(format!("{}.log", addr.ip()));
        let bin = bossd_bin();
        let child = Command::new(&bin)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .args(["--no-console", "--log", "warn"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create a log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Proc { child, addr, log }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, not reaped yet (we hold it), so
        // its pid cannot have been reused.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// CPU time used so far, in ns: the first field of /proc/PID/schedstat
    /// (clock ticks in /proc/PID/stat are 10 ms, too coarse for an idle node).
    fn cpu_ns(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/schedstat", self.pid()))
            .ok()
            .and_then(|s| s.split(' ').next().and_then(|v| v.parse().ok()))
            .expect("read /proc/PID/schedstat")
    }

    /// Memory in KiB: resident (VmRSS), of it private anonymous pages
    /// (RssAnon: heap and stacks), and the proportional share (Pss), where
    /// pages shared with other processes (libc, the binary's text) count
    /// divided by the number of processes mapping them.
    fn rss_kib(&self) -> Memory {
        let read = |file: &str, key: &str| -> u64 {
            std::fs::read_to_string(format!("/proc/{}/{file}", self.pid()))
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(key))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                })
                .unwrap_or_else(|| panic!("no {key} in /proc/PID/{file}"))
        };
        Memory {
            rss: read("status", "VmRSS:"),
            anon: read("status", "RssAnon:"),
            pss: read("smaps_rollup", "Pss:"),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clusters handed out so far by this process; part of the third octet.
static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A fresh network `127.77.X.0/24`, `X` from the process id and a counter,
/// so two bench processes rarely share one.
fn fresh_net() -> u8 {
    let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
    (1 + (std::process::id() * 7 + n) % 254) as u8
}

/// A console connection kept open for polling.
struct Console {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Console {
    /// Connects, retrying until the node listens.
    fn open(p: &mut Proc) -> Console {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(s) = TcpStream::connect_timeout(&p.addr, Duration::from_secs(1)) {
                s.set_nodelay(true).expect("nodelay");
                s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
                let writer = s.try_clone().expect("clone");
                return Console {
                    reader: BufReader::new(s),
                    writer,
                };
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("{} exited ({st}):\n{}", p.addr, p.log_tail());
            }
            assert!(Instant::now() < deadline, "{} never listened", p.addr);
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(line.as_bytes())
            .expect("write a command");
    }

    /// The answer lines before `OK`; panics on `ERR`.
    fn answer(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read an answer");
            assert!(n > 0, "console closed");
            let line = line.trim_end().to_owned();
            if line == "OK" {
                return lines;
            }
            assert!(!line.starts_with("ERR"), "{line}");
            lines.push(line);
        }
    }
}

/// A measured wait: the time until the condition was seen, and the time
/// one polling round took (the resolution).
struct Measured {
    elapsed_ms: f64,
    round_ms: f64,
}

struct Cluster {
    nodes: Vec<Proc>,
    consoles: Vec<Console>,
}

impl Cluster {
    /// `n` nodes on a fresh network, each alone and answering its console.
    fn start(n: usize, args: &[&str]) -> Cluster {
        let x = fresh_net();
        let mut nodes: Vec<Proc> = (0..n)
            .map(|i| {
                let addr = SocketAddr::from((Ipv4Addr::new(127, 77, x, 1 + i as u8), PORT));
                // Something else listening there would make the node fail.
                drop(TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} is taken: {e}")));
                Proc::spawn(addr, args)
            })
            .collect();
        let consoles = nodes.iter_mut().map(Console::open).collect();
        Cluster { nodes, consoles }
    }

    /// Tells every node but the first to join the first, all at once, and
    /// waits until all agree with a full mesh.
    fn join_all(&mut self, pause: Duration, limit: Duration) -> Result<Measured, String> {
        let first = self.nodes[0].addr;
        let t0 = Instant::now();
        let cmd = format!("-c {} {}\n", first.ip(), first.port());
        for c in &mut self.consoles[1..] {
            c.send(&cmd);
        }
        for c in &mut self.consoles[1..] {
            c.answer();
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let n = all.len();
        self.wait(&all, t0, pause, limit, |s| agreed(s, n))
    }

    /// Every listed node's status, asked of all at once.
    fn statuses(&mut self, which: &[usize]) -> Vec<Status> {
        for &i in which {
            self.consoles[i].send("-s\n");
        }
        which
            .iter()
            .map(|&i| {
                let lines = self.consoles[i].answer();
                Status::parse(lines.first().expect("a status line"))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// Polls the listed nodes, pausing `pause` between rounds, until `cond`
    /// holds for their statuses; `elapsed_ms` counts from `t0` to the end
    /// of the round that saw it. After `limit`, says what the nodes report.
    fn wait(
        &mut self,
        which: &[usize],
        t0: Instant,
        pause: Duration,
        limit: Duration,
        cond: impl Fn(&[Status]) -> bool,
    ) -> Result<Measured, String> {
        let mut rounds = 0u32;
        let mut polling = Duration::ZERO;
        loop {
            let round = Instant::now();
            let s = self.statuses(which);
            rounds += 1;
            polling += round.elapsed();
            if cond(&s) {
                return Ok(Measured {
                    elapsed_ms: t0.elapsed().as_secs_f64() * 1e3,
                    round_ms: polling.as_secs_f64() * 1e3 / f64::from(rounds),
                });
            }
            if t0.elapsed() > limit {
                return Err(self.describe(which, &s));
            }
            thread::sleep(pause);
        }
    }

    /// Every listed node's status, and the log tails of the first three.
    fn describe(&self, which: &[usize], s: &[Status]) -> String {
        let mut out = String::new();
        for (k, &i) in which.iter().enumerate() {
            out.push_str(&format!("  {:?}\n", s[k]));
            if k < 3 {
                out.push_str(&self.nodes[i].log_tail());
                out.push('\n');
            }
        }
        out
    }
}

/// One group of `n` members: the same master (one of them) and epoch
/// everywhere, the right roles, and a full mesh (guarantees 1 and 3 in docs/GUARANTEES.md).
fn agreed(s: &[Status], n: usize) -> bool {
    let Some(m) = s[0].master.as_ref() else {
        return false;
    };
    s.iter().any(|x| &x.id == m)
        && s.iter().all(|x| {
            x.master.as_ref() == Some(m)
                && x.epoch == s[0].epoch
                && x.peers == n - 1
                && x.role == if &x.id == m { "master" } else { "follower" }
        })
}

fn median(v: Vec<f64>) -> f64 {
    percentile(&sorted(v), 50.0)
}
