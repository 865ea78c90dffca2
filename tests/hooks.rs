//! Real-process tests of the role-change hook (docs/GUARANTEES.md, hook): actual `bossd`
//! binaries on loopback, each given `--notify` with a command that appends
//! one line per call to a file of its own, which the tests compare with
//! the node's `-j` journal.
//!
//! Conditions are polled with generous deadlines; nothing asserts how long
//! anything took. Where a test must know that a hook is still running, the
//! hook waits for a file the test creates instead of sleeping.

mod common;

use common::{DEADLINE, Node, Status, TempDir, TestNet, wait_agreed, wait_until};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The command the issue names: one line per call, every variable.
fn record_cmd(file: &Path) -> String {
    format!(
        "echo \"$BOSSD_PREV_ROLE $BOSSD_ROLE $BOSSD_MASTER $BOSSD_EPOCH $BOSSD_ID $BOSSD_CAUSE\" >> '{}'",
        file.display()
    )
}

/// One hook call as the file records it, or one journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    prev: String,
    role: String,
    master: String,
    epoch: u64,
    id: String,
    cause: String,
}

impl Call {
    fn parse_record(line: &str) -> Call {
        let w: Vec<&str> = line.split(' ').collect();
        assert_eq!(w.len(), 6, "a hook line with six values: {line:?}");
        Call {
            prev: w[0].into(),
            role: w[1].into(),
            master: w[2].into(),
            epoch: w[3].parse().expect("BOSSD_EPOCH is a number"),
            id: w[4].into(),
            cause: w[5].into(),
        }
    }

    /// `TIME epoch=E FROM->TO master=M cause=C`, the `-j` line.
    fn parse_journal(id: &str, line: &str) -> Call {
        let w: Vec<&str> = line.split(' ').collect();
        assert_eq!(w.len(), 5, "a journal line: {line:?}");
        let value = |word: &str, key: &str| -> String {
            word.strip_prefix(key)
                .unwrap_or_else(|| panic!("{key} in {line:?}"))
                .to_owned()
        };
        let (prev, role) = w[2].split_once("->").expect("FROM->TO");
        Call {
            prev: prev.into(),
            role: role.into(),
            master: value(w[3], "master="),
            epoch: value(w[1], "epoch=").parse().expect("epoch"),
            id: id.into(),
            cause: value(w[4], "cause="),
        }
    }
}

/// The calls recorded so far; none before the first.
fn calls(file: &Path) -> Vec<Call> {
    match std::fs::read_to_string(file) {
        Ok(text) => text.lines().map(Call::parse_record).collect(),
        Err(_) => Vec::new(),
    }
}

/// The node's journal as calls.
fn journal(node: &Node) -> Vec<Call> {
    let (lines, result) = node.ctl("-j");
    result.expect("-j answers OK");
    lines
        .iter()
        .map(|l| Call::parse_journal(&node.id(), l))
        .collect()
}

/// Waits until the file records exactly the node's journal, and returns it.
fn wait_recorded(node: &Node, file: &Path, others: &[&Node]) -> Vec<Call> {
    let mut last = Vec::new();
    let what = format!("{}'s hook calls match its journal", node.name);
    let mut nodes = vec![node];
    nodes.extend_from_slice(others);
    wait_until(&what, &nodes, || {
        let j = journal(node);
        let c = calls(file);
        last = c;
        last == j
    });
    last
}

/// docs/GUARANTEES.md, hook order: each call starts from the role the one before announced
/// (the first from `none`), epochs never go back, and every call names
/// the node.
fn check_chain(node: &str, id: &str, calls: &[Call]) {
    let mut prev = "none".to_owned();
    let mut epoch = 0;
    for c in calls {
        assert_eq!(c.prev, prev, "{node}: a call skipped a change: {calls:#?}");
        assert!(c.epoch >= epoch, "{node}: the epoch went back: {calls:#?}");
        assert_eq!(c.id, id, "{node}: BOSSD_ID");
        assert_eq!(
            c.master == "-",
            c.role == "none",
            "{node}: BOSSD_MASTER is - exactly when the role is none: {c:?}"
        );
        prev = c.role.clone();
        epoch = c.epoch;
    }
}

