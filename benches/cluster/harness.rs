//! The cluster bench's processes and clusters: `bossd` processes killed
//! when dropped, their /proc counters, console connections (kept open, or
//! fresh for each command as an operator's), and the cluster's agreement.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bossd::console::StatusLine as Status;

use crate::util::{percentile, sorted};

/// The port every node listens on; each node has its own IP.
pub const PORT: u16 = 7000;

/// How long anything may take before the bench gives up on it: far more
/// than any healthy run needs, so a loaded machine does not abort it.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How long an operator's connection waits to connect, and then for its
/// answer, before the node counts as not answering this round.
pub const OPERATOR_WAIT: Duration = Duration::from_secs(5);

/// Per-bench log directory, removed at the end unless the bench panicked.
pub struct LogDir;

impl LogDir {
    pub fn path() -> PathBuf {
        std::env::temp_dir().join(format!("bossd-bench-{}", std::process::id()))
    }

    pub fn create() -> LogDir {
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
pub struct Memory {
    pub rss: u64,
    pub anon: u64,
    pub pss: u64,
}

/// A process's scheduler counters so far.
#[derive(Clone, Copy)]
pub struct Sched {
    /// CPU time in ns: /proc/PID/schedstat, first field (clock ticks in
    /// /proc/PID/stat are 10 ms, too coarse for an idle node).
    pub cpu_ns: u64,
    /// Timeslices run: /proc/PID/schedstat, third field. Each wakeup
    /// starts one (and so does each preemption).
    pub slices: u64,
    /// `voluntary_ctxt_switches` of /proc/PID/status: the process blocked.
    pub voluntary: u64,
    /// `nonvoluntary_ctxt_switches`: the process was preempted.
    pub involuntary: u64,
    /// utime + stime of /proc/PID/stat, in clock ticks, as `top` counts.
    pub ticks: u64,
    /// cutime + cstime of /proc/PID/stat, in clock ticks: the CPU of the
    /// children it reaped (hooks, health checks).
    pub child_ticks: u64,
}

impl Sched {
    pub fn since(&self, before: &Sched) -> Sched {
        Sched {
            cpu_ns: self.cpu_ns - before.cpu_ns,
            slices: self.slices - before.slices,
            voluntary: self.voluntary - before.voluntary,
            involuntary: self.involuntary - before.involuntary,
            ticks: self.ticks - before.ticks,
            child_ticks: self.child_ticks - before.child_ticks,
        }
    }
}

/// Process `pid`'s scheduler counters so far.
pub fn sched_of(pid: i32) -> Sched {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{}/{file}", pid))
            .unwrap_or_else(|e| panic!("read /proc/PID/{file}: {e}"))
    };
    let schedstat: Vec<u64> = read("schedstat")
        .split_whitespace()
        .map(|v| v.parse().expect("a number in /proc/PID/schedstat"))
        .collect();
    let status = read("status");
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/PID/status"))
    };
    // The fields after the command name, which is in parentheses and
    // may hold spaces: state is field 3, utime 14, stime 15, cutime
    // 16, cstime 17.
    let stat = read("stat");
    let rest: Vec<u64> = stat[stat.rfind(')').expect("(comm) in /proc/PID/stat") + 1..]
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    Sched {
        cpu_ns: schedstat[0],
        slices: schedstat[2],
        voluntary: field("voluntary_ctxt_switches:"),
        involuntary: field("nonvoluntary_ctxt_switches:"),
        ticks: rest[10] + rest[11],
        child_ticks: rest[12] + rest[13],
    }
}

/// What the notify hook of [`Extras::notify`] appends, one line a run.
const HOOK_LINE: &str = r#"echo "$BOSSD_PREV_ROLE $BOSSD_ROLE $BOSSD_EPOCH $BOSSD_CAUSE""#;

/// What a node gets beyond its flags.
#[derive(Clone, Copy, Default)]
pub struct Extras {
    /// `--notify` appending [`HOOK_LINE`] to a file of its own.
    pub notify: bool,
    /// Pinned to this CPU.
    pub cpu: Option<usize>,
}

/// One `bossd` process, killed and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub hooks: PathBuf,
}

