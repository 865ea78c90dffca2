//! The watch stream (docs/PROTOCOL.md, "Watching"): `-w` on the console,
//! `bossd ctl IP PORT -w`, and `GET /events` as Server-Sent Events, on
//! real `bossd` processes over loopback.
//!
//! What a watcher reads is checked against the node's own journal (`-j`
//! and `/status`) through join, crash, freeze and leave; the limit of 64
//! watchers is driven to its end, and so is the outbox of a watcher that
//! does not read (its exact bound is tested sans-IO, in src/watch.rs).
//! The SSE stream is read by curl (`curl -N`), a real client; without
//! curl that test says SKIPPED and why (`tests/common/runner.rs`), and
//! under CI a skip is a failure.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bossd::watch::MAX_WATCH_OUTBOX;
use common::{
    BOSSD, Console, DEADLINE, Node, StdinKind, TempDir, TestNet, runner, wait_agreed, wait_until,
};
use serde_json::Value;

fn main() -> std::process::ExitCode {
    runner::run(
        include_str!("watch.rs"),
        crate::test_list![
            the_stream_follows_join_crash_freeze_and_leave,
            ctl_watch_checks_tags_and_ends_on_signals,
            ctl_watch_ends_when_its_stdout_is_closed,
            ctl_watch_gives_up_on_a_frozen_node_or_a_stranger,
            ctl_watch_exits_0_on_a_signal_while_it_authenticates,
            the_65th_watcher_is_refused,
            a_watcher_that_does_not_read_is_dropped_while_the_cluster_elects,
            stdin_watch_prints_the_stream,
        ],
    )
}

/// A child process whose stdout and stderr are collected as they arrive,
/// killed when dropped (pass or fail).
struct Reader {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Reader {
    fn spawn(program: &str, args: &[&str]) -> Reader {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let collect = |pipe: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(String::new()));
            let into = buf.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(pipe);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    into.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().expect("stdout")));
        let err = collect(Box::new(child.stderr.take().expect("stderr")));
        Reader { child, out, err }
    }

    /// `bossd ctl ADDR -w` with more ctl arguments before `-w`.
    fn ctl_watch(addr: SocketAddr, extra: &[&str]) -> Reader {
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        let mut args = vec!["ctl", ip.as_str(), port.as_str()];
        args.extend(extra);
        args.push("-w");
        Reader::spawn(BOSSD, &args)
    }

    fn lines(&self) -> Vec<String> {
        self.out
            .lock()
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Its exit code once it ended by itself (a signal: `None` in it).
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        for _ in 0..400 {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events of an SSE stream, `(event, data)` each, and how many
/// comments it had.
fn sse_events(body: &str) -> (Vec<(String, String)>, usize) {
    let (mut events, mut comments) = (Vec::new(), 0);
    let (mut name, mut data) = (String::new(), None::<String>);
    for line in body.lines() {
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push((std::mem::take(&mut name), d));
            }
        } else if line.starts_with(':') {
            comments += 1;
        } else if let Some(v) = line.strip_prefix("event: ") {
            name = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(v.to_owned());
        } else {
            panic!("not an SSE line: {line:?}");
        }
    }
    (events, comments)
}

/// `GET path` over a raw socket: the whole response.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The `journal` of a node's `/status`.
fn status_journal(addr: SocketAddr) -> Vec<Value> {
    let page = http_get(addr, "/status");
    let body = page.split_once("\r\n\r\n").expect("a body").1;
    let doc: Value = serde_json::from_str(body).expect("JSON");
    doc["journal"].as_array().expect("a journal").clone()
}

