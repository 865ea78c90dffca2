//! The real-process harness: starts actual `bossd` binaries on loopback,
//! talks to them over the TCP console and kills every child it started,
//! pass or fail.
//!
//! It never sleeps a fixed time to wait for something to happen: it polls
//! for the condition with a generous deadline and, on timeout, panics with
//! every node's last status line and the tail of its log. It never asserts
//! timings: the machines are shared and noisy.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod logfmt;
pub mod netns;
pub mod runner;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub const BOSSD: &str = env!("CARGO_BIN_EXE_bossd");

/// How long any awaited condition may take before the test fails: far
/// beyond the 2 × timeout (1 s by default) guarantee 1 allows, so a loaded
/// machine does not make a correct node fail.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How long a node may take to start answering its console.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// How often conditions are polled.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Lines of a node's log shown when a wait fails.
const LOG_TAIL_LINES: usize = 25;

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

/// Tests of this process handed out so far; the third octet of their IPs.
static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// The addresses of one test.
///
/// Every test gets its own loopback network `127.A.B.0/24`: on Linux all of
/// 127/8 routes to `lo`, so any of those addresses can be bound without
/// setup. `A` is derived from the process id, so two test processes running
/// at once almost never share it, and `B` is a per-process counter, so tests
/// of one process running in parallel never share a network and can never
/// collide. Within a test, ports come from a counter whose start also
/// depends on the process id, and each is checked free by binding it once
/// before use, which catches whatever else the machine runs on that port
/// (a wildcard listener would conflict with ours).
pub struct TestNet {
    a: u8,
    b: u8,
    next_port: AtomicU32,
}

impl TestNet {
    pub fn new() -> TestNet {
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        assert!(n < 250, "more than 250 tests in one process: widen TestNet");
        let pid = std::process::id();
        TestNet {
            a: 10 + (pid % 200) as u8,
            b: 1 + n as u8,
            // Below the Linux ephemeral range (32768-60999).
            next_port: AtomicU32::new(20_000 + (pid / 200 % 100) * 100),
        }
    }

    /// The IP `127.A.B.host`.
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.a, self.b, host))
    }

    /// A fresh address on `127.A.B.1` with a port that is free right now.
    pub fn addr(&self) -> SocketAddr {
        self.addr_on(1)
    }

    /// A fresh address on `127.A.B.host` with a port that is free right now.
    pub fn addr_on(&self, host: u8) -> SocketAddr {
        loop {
            let port = self.next_port.fetch_add(1, Ordering::Relaxed);
            assert!(port < 32_000, "ran out of ports");
            let addr = SocketAddr::new(self.ip(host), port as u16);
            if TcpListener::bind(addr).is_ok() {
                return addr;
            }
        }
    }

    /// The same port on another host of this test's network, checked free.
    pub fn same_port_on(&self, host: u8, port: u16) -> SocketAddr {
        let addr = SocketAddr::new(self.ip(host), port);
        assert!(
            TcpListener::bind(addr).is_ok(),
            "{addr} is not free; pick another port"
        );
        addr
    }
}

impl Default for TestNet {
    fn default() -> Self {
        TestNet::new()
    }
}

/// A free port on `[::1]` chosen by the kernel. Skips the test (a
/// [`runner`] suite) when `::1` cannot be bound: IPv6 is off on this
/// machine.
pub fn free_ipv6_addr() -> SocketAddr {
    match TcpListener::bind("[::1]:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr,
        Err(e) => runner::skip(format!(
            "[::1] cannot be bound ({e}): IPv6 is off on this machine; \
             turn it on with sysctl net.ipv6.conf.lo.disable_ipv6=0"
        )),
    }
}

// ---------------------------------------------------------------------------
// Status line
// ---------------------------------------------------------------------------