/// Starts a node recording its hook calls in `dir/name`.
fn start_recorded(
    name: &str,
    net: &TestNet,
    dir: &TempDir,
    join: Option<&Node>,
) -> (Node, PathBuf) {
    let file = dir.file(name);
    let cmd = record_cmd(&file);
    let join = join.map(|n| n.addr.to_string());
    let mut args = vec!["--notify", cmd.as_str()];
    if let Some(j) = &join {
        args.extend(["--join", j.as_str()]);
    }
    (Node::start(name, net.addr(), &args), file)
}

/// Shell code that waits until `file` exists. It gives up when the test's
/// directory is gone, so a hook of a failed or finished test does not
/// outlive it: the harness kills the nodes, not their hooks.
fn wait_for(dir: &TempDir, file: &Path) -> String {
    format!(
        "while [ ! -e '{f}' ] && [ -d '{d}' ]; do sleep 0.05; done",
        f = file.display(),
        d = dir.0.display()
    )
}

fn role_is(node: &Node, role: &str) -> bool {
    node.try_status().is_ok_and(|s: Status| s.role == role)
}

// ---------------------------------------------------------------------------
// Every change, in order, through join, failover, freezing and healing
// ---------------------------------------------------------------------------

// The hook (docs/GUARANTEES.md) through joining, guarantee 4 (crash failover), guarantee 5
// (a frozen master, deposed, runs its hook too), guarantee 7 (healing) and
// guarantee 6 (a leave announces the final change to none).
#[test]
fn every_role_change_runs_the_hook_in_order() {
    let net = TestNet::new();
    let dir = TempDir::new("every");

    // Join: the oldest becomes master, the others follow.
    let (mut a, fa) = start_recorded("A", &net, &dir, None);
    let (b, fb) = start_recorded("B", &net, &dir, Some(&a));
    wait_agreed(&[&a, &b], Some(&a));
    let (c, fc) = start_recorded("C", &net, &dir, Some(&a));
    let st = wait_agreed(&[&a, &b, &c], Some(&a));
    let e1 = st[0].epoch;
    let all = [&a, &b, &c];
    let joined = |prev: &str, role: &str, node: &Node| Call {
        prev: prev.into(),
        role: role.into(),
        master: a.id(),
        epoch: e1,
        id: node.id(),
        cause: journal(node)[0].cause.clone(),
    };
    assert_eq!(wait_recorded(&a, &fa, &all), [joined("none", "master", &a)]);
    assert_eq!(
        wait_recorded(&b, &fb, &all),
        [joined("none", "follower", &b)]
    );
    assert_eq!(
        wait_recorded(&c, &fc, &all),
        [joined("none", "follower", &c)]
    );
    let a_calls = calls(&fa);
    let a_id = a.id();

    // Crash failover: the survivors record the new master and epoch.
    a.sigkill();
    let st = wait_agreed(&[&b, &c], Some(&b));
    let e2 = st[0].epoch;
    assert!(e2 > e1);
    let b_calls = wait_recorded(&b, &fb, &[&c]);
    let last = b_calls.last().expect("B recorded the failover");
    assert_eq!((last.role.as_str(), last.epoch), ("master", e2));
    assert_eq!(last.master, b.id());
    let c_calls = wait_recorded(&c, &fc, &[&b]);
    let last = c_calls.last().expect("C recorded the failover");
    assert_eq!((last.role.as_str(), last.epoch), ("follower", e2));
    assert_eq!(last.master, b.id());
    drop(a);

    // Freeze the master past the timeout: C loses it; thawed, B finds its
    // peer gone and records its own deposition before it rejoins.
    b.sigstop();
    wait_until("C gives up its frozen master", &[&c], || {
        role_is(&c, "none")
    });
    b.sigcont();
    let st = wait_agreed(&[&b, &c], Some(&b));
    let e3 = st[0].epoch;
    assert!(e3 > e2);
    let b_calls = wait_recorded(&b, &fb, &[&c]);
    let deposed = b_calls
        .iter()
        .position(|x| x.prev == "master" && x.role == "none" && x.epoch == e2)
        .unwrap_or_else(|| panic!("B's hook recorded no deposition at epoch {e2}: {b_calls:#?}"));
    assert!(
        b_calls[deposed + 1..]
            .iter()
            .any(|x| x.role == "master" && x.epoch == e3),
        "B's hook recorded its new mastership after the deposition: {b_calls:#?}"
    );
    wait_recorded(&c, &fc, &[&b]);

    // Healing: A comes back as a new instance and follows.
    let (a2, fa2) = start_recorded("A2", &net, &dir, Some(&c));
    let st = wait_agreed(&[&b, &c, &a2], Some(&b));
    assert_eq!(st[0].epoch, e3, "a follower joining needs no new epoch");
    let a2_calls = wait_recorded(&a2, &fa2, &[&b, &c]);
    assert_eq!(
        a2_calls.last().map(|x| (x.role.as_str(), x.epoch)),
        Some(("follower", e3))
    );

    // Leave: C's last hook announces its change to none. It normally ends
    // before C exits; on a loaded machine it may finish just after.
    let mut c_calls = wait_recorded(&c, &fc, &[&b, &a2]);
    let (c_id, c_name) = (c.id(), c.name.clone());
    let mut c = c;
    c.sigterm();
    let exit = c.wait_exit(DEADLINE).expect("C exits after SIGTERM");
    assert!(exit.success(), "a graceful leave exits 0: {exit:?}");
    c_calls.push(Call {
        prev: "follower".into(),
        role: "none".into(),
        master: "-".into(),
        epoch: e3,
        id: c_id.clone(),
        cause: "leave".into(),
    });
    wait_until("C's last hook announced its leave", &[&b], || {
        calls(&fc) == c_calls
    });
    assert!(
        c.logged("hook-exited", &[("status", "0")]),
        "hooks are logged with their exit status:\n{}",
        c.stderr_text()
    );
    wait_agreed(&[&b, &a2], Some(&b));
    let b_calls = wait_recorded(&b, &fb, &[&a2]);
    let a2_calls = wait_recorded(&a2, &fa2, &[&b]);

    check_chain("A", &a_id, &a_calls);
    check_chain("B", &b.id(), &b_calls);
    check_chain(&c_name, &c_id, &c_calls);
    check_chain("A2", &a2.id(), &a2_calls);
}