// D watches (ctl -w and curl -N /events) from before it joins: it joins A,
// B and C; A crashes (B takes over), B freezes (C takes over), C leaves (D
// is alone, below quorum). Both streams carry exactly D's journal, the
// lines `-j` prints and the JSON `/status` lists, each as it happened.
// Then D leaves: ctl says the node went away and exits 1.
fn the_stream_follows_join_crash_freeze_and_leave() {
    runner::need_program("curl", &["--version"], "apt-get install curl");
    let net = TestNet::new();
    let mut a = Node::start("A", net.addr(), &[]);
    let a_addr = a.addr.to_string();
    let join = ["--join", a_addr.as_str()];
    let b = Node::start("B", net.addr(), &join);
    let mut c = Node::start("C", net.addr(), &join);
    let d = Node::start("D", net.addr(), &[]);
    let url = format!("http://{}/events", d.addr);
    let sse = Reader::spawn("curl", &["-sN", &url]);
    let mut w = Reader::ctl_watch(d.addr, &[]);
    wait_until("both watchers have D's status", &[&d], || {
        w.lines().len() == 1 && sse_events(&sse.stdout()).0.len() == 1
    });
    assert_eq!(w.lines()[0], d.status().line, "the status line first");

    d.ctl(&format!("-c {} {}", a.addr.ip(), a.addr.port()))
        .1
        .expect("D joins A");
    wait_agreed(&[&a, &b, &c, &d], Some(&a));
    a.sigkill();
    wait_agreed(&[&b, &c, &d], Some(&b));
    b.sigstop();
    wait_agreed(&[&c, &d], Some(&c));
    c.sigterm();
    c.wait_exit(Duration::from_secs(10));
    wait_until("D alone has no master", &[&d], || d.status().role == "none");

    let (journal, _) = d.ctl("-j");
    assert!(
        journal.len() >= 4,
        "join, two failovers, a leave: {journal:?}"
    );
    wait_until("ctl -w printed D's whole journal", &[&d], || {
        w.lines().len() == 1 + journal.len()
    });
    assert_eq!(w.lines()[1..], journal[..], "ctl -w's lines are -j's");
    let want = status_journal(d.addr);
    wait_until("/events sent D's whole journal", &[&d], || {
        sse_events(&sse.stdout()).0.len() == 1 + want.len()
    });
    let (events, _) = sse_events(&sse.stdout());
    assert_eq!(events[0].0, "status");
    let status: Value = serde_json::from_str(&events[0].1).expect("status JSON");
    assert_eq!(status["id"], d.id().as_str());
    assert_eq!(status["role"], "none", "D had not joined yet");
    for (i, (name, data)) in events[1..].iter().enumerate() {
        assert_eq!(name, "role-change");
        let got: Value = serde_json::from_str(data).expect("role-change JSON");
        assert_eq!(got, want[i], "event {i}: /events and /status differ");
    }
    let changes: Vec<(&str, &str)> = want
        .iter()
        .map(|e| (e["to"].as_str().unwrap(), e["cause"].as_str().unwrap()))
        .collect();
    assert_eq!(changes[0].0, "follower", "D joined: {changes:?}");
    assert_eq!(changes.last().unwrap().0, "none", "C left: {changes:?}");

    d.sigterm();
    let status = w.wait_exit().expect("ctl -w ended with the node");
    assert_eq!(status.code(), Some(1), "{}", w.stderr());
    assert!(
        w.stderr()
            .contains("closed the connection: the node went away"),
        "{}",
        w.stderr()
    );
    drop(b);
}

// With a secret, ctl -w authenticates and checks every line's tag; a
// plain nc-style watcher may watch too (watching is read-only). SIGINT and
// SIGTERM end ctl -w with exit 0; a wrong secret ends it with exit 1.
fn ctl_watch_checks_tags_and_ends_on_signals() {
    let net = TestNet::new();
    let tmp = TempDir::new("watch");
    let secret = tmp.secret("secret", "the watch test's shared secret, long enough");
    let wrong = tmp.secret("wrong", "another secret altogether, also long enough");
    let args = ["--secret-file", secret.as_str()];
    let a = Node::start("A", net.addr(), &args);
    let a_addr = a.addr.to_string();
    let mut plain = Console::open(a.addr);
    plain.send("-w\n");
    let first = plain.read_line().expect("a status line");
    assert!(first.starts_with(&format!("id={} ", a.addr)), "{first}");
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut w = Reader::ctl_watch(a.addr, &["--secret-file", &secret]);
        wait_until("ctl -w printed the status", &[&a], || w.lines().len() == 1);
        assert!(
            w.lines()[0].starts_with("id="),
            "tags stripped: {:?}",
            w.lines()
        );
        w.signal(signal);
        let status = w.wait_exit().expect("ctl -w ended");
        assert_eq!(status.code(), Some(0), "signal {signal}: {}", w.stderr());
    }
    let w = Reader::ctl_watch(a.addr, &["--secret-file", &secret]);
    wait_until("ctl -w printed the status", &[&a], || w.lines().len() == 1);
    let b = Node::start(
        "B",
        net.addr(),
        &["--join", &a_addr, "--secret-file", &secret],
    );
    wait_agreed(&[&a, &b], Some(&a));
    wait_until("the sealed change arrived", &[&a], || w.lines().len() == 2);
    assert!(w.lines()[1].contains(" none->master "), "{:?}", w.lines());
    assert_eq!(
        plain.read_line().as_deref(),
        Some(w.lines()[1].as_str()),
        "the plain watcher reads the same line"
    );
    drop(w);
    let mut bad = Reader::ctl_watch(a.addr, &["--secret-file", &wrong]);
    let status = bad.wait_exit().expect("ctl -w with a wrong secret ended");
    assert_eq!(status.code(), Some(1), "{}", bad.stderr());
    assert!(bad.lines().is_empty(), "{:?}", bad.lines());
}

