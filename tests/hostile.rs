//! The hostile-client suite (issue 4, docs/GUARANTEES.md, console and bad input): real `bossd`
//! processes with a shared secret, attacked over real sockets with garbage,
//! huge lines, invalid UTF-8, floods of idle connections, a slowloris, fake
//! HELLOs and master claims, wrong secrets, and replayed or injected bytes.
//! After each attack the node is alive, the master and epoch are unchanged
//! and every peer is still connected.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bossd::auth::{Done, Handshake, NONCE_LEN, Secret};
use common::{Node, TempDir, TestNet, holds_for, run_to_exit, wait_agreed, wait_until};

/// How long a property that must stay true is watched: several reconnect
/// attempts and 2 × the default 500 ms timeout.
const WATCH: Duration = Duration::from_millis(2_000);

/// How long a raw socket waits for the node before the test fails.
const READ_WAIT: Duration = Duration::from_secs(15);

const SECRET: &str = "correct horse battery staple";
const OTHER_SECRET: &str = "incorrect horse";

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Three nodes sharing a secret, agreed on A as master.
struct Cluster {
    net: TestNet,
    dir: TempDir,
    secret_file: String,
    nodes: Vec<Node>,
    master: String,
    epoch: u64,
}

impl Cluster {
    fn start(tag: &str) -> Cluster {
        let net = TestNet::new();
        let dir = TempDir::new(tag);
        let secret_file = dir.secret("secret", SECRET);
        let a = Node::start("A", net.addr(), &["--secret-file", &secret_file]);
        let join = a.addr.to_string();
        let b = Node::start(
            "B",
            net.addr(),
            &["--secret-file", &secret_file, "--join", &join],
        );
        let c = Node::start(
            "C",
            net.addr(),
            &["--secret-file", &secret_file, "--join", &join],
        );
        let st = wait_agreed(&[&a, &b, &c], Some(&a));
        Cluster {
            net,
            dir,
            secret_file,
            master: a.id(),
            epoch: st[0].epoch,
            nodes: vec![a, b, c],
        }
    }

    fn a(&self) -> &Node {
        &self.nodes[0]
    }

    fn refs(&self) -> Vec<&Node> {
        self.nodes.iter().collect()
    }