/// The `-s` line, parsed strictly (docs/GUARANTEES.md, status line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: String,
    pub role: String,
    /// `None` for `master=-`.
    pub master: Option<String>,
    pub epoch: u64,
    pub peers: usize,
    pub quorum: u32,
    pub started: u64,
    pub rule: String,
    /// `ok`, `failing` or `standby`.
    pub health: String,
    pub line: String,
}

/// The keys of the status line, in the order docs/GUARANTEES.md fixes.
pub const STATUS_KEYS: [&str; 9] = [
    "id", "role", "master", "epoch", "peers", "quorum", "started", "rule", "health",
];

/// The rule criteria `--rule` takes (docs/GUARANTEES.md).
pub const CRITERIA: [&str; 5] = [
    "oldest",
    "youngest",
    "priority",
    "lowest-addr",
    "highest-addr",
];

impl Status {
    /// Parses one status line, checking it against the format of
    /// docs/GUARANTEES.md, "The status line", as
    /// strictly as the regex
    /// `^id=ADDR role=(master|follower|none) master=(ADDR|-) epoch=\d+
    /// peers=\d+ quorum=\d+ started=\d+ rule=CRIT(,CRIT)*
    /// health=(ok|failing|standby)$`
    /// would, where ADDR is `a.b.c.d:port` or `[v6]:port` written exactly
    /// as Rust writes a socket address. (No regex crate is available to
    /// the tests, so the pattern is spelled out by hand.)
    pub fn parse(line: &str) -> Result<Status, String> {
        let bad = |why: &str| Err(format!("bad status line ({why}): {line:?}"));
        if line.contains(['\n', '\r', '\t']) || line.trim() != line {
            return bad("stray whitespace");
        }
        let words: Vec<&str> = line.split(' ').collect();
        if words.len() != STATUS_KEYS.len() {
            return bad("wrong number of fields");
        }
        let mut values = Vec::new();
        for (word, key) in words.iter().zip(STATUS_KEYS) {
            let Some(value) = word
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
            else {
                return bad(&format!("expected key {key}"));
            };
            if value.is_empty() {
                return bad(&format!("{key} is empty"));
            }
            values.push(value);
        }
        let id = values[0];
        if !is_canonical_addr(id) {
            return bad("id is not IP:PORT");
        }
        let role = values[1];
        if !["master", "follower", "none"].contains(&role) {
            return bad("unknown role");
        }
        let master = match values[2] {
            "-" => None,
            m if is_canonical_addr(m) => Some(m.to_owned()),
            _ => return bad("master is neither IP:PORT nor -"),
        };
        let number = |s: &str| -> Option<u64> {
            if s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0')) {
                s.parse().ok()
            } else {
                None
            }
        };
        let Some(epoch) = number(values[3]) else {
            return bad("epoch is not a u64");
        };
        let Some(peers) = number(values[4]) else {
            return bad("peers is not a number");
        };
        let Some(quorum) = number(values[5]).filter(|q| *q <= u32::MAX as u64) else {
            return bad("quorum is not a u32");
        };
        let Some(started) = number(values[6]) else {
            return bad("started is not unix milliseconds");
        };
        let rule = values[7];
        if !rule.split(',').all(|c| CRITERIA.contains(&c)) {
            return bad("rule is not a list of criteria");
        }
        let health = values[8];
        if !["ok", "failing", "standby"].contains(&health) {
            return bad("unknown health");
        }
        Ok(Status {
            id: id.to_owned(),
            role: role.to_owned(),
            master,
            epoch,
            peers: peers as usize,
            quorum: quorum as u32,
            started,
            rule: rule.to_owned(),
            health: health.to_owned(),
            line: line.to_owned(),
        })
    }
}

/// Whether `s` is a socket address written the way `SocketAddr` displays it
/// (`1.2.3.4:5`, `[::1]:5`), with nothing around it.
fn is_canonical_addr(s: &str) -> bool {
    s.parse::<SocketAddr>().is_ok_and(|a| a.to_string() == s)
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// What the child's standard input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdinKind {
    /// `/dev/null`.
    Null,
    /// A pipe the test writes to ([`Node::write_stdin`]).
    Piped,
    /// File descriptor 0 closed before `exec`.
    Closed,
}

