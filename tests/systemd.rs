//! bossd under a fake systemd: each test binds the Unix datagram socket a
//! `Type=notify` unit's manager would (`NOTIFY_SOCKET`), asks for a
//! watchdog (`WATCHDOG_USEC`) and reads what the node tells it
//! (docs/OPERATIONS.md, "Under systemd" and "The watchdog").
//!
//! Conditions are polled with generous deadlines; nothing asserts how long
//! anything took. The one "nothing arrives" check runs while the node is
//! stopped (state `T` in /proc), when it cannot send anything.

mod common;

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{DEADLINE, Node, TestNet};

/// The watchdog interval the tests ask for: 200 ms, so a ping every 100 ms.
const WATCHDOG_USEC: &str = "200000";

/// How long a stopped node is watched for datagrams: ten ping intervals.
const STOPPED_WATCH: Duration = Duration::from_millis(1_000);

/// Sockets made by this process so far, for unique directory names.
static NEXT_SOCKET: AtomicU32 = AtomicU32::new(0);

/// The manager's end: a bound datagram socket in a fresh directory, both
/// removed when dropped.
struct NotifySocket {
    dir: PathBuf,
    path: PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let n = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bossd-notify-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create the socket's directory");
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { dir, path, sock }
    }

    /// The environment a `Type=notify` unit with `WatchdogSec=` gets.
    fn env(&self) -> [(&'static str, &OsStr); 2] {
        [
            ("NOTIFY_SOCKET", self.path.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new(WATCHDOG_USEC)),
        ]
    }

    /// The next datagram's lines, waiting up to `timeout`.
    fn recv(&self, timeout: Duration) -> Option<Vec<String>> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.sock
            .set_read_timeout(Some(timeout))
            .expect("set a read timeout");
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        let text = String::from_utf8(buf[..n].to_vec()).expect("a datagram in UTF-8");
        Some(text.lines().map(str::to_owned).collect())
    }

    /// Reads datagrams until one holds a line `want` accepts, and returns
    /// every line read up to it; panics after [`DEADLINE`].
    fn wait_for(&self, what: &str, node: &Node, want: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no datagram with {what} within {DEADLINE:?}; got {seen:?}\n{}",
                    node.describe()
                );
            }
            if let Some(lines) = self.recv(left) {
                let found = lines.iter().any(|l| want(l));
                seen.extend(lines);
                if found {
                    return seen;
                }
            }
        }
    }

    /// Every datagram already queued, without waiting.
    fn drain(&self) -> Vec<String> {
        self.sock.set_nonblocking(true).expect("non-blocking");
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            lines.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
        self.sock.set_nonblocking(false).expect("blocking");
        lines
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The STATUS= text of a line, if it is one.
fn status_of(line: &str) -> Option<&str> {
    line.strip_prefix("STATUS=")
}

/// Waits until the kernel shows `pid` stopped (state `T`): from then on
/// it sends nothing, and everything it sent is queued at the socket.
fn wait_stopped(node: &Node) {
    let deadline = Instant::now() + DEADLINE;
    let stat = format!("/proc/{}/stat", node.pid());
    loop {
        let text = std::fs::read_to_string(&stat).expect("read /proc/PID/stat");
        // The state follows the command name in parentheses.
        if text
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not stop: {text}",
            node.name
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Counts the `WATCHDOG=1` lines in `lines`.
fn pings(lines: &[String]) -> usize {
    lines.iter().filter(|l| *l == "WATCHDOG=1").count()
}

// READY=1 means the console answers; WATCHDOG=1 follows the loop: it keeps
// coming while the node runs, none comes while it is stopped, and it comes
// again once it resumes; `-q` says STOPPING=1 before the node exits 0.
#[test]
fn ready_watchdog_and_stopping() {
    let net = TestNet::new();
    let manager = NotifySocket::new();
    let mut a = Node::spawn_with_env("A", net.addr(), &[], &manager.env());
    let start = manager.wait_for("READY=1", &a, |l| l == "READY=1");
    assert_eq!(
        start.iter().filter(|l| *l == "READY=1").count(),
        1,
        "one READY=1: {start:?}"
    );
    let status = a.try_status();
    assert!(
        status.is_ok(),
        "the console answers once READY=1 is sent: {status:?}"
    );
    assert!(
        start
            .iter()
            .filter_map(|l| status_of(l))
            .any(|s| s.starts_with("none epoch 0, 0 peers")),
        "a lone node starts with role none: {start:?}"
    );

    // Pings keep coming: five more, well within the deadline at one per 100 ms.
    let mut got = 0;
    while got < 5 {
        got += pings(&manager.wait_for("WATCHDOG=1", &a, |l| l == "WATCHDOG=1"));
    }

    a.sigstop();
    wait_stopped(&a);
    manager.drain();
    let mut while_stopped = Vec::new();
    let until = Instant::now() + STOPPED_WATCH;
    while let Some(lines) = manager.recv(until.saturating_duration_since(Instant::now())) {
        while_stopped.extend(lines);
    }
    assert!(
        while_stopped.is_empty(),
        "nothing from a stopped node: {while_stopped:?}"
    );
    a.sigcont();
    manager.wait_for("WATCHDOG=1 after SIGCONT", &a, |l| l == "WATCHDOG=1");

    let (_lines, result) = a.ctl("-q");
    assert_eq!(result, Ok(()), "-q answers OK");
    let end = manager.wait_for("STOPPING=1", &a, |l| l == "STOPPING=1");
    assert!(
        !end.iter().any(|l| l == "READY=1"),
        "READY=1 only once: {end:?}"
    );
    let exit = a.wait_exit(DEADLINE).expect("A exits after -q");
    assert_eq!(exit.code(), Some(0), "{}", a.describe());
    let last: Vec<String> = manager.drain();
    assert!(
        last.iter()
            .all(|l| status_of(l).is_none_or(|s| s == "leaving")),
        "after STOPPING=1 the status stays \"leaving\": {last:?}"
    );
}

// STATUS= follows role changes: a follower of A says so, and once A is
// killed it says it is the master of a newer epoch with no peers.
#[test]
fn status_follows_a_failover() {
    let net = TestNet::new();
    let mut a = Node::start("A", net.addr(), &["--quorum", "1"]);
    let manager = NotifySocket::new();
    let join = a.addr.to_string();
    let b = Node::spawn_with_env(
        "B",
        net.addr(),
        &["--quorum", "1", "--join", &join],
        &manager.env(),
    );
    let follower = format!(", 1 peer, master {}", a.addr);
    let lines = manager.wait_for("B following A", &b, |l| {
        status_of(l).is_some_and(|s| s.starts_with("follower epoch ") && s.ends_with(&follower))
    });
    let epoch_in = |s: &str| -> u64 {
        let rest = s.split_once("epoch ").expect("an epoch").1;
        rest.split(',').next().unwrap().parse().expect("a number")
    };
    let last_status = |lines: &[String]| -> u64 {
        epoch_in(
            lines
                .iter()
                .rev()
                .find_map(|l| status_of(l))
                .expect("a STATUS= line"),
        )
    };
    let followed = last_status(&lines);
    // The status follows B's -s line.
    let st = b.status();
    assert_eq!(
        (st.role.as_str(), st.epoch, st.peers),
        ("follower", followed, 1)
    );

    a.sigkill();
    let lines = manager.wait_for("B master", &b, |l| {
        status_of(l).is_some_and(|s| s.starts_with("master epoch ") && s.ends_with(", 0 peers"))
    });
    let took_over = last_status(&lines);
    assert!(
        took_over > followed,
        "the new master's epoch {took_over} exceeds {followed}: {lines:?}"
    );
}