// ---------------------------------------------------------------------------
// One at a time, never blocking the loop
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, hook: hooks never block the event loop, and run one at a time in the
// order of the changes.
#[test]
fn a_slow_hook_blocks_neither_the_loop_nor_the_order() {
    let net = TestNet::new();
    let dir = TempDir::new("slow");
    let file = dir.file("A");
    let go = dir.file("go");
    // Each call marks its start, waits until the test creates `go`, sleeps
    // a little so an overlapping call would show, and marks its end.
    let cmd = format!(
        "echo \"start $BOSSD_PREV_ROLE $BOSSD_ROLE $BOSSD_EPOCH\" >> '{f}'; \
         {wait}; sleep 0.2; \
         echo \"end $BOSSD_PREV_ROLE $BOSSD_ROLE $BOSSD_EPOCH\" >> '{f}'",
        f = file.display(),
        wait = wait_for(&dir, &go)
    );
    let a = Node::start("A", net.addr(), &["--notify", &cmd]);
    let join = a.addr.to_string();
    let b_addr = net.addr();
    let mut b = Node::start("B", b_addr, &["--join", &join]);
    wait_agreed(&[&a, &b], Some(&a));
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&file)
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    wait_until("A's first hook starts", &[&a, &b], || !lines().is_empty());

    // The hook waits; the node still answers, loses B and takes it back.
    assert_eq!(a.status().role, "master");
    b.sigkill();
    wait_until("A loses its quorum", &[&a], || role_is(&a, "none"));
    drop(b);
    let b = Node::start("B'", b_addr, &["--join", &join]);
    wait_agreed(&[&a, &b], Some(&a));
    let j = journal(&a);
    assert!(j.len() >= 3, "three changes at least: {j:#?}");
    assert_eq!(
        lines().len(),
        1,
        "no second hook starts while the first runs: {:?}",
        lines()
    );

    // Released, the hooks run one after another, in the journal's order.
    std::fs::write(&go, "").expect("create the go file");
    let want: Vec<String> = j
        .iter()
        .flat_map(|c| {
            let change = format!("{} {} {}", c.prev, c.role, c.epoch);
            [format!("start {change}"), format!("end {change}")]
        })
        .collect();
    wait_until("every hook ran, one at a time, in order", &[&a, &b], || {
        lines() == want
    });
}