/// One running `bossd`, killed (SIGKILL, then reaped) when dropped.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    pub args: Vec<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
}

impl Node {
    /// Starts `bossd ADDR [args]` with stdin `/dev/null` and waits until it
    /// answers `-s` over TCP.
    pub fn start(name: &str, addr: SocketAddr, args: &[&str]) -> Node {
        Node::start_with(name, addr, args, StdinKind::Null)
    }

    /// [`Node::start`] with a chosen standard input.
    pub fn start_with(name: &str, addr: SocketAddr, args: &[&str], stdin: StdinKind) -> Node {
        let mut node = Node::spawn(name, addr, args, stdin);
        node.wait_ready();
        node
    }

    /// Starts `bossd IP PORT [args]` without waiting for anything.
    pub fn spawn(name: &str, addr: SocketAddr, args: &[&str], stdin: StdinKind) -> Node {
        let mut full = vec![addr.ip().to_string(), addr.port().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        Node::spawn_with_args(name, addr, full, stdin)
    }

    /// Starts `bossd ARGS...` (the node's address written as the test
    /// likes, e.g. `[::1] 7000`), known as `addr`, without waiting.
    pub fn spawn_with_args(
        name: &str,
        addr: SocketAddr,
        full: Vec<String>,
        stdin: StdinKind,
    ) -> Node {
        let cmd = Node::command(&full, stdin);
        Node::launch(cmd, BOSSD, name, addr, full)
    }

    /// Starts `bossd IP PORT [args]` with stdin `/dev/null` and `env` added
    /// to its environment, without waiting for anything.
    pub fn spawn_with_env(
        name: &str,
        addr: SocketAddr,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Node {
        let mut full = vec![addr.ip().to_string(), addr.port().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = Node::command(&full, StdinKind::Null);
        cmd.envs(env.iter().copied());
        Node::launch(cmd, BOSSD, name, addr, full)
    }

    /// `bossd ARGS...` with piped stdout and stderr. A systemd notify
    /// socket or watchdog the test itself runs under is not passed on:
    /// nodes tell systemd something only where a test asks for it.
    fn command(full: &[String], stdin: StdinKind) -> Command {
        let mut cmd = Command::new(BOSSD);
        cmd.args(full)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdin {
            StdinKind::Null => {
                cmd.stdin(Stdio::null());
            }
            StdinKind::Piped => {
                cmd.stdin(Stdio::piped());
            }
            StdinKind::Closed => {
                cmd.stdin(Stdio::null());
                // SAFETY: close(2) is async-signal-safe, and fd 0 of the
                // child is ours to close between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::close(0);
                        Ok(())
                    });
                }
            }
        }
        cmd
    }

    /// Starts `bossd IP PORT [args]` with at most `fds` open descriptors
    /// (RLIMIT_NOFILE), stdin `/dev/null`, and waits until it answers.
    pub fn start_with_fd_limit(name: &str, addr: SocketAddr, args: &[&str], fds: u64) -> Node {
        let mut full = vec![addr.ip().to_string(), addr.port().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(BOSSD);
        cmd.args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit(2) is async-signal-safe and only changes the
        // child's own limit, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: fds,
                    rlim_max: fds,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut node = Node::launch(cmd, BOSSD, name, addr, full);
        node.wait_ready();
        node
    }

    /// Starts `ip netns exec NETNS bossd IP PORT [args]` with stdin
    /// `/dev/null`, without waiting for anything: a node inside the network
    /// namespace `NETNS`, which this process may not be able to reach (ask
    /// it from inside the namespace, not with [`Node::status`]).
    /// `ip netns exec` execs bossd in place, so the child is bossd itself
    /// and dropping the `Node` kills it.
    pub fn spawn_in_netns(netns: &str, name: &str, addr: SocketAddr, args: &[&str]) -> Node {
        let mut full = vec![addr.ip().to_string(), addr.port().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, BOSSD])
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Node::launch(
            cmd,
            &format!("ip netns exec {netns} {BOSSD}"),
            name,
            addr,
            full,
        )
    }

