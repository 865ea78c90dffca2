//! Real-process tests: actual `bossd` binaries on loopback, driven over the
//! TCP console, checked against SPEC.md.
//!
//! Every test has its own loopback network (see `common::TestNet`), so the
//! tests run in parallel. Conditions are polled with generous deadlines;
//! nothing asserts how long anything took.

mod common;

use std::time::Duration;

use common::{
    Console, DEADLINE, Node, StdinKind, TestNet, agreed, holds_for, iso_utc_ms, logfmt,
    run_to_exit, unix_ms_now, wait_agreed, wait_until,
};

/// How long a property that must stay true is watched: long enough for
/// several reconnect attempts (backoff starts at one 100 ms heartbeat) and
/// for 2 × the default 500 ms timeout.
const WATCH: Duration = Duration::from_millis(2_000);

fn join_arg(n: &Node) -> String {
    n.addr.to_string()
}

/// `-c IP PORT` for `n`.
fn connect_cmd(n: &Node) -> String {
    format!("-c {} {}", n.addr.ip(), n.addr.port())
}

fn start_joined(name: &str, net: &TestNet, to: &Node, extra: &[&str]) -> Node {
    let join = join_arg(to);
    let mut args = vec!["--join", join.as_str()];
    args.extend_from_slice(extra);
    Node::start(name, net.addr(), &args)
}

// ---------------------------------------------------------------------------
// Election and membership
// ---------------------------------------------------------------------------

// SPEC §3 (the rule picks the master; default rule `oldest`) and guarantees
// 1 and 3: two nodes agree on the older one.
#[test]
fn two_nodes_elect_the_oldest() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    let st = wait_agreed(&[&a, &b], Some(&a));
    assert!(st[0].started <= st[1].started, "A started first: {st:?}");
    assert!(st[0].epoch > 0, "a master's epoch is above 0: {st:?}");
    assert_eq!(st[0].rule, "oldest");
    assert_eq!(st[0].quorum, 2);
}

// SPEC §3: a node that connects to a non-master member is told who the
// master is, joins it, and everyone connects to it (full mesh, guarantee 3).
#[test]
fn join_via_follower_reaches_the_full_mesh() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    wait_agreed(&[&a, &b], Some(&a));
    let c = start_joined("C", &net, &b, &[]);
    let st = wait_agreed(&[&a, &b, &c], Some(&a));
    assert!(st.iter().all(|s| s.peers == 2), "{st:?}");
}

// SPEC §4 guarantee 4 (crash failover) and 9 (epochs grow): five nodes, the
// master is SIGKILLed, the four survivors agree on the next oldest with a
// larger epoch.
#[test]
fn five_nodes_master_crash_fails_over_to_the_next_oldest() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    let c = start_joined("C", &net, &a, &[]);
    let d = start_joined("D", &net, &b, &[]);
    let e = start_joined("E", &net, &c, &[]);
    let mut a = a;
    let before = wait_agreed(&[&a, &b, &c, &d, &e], Some(&a));
    let old_epoch = before[0].epoch;
    a.sigkill();
    let after = wait_agreed(&[&b, &c, &d, &e], Some(&b));
    assert!(
        after[0].epoch > old_epoch,
        "the new master's epoch {} must exceed the old {old_epoch}",
        after[0].epoch
    );
}

// SPEC §4 guarantee 1 and 3: a crashed follower leaves the master in place
// and the peer counts drop.
#[test]
fn follower_crash_keeps_the_master() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    let mut c = start_joined("C", &net, &a, &[]);
    let before = wait_agreed(&[&a, &b, &c], Some(&a));
    c.sigkill();
    let after = wait_agreed(&[&a, &b], Some(&a));
    assert!(after[0].epoch >= before[0].epoch, "epochs never go back");
    assert!(after.iter().all(|s| s.peers == 1), "{after:?}");
}

// SPEC §4 guarantee 2 (no lone master, default quorum 2): when the last peer
// is gone, the master reports role=none and master=-.
#[test]
fn master_without_peers_reports_none() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let mut b = start_joined("B", &net, &a, &[]);
    wait_agreed(&[&a, &b], Some(&a));
    b.sigkill();
    wait_until("A reports role=none master=- peers=0", &[&a], || {
        a.try_status()
            .is_ok_and(|s| s.role == "none" && s.master.is_none() && s.peers == 0)
    });
    let (lines, result) = a.ctl("-m");
    assert_eq!((lines, result), (vec!["false".to_owned()], Ok(())));
}

