//! Real-process tests of eligibility and planned moves of the role
//! (guarantees 1 and 11, docs/GUARANTEES.md): `-standby`, `-handover`,
//! `-priority`, `--no-preempt` and `--preempt-delay` on actual `bossd`
//! binaries on loopback, and the order of the hooks when a reachable
//! master gives up its role, read from timestamps the hooks append to one
//! shared file.
//!
//! Conditions are polled with generous deadlines; nothing asserts how long
//! anything took, only the order of what happened.

mod common;

use common::{Console, Node, TempDir, TestNet, holds_for, wait_agreed, wait_until};
use std::path::Path;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn start_joined(name: &str, net: &TestNet, to: &Node, extra: &[&str]) -> Node {
    let join = to.addr.to_string();
    let mut args = vec!["--join", join.as_str()];
    args.extend_from_slice(extra);
    Node::start(name, net.addr(), &args)
}

/// `IP PORT` of `n`, as `-handover` takes it.
fn target(n: &Node) -> String {
    format!("{} {}", n.addr.ip(), n.addr.port())
}

/// Runs `command` on `n` and expects `OK`; returns the answer lines.
fn ok(n: &Node, command: &str) -> Vec<String> {
    let (lines, result) = n.ctl(command);
    assert_eq!(result, Ok(()), "{} {command}: {lines:?}", n.name);
    lines
}

/// Runs `command` on `n` and expects one `ERR` line; returns its reason.
fn err(n: &Node, command: &str) -> String {
    let (lines, result) = n.ctl(command);
    assert!(
        lines.is_empty(),
        "{} {command}: no lines before ERR: {lines:?}",
        n.name
    );
    result.expect_err(&format!("{} {command} must fail", n.name))
}

/// Whether `n`'s journal has an entry with `cause=CAUSE`.
fn journal_has(n: &Node, cause: &str) -> bool {
    n.ctl("-j")
        .0
        .iter()
        .any(|l| l.ends_with(&format!(" cause={cause}")))
}

/// A hook that appends `NANOS start|end ID PREV ROLE CAUSE` to `file`
/// and, when it announces leaving the master role, takes `slow` seconds.
fn timed_hook(file: &Path, slow: &str) -> String {
    let f = file.display();
    format!(
        "line() {{ echo \"$(date +%s%N) $1 $BOSSD_ID $BOSSD_PREV_ROLE $BOSSD_ROLE $BOSSD_CAUSE\" >> '{f}'; }}; \
         line start; if [ \"$BOSSD_PREV_ROLE\" = master ]; then sleep {slow}; fi; line end"
    )
}

/// One line of a [`timed_hook`] file.
#[derive(Debug)]
struct HookLine {
    nanos: u128,
    edge: String,
    id: String,
    prev: String,
    role: String,
}

fn hook_lines(file: &Path) -> Vec<HookLine> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 6, "a hook line: {l:?}");
            HookLine {
                nanos: w[0].parse().expect("nanoseconds"),
                edge: w[1].into(),
                id: w[2].into(),
                prev: w[3].into(),
                role: w[4].into(),
            }
        })
        .collect()
}

/// Guarantee 11 from the hooks' own timestamps: `old`'s hook for leaving
/// the master role has ended before `new`'s hook for becoming master
/// (the first after it started) starts.
fn assert_hooks_ordered(file: &Path, old: &Node, new: &Node) {
    let lines = hook_lines(file);
    let stepped = lines
        .iter()
        .rposition(|l| l.id == old.id() && l.prev == "master" && l.edge == "start")
        .unwrap_or_else(|| {
            panic!(
                "{} never ran its hook for leaving the role: {lines:?}",
                old.name
            )
        });
    let step_start = &lines[stepped];
    let step_end = lines[stepped..]
        .iter()
        .find(|l| l.id == old.id() && l.prev == "master" && l.edge == "end")
        .unwrap_or_else(|| {
            panic!(
                "{}'s hook for leaving the role never ended: {lines:?}",
                old.name
            )
        });
    let became = lines
        .iter()
        .find(|l| {
            l.id == new.id()
                && l.role == "master"
                && l.edge == "start"
                && l.nanos >= step_start.nanos
        })
        .unwrap_or_else(|| {
            panic!(
                "{} never ran its hook for becoming master: {lines:?}",
                new.name
            )
        });
    assert!(
        became.nanos >= step_end.nanos,
        "{}'s hook for becoming master started before {}'s hook for leaving the role ended: {lines:?}",
        new.name,
        old.name
    );
}

// ---------------------------------------------------------------------------
// Standby and health
// ---------------------------------------------------------------------------