// `bossd ctl IP PORT -w | head -1`: once head has its line and is gone,
// ctl ends with exit 1 and one line saying why, also while the cluster is
// quiet and no line comes to fail on, instead of holding one of the
// node's 64 watchers for ever.
fn ctl_watch_ends_when_its_stdout_is_closed() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let (ip, port) = (a.addr.ip().to_string(), a.addr.port().to_string());
    let mut ctl = Command::new(BOSSD)
        .args(["ctl", ip.as_str(), port.as_str(), "-w"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bossd ctl");
    let mut guard = KillOnDrop(Some(ctl.stdout.take().expect("stdout")), &mut ctl);
    let mut first = String::new();
    BufReader::new(guard.0.as_mut().expect("stdout"))
        .read_line(&mut first)
        .expect("read the status line");
    assert!(first.starts_with(&format!("id={} ", a.addr)), "{first}");
    // The reader goes away, as head does after its line; a lone node
    // writes no journal line after that.
    drop(guard.0.take());
    let mut status = None;
    wait_until("ctl -w ended once its stdout was closed", &[&a], || {
        status = guard.1.try_wait().expect("try_wait");
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    let mut err = String::new();
    guard
        .1
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        ["bossd ctl: stdout was closed"]
    );
    assert_eq!(
        a.events_named("role-change").len(),
        0,
        "the node stayed quiet"
    );
}

// The status line opens the stream, and ctl waits for it as for any
// answer: a frozen node (its kernel accepts, nobody answers) makes `ctl
// -w` give up after 5 s with exit 1, and so does a port that answers
// something other than a status line.
fn ctl_watch_gives_up_on_a_frozen_node_or_a_stranger() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    a.sigstop();
    let started = Instant::now();
    let mut w = Reader::ctl_watch(a.addr, &[]);
    let status = w.wait_exit().expect("ctl -w gave up on the frozen node");
    assert_eq!(status.code(), Some(1), "{status:?}: {}", w.stderr());
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "it waited its 5 s"
    );
    assert_eq!(
        w.stderr().trim_end(),
        format!("bossd ctl: no answer from {} within 5 s", a.addr)
    );
    assert!(w.lines().is_empty(), "{:?}", w.lines());

    let stranger = std::net::TcpListener::bind(net.addr()).expect("bind a stranger");
    let addr = stranger.local_addr().expect("its address");
    let serve = thread::spawn(move || {
        let (mut c, _) = stranger.accept().expect("accept ctl");
        c.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").expect("greet");
        // Held open until ctl has given up.
        let _ = c.read(&mut [0u8; 64]);
        let _ = c.read(&mut [0u8; 64]);
    });
    let mut w = Reader::ctl_watch(addr, &[]);
    let status = w.wait_exit().expect("ctl -w gave up on the stranger");
    assert_eq!(status.code(), Some(1), "{status:?}: {}", w.stderr());
    assert_eq!(
        w.stderr().trim_end(),
        format!("bossd ctl: {addr} is not a bossd console: it answered \"SSH-2.0-OpenSSH_9.6\"")
    );
    assert!(w.lines().is_empty(), "{:?}", w.lines());
    drop(w);
    serve.join().expect("the stranger's thread");
}

// SIGTERM ends `bossd ctl --secret-file ... -w` with exit 0 also before
// the node has answered the handshake: here the node is frozen, so ctl
// sits in the handshake once its connection is established.
fn ctl_watch_exits_0_on_a_signal_while_it_authenticates() {
    let net = TestNet::new();
    let tmp = TempDir::new("watch-auth");
    let secret = tmp.secret("secret", "the watch test's shared secret, long enough");
    let a = Node::start("A", net.addr(), &["--secret-file", &secret]);
    a.sigstop();
    let mut w = Reader::ctl_watch(a.addr, &["--secret-file", &secret]);
    wait_until("ctl -w is connected to the frozen node", &[], || {
        established_to(a.addr)
    });
    w.signal(libc::SIGTERM);
    let status = w.wait_exit().expect("ctl -w ended");
    assert_eq!(status.code(), Some(0), "{status:?}: {}", w.stderr());
    assert!(w.lines().is_empty(), "{:?}", w.lines());
}