// ---------------------------------------------------------------------------
// Time limit
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, hook: a hook still running after the limit is killed, with what it
// started, and logged; the next hook runs. The limit is shortened with the
// hidden --notify-time-limit, which only replaces the 30 s.
#[test]
fn a_hook_past_its_time_limit_is_killed_and_the_next_runs() {
    let net = TestNet::new();
    let dir = TempDir::new("limit");
    let file = dir.file("A");
    let pid_file = dir.file("sleep.pid");
    let cmd = format!(
        "echo \"$BOSSD_PREV_ROLE $BOSSD_ROLE\" >> '{f}'; \
         if [ $BOSSD_ROLE = master ]; then sleep 30 & echo $! > '{p}'; wait; fi",
        f = file.display(),
        p = pid_file.display()
    );
    let a = Node::start(
        "A",
        net.addr(),
        &["--notify", &cmd, "--notify-time-limit", "300"],
    );
    let mut b = Node::start("B", net.addr(), &["--join", &a.addr.to_string()]);
    wait_agreed(&[&a, &b], Some(&a));
    wait_until("A's master hook is killed", &[&a], || {
        a.logged(
            "hook-killed",
            &[("after_ms", "300"), ("reason", "time-limit")],
        )
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the hook wrote its child's pid")
        .trim()
        .parse()
        .expect("a pid");
    wait_until("the hook's child died with it", &[&a], || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
    });
    b.sigkill();
    wait_until("A's next hook ran and was logged", &[&a], || {
        a.logged(
            "hook-exited",
            &[("status", "0"), ("from", "master"), ("to", "none")],
        )
    });
    let text = std::fs::read_to_string(&file).expect("hook lines");
    assert_eq!(text, "none master\nmaster none\n");
}

// ---------------------------------------------------------------------------
// Leaving
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, hook with guarantee 6: a leaving node announces its final change to
// none even when an earlier hook still runs (that one is killed), and
// exits 0.
#[test]
fn leave_kills_an_earlier_slow_hook_and_runs_the_final_one() {
    let net = TestNet::new();
    let dir = TempDir::new("leave-kill");
    let file = dir.file("A");
    let cmd = format!(
        "echo \"$BOSSD_PREV_ROLE $BOSSD_ROLE $BOSSD_CAUSE\" >> '{f}'; \
         [ $BOSSD_ROLE = none ] || sleep 30",
        f = file.display()
    );
    let mut a = Node::start("A", net.addr(), &["--notify", &cmd]);
    let b = Node::start("B", net.addr(), &["--join", &a.addr.to_string()]);
    wait_agreed(&[&a, &b], Some(&a));
    wait_until("A's master hook runs", &[&a], || file.exists());
    a.sigterm();
    let exit = a.wait_exit(DEADLINE).expect("A exits after SIGTERM");
    assert!(exit.success(), "a graceful leave exits 0: {exit:?}");
    let log = a.stderr_text();
    assert!(
        a.logged("hook-killed", &[("reason", "leaving"), ("to", "master")]),
        "the killed hook is logged:\n{log}"
    );
    let want = "none master claim\nmaster none leave\n";
    wait_until("A's final hook ran", &[&b], || {
        std::fs::read_to_string(&file).is_ok_and(|t| t == want)
    });
}

// Guarantee 6 (docs/GUARANTEES.md) over a slow final hook: the node exits without waiting
// for it, and the hook is left to finish on its own.
#[test]
fn leave_does_not_wait_for_a_slow_final_hook() {
    let net = TestNet::new();
    let dir = TempDir::new("leave-slow");
    let done = dir.file("done");
    let go = dir.file("go");
    let cmd = format!(
        "[ $BOSSD_ROLE = none ] || exit 0; {wait}; echo finished > '{d}'",
        wait = wait_for(&dir, &go),
        d = done.display()
    );
    let mut a = Node::start("A", net.addr(), &["--notify", &cmd]);
    let b = Node::start("B", net.addr(), &["--join", &a.addr.to_string()]);
    wait_agreed(&[&a, &b], Some(&a));
    // The hook for becoming master ended first: otherwise, on a loaded
    // machine, it could still run when the leave's time for hooks is up,
    // and the final hook would be dropped, never started.
    wait_until("A's hook for master ended", &[&a], || {
        a.logged("hook-exited", &[("to", "master")])
    });
    a.sigterm();
    let exit = a.wait_exit(DEADLINE).expect("A exits after SIGTERM");
    assert!(exit.success(), "a graceful leave exits 0: {exit:?}");
    assert!(!done.exists(), "the final hook was still waiting");
    // A's last lines may still be in the pipe its hook holds open.
    wait_until("A logged the final hook abandoned", &[&b], || {
        a.logged("hook-abandoned", &[("to", "none"), ("cause", "leave")])
    });
    std::fs::write(&go, "").expect("create the go file");
    wait_until("the final hook finishes after bossd exited", &[&b], || {
        done.exists()
    });
}

// ---------------------------------------------------------------------------
// Descriptors
// ---------------------------------------------------------------------------

// A hook gets stdin /dev/null and stdout and stderr on the node's stderr,
// and inherits none of the node's sockets, its poll or its signal pipe:
// std and mio open them all close-on-exec.
#[test]
fn a_hook_inherits_no_socket() {
    let net = TestNet::new();
    let dir = TempDir::new("fds");
    let file = dir.file("fds");
    let cmd = format!(
        "(ls -l /proc/$$/fd) > '{f}.tmp' && mv '{f}.tmp' '{f}'",
        f = file.display()
    );
    let a = Node::start("A", net.addr(), &["--notify", &cmd]);
    let b = Node::start("B", net.addr(), &["--join", &a.addr.to_string()]);
    wait_agreed(&[&a, &b], Some(&a));
    wait_until("A's hook listed its descriptors", &[&a], || file.exists());
    let fds = std::fs::read_to_string(&file).expect("the listing");
    let target = |fd: u32| {
        fds.lines()
            .find(|l| l.contains(&format!(" {fd} -> ")))
            .and_then(|l| l.split(" -> ").nth(1))
    };
    assert_eq!(target(0), Some("/dev/null"), "stdin is /dev/null: {fds}");
    // Stdout and stderr both go to the node's stderr.
    let node_stderr = std::fs::read_link(format!("/proc/{}/fd/2", a.pid()))
        .expect("the node's stderr")
        .display()
        .to_string();
    assert_eq!(target(1), Some(node_stderr.as_str()), "stdout: {fds}");
    assert_eq!(target(2), Some(node_stderr.as_str()), "stderr: {fds}");
    // Descriptors this test process may pass down without close-on-exec
    // are not the node's to close; what the node opened must not show.
    assert!(
        !fds.contains("socket:") && !fds.contains("anon_inode:"),
        "the hook inherited a socket, the poll or the signal pipe: {fds}"
    );
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, hook with guarantee 1 for a group of one: a node whose quorum is 1 is
// master from the start, and its hook says so with the cause `start`.
#[test]
fn a_lone_node_with_quorum_one_announces_its_start() {
    let net = TestNet::new();
    let dir = TempDir::new("start");
    let file = dir.file("A");
    let cmd = record_cmd(&file);
    let a = Node::start("A", net.addr(), &["--quorum", "1", "--notify", &cmd]);
    assert_eq!(a.status().role, "master");
    let recorded = wait_recorded(&a, &file, &[]);
    assert_eq!(
        recorded,
        [Call {
            prev: "none".into(),
            role: "master".into(),
            master: a.id(),
            epoch: 1,
            id: a.id(),
            cause: "start".into(),
        }]
    );
}

// ---------------------------------------------------------------------------
// Stalls (guarantee 10)
// ---------------------------------------------------------------------------

// Guarantee 10 (docs/GUARANTEES.md; issue 14): three nodes stopped together
// for 1.5 s (three timeouts; a paused VM host) resume with no role change,
// no new epoch and no hook run. Then the master alone is frozen: the
// survivors still replace it (guarantee 5).
#[test]
fn a_whole_cluster_stopped_together_changes_nothing() {
    let net = TestNet::new();
    let dir = TempDir::new("stall");
    let (a, fa) = start_recorded("A", &net, &dir, None);
    let (b, fb) = start_recorded("B", &net, &dir, Some(&a));
    let (c, fc) = start_recorded("C", &net, &dir, Some(&a));
    let all = [&a, &b, &c];
    let before = wait_agreed(&all, Some(&a));
    let recorded: Vec<Vec<Call>> = [(&a, &fa), (&b, &fb), (&c, &fc)]
        .iter()
        .map(|(n, f)| wait_recorded(n, f, &all))
        .collect();
    for n in all {
        n.sigstop();
    }
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    for n in all {
        n.sigcont();
    }
    // Two timeouts: any false failover would have happened by then.
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    let after = wait_agreed(&all, Some(&a));
    assert_eq!(after[0].epoch, before[0].epoch, "no new epoch");
    for ((n, f), was) in [(&a, &fa), (&b, &fb), (&c, &fc)].iter().zip(&recorded) {
        assert_eq!(&journal(n), was, "{}'s journal is unchanged", n.name);
        assert_eq!(&calls(f), was, "{}'s hook did not run", n.name);
    }
    assert!(
        all.iter().any(|n| n.logged("stalled", &[])),
        "a stalled node says so"
    );

    a.sigstop();
    let st = wait_agreed(&[&b, &c], Some(&b));
    assert!(st[0].epoch > before[0].epoch, "a frozen master is replaced");
    a.sigcont();
    wait_agreed(&all, Some(&a));
}

// Guarantee 10 for the next in line: B, second of three, is stopped for
// 1.5 s, so A and C time it out and close its links. Resuming, B reads
// those closes one by one; it must not take A's for a crash and claim while
// C's is still unread, nor claim on meeting C again before A. It rejoins as
// a follower: no node ever runs a hook for becoming master, and the epoch
// stays.
#[test]
fn the_next_in_line_stopped_alone_rejoins_without_claiming() {
    let net = TestNet::new();
    let dir = TempDir::new("stall-next");
    let (a, fa) = start_recorded("A", &net, &dir, None);
    let (b, fb) = start_recorded("B", &net, &dir, Some(&a));
    let (c, fc) = start_recorded("C", &net, &dir, Some(&a));
    let all = [&a, &b, &c];
    let before = wait_agreed(&all, Some(&a));
    let recorded: Vec<usize> = [(&a, &fa), (&b, &fb), (&c, &fc)]
        .iter()
        .map(|(n, f)| wait_recorded(n, f, &all).len())
        .collect();
    b.sigstop();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    b.sigcont();
    let after = wait_agreed(&all, Some(&a));
    // A timeout more, for a late claim to show.
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    let after2 = wait_agreed(&all, Some(&a));
    assert_eq!(after[0].epoch, before[0].epoch, "no new epoch");
    assert_eq!(after2[0].epoch, before[0].epoch, "no new epoch later");
    for ((n, f), kept) in [(&a, &fa), (&b, &fb), (&c, &fc)].iter().zip(&recorded) {
        let new: Vec<Call> = journal(n).into_iter().skip(*kept).collect();
        assert!(
            new.iter().all(|e| e.role != "master"),
            "{} became master: {new:?}",
            n.name
        );
        let ran: Vec<Call> = calls(f).into_iter().skip(*kept).collect();
        assert!(
            ran.iter().all(|e| e.role != "master"),
            "{}'s hook ran for master: {ran:?}",
            n.name
        );
    }
}