// Guarantee 1 with eligibility: a master in standby hands over at once, is
// ranked after every eligible member, and shows health=standby; standby
// off brings it back (the default preempts).
#[test]
fn standby_moves_the_master_and_back() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    let c = start_joined("C", &net, &a, &[]);
    let before = wait_agreed(&[&a, &b, &c], Some(&a))[0].epoch;
    assert_eq!(ok(&a, "-standby on"), ["standby on"]);
    let st = wait_agreed(&[&a, &b, &c], Some(&b));
    assert!(st[0].epoch > before, "the next master has a larger epoch");
    assert_eq!(a.status().health, "standby");
    assert_eq!(b.status().health, "ok");
    let ranking = ok(&b, "-r");
    assert!(
        ranking
            .last()
            .is_some_and(|l| l.contains(&a.id()) && l.contains("health=standby")),
        "a member in standby ranks last: {ranking:?}"
    );
    assert!(journal_has(&a, "standby"), "{:?}", a.ctl("-j"));
    assert!(journal_has(&b, "standby"), "{:?}", b.ctl("-j"));
    ok(&a, "-standby off");
    wait_agreed(&[&a, &b, &c], Some(&a));
    assert_eq!(a.status().health, "ok");
}

// Guarantee 1: a group with no eligible member has no master.
#[test]
fn a_group_in_standby_has_no_master() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    wait_agreed(&[&a, &b], Some(&a));
    ok(&b, "-standby on");
    ok(&a, "-standby on");
    wait_until("no master in a group of standbys", &[&a, &b], || {
        [&a, &b].iter().all(|n| {
            n.try_status()
                .is_ok_and(|s| s.role == "none" && s.peers == 1)
        })
    });
    ok(&b, "-standby off");
    wait_agreed(&[&a, &b], Some(&b));
}

// Console misuse: one ERR line each.
#[test]
fn misuse_gets_one_err_line() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    for (command, reason) in [
        ("-standby", "usage: -standby on|off"),
        ("-standby maybe", "usage: -standby on|off"),
        ("-priority", "usage: -priority N"),
        ("-handover 127.0.0.1", "usage: -handover [IP PORT]"),
    ] {
        assert_eq!(err(&a, command), reason, "{command}");
    }
    for command in ["-priority x", "-priority 2147483648", "-priority 1 2"] {
        assert!(err(&a, command).starts_with("not a priority"), "{command}");
    }
    // Without --no-preempt, on any node.
    assert_eq!(
        err(&a, "-handover"),
        "handover needs --no-preempt; use -standby on"
    );
    let help = ok(&a, "-h").join("\n");
    for command in ["-standby on|off", "-handover [IP PORT]", "-priority N"] {
        assert!(help.contains(command), "-h lists {command}: {help}");
    }
}

// With a secret, the new commands are mutating: not permitted without
// authentication.
#[test]
fn new_commands_need_authentication_with_a_secret() {
    let net = TestNet::new();
    let dir = TempDir::new("eligibility-secret");
    let secret = dir.secret("secret", "an eligibility test's shared secret");
    let a = Node::start("A", net.addr(), &["--secret-file", &secret, "--no-preempt"]);
    for command in ["-standby on", "-handover", "-priority 3"] {
        assert_eq!(err(&a, command), "not permitted", "{command}");
    }
    assert_eq!(a.status().health, "ok");
}

// ---------------------------------------------------------------------------
// Priority and preemption
// ---------------------------------------------------------------------------

// `-priority N` tells every peer: with a rule that uses priority the
// master moves, and the journals say why.
#[test]
fn priority_at_run_time_moves_the_master() {
    let net = TestNet::new();
    let rule = ["--rule", "priority,oldest"];
    let a = Node::start("A", net.addr(), &rule);
    let b = start_joined("B", &net, &a, &rule);
    let c = start_joined("C", &net, &a, &rule);
    wait_agreed(&[&a, &b, &c], Some(&a));
    assert_eq!(ok(&c, "-priority 7"), ["priority 7"]);
    wait_agreed(&[&a, &b, &c], Some(&c));
    assert!(journal_has(&c, "priority"), "{:?}", c.ctl("-j"));
    // B's entries name `priority`, or `handover` when A's step-down
    // reached it before C's new priority did.
    assert!(
        journal_has(&b, "priority") || journal_has(&b, "handover"),
        "{:?}",
        b.ctl("-j")
    );
    let ranking = ok(&b, "-r");
    assert!(
        ranking[0].contains(&c.id()) && ranking[0].contains("priority=7"),
        "{ranking:?}"
    );
}