// SPEC §4 guarantee 6 (graceful leave on SIGTERM): the master exits 0, the
// survivors agree at once, and nobody reconnects to it: a fresh node on its
// port stays alone until it joins on its own, and then joins as a newcomer.
#[test]
fn graceful_leave_on_sigterm() {
    let net = TestNet::new();
    let a_addr = net.addr();
    let mut a = Node::start("A", a_addr, &[]);
    let b = start_joined("B", &net, &a, &[]);
    let c = start_joined("C", &net, &a, &[]);
    let before = wait_agreed(&[&a, &b, &c], Some(&a));
    a.sigterm();
    let status = a
        .wait_exit(common::DEADLINE)
        .expect("A exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", a.describe());
    let after = wait_agreed(&[&b, &c], Some(&b));
    assert!(
        after[0].epoch > before[0].epoch,
        "a new master, a new epoch"
    );
    drop(a);
    // A fresh node on the leaver's address: were B or C still retrying A,
    // they would reach it.
    let fresh = Node::start("A'", a_addr, &[]);
    holds_for(
        "nobody reconnects to the node that left",
        WATCH,
        &[&fresh, &b, &c],
        || fresh.status().peers == 0 && b.status().peers == 1 && c.status().peers == 1,
    );
    let (lines, result) = fresh.ctl(&connect_cmd(&c));
    assert_eq!(result, Ok(()), "-c answered {lines:?}");
    let st = wait_agreed(&[&b, &c, &fresh], Some(&b));
    assert!(st[0].epoch >= after[0].epoch);
}

// SPEC §4 guarantee 6 (graceful leave on SIGINT): exit code 0.
#[test]
fn graceful_leave_on_sigint() {
    let net = TestNet::new();
    let mut a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    wait_agreed(&[&a, &b], Some(&a));
    a.sigint();
    let status = a.wait_exit(common::DEADLINE).expect("A exits after SIGINT");
    assert_eq!(status.code(), Some(0), "{}", a.describe());
    wait_until("B is alone with role=none", &[&b], || {
        b.try_status()
            .is_ok_and(|s| s.peers == 0 && s.role == "none" && s.master.is_none())
    });
}

// SPEC §2 `-q` and §4 guarantee 6: a follower leaves with `-q`, exits 0,
// the master stays, and nobody reconnects to it.
#[test]
fn graceful_leave_with_q() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    let c_addr = net.addr();
    let join = join_arg(&a);
    let mut c = Node::start("C", c_addr, &["--join", &join]);
    let before = wait_agreed(&[&a, &b, &c], Some(&a));
    let (_lines, result) = c.ctl("-q");
    assert_eq!(result, Ok(()), "-q answers OK");
    let status = c.wait_exit(common::DEADLINE).expect("C exits after -q");
    assert_eq!(status.code(), Some(0), "{}", c.describe());
    let after = wait_agreed(&[&a, &b], Some(&a));
    assert!(after[0].epoch >= before[0].epoch);
    drop(c);
    let fresh = Node::start("C'", c_addr, &[]);
    holds_for(
        "nobody reconnects to the node that left",
        WATCH,
        &[&fresh, &a, &b],
        || fresh.status().peers == 0 && a.status().peers == 1 && b.status().peers == 1,
    );
    let (lines, result) = fresh.ctl(&connect_cmd(&a));
    assert_eq!(result, Ok(()), "-c answered {lines:?}");
    wait_agreed(&[&a, &b, &fresh], Some(&a));
}

// SPEC §3: connecting two groups merges them into one group with one
// master, the oldest overall; guarantees 1, 3 and 9.
#[test]
fn two_groups_merge_into_one() {
    let net = TestNet::new();
    let a1 = Node::start("A1", net.addr(), &[]);
    let b1 = Node::start("B1", net.addr(), &[]);
    let a2 = start_joined("A2", &net, &a1, &[]);
    let b2 = start_joined("B2", &net, &b1, &[]);
    let ga = wait_agreed(&[&a1, &a2], Some(&a1));
    let gb = wait_agreed(&[&b1, &b2], Some(&b1));
    // Connect a follower of the younger group to a follower of the older.
    let (lines, result) = b2.ctl(&connect_cmd(&a2));
    assert_eq!(result, Ok(()), "-c answered {lines:?}");
    let st = wait_agreed(&[&a1, &a2, &b1, &b2], Some(&a1));
    assert!(st.iter().all(|s| s.peers == 3), "{st:?}");
    assert!(
        st[0].epoch >= ga[0].epoch.max(gb[0].epoch),
        "epochs never go back: {st:?}"
    );
}

// SPEC §1 `--join` and §3: a crashed master restarted on its port with
// `--join` comes back as a new, youngest member into the full mesh.
#[test]
fn restart_with_join_rejoins_the_mesh() {
    let net = TestNet::new();
    let a_addr = net.addr();
    let mut a = Node::start("A", a_addr, &[]);
    let b = start_joined("B", &net, &a, &[]);
    let c = start_joined("C", &net, &a, &[]);
    wait_agreed(&[&a, &b, &c], Some(&a));
    a.sigkill();
    let mid = wait_agreed(&[&b, &c], Some(&b));
    drop(a);
    let join = join_arg(&c);
    let a2 = Node::start("A'", a_addr, &["--join", &join]);
    let st = wait_agreed(&[&b, &c, &a2], Some(&b));
    assert!(st[0].epoch >= mid[0].epoch);
}

// SPEC §4 guarantee 3 with a follower restarted: the same, for a follower.
#[test]
fn restarted_follower_rejoins_the_mesh() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b_addr = net.addr();
    let join = join_arg(&a);
    let mut b = Node::start("B", b_addr, &["--join", &join]);
    let c = start_joined("C", &net, &a, &[]);
    wait_agreed(&[&a, &b, &c], Some(&a));
    b.sigkill();
    wait_agreed(&[&a, &c], Some(&a));
    drop(b);
    let join = join_arg(&c);
    let b2 = Node::start("B'", b_addr, &["--join", &join]);
    wait_agreed(&[&a, &c, &b2], Some(&a));
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