    /// After an attack: every node alive, the same master and epoch as
    /// before, and the full mesh.
    fn assert_unharmed(&mut self, after: &str) {
        for n in &mut self.nodes {
            assert!(
                n.try_exit().is_none(),
                "{} exited after {after}:\n{}",
                n.name,
                n.describe()
            );
        }
        let refs = self.refs();
        let st = wait_agreed(&refs, Some(&self.nodes[0]));
        assert_eq!(
            (st[0].master.as_deref(), st[0].epoch),
            (Some(self.master.as_str()), self.epoch),
            "the master or epoch changed after {after}"
        );
        for n in &self.nodes {
            assert!(
                !n.stderr_text().contains(SECRET),
                "{} logged the secret",
                n.name
            );
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(READ_WAIT)).unwrap();
    s
}

/// Writes what it can: the node may close the connection mid-write.
fn write_best_effort(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

/// Reads until the node closes the connection; what it said before.
/// Panics if it stays open past [`READ_WAIT`].
fn read_to_close(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A close with our bytes still unread arrives as a reset.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection stayed open ({e}); it said: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A small deterministic generator, so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Raises this process's descriptor limit to its hard limit, so a test can
/// hold many sockets; nodes started afterwards inherit it.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------------------
// Garbage, huge lines, invalid UTF-8
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, bad input: random bytes from many sockets crash nothing and change nothing.
#[test]
fn random_garbage_changes_nothing() {
    let mut cl = Cluster::start("garbage");
    let mut rng = Rng(0x5eed_b055);
    for round in 0..30 {
        let mut s = connect(cl.a().addr);
        let len = 1 + (rng.next() % 20_000) as usize;
        let mut bytes = rng.bytes(len);
        // Some rounds dress the garbage up as a handshake or a peer line.
        let prefix: &[u8] = match round % 5 {
            0 => b"AUTH bossd/1 ",
            1 => b"HELLO bossd/1 join ",
            2 => b"PROOF ",
            3 => b"-s\n",
            _ => b"",
        };
        bytes.splice(0..0, prefix.iter().copied());
        write_best_effort(&mut s, &bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        read_to_close(&mut s);
    }
    cl.assert_unharmed("random garbage");
}

// docs/GUARANTEES.md, console: a line over 4096 bytes gets one ERR line and the connection is
// closed; nothing else is affected.
#[test]
fn a_100_kb_line_is_refused_and_closed() {
    let mut cl = Cluster::start("long");
    let mut s = connect(cl.a().addr);
    let mut line = vec![b'x'; 100_000];
    line.push(b'\n');
    write_best_effort(&mut s, &line);
    let said = read_to_close(&mut s);
    assert_eq!(said, "ERR line too long\n");
    // The same from a socket that authenticated first.
    let mut s = connect(cl.a().addr);
    let mut session = authenticate(&mut s, SECRET).expect("the right secret authenticates");
    let mut sealed = String::new();
    session.seal(&"y".repeat(100_000), &mut sealed);
    write_best_effort(&mut s, sealed.as_bytes());
    let said = read_to_close(&mut s);
    assert!(said.is_empty() || said.ends_with('\n'), "{said:?}");
    cl.assert_unharmed("100 kB lines");
}

// docs/GUARANTEES.md, console: bytes that are not UTF-8 get one ERR line and the connection is
// closed.
#[test]
fn invalid_utf8_is_refused_and_closed() {
    let mut cl = Cluster::start("utf8");
    let mut s = connect(cl.a().addr);
    write_best_effort(&mut s, b"-s\n\xff\xfe\xc0 -s\n-s\n");
    let said = read_to_close(&mut s);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 3, "{said:?}");
    assert!(lines[0].starts_with("id="), "{said:?}");
    assert_eq!(lines[1], "OK");
    assert!(
        lines[2].starts_with("ERR ") && lines[2].contains("UTF-8"),
        "{said:?}"
    );
    cl.assert_unharmed("invalid UTF-8");
}

// ---------------------------------------------------------------------------
// Floods and slow clients
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, bad input and `--max-conns`: 1,500 idle connections; beyond the limit the
// newest are refused with `ERR busy`, the peers keep working, and the idle
// ones are closed after 10 × timeout.
#[test]
fn fifteen_hundred_idle_connections() {
    let limit = raise_fd_limit();
    assert!(
        limit > 1_600,
        "need 1,600 descriptors, the hard limit is {limit}"
    );
    let mut cl = Cluster::start("idle");
    let addr = cl.a().addr;
    let mut socks = Vec::new();
    for _ in 0..1_500 {
        socks.push(connect(addr));
    }
    // The newest is refused with `ERR busy`; the node says so once.
    let mut newest = socks.pop().expect("1,500 sockets");
    assert_eq!(
        read_to_close(&mut newest),
        "ERR busy\n",
        "{}",
        cl.nodes[0].stderr_text()
    );
    let a = &cl.nodes[0];
    wait_until("A logs the limit", &[a], || {
        a.logged("conn-limit-reached", &[("limit", "1024")])
    });
    // While the node is full, its peers still see it: the links were open
    // before the flood and heartbeats continue.
    let b = &cl.nodes[1];
    holds_for("B keeps both peers during the flood", WATCH, &[b], || {
        b.try_status()
            .is_ok_and(|s| s.peers == 2 && s.master.as_deref() == Some(&*cl.master))
    });
    // The idle ones are closed after 10 × 500 ms; then the node has room.
    for s in &mut socks {
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("an idle connection stayed open: {e}"),
            }
        }
    }
    drop(socks);
    wait_until("A logs the end of the flood", &[a], || {
        a.logged("conn-limit-cleared", &[])
    });
    cl.assert_unharmed("1,500 idle connections");
}

// docs/GUARANTEES.md, console: a slowloris, dribbling a line that never ends, is closed after
// 10 × timeout like any connection that sent no command, and the node
// answers everyone else meanwhile.
#[test]
fn slowloris_is_closed_and_starves_nobody() {
    let mut cl = Cluster::start("slowloris");
    let addr = cl.a().addr;
    let closed = Arc::new(AtomicBool::new(false));
    let mut dribblers = Vec::new();
    for i in 0..20 {
        let closed = Arc::clone(&closed);
        dribblers.push(thread::spawn(move || {
            let mut s = connect(addr);
            let started = Instant::now();
            let prefix: &[u8] = if i % 2 == 0 { b"-" } else { b"AUTH bossd/1 " };
            let _ = s.write_all(prefix);
            // One byte every 100 ms until the node hangs up, or 30 s.
            while started.elapsed() < Duration::from_secs(30) {
                if s.write_all(b"s").is_err() {
                    closed.store(true, Ordering::Relaxed);
                    return true;
                }
                thread::sleep(Duration::from_millis(100));
            }
            false
        }));
    }
    // Meanwhile the node answers, and the cluster holds.
    let a = &cl.nodes[0];
    holds_for("A answers -s during the slowloris", WATCH, &[a], || {
        a.try_status().is_ok_and(|s| s.role == "master")
    });
    for d in dribblers {
        assert!(
            d.join().unwrap(),
            "a slowloris connection stayed open for 30 s"
        );
    }
    assert!(closed.load(Ordering::Relaxed));
    cl.assert_unharmed("a slowloris");
}

// docs/GUARANTEES.md, bad input: a client sending faster than the node reads, and reading every
// answer (`ERR empty command`), so no outbox fills and the slow-reader
// limit never drops it, cannot stall the loop: heartbeats go on, and the
// peers never take the node for dead.
#[test]
fn a_flood_of_empty_lines_stalls_nothing() {
    let mut cl = Cluster::start("flood");
    let addr = cl.a().addr;
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for _ in 0..2 {
        let stop = Arc::clone(&stop);
        flooders.push(thread::spawn(move || {
            let mut s = connect(addr);
            let mut answers = s.try_clone().unwrap();
            thread::spawn(move || std::io::copy(&mut answers, &mut std::io::sink()));
            let chunk = vec![b'\n'; 64 * 1024];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match s.write(&chunk) {
                    Ok(n) => sent += n as u64,
                    Err(_) => break,
                }
            }
            sent
        }));
    }
    let (master, epoch) = (cl.master.clone(), cl.epoch);
    let others: Vec<&Node> = cl.nodes[1..].iter().collect();
    holds_for(
        "B and C keep A as master during the flood",
        Duration::from_secs(3),
        &others,
        || {
            others.iter().all(|n| {
                n.try_status().is_ok_and(|s| {
                    s.master.as_deref() == Some(master.as_str()) && s.epoch == epoch && s.peers == 2
                })
            })
        },
    );
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    assert!(sent > 1 << 20, "the flood sent only {sent} bytes");
    cl.assert_unharmed("a flood of empty lines");
}

