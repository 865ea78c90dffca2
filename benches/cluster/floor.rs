//! What the heartbeat traffic of an idle cluster costs on this machine
//! with no election behind it: five processes of this bench binary that
//! do nothing but what an idle bossd cluster's links do on the wire (a
//! master sends one PING-sized line to each of four followers every
//! heartbeat, each follower writes it back as it reads it), on the same
//! mio readiness loop, measured beside a bossd cluster of five in the
//! same way, and a second floor whose master is not woken by the echoes
//! but reads them when its next round is due. All run twice: placed by
//! the scheduler, and all pinned to one CPU. The difference between bossd and this floor is what bossd's
//! own work costs; what the floor costs is the kernel's and the
//! machine's price of one wakeup, one read and one write per heartbeat.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::harness::{Cluster, Extras, Sched, fresh_net, load1, median, pin, sched_of};
use crate::{Builds, HEARTBEAT_MS};

/// The environment variable that turns the bench binary into one floor
/// process: `master ADDR FOLLOWERS`, `lazy-master ADDR FOLLOWERS` or
/// `follower ADDR`.
pub const ROLE_VAR: &str = "BOSSD_BENCH_FLOOR";

/// A heartbeat line of bossd's size (docs/PROTOCOL.md's example PING).
const LINE: &[u8] = b"PING 3 73d88d856a78f3de 3140 1 12 1795551169313\n";

/// What a bossd follower sleeps for at most: a late master's round.
const FOLLOWER_WAIT: Duration = Duration::from_millis(150);

const NODES: usize = 5;

/// The floor process's loop; never returns (the bench kills it).
pub fn run_child(role: &str) -> ! {
    let words: Vec<&str> = role.split_whitespace().collect();
    let addr: SocketAddr = words[1].parse().expect("floor: an address");
    match words[0] {
        "master" => master(addr, words[2].parse().expect("floor: a count"), false),
        "lazy-master" => master(addr, words[2].parse().expect("floor: a count"), true),
        _ => follower(addr),
    }
}

/// A `lazy` master is not woken by the echoes: it reads them when its
/// next round is due, before it sends.
fn master(addr: SocketAddr, followers: usize, lazy: bool) -> ! {
    let listener = TcpListener::bind(addr).expect("floor: bind");
    println!("listening");
    let mut poll = Poll::new().expect("floor: poll");
    let mut links = Vec::with_capacity(followers);
    for i in 0..followers {
        let (s, _) = listener.accept().expect("floor: accept");
        s.set_nodelay(true).expect("floor: nodelay");
        s.set_nonblocking(true).expect("floor: nonblocking");
        let mut s = TcpStream::from_std(s);
        if !lazy {
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE)
                .expect("floor: register");
        }
        links.push(s);
    }
    println!("linked");
    let heartbeat = Duration::from_secs_f64(HEARTBEAT_MS / 1000.0);
    let mut events = Events::with_capacity(64);
    let mut buf = [0u8; 4096];
    let mut next = Instant::now() + heartbeat;
    loop {
        let now = Instant::now();
        if now >= next {
            for s in &mut links {
                if lazy {
                    drain(s, &mut buf);
                }
                let _ = s.write(LINE);
            }
            next += heartbeat;
        }
        let _ = poll.poll(&mut events, Some(next.saturating_duration_since(now)));
        for e in events.iter() {
            drain(&mut links[e.token().0], &mut buf);
        }
    }
}

fn follower(addr: SocketAddr) -> ! {
    let s = std::net::TcpStream::connect(addr).expect("floor: connect");
    s.set_nodelay(true).expect("floor: nodelay");
    s.set_nonblocking(true).expect("floor: nonblocking");
    let mut s = TcpStream::from_std(s);
    let mut poll = Poll::new().expect("floor: poll");
    poll.registry()
        .register(&mut s, Token(0), Interest::READABLE)
        .expect("floor: register");
    let mut events = Events::with_capacity(8);
    let mut buf = [0u8; 4096];
    loop {
        let _ = poll.poll(&mut events, Some(FOLLOWER_WAIT));
        if !events.is_empty() {
            let n = drain(&mut s, &mut buf);
            let _ = s.write(&buf[..n.min(buf.len())]);
        }
    }
}