// SPEC §1 `--rule youngest`: the node started last wins.
#[test]
fn rule_youngest() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &["--rule", "youngest"]);
    let b = start_joined("B", &net, &a, &["--rule", "youngest"]);
    let sa = a.status();
    let sb = b.status();
    assert!(sb.started > sa.started, "B started after A: {sa:?} {sb:?}");
    let st = wait_agreed(&[&a, &b], Some(&b));
    assert!(st.iter().all(|s| s.rule == "youngest"), "{st:?}");
}

// SPEC §1 `--rule priority`: the higher priority wins, even against age.
#[test]
fn rule_priority() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &["--rule", "priority", "--priority", "1"]);
    let b = start_joined("B", &net, &a, &["--rule", "priority", "--priority", "5"]);
    wait_agreed(&[&a, &b], Some(&b));
    // Negative priorities are signed 32-bit values: -1 beats -7.
    let c = start_joined("C", &net, &a, &["--rule", "priority", "--priority=-1"]);
    let d = start_joined("D", &net, &a, &["--rule", "priority", "--priority", "-7"]);
    wait_agreed(&[&a, &b, &c, &d], Some(&b));
}

// SPEC §1 `--rule lowest-addr`: the lowest address wins, even against age.
#[test]
fn rule_lowest_addr() {
    let net = TestNet::new();
    let low = net.addr_on(1);
    let high = net.same_port_on(2, low.port());
    let h = Node::start("H", high, &["--rule", "lowest-addr"]);
    let join = join_arg(&h);
    let l = Node::start("L", low, &["--rule", "lowest-addr", "--join", &join]);
    wait_agreed(&[&h, &l], Some(&l));
}

// SPEC §1 `--rule highest-addr`: the highest address wins, even against age.
#[test]
fn rule_highest_addr() {
    let net = TestNet::new();
    let low = net.addr_on(1);
    let high = net.same_port_on(2, low.port());
    let l = Node::start("L", low, &["--rule", "highest-addr"]);
    let join = join_arg(&l);
    let h = Node::start("H", high, &["--rule", "highest-addr", "--join", &join]);
    wait_agreed(&[&h, &l], Some(&h));
}

// SPEC §1 `--rule priority,oldest`: criteria apply in order; among equal
// priorities the oldest wins (not the lowest address, the final tie-break).
#[test]
fn rule_priority_then_oldest() {
    let net = TestNet::new();
    let rule = ["--rule", "priority,oldest"];
    // The youngest of the two priority-5 nodes gets the lower address, so a
    // tie-break by address would pick it, and the oldest rule must not.
    let c_addr = net.addr_on(1);
    let b_addr = net.same_port_on(2, c_addr.port());
    let a_addr = net.same_port_on(3, c_addr.port());
    let a = Node::start("A", a_addr, &[&rule[..], &["--priority", "1"]].concat());
    let join = join_arg(&a);
    let b = Node::start(
        "B",
        b_addr,
        &[&rule[..], &["--priority", "5", "--join", &join]].concat(),
    );
    let c = Node::start(
        "C",
        c_addr,
        &[&rule[..], &["--priority", "5", "--join", &join]].concat(),
    );
    let (sb, sc) = (b.status(), c.status());
    assert!(sb.started < sc.started, "B is older than C: {sb:?} {sc:?}");
    let st = wait_agreed(&[&a, &b, &c], Some(&b));
    assert!(st.iter().all(|s| s.rule == "priority,oldest"), "{st:?}");
}

// SPEC §1: every node of a cluster must use the same `--rule`; a peer with
// another is refused with a log line naming both values.
#[test]
fn rule_mismatch_is_refused() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &["--rule", "oldest"]);
    let b = start_joined("B", &net, &a, &["--rule", "youngest"]);
    wait_until("A logs the refusal naming both rules", &[&a, &b], || {
        a.events().iter().any(|e| {
            let reason = e.field("reason").unwrap_or_default();
            e.name == "peer-refused"
                && reason.contains("rule mismatch")
                && reason.contains("oldest")
                && reason.contains("youngest")
        })
    });
    holds_for("A and B never become peers", WATCH, &[&a, &b], || {
        let (sa, sb) = (a.status(), b.status());
        sa.peers == 0 && sb.peers == 0 && sa.role == "none" && sb.role == "none"
    });
}

// SPEC §1: every node of a cluster must use the same `--quorum`; likewise.
#[test]
fn quorum_mismatch_is_refused() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &["--quorum", "2"]);
    let b = start_joined("B", &net, &a, &["--quorum", "3"]);
    wait_until("A logs the refusal naming both quorums", &[&a, &b], || {
        a.events().iter().any(|e| {
            let reason = e.field("reason").unwrap_or_default();
            let words: Vec<&str> = reason
                .split_whitespace()
                .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
                .collect();
            e.name == "peer-refused"
                && reason.contains("quorum mismatch")
                && words.contains(&"2")
                && words.contains(&"3")
        })
    });
    holds_for("A and B never become peers", WATCH, &[&a, &b], || {
        let (sa, sb) = (a.status(), b.status());
        sa.peers == 0 && sb.peers == 0 && sa.role == "none" && sb.role == "none"
    });
    assert_eq!(b.status().quorum, 3);
}