    /// Spawns `cmd` (described as `what` in errors) with piped stdout and
    /// stderr, drained on threads.
    fn launch(
        mut cmd: Command,
        what: &str,
        name: &str,
        addr: SocketAddr,
        full: Vec<String>,
    ) -> Node {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        let stdin = child.stdin.take();
        Node {
            name: name.to_owned(),
            addr,
            args: full,
            child,
            stdin,
            stdout,
            stderr,
            exit: None,
        }
    }

    /// Waits until the node answers `-s` over TCP; panics if it exits first.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if self.try_status().is_ok() {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} ({}) exited with {status} before answering; stderr:\n{}",
                    self.name,
                    self.args.join(" "),
                    self.stderr_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} ({}) did not answer -s within {START_DEADLINE:?}; stderr:\n{}",
                    self.name,
                    self.args.join(" "),
                    self.stderr_text()
                );
            }
            thread::sleep(POLL_EVERY);
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// This node's address as the status line writes it.
    pub fn id(&self) -> String {
        self.addr.to_string()
    }

    /// Sends one console command over TCP; the answer lines and `Err(reason)`
    /// for `ERR reason`. Panics when the node cannot be asked.
    pub fn ctl(&self, command: &str) -> (Vec<String>, Result<(), String>) {
        match self.try_ctl(command) {
            Ok(answer) => answer,
            Err(e) => panic!(
                "{} ({}): cannot ask {command:?}: {e}\nstderr:\n{}",
                self.name,
                self.addr,
                tail(&self.stderr_text(), LOG_TAIL_LINES)
            ),
        }
    }

    /// [`Node::ctl`], with failure to ask as `Err`.
    pub fn try_ctl(&self, command: &str) -> Result<(Vec<String>, Result<(), String>), String> {
        bossd::ctl::ask(self.addr, command)
            .map(|a| (a.lines, a.result))
            .map_err(|e| format!("{e:#}"))
    }

    /// The parsed `-s` line; panics when the node cannot be asked or the
    /// line breaks the format.
    pub fn status(&self) -> Status {
        self.try_status()
            .unwrap_or_else(|e| panic!("{} ({}): {e}", self.name, self.addr))
    }

    /// The parsed `-s` line, or why there is none.
    pub fn try_status(&self) -> Result<Status, String> {
        let (lines, result) = self.try_ctl("-s")?;
        result.map_err(|r| format!("-s answered ERR {r}"))?;
        match lines.as_slice() {
            [line] => Status::parse(line),
            _ => Err(format!("-s answered {} lines: {lines:?}", lines.len())),
        }
    }

    /// Sends SIGTERM (a graceful leave, guarantee 6 in docs/GUARANTEES.md).
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGINT (a graceful leave, guarantee 6 in docs/GUARANTEES.md).
    pub fn sigint(&self) {
        self.signal(libc::SIGINT);
    }

    /// Sends SIGKILL (a crash) and reaps the child.
    pub fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.wait_exit(DEADLINE);
        assert!(status.is_some(), "{} survived SIGKILL", self.name);
    }

    /// Sends SIGSTOP: the process freezes with its connections open.
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Sends SIGCONT: a frozen process resumes.
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if self.exit.is_some() {
            return;
        }
        // SAFETY: kill(2) on our own unreaped child's pid, which cannot have
        // been reused while we hold the `Child`.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// The exit status once the child exited, waiting up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the child has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on a child");
        }
        self.exit
    }

    /// Everything the node wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// The log lines the node wrote to stderr so far, parsed; lines that
    /// are not bossd's log lines (a hook's output) are skipped.
    pub fn events(&self) -> Vec<logfmt::Event> {
        self.stderr_text()
            .lines()
            .filter_map(|l| logfmt::parse_line(l).ok())
            .collect()
    }

    /// The events named `name` the node logged so far, in order.
    pub fn events_named(&self, name: &str) -> Vec<logfmt::Event> {
        self.events()
            .into_iter()
            .filter(|e| e.name == name)
            .collect()
    }

    /// Whether the node logged event `name` with these fields (and maybe
    /// more), e.g. `logged("auth-failed", &[("reason", "wrong secret")])`.
    pub fn logged(&self, name: &str, fields: &[(&str, &str)]) -> bool {
        self.events().iter().any(|e| e.is(name, fields))
    }

    /// Everything the node wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.lock().expect("stdout buffer").clone()
    }

    /// Writes to the child's stdin pipe (for [`StdinKind::Piped`]).
    pub fn write_stdin(&mut self, text: &str) {
        self.write_stdin_bytes(text.as_bytes());
    }

    /// Writes bytes that need not be UTF-8 to the child's stdin pipe.
    pub fn write_stdin_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is not piped");
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .expect("write to the node's stdin");
    }

    /// Closes the child's stdin pipe: the node sees end of file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// CPU time (user + system) the process has used, from /proc.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.pid() as u32)
    }

    /// A short description for failure messages: last status and log tail.
    pub fn describe(&self) -> String {
        let status = match self.exit {
            Some(s) => format!("exited: {}", describe_exit(s)),
            None => match self.try_status() {
                Ok(s) => s.line,
                Err(e) => format!("no status: {e}"),
            },
        };
        format!(
            "--- {} ({}): {status}\n{}",
            self.name,
            self.addr,
            indent(&tail(&self.stderr_text(), LOG_TAIL_LINES))
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads a child's pipe into a shared buffer on a thread, so the child
/// never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let out = Arc::clone(&buf);
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => out
                    .lock()
                    .expect("pipe buffer")
                    .push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    });
    buf
}