// --no-preempt and --preempt-delay must match across the cluster, like
// --rule: a mismatch is refused with a log line naming both values.
#[test]
fn preemption_settings_must_match() {
    let net = TestNet::new();
    for (theirs, ours, word) in [
        (&["--no-preempt"][..], &[][..], "no-preempt mismatch"),
        (
            &["--preempt-delay", "500"][..],
            &["--preempt-delay", "400"][..],
            "preempt-delay mismatch",
        ),
    ] {
        let a = Node::start("A", net.addr(), theirs);
        let b = start_joined("B", &net, &a, ours);
        wait_until("the mismatch is logged", &[&a, &b], || {
            [&a, &b].iter().any(|n| {
                n.events().iter().any(|e| {
                    e.fields
                        .iter()
                        .any(|(k, v)| k == "reason" && v.contains(word))
                })
            })
        });
        let line = [&a, &b]
            .iter()
            .flat_map(|n| n.events())
            .flat_map(|e| e.fields)
            .find(|(k, v)| k == "reason" && v.contains(word))
            .map(|(_, v)| v)
            .expect("logged");
        assert!(line.contains(&a.id()) && line.contains(&b.id()), "{line}");
        holds_for(
            "no cluster forms",
            Duration::from_millis(500),
            &[&a, &b],
            || a.status().peers == 0 && b.status().peers == 0,
        );
    }
}

// --no-preempt: a better member that restarts does not take over from
// the eligible master (guarantee 1).
#[test]
fn no_preempt_keeps_the_master_when_a_better_member_returns() {
    let net = TestNet::new();
    let args = ["--rule", "priority,oldest", "--no-preempt"];
    let a_addr = net.addr();
    let mut a = Node::start(
        "A",
        a_addr,
        &[
            "--rule",
            "priority,oldest",
            "--no-preempt",
            "--priority",
            "9",
        ],
    );
    let b = start_joined("B", &net, &a, &args);
    let c = start_joined("C", &net, &a, &args);
    wait_agreed(&[&a, &b, &c], Some(&a));
    a.sigkill();
    let st = wait_agreed(&[&b, &c], None);
    let master = st[0].master.clone().expect("a master");
    let join = b.addr.to_string();
    let a = Node::start(
        "A2",
        a_addr,
        &[
            "--rule",
            "priority,oldest",
            "--no-preempt",
            "--priority",
            "9",
            "--join",
            &join,
        ],
    );
    wait_until("A is back in the group", &[&a, &b, &c], || {
        a.try_status()
            .is_ok_and(|s| s.peers == 2 && s.role == "follower")
    });
    holds_for(
        "the master keeps its place",
        Duration::from_millis(1500),
        &[&a, &b, &c],
        || {
            [&a, &b, &c]
                .iter()
                .all(|n| n.status().master.as_deref() == Some(master.as_str()))
        },
    );
}

// --preempt-delay: a better member takes over, but only after it has
// been eligible and in the group that long (ordering only: first the old
// master while it waits, then it).
#[test]
fn preempt_delay_takes_over_later() {
    let net = TestNet::new();
    let args = ["--rule", "priority,oldest", "--preempt-delay", "4000"];
    let a = Node::start("A", net.addr(), &args);
    let b = start_joined("B", &net, &a, &args);
    wait_agreed(&[&a, &b], Some(&a));
    let join = a.addr.to_string();
    let c = Node::start(
        "C",
        net.addr(),
        &[
            "--rule",
            "priority,oldest",
            "--preempt-delay",
            "4000",
            "--priority",
            "5",
            "--join",
            &join,
        ],
    );
    wait_agreed(&[&a, &b, &c], Some(&c));
    // C's journal: first a follower of A while its delay ran, then master.
    let journal = ok(&c, "-j");
    let followed = journal
        .iter()
        .position(|l| l.contains("->follower") && l.contains(&format!("master={}", a.id())));
    let took_over = journal.iter().position(|l| l.contains("->master"));
    assert!(
        matches!((followed, took_over), (Some(f), Some(t)) if f < t),
        "{journal:?}"
    );
}

// ---------------------------------------------------------------------------
// Handover and guarantee 11
// ---------------------------------------------------------------------------