// SPEC §2 `-c`: connecting to this node itself, or to a node that already
// is a peer, is refused with ERR, and nothing changes.
#[test]
fn connect_to_self_or_existing_peer_is_an_error() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    let before = wait_agreed(&[&a, &b], Some(&a));
    let (lines, result) = a.ctl(&connect_cmd(&a));
    assert!(result.is_err(), "-c to itself must be ERR: {lines:?}");
    let (lines, result) = a.ctl(&connect_cmd(&b));
    assert!(result.is_err(), "-c to a peer must be ERR: {lines:?}");
    let (lines, result) = b.ctl(&connect_cmd(&a));
    assert!(result.is_err(), "-c to a peer must be ERR: {lines:?}");
    holds_for("nothing changed", WATCH / 2, &[&a, &b], || {
        agreed(&[&a, &b], Some(&a)).is_some_and(|st| st[0].epoch == before[0].epoch)
    });
}

// ---------------------------------------------------------------------------
// Console
// ---------------------------------------------------------------------------

// SPEC §2: an unknown command gets `ERR unknown command` and the connection
// stays open for the next command.
#[test]
fn console_unknown_command_keeps_the_connection() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let mut con = Console::open(a.addr);
    assert_eq!(con.ask("-bogus"), ["ERR unknown command"]);
    let answer = con.ask("-s");
    assert_eq!(answer.len(), 2, "{answer:?}");
    assert_eq!(answer[1], "OK");
    common::Status::parse(&answer[0]).unwrap();
    // Two commands in one write are answered in order.
    con.send("hello\n-m\n");
    assert_eq!(con.read_answer(), ["ERR unknown command"]);
    assert_eq!(con.read_answer(), ["false", "OK"]);
}

// SPEC §2 `-m`: exactly `true` or `false`, then OK.
#[test]
fn console_m_answers_true_or_false() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    assert_eq!(a.ctl("-m"), (vec!["false".to_owned()], Ok(())), "alone");
    let b = start_joined("B", &net, &a, &[]);
    wait_agreed(&[&a, &b], Some(&a));
    let mut con = Console::open(a.addr);
    assert_eq!(con.ask("-m"), ["true", "OK"]);
    let mut con = Console::open(b.addr);
    assert_eq!(con.ask("-m"), ["false", "OK"]);
}

// SPEC §2 `-t`: the start time as ISO-8601 UTC with milliseconds, then unix
// milliseconds; both the same instant as `started=` in `-s`.
#[test]
fn console_t_gives_the_start_time() {
    let net = TestNet::new();
    let before = unix_ms_now();
    let a = Node::start("A", net.addr(), &[]);
    let after = unix_ms_now();
    let mut con = Console::open(a.addr);
    let answer = con.ask("-t");
    assert_eq!(answer.len(), 2, "{answer:?}");
    assert_eq!(answer[1], "OK");
    let words: Vec<&str> = answer[0].split(' ').collect();
    assert_eq!(words.len(), 2, "ISO time, then unix ms: {:?}", answer[0]);
    let unix_ms: u64 = words[1].parse().expect("unix milliseconds");
    assert!(
        (before..=after).contains(&unix_ms),
        "start time {unix_ms} not within the spawn {before}..={after}"
    );
    assert_eq!(words[0], iso_utc_ms(unix_ms), "ISO-8601 UTC with ms");
    assert_eq!(a.status().started, unix_ms, "-t and -s agree");
}

// SPEC §2 `-msg`: the text is printed on every peer's console (stdout).
#[test]
fn msg_is_printed_on_the_peers_stdout() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    let c = start_joined("C", &net, &a, &[]);
    wait_agreed(&[&a, &b, &c], Some(&a));
    let (_lines, result) = b.ctl("-msg hello from B, 42!");
    assert_eq!(result, Ok(()));
    let want = format!("message from {}: hello from B, 42!", b.id());
    for n in [&a, &c] {
        wait_until(&format!("{} prints {want:?}", n.name), &[n], || {
            n.stdout_text().lines().any(|l| l == want)
        });
    }
    assert!(
        !b.stdout_text().contains("message from"),
        "the sender does not print its own message"
    );
}

// SPEC §2: the status line, exactly one line with the keys in order and
// values without spaces, for a lone node, a master and a follower.
#[test]
fn status_line_matches_the_format() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &["--rule", "priority,oldest"]);
    let mut con = Console::open(a.addr);
    let answer = con.ask("-s");
    assert_eq!(answer.len(), 2, "exactly one line, then OK: {answer:?}");
    let alone = common::Status::parse(&answer[0]).unwrap();
    assert_eq!(
        alone.line,
        format!(
            "id={} role=none master=- epoch=0 peers=0 quorum=2 started={} rule=priority,oldest",
            a.id(),
            alone.started
        )
    );
    let b = start_joined("B", &net, &a, &["--rule", "priority,oldest"]);
    let st = wait_agreed(&[&a, &b], Some(&a));
    assert_eq!(
        st[0].line,
        format!(
            "id={} role=master master={} epoch={} peers=1 quorum=2 started={} rule=priority,oldest",
            a.id(),
            a.id(),
            st[0].epoch,
            alone.started
        )
    );
    assert_eq!(
        st[1].line,
        format!(
            "id={} role=follower master={} epoch={} peers=1 quorum=2 started={} rule=priority,oldest",
            b.id(),
            a.id(),
            st[0].epoch,
            st[1].started
        )
    );
}