/// CPU time (user + system) process `pid` has used, from /proc.
pub fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name (field 2) may hold spaces; fields after it are
    // counted from its closing parenthesis. utime and stime are fields
    // 14 and 15, in clock ticks.
    let after = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a constant of the system.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_sec)
}

pub fn describe_exit(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s}"),
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn indent(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// Every node's state, for a failure message.
pub fn describe_all(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| n.describe())
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `cond` until it holds; after [`DEADLINE`] panics naming `what`
/// and showing every node in `nodes`.
pub fn wait_until(what: &str, nodes: &[&Node], mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {DEADLINE:?} waiting for: {what}\n{}",
                describe_all(nodes)
            );
        }
        thread::sleep(POLL_EVERY);
    }
}

/// Checks that `cond` holds at every poll for `window`; panics otherwise.
/// For properties that must *stay* true (a refused peer never joins):
/// such a check can only watch for a while.
pub fn holds_for(what: &str, window: Duration, nodes: &[&Node], mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if !cond() {
            panic!("no longer true: {what}\n{}", describe_all(nodes));
        }
        thread::sleep(POLL_EVERY);
    }
}

/// Whether every node answers and they form one agreed group: the same
/// `master` (one of `nodes`, expected `master` if given) and `epoch`
/// everywhere, the master `role=master`, the others `role=follower`, and
/// `peers=n-1` on each (guarantees 1 and 3 in docs/GUARANTEES.md).
pub fn agreed(nodes: &[&Node], master: Option<&Node>) -> Option<Vec<Status>> {
    let statuses: Vec<Status> = nodes
        .iter()
        .map(|n| n.try_status().ok())
        .collect::<Option<_>>()?;
    let first = &statuses[0];
    let m = first.master.clone()?;
    if master.is_some_and(|want| want.id() != m) {
        return None;
    }
    let n = nodes.len();
    let ok = statuses.iter().all(|s| {
        s.master.as_deref() == Some(m.as_str())
            && s.epoch == first.epoch
            && s.peers == n - 1
            && s.role == if s.id == m { "master" } else { "follower" }
    }) && statuses.iter().any(|s| s.id == m);
    ok.then_some(statuses)
}