// docs/GUARANTEES.md, console: blank lines are no command, so they do not lift the idle limit
// (each is answered `ERR empty command`, issue 11);
// a too-long line during a handshake still gets its ERR line.
#[test]
fn blank_lines_and_long_lines_in_a_handshake() {
    let net = TestNet::new();
    let dir = TempDir::new("blank");
    let secret = dir.secret("secret", SECRET);
    // Heartbeat 20 ms, timeout 50 ms: the idle limit is 500 ms.
    let a = Node::start(
        "A",
        net.addr(),
        &[
            "--secret-file",
            &secret,
            "--heartbeat",
            "20",
            "--timeout",
            "50",
        ],
    );
    let mut s = connect(a.addr);
    write_best_effort(&mut s, b"\n  \n\r\n");
    assert_eq!(
        read_to_close(&mut s),
        "ERR empty command\n".repeat(3),
        "answered, then closed after the idle limit"
    );
    let mut s = connect(a.addr);
    write_best_effort(
        &mut s,
        format!("AUTH bossd/1 {} {}\n", "11".repeat(NONCE_LEN), a.addr).as_bytes(),
    );
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("AUTH bossd/1 "), "{line:?}");
    write_best_effort(&mut s, &[b'z'; 5000]);
    write_best_effort(&mut s, b"\n");
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert_eq!(rest, "ERR line too long\n");
}

// docs/GUARANTEES.md, bad input: out of file descriptors, accepting pauses (said once), nothing
// spins, and the node accepts again when descriptors free.
#[test]
fn out_of_descriptors_pauses_accepting_once() {
    let net = TestNet::new();
    let a = Node::start_with_fd_limit("A", net.addr(), &[], 40);
    let mut socks = Vec::new();
    for _ in 0..100 {
        socks.push(connect(a.addr));
    }
    wait_until("A pauses accepting", &[&a], || {
        a.logged("accept-paused", &[])
    });
    let before = a.cpu_time();
    thread::sleep(Duration::from_secs(1));
    let used = a.cpu_time().saturating_sub(before);
    assert!(
        used < Duration::from_millis(500),
        "A spins while paused: {used:?}"
    );
    drop(socks);
    wait_until("A answers again", &[&a], || a.try_status().is_ok());
    let count = |name: &str| a.events().iter().filter(|e| e.is(name, &[])).count();
    // Answering comes before the last waiting connection is taken: the
    // resumption is logged once the backlog is drained.
    wait_until("A logs that it accepts again", &[&a], || {
        count("accept-resumed") >= 1
    });
    assert_eq!(count("accept-paused"), 1, "{}", a.stderr_text());
}