// SPEC §2 `-cl` and `-r`, with issue 5's clock skew: each `-cl` line gives
// the peer's address, start time, whether it is master and ms since last
// heard, in that order, then its clock's offset from this node's with the
// error; `-r` gives the skew of every member, this node's own +0±0ms. Both
// nodes read one machine's clock, so the offset is near 0.
#[test]
fn cl_and_r_show_the_clock_skew() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    wait_agreed(&[&a, &b], Some(&a));
    for (n, peer, peer_is_master) in [(&a, &b, false), (&b, &a, true)] {
        let mut line = String::new();
        wait_until(
            &format!("{} has measured {}'s clock", n.name, peer.name),
            &[n],
            || {
                let (lines, result) = n.ctl("-cl");
                assert_eq!(result, Ok(()));
                assert_eq!(lines.len(), 1, "one line per peer: {lines:?}");
                line = lines[0].clone();
                !line.ends_with(" skew=-")
            },
        );
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words.len(), 5, "{line:?}");
        assert_eq!(words[0], peer.id());
        let started = words[1].strip_prefix("started=").expect("started=");
        assert_eq!(started, iso_utc_ms(peer.status().started), "{line:?}");
        assert_eq!(words[2], format!("master={peer_is_master}"));
        assert!(
            words[3]
                .strip_prefix("last_heard_ms=")
                .is_some_and(|v| v.parse::<u64>().is_ok()),
            "{line:?}"
        );
        let (offset, error) = parse_skew(words[4].strip_prefix("skew=").expect("skew="))
            .unwrap_or_else(|| panic!("skew=<+-n>±<n>ms: {line:?}"));
        // One clock: the offset is within the error, give or take the
        // millisecond each node loses dating its start against its
        // monotonic clock; 50 ms is slack for a loaded machine, far below
        // any unit mistake.
        assert!(offset.unsigned_abs() <= error + 50, "{line:?}");

        let (ranking, result) = n.ctl("-r");
        assert_eq!(result, Ok(()));
        assert_eq!(ranking.len(), 2, "{ranking:?}");
        for (i, r) in ranking.iter().enumerate() {
            let skew = r
                .split(' ')
                .find_map(|w| w.strip_prefix("skew="))
                .unwrap_or_else(|| panic!("no skew= in {r:?}"));
            assert!(r.starts_with(&format!("{} ", i + 1)), "{r:?}");
            if r.ends_with(" self") {
                assert_eq!(skew, "+0±0ms", "{r:?}");
            } else {
                let (offset, error) = parse_skew(skew).unwrap_or_else(|| panic!("skew in {r:?}"));
                assert!(offset.unsigned_abs() <= error + 50, "{r:?}");
            }
        }
    }
}

/// `+3±1ms` as (3, 1).
fn parse_skew(s: &str) -> Option<(i64, u64)> {
    let (offset, error) = s.strip_suffix("ms")?.split_once('±')?;
    if !offset.starts_with(['+', '-']) {
        return None;
    }
    Some((offset.parse().ok()?, error.parse().ok()?))
}

// ---------------------------------------------------------------------------
// Start-up and exit codes
// ---------------------------------------------------------------------------

// SPEC §1: a start-up error (address already in use) exits 1, said in one
// clear line on stderr.
#[test]
fn port_in_use_exits_1_with_one_line() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let out = run_to_exit(&[&a.addr.ip().to_string(), &a.addr.port().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code for a port in use; stderr:\n{}",
        out.stderr
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one clear line on stderr, got:\n{}",
        out.stderr
    );
    assert!(
        lines[0].to_lowercase().contains("in use"),
        "the line says the address is in use: {:?}",
        lines[0]
    );
    // The node holding the port is not disturbed.
    assert_eq!(a.status().peers, 0);
}

// SPEC §1: usage errors exit 2.
#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["127.0.0.1"][..],
        &["127.0.0.1", "notaport"][..],
        &["nohost", "7000"][..],
        &["127.0.0.1", "7000", "--bogus"][..],
        &["127.0.0.1", "7000", "--rule", "tallest"][..],
        &["127.0.0.1", "7000", "--quorum", "0"][..],
        &["127.0.0.1", "7000", "--join", "nowhere"][..],
    ] {
        let out = run_to_exit(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "bossd {args:?}: stderr:\n{}",
            out.stderr
        );
        assert!(!out.stderr.trim().is_empty(), "bossd {args:?} says why");
    }
}