/// Waits until [`agreed`] holds and returns the statuses; the epoch they share.
pub fn wait_agreed(nodes: &[&Node], master: Option<&Node>) -> Vec<Status> {
    let what = match master {
        Some(m) => format!(
            "{} nodes agree on master {} ({}) with a full mesh",
            nodes.len(),
            m.name,
            m.addr
        ),
        None => format!("{} nodes agree on one master with a full mesh", nodes.len()),
    };
    let mut out = None;
    wait_until(&what, nodes, || {
        out = agreed(nodes, master);
        out.is_some()
    });
    out.expect("set by the last poll")
}

// ---------------------------------------------------------------------------
// Running the binary to completion
// ---------------------------------------------------------------------------

/// Output of a `bossd` run that is expected to end by itself.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bossd args` with stdin `/dev/null` and waits up to [`DEADLINE`]
/// for it to exit; kills it and panics if it does not.
pub fn run_to_exit(args: &[&str]) -> Finished {
    let mut child = Command::new(BOSSD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BOSSD}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let status = wait_for_exit(&mut child, || {
        format!(
            "bossd {} did not exit within {DEADLINE:?}; stderr:\n{}",
            args.join(" "),
            stderr.lock().expect("stderr")
        )
    });
    // The drain threads finish at end of file, right after the exit.
    let wait_eof = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stdout) + Arc::strong_count(&stderr) > 2 && Instant::now() < wait_eof {
        thread::sleep(Duration::from_millis(5));
    }
    let stdout = stdout.lock().expect("stdout").clone();
    let stderr = stderr.lock().expect("stderr").clone();
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Waits up to [`DEADLINE`] for `child` to exit; kills and reaps it and
/// panics with `why()` if it does not.
pub fn wait_for_exit(child: &mut Child, why: impl FnOnce() -> String) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}", why());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// A raw console connection
// ---------------------------------------------------------------------------

/// A TCP console connection kept open across commands.
pub struct Console {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Console {
    pub fn open(addr: SocketAddr) -> Console {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set_read_timeout");
        let writer = stream.try_clone().expect("clone the stream");
        Console {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &str) {
        self.writer
            .write_all(bytes.as_bytes())
            .expect("write to the console");
    }

    /// Reads one line without its newline; `None` at end of file.
    pub fn read_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
            Err(e) => panic!("reading the console: {e}"),
        }
    }

    /// Reads lines up to and including the `OK` or `ERR ...` line.
    pub fn read_answer(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .read_line()
                .unwrap_or_else(|| panic!("connection closed mid-answer after {lines:?}"));
            let last = line == "OK" || line.starts_with("ERR");
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Sends one command line and reads its whole answer.
    pub fn ask(&mut self, command: &str) -> Vec<String> {
        self.send(&format!("{command}\n"));
        self.read_answer()
    }
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// A directory for one test's files (secrets, hook output), removed when
/// dropped. Its name carries the suite, the process id and a counter, so
/// tests running at once never share one.
pub struct TempDir(pub PathBuf);

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "bossd-{}-{}-{n}-{tag}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test's temp dir");
        TempDir(dir)
    }

    /// The path of `name` in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a mode-600 secret file and returns its path as a string.
    pub fn secret(&self, name: &str, text: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.file(name);
        std::fs::write(&path, format!("{text}\n")).expect("write a secret file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 a secret file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`, computed independently
/// of the daemon (Howard Hinnant's days-to-civil algorithm).
pub fn iso_utc_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}