/// Whether a TCP connection to `addr` (IPv4) is established on this
/// host, as /proc/net/tcp lists it: the kernel completes the handshake
/// for a listener whose process is stopped.
fn established_to(addr: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}");
    };
    // /proc/net/tcp writes the address as the bytes of the u32 in host
    // order, then the port: 127.0.0.1:7000 is 0100007F:1B58 on x86.
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    std::fs::read_to_string("/proc/net/tcp")
        .expect("read /proc/net/tcp")
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == want && f[3] == "01"
        })
}

/// A child and the read end of its stdout; the child is killed when
/// dropped, pass or fail.
struct KillOnDrop<'a>(Option<std::process::ChildStdout>, &'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

// 64 watchers watch; the 65th gets one line and is closed, over the
// console (and so ctl -w, exit 1) and over HTTP (503). Once one watcher
// goes, another is taken.
fn the_65th_watcher_is_refused() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let mut watchers: Vec<Console> = (0..64)
        .map(|_| {
            let mut c = Console::open(a.addr);
            c.send("-w\n");
            c
        })
        .collect();
    for w in &mut watchers {
        assert!(w.read_line().expect("a status line").starts_with("id="));
    }
    let mut extra = Console::open(a.addr);
    extra.send("-w\n");
    assert_eq!(
        extra.read_line().as_deref(),
        Some("ERR too many watchers: 64 are watching already")
    );
    assert_eq!(extra.read_line(), None, "then closed");
    let mut ctl = Reader::ctl_watch(a.addr, &[]);
    let status = ctl.wait_exit().expect("ctl -w ended");
    assert_eq!(status.code(), Some(1));
    assert!(
        ctl.stderr().contains("too many watchers"),
        "{}",
        ctl.stderr()
    );
    let page = http_get(a.addr, "/events");
    assert!(page.starts_with("HTTP/1.1 503 "), "{page}");
    assert!(a.logged("watcher-closed", &[("reason", "too-many-watchers")]));
    let metrics = http_get(a.addr, "/metrics");
    assert!(
        metrics.contains("bossd_connections{kind=\"watcher\"} 64"),
        "{metrics}"
    );
    // The node answers its console meanwhile.
    assert_eq!(a.status().role, "none");

    drop(watchers.pop());
    wait_until("a freed slot takes a new watcher", &[&a], || {
        let mut c = Console::open(a.addr);
        c.send("-w\n");
        c.read_line().is_some_and(|l| l.starts_with("id="))
    });
}

/// A console connection to `addr` (IPv4) whose kernel buffers hold tens
/// of KiB, not the megabytes loopback gives them: a receive buffer set to
/// the kernel's minimum and a small segment size, both before connect.
/// The node's side sizes its send buffer from the segment size (on
/// loopback's 64 KiB segments it starts above 1 MiB), and a receiver that
/// never opens its window never lets it grow. A watcher on it that does
/// not read fills the node's outbox after about 1,700 lines (here about
/// 70 kB in the two kernels and 64 KiB in the outbox), not tens of
/// thousands: without these two options this test did not reach the drop
/// in 120 s.
fn small_buffered_connection(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr}: IPv4 only");
    };
    let check = |r: libc::c_int, what: &str| {
        assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
    };
    // SAFETY: plain socket calls on a descriptor this function owns from
    // its creation on (`OwnedFd` closes it on every path), with pointers
    // to live values of the sizes given.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        check(raw, "socket");
        let fd = OwnedFd::from_raw_fd(raw);
        let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        for (level, name, value, what) in [
            (libc::SOL_SOCKET, libc::SO_RCVBUF, 1, "SO_RCVBUF"),
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536, "TCP_MAXSEG"),
        ] {
            let value: libc::c_int = value;
            let p = (&raw const value).cast::<libc::c_void>();
            check(libc::setsockopt(raw, level, name, p, int), what);
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        check(
            libc::connect(raw, (&raw const sin).cast::<libc::sockaddr>(), len),
            "connect",
        );
        TcpStream::from(fd)
    }
}

/// What is left to read on `s` until the node's close (an end of file, or
/// a reset when the node gave up on what it had queued).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "the dropped watcher stayed open ({e}) after {} bytes",
                got.len()
            ),
        }
    }
}