// -handover with --no-preempt: to a named member and to the best other;
// each misuse one ERR line; the new master has a larger epoch.
#[test]
fn handover_moves_the_role_where_asked() {
    let net = TestNet::new();
    let args = ["--no-preempt"];
    let a = Node::start("A", net.addr(), &args);
    let b = start_joined("B", &net, &a, &args);
    let c = start_joined("C", &net, &a, &args);
    let e1 = wait_agreed(&[&a, &b, &c], Some(&a))[0].epoch;
    assert_eq!(err(&b, "-handover"), "not the master");
    assert_eq!(
        err(&a, &format!("-handover {}", target(&a))),
        "this node is already the master"
    );
    assert_eq!(
        err(&a, "-handover 127.0.0.1 1"),
        "127.0.0.1:1 is not in the view"
    );
    ok(&b, "-standby on");
    wait_until("A sees B in standby", &[&a, &b], || {
        ok(&a, "-r")
            .iter()
            .any(|l| l.contains(&b.id()) && l.contains("health=standby"))
    });
    assert_eq!(
        err(&a, &format!("-handover {}", target(&b))),
        format!("{} is not eligible (health standby)", b.id())
    );
    ok(&b, "-standby off");
    wait_until("A sees B healthy", &[&a, &b], || {
        ok(&a, "-r")
            .iter()
            .any(|l| l.contains(&b.id()) && l.contains("health=ok"))
    });
    // No preemption: A stays master although B came back.
    assert_eq!(a.status().role, "master");
    assert_eq!(
        ok(&a, &format!("-handover {}", target(&c))),
        [format!("handing over to {}", c.id())]
    );
    let e2 = wait_agreed(&[&a, &b, &c], Some(&c))[0].epoch;
    assert!(e2 > e1, "a larger epoch: {e1} then {e2}");
    assert!(journal_has(&c, "handover"), "{:?}", c.ctl("-j"));
    // The sticky master stays; then the best other eligible member.
    holds_for(
        "C keeps the role",
        Duration::from_millis(500),
        &[&a, &b, &c],
        || c.status().role == "master",
    );
    assert_eq!(ok(&c, "-handover"), [format!("handing over to {}", a.id())]);
    wait_agreed(&[&a, &b, &c], Some(&a));
}

// Guarantee 11: on -handover the new master's hook for becoming master
// starts only after the old master's (slow) hook for leaving the role
// has exited.
#[test]
fn handover_orders_the_hooks() {
    let net = TestNet::new();
    let dir = TempDir::new("eligibility-hooks");
    let file = dir.file("hooks");
    let hook = timed_hook(&file, "1");
    let args = ["--no-preempt", "--notify", hook.as_str()];
    let a = Node::start("A", net.addr(), &args);
    let b = start_joined("B", &net, &a, &args);
    let c = start_joined("C", &net, &a, &args);
    wait_agreed(&[&a, &b, &c], Some(&a));
    ok(&a, &format!("-handover {}", target(&b)));
    wait_agreed(&[&a, &b, &c], Some(&b));
    wait_until("B's hook for becoming master ran", &[&a, &b, &c], || {
        hook_lines(&file)
            .iter()
            .any(|l| l.id == b.id() && l.role == "master" && l.edge == "end")
    });
    assert_hooks_ordered(&file, &a, &b);
}

// Guarantee 11 for standby (no --no-preempt needed) and for a graceful
// leave, whose hook must end within the second of guarantee 6.
#[test]
fn standby_and_leave_order_the_hooks() {
    let net = TestNet::new();
    let dir = TempDir::new("eligibility-leave");
    let file = dir.file("hooks");
    let hook = timed_hook(&file, "0.3");
    let args = ["--notify", hook.as_str()];
    let a = Node::start("A", net.addr(), &args);
    let b = start_joined("B", &net, &a, &args);
    let c = start_joined("C", &net, &a, &args);
    wait_agreed(&[&a, &b, &c], Some(&a));
    ok(&a, "-standby on");
    wait_agreed(&[&a, &b, &c], Some(&b));
    wait_until("B's hook for becoming master ran", &[&a, &b, &c], || {
        hook_lines(&file)
            .iter()
            .any(|l| l.id == b.id() && l.role == "master" && l.edge == "end")
    });
    assert_hooks_ordered(&file, &a, &b);
    let mut b = b;
    b.sigterm();
    let status = b.wait_exit(Duration::from_secs(5)).expect("B exits");
    assert_eq!(status.code(), Some(0), "a graceful leave exits 0");
    wait_agreed(&[&a, &c], Some(&c));
    wait_until("C's hook for becoming master ran", &[&a, &c], || {
        hook_lines(&file)
            .iter()
            .any(|l| l.id == c.id() && l.role == "master" && l.edge == "end")
    });
    assert_hooks_ordered(&file, &b, &c);
}

// -w shows the new causes as they happen.
#[test]
fn watch_shows_the_new_causes() {
    let net = TestNet::new();
    let rule = ["--rule", "priority,oldest"];
    let a = Node::start("A", net.addr(), &rule);
    let b = start_joined("B", &net, &a, &rule);
    wait_agreed(&[&a, &b], Some(&a));
    let mut watch = Console::open(b.addr);
    watch.send("-w\n");
    let first = watch.read_line().expect("the status line");
    assert!(first.ends_with(" health=ok"), "{first}");
    ok(&a, "-standby on");
    wait_agreed(&[&a, &b], Some(&b));
    ok(&a, "-standby off");
    wait_agreed(&[&a, &b], Some(&a));
    ok(&b, "-priority 3");
    let mut seen = Vec::new();
    for cause in ["cause=standby", "cause=priority"] {
        loop {
            let line = watch
                .read_line()
                .unwrap_or_else(|| panic!("the watch ended before {cause}: {seen:?}"));
            seen.push(line.clone());
            if line.ends_with(cause) {
                break;
            }
        }
    }
}