// ---------------------------------------------------------------------------
// Fake peers and wrong secrets
// ---------------------------------------------------------------------------

/// A HELLO a node started at the dawn of time would send: under `oldest`
/// it would win every election.
fn fake_hello(addr: SocketAddr) -> String {
    format!("HELLO bossd/1 join {addr} 1 00000000deadbeef 0 2 0 oldest\n")
}

// docs/GUARANTEES.md, bad input: fake HELLOs and master claims from sockets that did not
// authenticate are refused; the master does not change.
#[test]
fn fake_hello_and_master_claims_are_refused() {
    let mut cl = Cluster::start("fake");
    let a = cl.a().addr;
    let fake_addr = cl.net.addr();
    // A HELLO that would win the election.
    let mut s = connect(a);
    write_best_effort(&mut s, fake_hello(fake_addr).as_bytes());
    let said = read_to_close(&mut s);
    assert_eq!(said, "REFUSE authentication required\n");
    // The same followed by a master claim, in one write.
    let mut s = connect(a);
    let claim = format!(
        "{}STATE master 999999 {fake_addr}\nLEAVE\n",
        fake_hello(fake_addr)
    );
    write_best_effort(&mut s, claim.as_bytes());
    assert_eq!(read_to_close(&mut s), "REFUSE authentication required\n");
    // A master claim without HELLO is no console command.
    let mut s = connect(a);
    write_best_effort(
        &mut s,
        format!("STATE master 999999 {fake_addr}\n").as_bytes(),
    );
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "ERR unknown command\n");
    // Unauthenticated mutating commands are not permitted; reads are.
    let mut s = connect(a);
    write_best_effort(
        &mut s,
        format!(
            "-c {} {}\n-msg hi\n-q\n-m\n",
            fake_addr.ip(),
            fake_addr.port()
        )
        .as_bytes(),
    );
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let said = read_to_close(&mut s);
    assert_eq!(
        said,
        "ERR not permitted\nERR not permitted\nERR not permitted\ntrue\nOK\n"
    );
    // Lines that look sealed but were never authenticated are console input.
    let mut s = connect(a);
    write_best_effort(
        &mut s,
        format!("{} STATE master 9 {fake_addr}\n", "0".repeat(32)).as_bytes(),
    );
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "ERR unknown command\n");
    // A fake AUTH answer (a proof without the secret).
    let mut s = connect(a);
    let nonce = "11".repeat(NONCE_LEN);
    write_best_effort(&mut s, format!("AUTH bossd/1 {nonce} {a}\n").as_bytes());
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("AUTH bossd/1 "), "{line:?}");
    write_best_effort(&mut s, format!("PROOF {}\n", "ab".repeat(32)).as_bytes());
    let rest = read_to_close(&mut s);
    assert_eq!(rest, "REFUSE wrong secret\n");
    cl.assert_unharmed("fake HELLOs and master claims");
    let (a, log) = (cl.a(), cl.a().stderr_text());
    assert!(
        a.logged(
            "auth-failed",
            &[(
                "reason",
                "HELLO without authentication (does it lack the secret?)"
            )]
        ),
        "{log}"
    );
    assert!(
        a.logged("auth-failed", &[("reason", "wrong secret")]),
        "{log}"
    );
}