// A watcher that sends -w and never reads is dropped once its outbox is
// full (64 KiB), with a log line, while the cluster keeps electing: node
// after node joins W and leaves, so W goes none->master and back each
// time, and a watcher that reads gets every change, before the drop and
// after. What the dropped watcher got is the start of the same stream.
fn a_watcher_that_does_not_read_is_dropped_while_the_cluster_elects() {
    /// Rounds run after the drop, to see the cluster and the reading
    /// watcher carry on.
    const AFTER: usize = 5;
    let net = TestNet::new();
    let w = Node::start("W", net.addr(), &[]);
    let w_addr = w.addr.to_string();
    let mut slow = small_buffered_connection(w.addr);
    slow.write_all(b"-w\n").unwrap();
    let mut fast = Console::open(w.addr);
    fast.send("-w\n");
    let mut seen = vec![fast.read_line().expect("the status line")];
    let stream_len = |seen: &[String]| seen.iter().map(|l| l.len() + 1).sum::<usize>();
    // Each round's X on a host of its own, 250 in turn, so that one that
    // is slow to exit never holds the address of the next.
    let x_port = net.addr_on(2).port();
    let x_addr = |round: usize| {
        (0..250)
            .map(|k| SocketAddr::new(net.ip(2 + ((round + k) % 250) as u8), x_port))
            .find(|&a| std::net::TcpListener::bind(a).is_ok())
            .expect("a free address for X")
    };
    let mut left: Vec<Node> = Vec::new();
    let started = Instant::now();
    let mut dropped: Option<(usize, usize)> = None;
    let mut round = 0;
    while dropped.is_none_or(|(at, _)| round < at + AFTER) {
        assert!(
            started.elapsed() < 6 * DEADLINE,
            "no drop after {round} rounds and {} bytes\n{}",
            stream_len(&seen),
            w.describe()
        );
        let x = Node::spawn("X", x_addr(round), &["--join", &w_addr], StdinKind::Null);
        for (to, why) in [("master", "X joined"), ("none", "X left")] {
            let line = fast
                .read_line()
                .unwrap_or_else(|| panic!("W closed the reading watcher\n{}", w.describe()));
            assert!(
                line.contains(&format!("->{to} ")),
                "round {round}, {why}: {line}"
            );
            seen.push(line);
            if to == "master" {
                x.sigterm();
            }
        }
        left.push(x);
        left.retain_mut(|n| n.try_exit().is_none());
        round += 1;
        if dropped.is_none() && w.logged("watcher-closed", &[("reason", "outbox-full")]) {
            dropped = Some((round, stream_len(&seen)));
        }
    }
    let (at, bytes) = dropped.unwrap();
    eprintln!(
        "dropped after {at} rounds, {bytes} bytes of stream, in {:?}",
        started.elapsed()
    );
    assert!(
        bytes > MAX_WATCH_OUTBOX,
        "dropped after only {bytes} bytes, the outbox holds {MAX_WATCH_OUTBOX}"
    );
    // The reading watcher got W's whole journal (its last 100 lines).
    let (journal, _) = w.ctl("-j");
    assert_eq!(journal[..], seen[seen.len() - journal.len()..]);
    // The node closed the dropped watcher; the other still watches.
    let got = read_until_closed(&mut slow);
    let stream: String = seen.iter().map(|l| format!("{l}\n")).collect();
    assert!(!got.is_empty(), "the dropped watcher got nothing");
    assert!(
        stream.as_bytes().starts_with(&got),
        "the dropped watcher got what the other did not:\n{}",
        String::from_utf8_lossy(&got)
    );
    wait_until("W counts one watcher", &[&w], || {
        http_get(w.addr, "/metrics").contains("bossd_connections{kind=\"watcher\"} 1\n")
    });
}

// -w on the stdin console prints the status line, then each change.
fn stdin_watch_prints_the_stream() {
    let net = TestNet::new();
    let mut a = Node::start_with("A", net.addr(), &[], common::StdinKind::Piped);
    a.write_stdin("-w\n");
    wait_until("stdin -w printed the status", &[&a], || {
        a.stdout_text().lines().count() == 1
    });
    let a_addr = a.addr.to_string();
    let b = Node::start("B", net.addr(), &["--join", &a_addr]);
    wait_agreed(&[&a, &b], Some(&a));
    let (journal, _) = a.ctl("-j");
    wait_until("stdin -w printed the change", &[&a], || {
        a.stdout_text().lines().count() == 2
    });
    let out = a.stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("id="), "{out}");
    assert_eq!(lines[1], journal[0]);
}