/// Reads what waits, stopping at a short read as bossd does; the length
/// of the first read. A closed link ends the process.
fn drain(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    let mut first = None;
    loop {
        match s.read(buf) {
            Ok(0) => std::process::exit(0),
            Ok(n) => {
                first.get_or_insert(n);
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => std::process::exit(0),
        }
    }
    first.unwrap_or(0)
}

/// A floor process, killed and reaped when dropped.
struct FloorProc(Child);

impl FloorProc {
    fn spawn(role: String, cpu: Option<usize>) -> FloorProc {
        let exe = std::env::current_exe().expect("the bench's own path");
        let child = Command::new(exe)
            .env(ROLE_VAR, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a floor process");
        let p = FloorProc(child);
        if let Some(cpu) = cpu {
            pin(p.0.id() as i32, cpu).expect("pin a floor process");
        }
        p
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for FloorProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the floor's processes, master first, and returns them once the
/// master has every follower's connection.
fn start_floor(cpu: Option<usize>, lazy: bool) -> Vec<FloorProc> {
    let x = fresh_net();
    let addr = SocketAddr::from((Ipv4Addr::new(127, 77, x, 1), crate::harness::PORT));
    let role = if lazy { "lazy-master" } else { "master" };
    let mut master = FloorProc::spawn(format!("{role} {addr} {}", NODES - 1), cpu);
    let mut out = BufReader::new(master.0.stdout.take().expect("the master's stdout"));
    let mut ready = |what: &str| {
        let mut line = String::new();
        out.read_line(&mut line).expect("read the floor master");
        assert_eq!(line.trim(), what, "the floor's master says {what}");
    };
    ready("listening");
    let mut procs = vec![master];
    procs.extend((1..NODES).map(|_| FloorProc::spawn(format!("follower {addr}"), cpu)));
    ready("linked");
    procs
}

/// CPU per second (% of a core) and timeslices per second of each
/// process over `window`.
fn measure(pids: &[i32], window: Duration) -> Vec<(f64, f64)> {
    let before: Vec<Sched> = pids.iter().map(|&p| sched_of(p)).collect();
    let t0 = Instant::now();
    thread::sleep(window);
    let w = t0.elapsed().as_secs_f64();
    pids.iter()
        .zip(&before)
        .map(|(&p, b)| {
            let d = sched_of(p).since(b);
            (d.cpu_ns as f64 / w / 1e7, d.slices as f64 / w)
        })
        .collect()
}

/// The floor against bossd, both as placed and pinned to one CPU.
pub fn floor(builds: &Builds, secs: f64, runs: usize) {
    let window = Duration::from_secs_f64(secs);
    let mut t = builds.table(&[
        "system",
        "placement",
        "master % of a core",
        "master wakeups/s",
        "followers % (median of 4)",
        "followers wakeups/s",
        "mean % per node",
        "load",
    ]);
    let pinned_cpu = crate::harness::allowed_cpus().first().copied().unwrap_or(0);
    for _ in 0..runs {
        for cpu in [None, Some(pinned_cpu)] {
            let placement = if cpu.is_some() {
                format!("all on CPU {pinned_cpu}")
            } else {
                "by the scheduler".to_owned()
            };
            for b in builds.iter() {
                let extras = Extras {
                    cpu,
                    ..Extras::default()
                };
                let (c, master) = Cluster::settled(&b.bin, NODES, extras);
                let load = load1();
                let mut pids: Vec<i32> = vec![c.nodes[master].pid()];
                pids.extend(
                    (0..NODES)
                        .filter(|&i| i != master)
                        .map(|i| c.nodes[i].pid()),
                );
                let m = measure(&pids, window);
                builds.row(&mut t, b, row("bossd", &placement, &m, load));
            }
            for (lazy, system) in [
                (false, "floor: echo at once"),
                (true, "floor: master reads echoes at its next round"),
            ] {
                let procs = start_floor(cpu, lazy);
                let pids: Vec<i32> = procs.iter().map(FloorProc::pid).collect();
                thread::sleep(Duration::from_secs(1));
                let load = load1();
                let m = measure(&pids, window);
                let mut cells = row(system, &placement, &m, load);
                if builds.comparing() {
                    cells.insert(0, "-".to_owned());
                }
                t.row(cells);
            }
        }
    }
    t.print(&format!(
        "Idle cost per node of {NODES}: bossd against the floor of its heartbeat traffic (one PING-sized line from the master to each follower every {HEARTBEAT_MS} ms, echoed at once, on mio; /proc/PID/schedstat over {secs} s)"
    ));
}

fn row(system: &str, placement: &str, m: &[(f64, f64)], load: f64) -> Vec<String> {
    let followers = &m[1..];
    let mean = m.iter().map(|x| x.0).sum::<f64>() / m.len() as f64;
    vec![
        system.to_owned(),
        placement.to_owned(),
        format!("{:.3}", m[0].0),
        format!("{:.1}", m[0].1),
        format!("{:.3}", median(followers.iter().map(|x| x.0).collect())),
        format!("{:.1}", median(followers.iter().map(|x| x.1).collect())),
        format!("{mean:.3}"),
        format!("{load:.1}"),
    ]
}