// Issue 5: `--help` lists every option with its meaning and default, and
// `--version` prints the version.
#[test]
fn help_lists_every_option_with_its_default() {
    let out = run_to_exit(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = out.stdout;
    for opt in [
        "--join",
        "--rule",
        "--priority",
        "--quorum",
        "--strict",
        "--heartbeat",
        "--timeout",
        "--reconnect-timeout",
        "--secret-file",
        "--notify",
        "--max-conns",
        "--log",
        "--no-console",
    ] {
        // The option's entry runs from its name to the next option's.
        let at = help
            .find(&format!("      {opt} "))
            .or_else(|| help.find(&format!("      {opt}\n")))
            .unwrap_or_else(|| panic!("--help does not list {opt}:\n{help}"));
        let rest = &help[at + opt.len() + 6..];
        let end = rest
            .find("\n      --")
            .or_else(|| rest.find("\n  -h"))
            .unwrap_or(rest.len());
        let entry = &rest[..end];
        assert!(
            entry.contains("[default: ") || entry.contains("Default: "),
            "--help gives no default for {opt}: {entry}"
        );
    }
    for word in [
        "/metrics",
        "/status",
        "bossd demo",
        "bossd ctl",
        "Exit codes",
    ] {
        assert!(help.contains(word), "--help does not mention {word}");
    }
    let out = run_to_exit(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        out.stdout.trim(),
        format!("bossd {}", env!("CARGO_PKG_VERSION"))
    );
}

// ---------------------------------------------------------------------------
// Standard input
// ---------------------------------------------------------------------------

/// Whether the node's CPU time grows by less than 0.5 s over about one
/// second of idling: a loop spinning on stdin would use the whole second.
fn assert_idle(n: &Node) {
    let before = n.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let used = n.cpu_time().saturating_sub(before);
    assert!(
        used < Duration::from_millis(500),
        "{} used {used:?} of CPU in one idle second: it spins",
        n.name
    );
}

// SPEC §2: the console works on stdin (the OK line may be omitted there);
// commands written to a pipe are answered on stdout.
#[test]
fn stdin_pipe_takes_commands() {
    let net = TestNet::new();
    let mut a = Node::start_with("A", net.addr(), &[], StdinKind::Piped);
    a.write_stdin("-s\n");
    let want_prefix = format!("id={} role=none master=- ", a.id());
    wait_until("the status line on stdout", &[&a], || {
        a.stdout_text().lines().any(|l| l.starts_with(&want_prefix))
    });
    let line = a
        .stdout_text()
        .lines()
        .find(|l| l.starts_with(&want_prefix))
        .map(str::to_owned)
        .expect("seen above");
    common::Status::parse(&line).unwrap();
    a.write_stdin("-bogus\n-m\n");
    wait_until("-bogus and -m answered on stdout", &[&a], || {
        let out = a.stdout_text();
        out.lines().any(|l| l == "ERR unknown command") && out.lines().any(|l| l == "false")
    });
    // A command from stdin acts on the node: -c joins another one.
    let b = Node::start("B", net.addr(), &[]);
    a.write_stdin(&format!("{}\n", connect_cmd(&b)));
    wait_agreed(&[&a, &b], Some(&a));
    assert_idle(&a);
    // End of file on stdin does not stop the node.
    a.close_stdin();
    assert_idle(&a);
    assert!(
        a.try_exit().is_none(),
        "EOF on stdin must not stop the node"
    );
    wait_agreed(&[&a, &b], Some(&a));
}

// SPEC §2: with stdin /dev/null (end of file at once) the node keeps
// running, answers over TCP, and does not spin.
#[test]
fn stdin_dev_null_keeps_the_node_running() {
    let net = TestNet::new();
    let mut a = Node::start_with("A", net.addr(), &[], StdinKind::Null);
    assert_idle(&a);
    assert!(a.try_exit().is_none());
    assert_eq!(a.status().role, "none");
    let b = start_joined("B", &net, &a, &[]);
    wait_agreed(&[&a, &b], Some(&a));
}

/// Runs bossd on a pseudo-terminal (Python's `pty`, so the node is the
/// terminal's foreground process), types `-s`, checks the node idles, types
/// `-q`; prints what it saw as `key=value` lines. It kills bossd whatever
/// happens, and gives up after 20 s.
const ON_A_TERMINAL: &str = r#"
import os, pty, select, sys, time
bossd, ip, port = sys.argv[1:4]
pid, fd = pty.fork()
if pid == 0:
    os.execv(bossd, [bossd, ip, port])
out, status = b"", None
def read_until(token, seconds):
    global out
    end = time.time() + seconds
    while token not in out and time.time() < end:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return
def cpu():
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
try:
    read_until(b"listening", 10)
    os.write(fd, b"-s\n")
    read_until(b"id=", 10)
    before = cpu(); time.sleep(1); used = cpu() - before
    os.write(fd, b"-q\n")
    end = time.time() + 5
    while status is None and time.time() < end:
        read_until(b"\0", 0.2)
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
finally:
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
print("cpu_s=%.2f" % used)
print("exit=%s" % status)
sys.stdout.write(out.decode(errors="replace"))
"#;

// SPEC §2: the console works on a terminal too: commands typed are
// answered, the node does not spin while waiting for input, and `-q`
// leaves with exit 0.
#[test]
fn stdin_terminal_takes_commands() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing");
        println!("SKIPPED: no python3 for a pseudo-terminal");
        return;
    }
    let net = TestNet::new();
    let addr = net.addr();
    let out = std::process::Command::new("python3")
        .args(["-c", ON_A_TERMINAL, env!("CARGO_BIN_EXE_bossd")])
        .args([addr.ip().to_string(), addr.port().to_string()])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!("id={addr} role=none master=- ");
    assert!(
        text.contains(&want),
        "no status line on the terminal:\n{text}"
    );
    let cpu: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cpu_s="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cpu_s line:\n{text}"));
    assert!(
        cpu < 0.5,
        "the node used {cpu} s of CPU in one idle second on a terminal"
    );
    assert!(
        text.contains("\nexit=0\n"),
        "-q on the terminal must exit 0:\n{text}"
    );
}