// Issue 4: two nodes with different secrets never join, and both say why;
// a node without a secret is refused too.
#[test]
fn wrong_secret_and_no_secret_peers_never_join() {
    let mut cl = Cluster::start("wrong");
    let other = cl.dir.secret("other", OTHER_SECRET);
    let join = cl.a().addr.to_string();
    let d = Node::start(
        "D",
        cl.net.addr(),
        &["--secret-file", &other, "--join", &join],
    );
    let e = Node::start("E", cl.net.addr(), &["--join", &join]);
    // D also tries the other way round, with an authenticated `-c`.
    let out = run_to_exit(&[
        "ctl",
        &d.addr.ip().to_string(),
        &d.addr.port().to_string(),
        "--secret-file",
        &other,
        "-c",
        &cl.nodes[1].addr.ip().to_string(),
        &cl.nodes[1].addr.port().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let mut all = cl.refs();
    all.push(&d);
    all.push(&e);
    holds_for("D and E stay out", WATCH, &all, || {
        d.try_status().is_ok_and(|s| s.peers == 0)
            && e.try_status().is_ok_and(|s| s.peers == 0)
            && cl.a().try_status().is_ok_and(|s| s.peers == 2)
    });
    wait_until("both sides log why", &all, || {
        let a = cl.a();
        d.logged("auth-failed", &[("reason", "wrong secret")])
            && a.logged("auth-refused-by-peer", &[("reason", "wrong secret")])
            && e.logged("refused-by-peer", &[("reason", "authentication required")])
            && a.events().iter().any(|ev| {
                ev.name == "auth-failed"
                    && ev
                        .field("reason")
                        .is_some_and(|r| r.starts_with("HELLO without authentication"))
            })
    });
    for n in [&d, &e] {
        assert!(!n.stderr_text().contains(SECRET) && !n.stderr_text().contains(OTHER_SECRET));
    }
    drop((d, e));
    cl.assert_unharmed("wrong-secret peers");
}

// ---------------------------------------------------------------------------
// Replayed and injected bytes
// ---------------------------------------------------------------------------

/// Runs the dialer's side of the handshake on `s` with `secret`, meaning
/// the node at the other end; returns the session and the bytes it sent.
fn authenticate_recorded(
    s: &mut TcpStream,
    secret: &str,
) -> Result<(bossd::auth::Session, String), String> {
    let secret = Secret::new(secret.as_bytes()).unwrap();
    let (mut hs, first) = Handshake::dial([7; NONCE_LEN], s.peer_addr().unwrap());
    let mut sent = format!("{first}\n");
    s.write_all(sent.as_bytes()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    match hs.step(&secret, line.trim_end()) {
        Ok(Done {
            reply: Some(proof),
            session,
        }) => {
            s.write_all(format!("{proof}\n").as_bytes()).unwrap();
            sent.push_str(&format!("{proof}\n"));
            Ok((session, sent))
        }
        Ok(_) => Err("handshake not done".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// [`authenticate_recorded`] without the record.
fn authenticate(s: &mut TcpStream, secret: &str) -> Result<bossd::auth::Session, String> {
    authenticate_recorded(s, secret).map(|(session, _)| session)
}

/// A TCP relay in front of a node: it forwards both ways, unchanged.
struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(listen: SocketAddr, node: SocketAddr) -> Relay {
        let listener = TcpListener::bind(listen).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(upstream) = TcpStream::connect(node) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap()),
                    (client, upstream),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr: listen, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// Issue 4: a recorded handshake replayed on a new connection is refused
// (the node draws a fresh nonce each time); lines forged on or replayed
// into an authenticated connection close it; and a session meant for one
// node cannot be relayed to another. The master never changes.
#[test]
fn replayed_relayed_and_injected_bytes_are_rejected() {
    let mut cl = Cluster::start("replay");
    let a = cl.a().addr;

    // 1. A genuine session, recorded, then replayed on a fresh connection.
    let mut s = connect(a);
    let (mut session, mut recorded) =
        authenticate_recorded(&mut s, SECRET).expect("the right secret authenticates");
    let mut sealed = String::new();
    session.seal("-m", &mut sealed);
    write_best_effort(&mut s, sealed.as_bytes());
    recorded.push_str(&sealed);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(session.open(line.trim_end()), Ok("true"));
    drop((r, s));
    let mut s = connect(a);
    write_best_effort(&mut s, recorded.as_bytes());
    let said = read_to_close(&mut s);
    assert!(said.starts_with("AUTH bossd/1 "), "{said:?}");
    assert!(said.ends_with("REFUSE wrong secret\n"), "{said:?}");
    cl.assert_unharmed("a replayed handshake");

    // 2. On an authenticated connection: a forged master claim without a
    // valid tag, and a sealed command sent twice.
    let fake = cl.net.addr();
    let mut s = connect(a);
    let mut session = authenticate(&mut s, SECRET).expect("the right secret authenticates");
    let mut sealed = String::new();
    session.seal("-m", &mut sealed);
    write_best_effort(&mut s, sealed.as_bytes());
    write_best_effort(
        &mut s,
        format!("{} STATE master 999999 {fake}\n", "ab".repeat(16)).as_bytes(),
    );
    let said = read_to_close(&mut s);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 2, "true, OK, then closed: {said:?}");
    assert_eq!(session.open(lines[0]), Ok("true"));
    assert_eq!(session.open(lines[1]), Ok("OK"));
    let mut s = connect(a);
    let mut session = authenticate(&mut s, SECRET).expect("the right secret authenticates");
    let mut sealed = String::new();
    session.seal("-m", &mut sealed);
    write_best_effort(&mut s, format!("{sealed}{sealed}").as_bytes());
    let said = read_to_close(&mut s);
    assert_eq!(
        said.lines().count(),
        2,
        "one answer (true, OK), then closed: {said:?}"
    );
    wait_until("A logs the replayed line", &cl.refs(), || {
        cl.a().events().iter().any(|e| e.name == "line-auth-failed")
    });
    cl.assert_unharmed("forged and replayed lines");

    // 3. A relay: a peer joining through it, and ctl through it, meant the
    // relay's address, so A refuses them though they hold the secret.
    let relay = Relay::start(cl.net.addr(), a);
    let d = Node::start(
        "D",
        cl.net.addr(),
        &[
            "--secret-file",
            &cl.secret_file,
            "--join",
            &relay.addr.to_string(),
        ],
    );
    let (ip, port) = (relay.addr.ip().to_string(), relay.addr.port().to_string());
    let out = run_to_exit(&["ctl", &ip, &port, "--secret-file", &cl.secret_file, "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("wrong node"), "{}", out.stderr);
    let mut all = cl.refs();
    all.push(&d);
    wait_until("A refuses the relayed session", &all, || {
        cl.a().events().iter().any(|e| {
            e.name == "auth-failed"
                && e.field("reason")
                    .is_some_and(|r| r == format!("wrong node: meant {}, this is {a}", relay.addr))
        })
    });
    holds_for("D stays out", WATCH, &all, || {
        d.try_status().is_ok_and(|s| s.peers == 0)
    });
    drop(d);
    cl.assert_unharmed("a relay");
}

// ---------------------------------------------------------------------------
// bossd ctl with a secret
// ---------------------------------------------------------------------------

// Issue 4: `bossd ctl --secret-file` authenticates and may mutate; exit 0
// on OK, 1 on ERR or a failure to connect or authenticate, saying why.
#[test]
fn ctl_with_and_without_the_secret() {
    let mut cl = Cluster::start("ctl");
    let other = cl.dir.secret("other", OTHER_SECRET);
    let a = cl.a().addr;
    let (ip, port) = (a.ip().to_string(), a.port().to_string());
    let run = |extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["ctl", ip.as_str(), port.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(cmd);
        run_to_exit(&args)
    };
    let out = run(&[], &["-s"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with(&format!("id={a} role=master")));
    let out = run(&[], &["-msg", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("not permitted"), "{}", out.stderr);
    let out = run(&["--secret-file", &cl.secret_file], &["-msg", "hi"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "sent to 2 peers\n");
    let out = run(&["--secret-file", &cl.secret_file], &["-bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("unknown command"), "{}", out.stderr);
    let out = run(&["--secret-file", &other], &["-s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("another secret"), "{}", out.stderr);
    assert!(!out.stderr.contains(OTHER_SECRET));
    let missing = cl.dir.0.join("missing").to_string_lossy().into_owned();
    let out = run(&["--secret-file", &missing], &["-s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("cannot read secret file"),
        "{}",
        out.stderr
    );
    // A node without a secret says so to a client that brings one.
    let lone = Node::start("L", cl.net.addr(), &[]);
    let out = run_to_exit(&[
        "ctl",
        &lone.addr.ip().to_string(),
        &lone.addr.port().to_string(),
        "--secret-file",
        &cl.secret_file,
        "-s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("this node has no secret"),
        "{}",
        out.stderr
    );
    drop(lone);
    cl.assert_unharmed("ctl");
}

// Issue 4: an empty or missing secret file stops the start with one line;
// one readable by others starts with a warning.
#[test]
fn secret_file_start_up_rules() {
    let net = TestNet::new();
    let dir = TempDir::new("startup");
    let empty = dir.0.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.0.join("missing");
    for (path, says) in [(&empty, "is empty"), (&missing, "cannot read secret file")] {
        let addr = net.addr();
        let out = run_to_exit(&[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            "--secret-file",
            &path.to_string_lossy(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(says), "{}", out.stderr);
    }
    let open = dir.secret("open", SECRET);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let n = Node::start("A", net.addr(), &["--secret-file", &open]);
    wait_until("a warning about the mode", &[&n], || {
        n.events().iter().any(|e| {
            e.name == "secret-file-warning"
                && e.field("reason").is_some_and(|r| r.contains("chmod 600"))
        })
    });
    assert!(!n.stderr_text().contains(SECRET));
}
