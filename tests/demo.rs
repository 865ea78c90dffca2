//! `bossd demo` run as a newcomer runs it: the real binary, which starts
//! its own nodes on 127.0.0.1. Checked: what it prints (a master, then a
//! different master with a failover time), its exit codes, and that no
//! node outlives it, also when it is interrupted or killed.
//!
//! Each demo searches 127.0.0.1 for free ports from 7000 up, so two demos
//! started at once could pick the same ones: the tests that run a demo
//! take [`ONE_DEMO`] first. (Other test binaries use other addresses.)

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::ops::RangeInclusive;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{BOSSD, DEADLINE, Status, describe_exit};

/// Held by each test that runs a demo, so that demos never overlap.
static ONE_DEMO: Mutex<()> = Mutex::new(());

fn one_demo() -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock does not spoil the others.
    ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner())
}

/// One `bossd demo` process, killed (SIGKILL, then reaped) when dropped;
/// its nodes then die too, by `PR_SET_PDEATHSIG`.
struct Demo {
    args: Vec<String>,
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut child = Command::new(BOSSD)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BOSSD}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let buf = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            *buf.lock().expect("stderr buffer") = text;
        });
        Demo {
            args,
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            exit: None,
        }
    }

    /// The next line of stdout; panics at end of file or after [`DEADLINE`].
    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => {
                self.stdout.push(line.clone());
                line
            }
            Err(e) => panic!(
                "bossd {}: no further line ({e:?}) after:\n{}",
                self.args.join(" "),
                self.stdout.join("\n")
            ),
        }
    }

    /// Waits up to [`DEADLINE`] for the demo to exit and returns its exit
    /// status, all of stdout and all of stderr.
    fn finish(&mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "bossd {} did not exit within {DEADLINE:?}; stdout so far:\n{}",
                self.args.join(" "),
                self.stdout.join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        };
        self.exit = Some(status);
        // The reader thread ends at end of file, right after the exit.
        loop {
            match self.lines.recv_timeout(Duration::from_secs(5)) {
                Ok(line) => self.stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("stdout stays open after the exit"),
            }
        }
        // So does the stderr thread; give it the same time.
        let until = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        let stderr = self.stderr.lock().expect("stderr buffer").clone();
        (status, self.stdout.join("\n"), stderr)
    }

    fn signal(&self, sig: i32) {
        if self.exit.is_none() {
            // SAFETY: kill(2) on our own unreaped child, whose pid cannot
            // have been reused.
            unsafe {
                libc::kill(self.child.id() as i32, sig);
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The ports of the first line, `starting N nodes on 127.0.0.1:A..B ...`.
fn ports_of(first_line: &str, n: u16) -> RangeInclusive<u16> {
    let parse = || -> Option<RangeInclusive<u16>> {
        let rest = first_line.strip_prefix(&format!("starting {n} nodes on 127.0.0.1:"))?;
        let (a, rest) = rest.split_once("..")?;
        let b = rest.split(' ').next()?;
        Some(a.parse().ok()?..=b.parse().ok()?)
    };
    let ports = parse().unwrap_or_else(|| panic!("not a starting line: {first_line:?}"));
    assert_eq!(ports.len(), usize::from(n), "{first_line:?}");
    ports
}

/// Node processes still running on these ports, `bossd 127.0.0.1 PORT
/// --no-console ...`, found in /proc: their pids and command lines.
fn nodes_alive(ports: &RangeInclusive<u16>) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_node = args.len() > 3
            && args[0].ends_with("bossd")
            && args[1] == "127.0.0.1"
            && args[2].parse().is_ok_and(|p| ports.contains(&p))
            && args.iter().any(|a| a == "--no-console");
        let pid = entry.file_name().to_string_lossy().parse();
        if let (true, Ok(pid)) = (is_node, pid) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// Panics unless every node of the demo is gone within [`DEADLINE`]: no
/// process left, and nothing listening on its ports. Nodes left behind are
/// killed before the panic, so a failing test leaves nothing either.
fn assert_nodes_gone(ports: &RangeInclusive<u16>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let alive = nodes_alive(ports);
        let listening: Vec<u16> = ports
            .clone()
            .filter(|&p| {
                let addr = SocketAddr::from(([127, 0, 0, 1], p));
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            })
            .collect();
        if alive.is_empty() && listening.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for (pid, _) in &alive {
                // SAFETY: kill(2) on a process that runs our binary with
                // the demo's arguments, seen in /proc a moment ago.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                }
            }
            panic!("left behind: {alive:?}; still listening on {listening:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `WORD is master (epoch E)` in `line` after `prefix`: the master and E.
fn master_in(line: &str, prefix: &str) -> (String, u64, String) {
    let parse = || -> Option<(String, u64, String)> {
        let rest = line.strip_prefix(prefix)?;
        let (master, rest) = rest.split_once(" is master (epoch ")?;
        let (epoch, rest) = rest.split_once(')')?;
        Some((master.to_owned(), epoch.parse().ok()?, rest.to_owned()))
    };
    parse().unwrap_or_else(|| panic!("expected {prefix:?}WHO is master (epoch E): {line:?}"))
}

/// The `  id=...` lines that follow, parsed strictly (docs/GUARANTEES.md, status line).
fn status_lines(demo: &mut Demo, n: usize) -> Vec<Status> {
    (0..n)
        .map(|_| {
            let line = demo.next_line();
            let status = line
                .strip_prefix("  ")
                .unwrap_or_else(|| panic!("expected an indented status line: {line:?}"));
            Status::parse(status).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

// The demo shows guarantees 1 and 3 (docs/GUARANTEES.md; three nodes agree on one master
// in a full mesh), then 4 and 9 (after the master's SIGKILL the survivors
// agree on another master with a larger epoch), and stops every node.
#[test]
fn demo_shows_an_election_and_a_failover_and_leaves_nothing_behind() {
    let _one = one_demo();
    let mut demo = Demo::start(&["demo", "3"]);
    let ports = ports_of(&demo.next_line(), 3);
    let ids: Vec<String> = ports.clone().map(|p| format!("127.0.0.1:{p}")).collect();

    let (first, epoch, rest) = master_in(&demo.next_line(), "elected: ");
    assert_eq!(rest, "");
    assert!(ids.contains(&first), "{first} is one of {ids:?}");
    let before = status_lines(&mut demo, 3);
    for (s, id) in before.iter().zip(&ids) {
        assert_eq!(&s.id, id, "one line per node, in port order");
        assert_eq!(s.master.as_deref(), Some(first.as_str()), "{}", s.line);
        assert_eq!((s.epoch, s.peers), (epoch, 2), "{}", s.line);
        assert_eq!(s.role, if *id == first { "master" } else { "follower" });
    }

    assert_eq!(
        demo.next_line(),
        format!("killing the master {first} (SIGKILL)")
    );
    let (next, new_epoch, rest) = master_in(&demo.next_line(), "failover: ");
    assert_ne!(next, first, "a different master after the kill");
    assert!(ids.contains(&next), "{next} is one of {ids:?}");
    assert!(new_epoch > epoch, "epochs grow (guarantee 9)");
    let ms = rest
        .strip_prefix(" after ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("expected ' after T ms', got {rest:?}"));
    assert!(ms.is_finite() && ms >= 0.0, "a failover time: {ms}");
    let after = status_lines(&mut demo, 2);
    assert!(after.iter().all(|s| s.id != first), "only survivors");
    assert!(
        after
            .iter()
            .all(|s| s.master.as_deref() == Some(next.as_str()) && s.epoch == new_epoch),
        "{after:?}"
    );

    assert_eq!(demo.next_line(), "stopped all nodes");
    let (status, stdout, stderr) = demo.finish();
    assert_eq!(
        status.code(),
        Some(0),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        describe_exit(status)
    );
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    assert_eq!(stdout.lines().count(), 10, "nothing more: {stdout}");
    assert_nodes_gone(&ports);
}

// docs/GUARANTEES.md, running bossd: a usage error exits 2 and says why in clap's words; the demo
// runs 3 to 20 nodes.
#[test]
fn demo_usage_errors_exit_2() {
    for (args, why) in [
        (
            &["demo", "1"][..],
            "error: invalid value '1' for '[N]': the demo runs 3 to 20 nodes",
        ),
        (&["demo", "2"][..], "error: invalid value '2'"),
        (&["demo", "21"][..], "error: invalid value '21'"),
        (&["demo", "x"][..], "error: invalid value 'x'"),
        (&["demo", "3", "4"][..], "error: unexpected argument '4'"),
        (
            &["demo", "--bogus"][..],
            "error: unexpected argument '--bogus'",
        ),
    ] {
        let (status, stdout, stderr) = Demo::start(args).finish();
        assert_eq!(status.code(), Some(2), "bossd {args:?}: {stderr}");
        assert!(stdout.is_empty(), "bossd {args:?} starts nothing: {stdout}");
        assert!(stderr.starts_with(why), "bossd {args:?} says why: {stderr}");
    }
}

// `bossd --help` points to the demo, and `bossd demo --help` explains it.
#[test]
fn help_mentions_the_demo() {
    let mut help = Demo::start(&["--help"]);
    let (status, stdout, _) = help.finish();
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("bossd demo [N]"), "{stdout}");

    let mut help = Demo::start(&["demo", "--help"]);
    let (status, stdout, _) = help.finish();
    assert_eq!(status.code(), Some(0));
    for word in ["Usage: bossd demo [N]", "SIGKILL", "3 to 20", "Exit codes"] {
        assert!(stdout.contains(word), "{word:?} in:\n{stdout}");
    }
}

// Ctrl-C or SIGTERM mid-way: the demo stops its nodes, says so in one
// line and exits 1. Twenty nodes start one after the other, so a signal
// sent as soon as the first line appears arrives while they start.
#[test]
fn interrupted_demo_stops_its_nodes() {
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let _one = one_demo();
        let mut demo = Demo::start(&["demo", "20"]);
        let ports = ports_of(&demo.next_line(), 20);
        demo.signal(sig);
        let (status, stdout, stderr) = demo.finish();
        assert_eq!(
            status.code(),
            Some(1),
            "{name}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            describe_exit(status)
        );
        assert_eq!(stderr, "bossd demo: interrupted\n", "{name}");
        assert_nodes_gone(&ports);
    }
}

// A demo killed outright cannot clean up: its nodes die with it
// (PR_SET_PDEATHSIG, Linux). Twenty nodes start one after the other, so
// the demo is killed while it starts them.
#[test]
fn killed_demo_takes_its_nodes_along() {
    let _one = one_demo();
    let mut demo = Demo::start(&["demo", "20"]);
    let ports = ports_of(&demo.next_line(), 20);
    let deadline = Instant::now() + DEADLINE;
    while nodes_alive(&ports).is_empty() {
        assert!(Instant::now() < deadline, "no node started");
        thread::sleep(Duration::from_millis(1));
    }
    demo.signal(libc::SIGKILL);
    let (status, stdout, _) = demo.finish();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed while it ran: {}\nstdout:\n{stdout}",
        describe_exit(status)
    );
    assert_nodes_gone(&ports);
}

// Issue 11: `bossd demo 2>&1 | head -2` closes the demo's stdout and stderr
// after two lines. Writing to a closed pipe ends the demo like any error:
// it stops its nodes and exits 1, without a panic or an abort.
#[test]
fn demo_into_a_pipe_closed_early_stops_cleanly() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let _one = one_demo();
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills two descriptors, which OwnedFd then owns.
    // Close-on-exec, so the demo does not inherit the read end, which
    // would keep the pipe open.
    let (reader, writer) = unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    // One pipe for stdout and stderr, as `2>&1` makes it.
    let stderr = writer.try_clone().expect("dup the pipe");
    let mut child = Command::new(BOSSD)
        .args(["demo", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start the demo");
    // The write ends went to the child; `Command` closed ours.
    let mut reader = std::fs::File::from(reader);
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while seen.iter().filter(|&&b| b == b'\n').count() < 2 {
        match reader.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            other => panic!("the demo's output ended early ({other:?}): {seen:?}"),
        }
    }
    // `head -2` exits here.
    drop(reader);
    let seen = String::from_utf8_lossy(&seen).into_owned();
    let ports = ports_of(seen.lines().next().unwrap_or_default(), 3);
    let status = common::wait_for_exit(&mut child, || {
        format!("the demo did not end after its pipe closed:\n{seen}")
    });
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "the demo must end with 0 or 1 when its pipe closes, not {}:\n{seen}",
        describe_exit(status)
    );
    assert_nodes_gone(&ports);
}