// SPEC §2: with stdin closed the node keeps running, answers over TCP and
// does not spin.
#[test]
fn stdin_closed_keeps_the_node_running() {
    let net = TestNet::new();
    let mut a = Node::start_with("A", net.addr(), &[], StdinKind::Closed);
    assert_idle(&a);
    assert!(a.try_exit().is_none());
    let b = start_joined("B", &net, &a, &[]);
    wait_agreed(&[&a, &b], Some(&a));
}

// SPEC §2: a pipe closed right away (end of file before any command) does
// not stop the node either, and `--no-console` ignores stdin altogether.
#[test]
fn stdin_eof_and_no_console_keep_the_node_running() {
    let net = TestNet::new();
    let mut a = Node::spawn("A", net.addr(), &[], StdinKind::Piped);
    a.close_stdin();
    a.wait_ready();
    let mut b = Node::spawn(
        "B",
        net.addr(),
        &["--no-console", "--join", &join_arg(&a)],
        StdinKind::Piped,
    );
    b.wait_ready();
    b.write_stdin("-q\n");
    wait_agreed(&[&a, &b], Some(&a));
    assert_idle(&a);
    assert_idle(&b);
    assert!(a.try_exit().is_none() && b.try_exit().is_none());
    assert!(
        !b.stdout_text().contains("leaving"),
        "--no-console must not read -q from stdin"
    );
}

// ---------------------------------------------------------------------------
// IPv6
// ---------------------------------------------------------------------------

// SPEC §1 (IP is IPv4 or IPv6, `--join [v6]:port`) and §2 (IPv6 addresses
// are written `[addr]:port`): a two-node cluster on [::1].
#[test]
fn ipv6_two_nodes() {
    let Some(a_addr) = common::free_ipv6_addr() else {
        println!("SKIPPED ipv6_two_nodes: [::1] cannot be bound on this machine");
        return;
    };
    let a = Node::start("A", a_addr, &[]);
    let b_addr = common::free_ipv6_addr().expect("::1 was bindable a moment ago");
    let join = join_arg(&a);
    assert!(join.starts_with("[::1]:"), "{join}");
    let b = Node::start("B", b_addr, &["--join", &join]);
    let st = wait_agreed(&[&a, &b], Some(&a));
    assert_eq!(st[0].id, format!("[::1]:{}", a_addr.port()));
    assert_eq!(st[1].master.as_deref(), Some(join.as_str()));
    // `-c` takes an IPv6 address too; to an existing peer it is an error.
    let (lines, result) = b.ctl(&format!("-c ::1 {}", a_addr.port()));
    assert!(result.is_err(), "{lines:?}");
}