impl Proc {
    pub fn spawn(bin: &str, addr: SocketAddr, args: &[&str], extras: Extras) -> Proc {
        let log = LogDir::path().join(format!("{}.log", addr.ip()));
        let hooks = LogDir::path().join(format!("{}.hooks", addr.ip()));
        let mut cmd = Command::new(bin);
        cmd.arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .args(["--no-console", "--log", "warn"])
            .args(args);
        if extras.notify {
            cmd.arg("--notify")
                .arg(format!("{HOOK_LINE} >> '{}'", hooks.display()));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create a log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let p = Proc {
            child,
            addr,
            log,
            hooks,
        };
        if let Some(cpu) = extras.cpu {
            pin(p.pid(), cpu).unwrap_or_else(|e| panic!("cannot pin a node to CPU {cpu}: {e}"));
        }
        p
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, not reaped yet (we hold it), so
        // its pid cannot have been reused.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn sched(&self) -> Sched {
        sched_of(self.pid())
    }

    /// Memory in KiB: resident (VmRSS), of it private anonymous pages
    /// (RssAnon: heap and stacks), and the proportional share (Pss), where
    /// pages shared with other processes (libc, the binary's text) count
    /// divided by the number of processes mapping them.
    pub fn rss_kib(&self) -> Memory {
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

    /// Hook runs so far: lines its `--notify` hook wrote.
    pub fn hook_runs(&self) -> usize {
        std::fs::read_to_string(&self.hooks).map_or(0, |s| s.lines().count())
    }

    /// Peers this node dropped as silent so far, from its log.
    pub fn silent_logged(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |s| {
            s.lines().filter(|l| l.contains("peer-silent")).count()
        })
    }

    pub fn log_tail(&self) -> String {
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

/// The 1-minute load average.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Values in order, comma-separated, with `decimals` decimals.
pub fn list(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The range of samples (load averages), `min-max`, or one value.
pub fn span(v: &[f64]) -> String {
    let s = sorted(v.to_vec());
    match (s.first(), s.last()) {
        (Some(a), Some(b)) if b - a >= 0.05 => format!("{a:.1}-{b:.1}"),
        (Some(a), _) => format!("{a:.1}"),
        _ => "-".into(),
    }
}

/// Clusters handed out so far by this process; part of the third octet.
static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A fresh network `127.77.X.0/24`, `X` from the process id and a counter,
/// so two bench processes rarely share one.
pub fn fresh_net() -> u8 {
    let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
    (1 + (std::process::id() * 7 + n) % 254) as u8
}

/// A console connection kept open for polling.
pub struct Console {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Console {
    /// Connects, retrying until the node listens.
    pub fn open(p: &mut Proc) -> Console {
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

    pub fn send(&mut self, line: &str) {
        self.writer
            .write_all(line.as_bytes())
            .expect("write a command");
    }

    /// The answer lines before `OK`; panics on `ERR`.
    pub fn answer(&mut self) -> Vec<String> {
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

/// Asks every node `cmd` over a fresh TCP connection each, as an
/// operator's `bossd ctl` or `nc` would: every connection opened and its
/// command written, then every answer read (the lines before `OK`).
/// `None` for a node that did not connect or answer within
/// [`OPERATOR_WAIT`], or answered `ERR`.
pub fn ask_fresh(addrs: &[SocketAddr], cmd: &str) -> Vec<Option<Vec<String>>> {
    let asked: Vec<Option<TcpStream>> = addrs
        .iter()
        .map(|a| {
            let mut s = TcpStream::connect_timeout(a, OPERATOR_WAIT).ok()?;
            s.set_nodelay(true).ok()?;
            s.set_read_timeout(Some(OPERATOR_WAIT)).ok()?;
            s.write_all(cmd.as_bytes()).ok()?;
            Some(s)
        })
        .collect();
    asked
        .into_iter()
        .map(|s| {
            let mut r = BufReader::new(s?);
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).ok()? == 0 {
                    return None;
                }
                let line = line.trim_end();
                if line == "OK" {
                    return Some(lines);
                }
                if line.starts_with("ERR") {
                    return None;
                }
                lines.push(line.to_owned());
            }
        })
        .collect()
}

/// How many MEETs `addr` has sent, from its `GET /metrics`; `None` when
/// it did not answer.
pub fn meets_sent(addr: SocketAddr) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&addr, OPERATOR_WAIT).ok()?;
    s.set_read_timeout(Some(OPERATOR_WAIT)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).ok()?;
    text.lines()
        .find(|l| l.starts_with(r#"bossd_messages_total{type="MEET",direction="out"}"#))
        .map_or(Some(0), |l| l.rsplit(' ').next()?.parse().ok())
}

/// Every node's status over fresh connections ([`ask_fresh`]).
pub fn fresh_statuses(addrs: &[SocketAddr]) -> Vec<Option<Status>> {
    ask_fresh(addrs, "-s\n")
        .into_iter()
        .map(|a| Status::parse(a?.first()?).ok())
        .collect()
}

/// A measured wait: the time until the condition was seen, and the time
/// one polling round took (the resolution).
pub struct Measured {
    pub elapsed_ms: f64,
    pub round_ms: f64,
}

/// What a cluster has recorded so far, for counting what an event added.
pub struct Tally {
    /// Each node's `-j`.
    pub journals: Vec<Vec<String>>,
    /// Each node's hook runs.
    pub hooks: Vec<usize>,
    /// Each node's `peer-silent` log lines.
    pub silent: Vec<usize>,
    /// The highest epoch any node reports.
    pub epoch: u64,
}

pub struct Cluster {
    pub nodes: Vec<Proc>,
    pub consoles: Vec<Console>,
}

impl Cluster {
    /// `n` nodes on a fresh network, each alone and answering its console.
    pub fn start(bin: &str, n: usize, args: &[&str]) -> Cluster {
        Cluster::start_with(bin, n, args, Extras::default())
    }

    pub fn start_with(bin: &str, n: usize, args: &[&str], extras: Extras) -> Cluster {
        let x = fresh_net();
        let mut nodes: Vec<Proc> = (0..n)
            .map(|i| {
                let addr = SocketAddr::from((Ipv4Addr::new(127, 77, x, 1 + i as u8), PORT));
                // Something else listening there would make the node fail.
                drop(TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} is taken: {e}")));
                Proc::spawn(bin, addr, args, extras)
            })
            .collect();
        let consoles = nodes.iter_mut().map(Console::open).collect();
        Cluster { nodes, consoles }
    }

    /// `n` nodes formed into one cluster and left a second to settle; the
    /// index of its master.
    pub fn settled(bin: &str, n: usize, extras: Extras) -> (Cluster, usize) {
        let mut c = Cluster::start_with(bin, n, &[], extras);
        c.join_all(crate::CONVERGE_PAUSE, DEADLINE)
            .expect("the cluster forms");
        thread::sleep(Duration::from_secs(1));
        let all: Vec<usize> = (0..n).collect();
        let master = master_of(&c.statuses(&all));
        (c, master)
    }

    /// Tells every node but the first to join the first, all at once, and
    /// waits until all agree with a full mesh.
    pub fn join_all(&mut self, pause: Duration, limit: Duration) -> Result<Measured, String> {
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

    /// Every listed node's answer to `cmd`, asked of all at once.
    pub fn ask(&mut self, which: &[usize], cmd: &str) -> Vec<Vec<String>> {
        for &i in which {
            self.consoles[i].send(cmd);
        }
        which.iter().map(|&i| self.consoles[i].answer()).collect()
    }

    /// Every listed node's status, asked of all at once.
    pub fn statuses(&mut self, which: &[usize]) -> Vec<Status> {
        self.ask(which, "-s\n")
            .iter()
            .map(|lines| {
                Status::parse(lines.first().expect("a status line"))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// The journals, hook runs, silent peers logged and highest epoch.
    pub fn tally(&mut self) -> Tally {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        Tally {
            journals: self.ask(&all, "-j\n"),
            hooks: self.nodes.iter().map(Proc::hook_runs).collect(),
            silent: self.nodes.iter().map(Proc::silent_logged).collect(),
            epoch: self
                .statuses(&all)
                .iter()
                .map(|s| s.epoch)
                .max()
                .unwrap_or(0),
        }
    }

    /// Waits until no node's hook has run for a while (hooks run one at a
    /// time, a few ms each), at most 10 s.
    pub fn hooks_quiet(&self) {
        const QUIET: Duration = Duration::from_millis(300);
        let deadline = Instant::now() + Duration::from_secs(10);
        let runs = || self.nodes.iter().map(Proc::hook_runs).sum::<usize>();
        let mut last = runs();
        while Instant::now() < deadline {
            thread::sleep(QUIET);
            let now = runs();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// Polls the listed nodes, pausing `pause` between rounds, until `cond`
    /// holds for their statuses; `elapsed_ms` counts from `t0` to the end
    /// of the round that saw it. After `limit`, says what the nodes report.
    pub fn wait(
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
    pub fn describe(&self, which: &[usize], s: &[Status]) -> String {
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

/// The index of the node whose status says it is master; panics when
/// none does (a bench that needs one has waited for it).
pub fn master_of(s: &[Status]) -> usize {
    s.iter().position(|s| s.role == "master").expect("a master")
}

/// One master (one of them) and one epoch everywhere, with the right roles
/// (guarantee 1 in docs/GUARANTEES.md), whatever the mesh.
pub fn same_master(s: &[Status]) -> bool {
    let Some(m) = s[0].master.as_ref() else {
        return false;
    };
    s.iter().any(|x| &x.id == m)
        && s.iter().all(|x| {
            x.master.as_ref() == Some(m)
                && x.epoch == s[0].epoch
                && x.role == if &x.id == m { "master" } else { "follower" }
        })
}

/// One group of `n` members: [`same_master`] and a full mesh (guarantees
/// 1 and 3 in docs/GUARANTEES.md).
pub fn agreed(s: &[Status], n: usize) -> bool {
    same_master(s) && s.iter().all(|x| x.peers == n - 1)
}

pub fn median(v: Vec<f64>) -> f64 {
    percentile(&sorted(v), 50.0)
}

/// The lines of journal `new` that came after journal `old`'s last line,
/// and whether some may have been lost (`old`'s last line is gone: more
/// changes than the journal keeps).
pub fn journal_since<'a>(old: &[String], new: &'a [String]) -> (&'a [String], bool) {
    match old.last() {
        None => (new, new.len() >= JOURNAL_KEEPS),
        Some(last) => match new.iter().rposition(|l| l == last) {
            Some(i) => (&new[i + 1..], false),
            None => (new, true),
        },
    }
}

/// Lines `-j` keeps (docs/GUARANTEES.md, the console).
pub const JOURNAL_KEEPS: usize = 100;

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, which
    // sched_getaffinity fills; CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins process `pid` (0: the caller) to CPU `cpu`. Async-signal-safe
/// (for [`BusyLoop`]'s `pre_exec`): one system call.
pub fn pin(pid: i32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // within it (cpu is below CPU_SETSIZE on any machine this runs on),
    // and sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