// Issue 5: three nodes on [::1] with a secret form a cluster, fail over
// when the master is killed, and answer ctl and HTTP over IPv6.
#[test]
fn ipv6_three_nodes_with_a_secret_fail_over() {
    let Some(a_addr) = common::free_ipv6_addr() else {
        println!("SKIPPED: [::1] cannot be bound on this machine");
        return;
    };
    let dir = std::env::temp_dir().join(format!("bossd-v6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "v6 secret\n").unwrap();
    let secret = secret.to_string_lossy().into_owned();
    let a = Node::start("A", a_addr, &["--secret-file", &secret]);
    let join = join_arg(&a);
    let b_addr = common::free_ipv6_addr().unwrap();
    let b = Node::start("B", b_addr, &["--secret-file", &secret, "--join", &join]);
    let c_addr = common::free_ipv6_addr().unwrap();
    let c = Node::start("C", c_addr, &["--secret-file", &secret, "--join", &join]);
    let st = wait_agreed(&[&a, &b, &c], Some(&a));
    assert!(st.iter().all(|s| s.id.starts_with("[::1]:")), "{st:?}");
    // An authenticated mutating command over IPv6.
    let out = run_to_exit(&[
        "ctl",
        "::1",
        &b_addr.port().to_string(),
        "--secret-file",
        &secret,
        "-msg",
        "v6",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "sent to 2 peers\n");
    // HTTP over IPv6.
    let mut s = std::net::TcpStream::connect(c_addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /status HTTP/1.1\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(
        page.contains(&format!("\"master\": \"{}\"", a.id())),
        "{page}"
    );
    let mut a = a;
    a.sigkill();
    wait_agreed(&[&b, &c], Some(&b));
    let _ = std::fs::remove_dir_all(&dir);
}

// SPEC §2: a connection that neither finishes a peer handshake nor sends a
// command within timeout x 10 is closed; one that spoke stays open.
#[test]
fn idle_connections_are_closed_after_ten_timeouts() {
    use std::io::Read;
    let net = TestNet::new();
    // heartbeat 20 ms, timeout 50 ms: the idle limit is 500 ms.
    let a = Node::start("A", net.addr(), &["--heartbeat", "20", "--timeout", "50"]);
    let mut idle = std::net::TcpStream::connect(a.addr).unwrap();
    let mut talker = Console::open(a.addr);
    assert_eq!(talker.ask("-m"), ["false", "OK"]);
    idle.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected bytes from the node: {:?}", &buf[..n]),
        Err(e) => panic!("the idle connection was not closed: {e}"),
    }
    // The one that sent a command is still served.
    assert_eq!(talker.ask("-m"), ["false", "OK"]);
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

// Issue 5: every line a node writes to stderr is one event, in logfmt after
// the RFC 3339 time and the level (docs/OPERATIONS.md, "Logs"), debug lines
// included, through joins, a redirect, a refused HELLO, a `-q`, a crash and
// a SIGTERM; role changes are at INFO with epoch and cause. No `--notify`:
// a hook's own output would share stderr.
#[test]
fn every_log_line_is_logfmt() {
    let net = TestNet::new();
    let debug = ["--log", "debug"];
    let mut a = Node::start("A", net.addr(), &debug);
    let mut b = start_joined("B", &net, &a, &debug);
    wait_agreed(&[&a, &b], Some(&a));
    // B follows A, so it redirects C there.
    let mut c = start_joined("C", &net, &b, &debug);
    wait_agreed(&[&a, &b, &c], Some(&a));
    // A HELLO whose refusal quotes `"`, `=` and a tab back.
    let mut hello = Console::open(a.addr);
    hello.send("HELLO bossd/2 join \"x=y\"\t1\n");
    let answer = hello.read_line().unwrap_or_default();
    assert!(answer.starts_with("REFUSE "), "{answer:?}");
    wait_until("A logs the refused HELLO", &[&a], || {
        a.logged("peer-refused", &[])
    });
    let (lines, result) = c.ctl("-q");
    assert_eq!(result, Ok(()), "-q answered {lines:?}");
    let status = c.wait_exit(DEADLINE).expect("C exits after -q");
    assert_eq!(status.code(), Some(0), "{}", c.describe());
    wait_agreed(&[&a, &b], Some(&a));
    b.sigkill();
    wait_until("A loses B", &[&a], || {
        a.logged("peer-lost", &[("peer", &b.id())])
    });
    a.sigterm();
    let status = a.wait_exit(DEADLINE).expect("A exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", a.describe());
    // Each line is one write(2), so once the last one arrived every line is
    // whole, also for B, killed at any point.
    wait_until("the logs are read to their end", &[&a, &b, &c], || {
        [&a, &b, &c].iter().all(|n| n.stderr_text().ends_with('\n'))
    });

    for n in [&a, &b, &c] {
        let text = n.stderr_text();
        let events: Vec<logfmt::Event> = text
            .lines()
            .map(|l| logfmt::parse_line(l).unwrap_or_else(|e| panic!("{}: {e}\n{text}", n.name)))
            .collect();
        let has = |name: &str, fields: &[(&str, &str)]| events.iter().any(|e| e.is(name, fields));
        assert!(
            has("listening", &[("addr", &n.id())]),
            "{}:\n{text}",
            n.name
        );
        assert!(
            has("send", &[]) && has("recv", &[]),
            "{}: debug lines\n{text}",
            n.name
        );
        let changes: Vec<&logfmt::Event> =
            events.iter().filter(|e| e.name == "role-change").collect();
        assert!(!changes.is_empty(), "{}: no role change\n{text}", n.name);
        for e in changes {
            assert_eq!(e.level, "INFO", "{}: {e:?}", n.name);
            let keys: Vec<&str> = e.fields.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, ["from", "to", "epoch", "master", "cause"], "{e:?}");
            assert!(
                e.field("epoch").is_some_and(|v| v.parse::<u64>().is_ok()),
                "{e:?}"
            );
        }
    }
    let (a_id, b_id, c_id) = (a.id(), b.id(), c.id());
    assert!(a.logged("role-change", &[("to", "master"), ("master", &a_id)]));
    assert!(a.logged("peer-joined", &[("peer", &b_id)]));
    assert!(a.logged("peer-left", &[("peer", &c_id)]));
    assert!(a.logged("leaving", &[("cause", "signal"), ("signal", "SIGTERM")]));
    assert!(a.logged("left", &[]));
    let refused = a.events().into_iter().find(|e| e.name == "peer-refused");
    let reason = refused.as_ref().and_then(|e| e.field("reason"));
    assert!(
        reason.is_some_and(|r| r.contains("\"bossd/2\"")),
        "{refused:?}"
    );
    assert!(b.logged("redirect-sent", &[("peer", &c_id), ("master", &a_id)]));
    assert!(c.logged("redirect-followed", &[("peer", &b_id), ("master", &a_id)]));
    assert!(c.logged("role-change", &[("to", "follower"), ("master", &a_id)]));
    assert!(c.logged("leaving", &[("cause", "console")]));
    assert!(c.logged("left", &[]));
}
