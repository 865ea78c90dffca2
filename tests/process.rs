//! Real-process tests: actual `bossd` binaries on loopback, driven over the
//! TCP console, checked against docs/GUARANTEES.md.
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

// docs/GUARANTEES.md, joining (the rule picks the master; default rule `oldest`) and guarantees
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

// docs/GUARANTEES.md, joining: a node that connects to a non-master member is told who the
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
    // A redirect is an answer, not a failed join: no warning (issue 11).
    // (Other warnings may come: two nodes started within their clocks'
    // skew give `start-within-skew`.)
    assert!(
        !c.stderr_text().contains("event=join-failed"),
        "{}",
        c.stderr_text()
    );
}

// Guarantee 4 (docs/GUARANTEES.md; crash failover) and 9 (epochs grow): five nodes, the
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

// Guarantees 1 and 3 (docs/GUARANTEES.md): a crashed follower leaves the master in place
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

// Guarantee 2 (docs/GUARANTEES.md; no lone master, default quorum 2): when the last peer
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

// Guarantee 6 (docs/GUARANTEES.md; graceful leave on SIGTERM): the master exits 0, the
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

// Guarantee 6 (docs/GUARANTEES.md; graceful leave on SIGINT): exit code 0.
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

// docs/GUARANTEES.md, console `-q`, and guarantee 6: a follower leaves with `-q`, exits 0,
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

// docs/GUARANTEES.md, joining: connecting two groups merges them into one group with one
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

// docs/GUARANTEES.md, running bossd `--join` and joining: a crashed master restarted on its port with
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

// Guarantee 3 (docs/GUARANTEES.md) with a follower restarted: the same, for a follower.
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

// docs/GUARANTEES.md, running bossd `--rule youngest`: the node started last wins.
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

// docs/GUARANTEES.md, running bossd `--rule priority`: the higher priority wins, even against age.
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

// docs/GUARANTEES.md, running bossd `--rule lowest-addr`: the lowest address wins, even against age.
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

// docs/GUARANTEES.md, running bossd `--rule highest-addr`: the highest address wins, even against age.
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

// docs/GUARANTEES.md, running bossd `--rule priority,oldest`: criteria apply in order; among equal
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

// docs/GUARANTEES.md, running bossd: every node of a cluster must use the same `--rule`; a peer with
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

// docs/GUARANTEES.md, running bossd: every node of a cluster must use the same `--quorum`; likewise.
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

// Issue 11: a `--join` target that does not answer is said at the default
// log level, once: a WARN `join-failed` at the first failed attempt, none
// for the retries (`dial-failed` stays DEBUG), and a WARN `join-reached`
// with the attempts it took once it answers.
#[test]
fn an_unreachable_join_target_warns_once_and_again_when_reached() {
    let net = TestNet::new();
    let target = net.addr();
    let t = target.to_string();
    let a = Node::start("A", net.addr(), &["--join", &t, "--log", "debug"]);
    let dials = || {
        a.events()
            .iter()
            .filter(|e| e.is("dial-failed", &[("peer", &t)]))
            .count()
    };
    wait_until("A retried its join four times", &[&a], || dials() >= 4);
    let failed = a.events_named("join-failed");
    assert_eq!(
        failed.len(),
        1,
        "one join-failed for {} dials: {failed:?}",
        dials()
    );
    assert!(
        failed[0].is("join-failed", &[("peer", &t), ("attempts", "1")]),
        "{failed:?}"
    );
    assert!(failed[0].field("reason").is_some(), "{failed:?}");
    assert!(a.stderr_text().contains(" WARN event=join-failed "));
    let b = Node::start("B", target, &[]);
    wait_agreed(&[&a, &b], Some(&a));
    wait_until("A says the target answered", &[&a], || {
        a.logged("join-reached", &[("peer", &t)])
    });
    let reached = a
        .events()
        .into_iter()
        .find(|e| e.name == "join-reached")
        .expect("logged");
    let attempts: u32 = reached
        .field("attempts")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(attempts >= 5, "{reached:?}");
    assert!(a.stderr_text().contains(" WARN event=join-reached "));
}

// Issue 11: `-c` to a target that does not answer says so: the answer
// waits for the first attempt and tells how it failed; the join is still
// retried. To a live target it says it connected.
#[test]
fn connect_answers_after_the_first_attempt() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let dead = net.addr();
    let (lines, result) = a.ctl(&format!("-c {} {}", dead.ip(), dead.port()));
    assert_eq!(result, Ok(()), "{lines:?}");
    assert_eq!(lines[0], format!("connecting to {dead}"), "{lines:?}");
    assert!(
        lines.len() == 2 && lines[1].starts_with("first attempt failed: "),
        "{lines:?}"
    );
    assert!(lines[1].ends_with("; retrying with backoff"), "{lines:?}");
    let b = Node::start("B", net.addr(), &[]);
    let (lines, result) = a.ctl(&connect_cmd(&b));
    assert_eq!(result, Ok(()), "{lines:?}");
    assert_eq!(lines, [format!("connected to {}", b.addr)]);
    // The first target, started now, is joined by the retries.
    let c = Node::start("C", dead, &[]);
    wait_agreed(&[&a, &b, &c], Some(&a));
}

// docs/GUARANTEES.md, console `-c`: connecting to this node itself, or to a node that already
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
    // Port 0 names no node: one ERR line, and nothing is dialled for ever.
    let (lines, result) = a.ctl(&format!("-c {} 0", b.addr.ip()));
    assert_eq!(
        (lines, result),
        (
            vec![],
            Err("not a port: 0 (a node listens on 1 to 65535)".to_owned())
        )
    );
    holds_for("nothing changed", WATCH / 2, &[&a, &b], || {
        agreed(&[&a, &b], Some(&a)).is_some_and(|st| st[0].epoch == before[0].epoch)
    });
}

// ---------------------------------------------------------------------------
// Console
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, console: an unknown command gets `ERR unknown command` and the connection
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
    // Issue 11: a blank line gets an answer too, also as the first line.
    assert_eq!(con.ask(""), ["ERR empty command"]);
    assert_eq!(con.ask(" \t "), ["ERR empty command"]);
    assert_eq!(ask_half_closed(a.addr, "\n"), "ERR empty command\n");
}

/// Writes `text` to `addr`, shuts down the writing half (as `printf ... |
/// nc -N` does), and reads until the node closes: the whole answer.
fn ask_half_closed(addr: std::net::SocketAddr, text: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE))
        .expect("set_read_timeout");
    s.write_all(text.as_bytes()).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("no end to the answer to {text:?}: {e}; got {answer:?}"));
    answer
}

// Issue 11: every queued answer reaches a connection that half-closed its
// side right after its request (`printf 'HELLO ...\n' | nc -N`): the
// REFUSE the core sends a peer it will not take, a console answer, an
// ERR. The end of file came with the request, and the REFUSE, queued by
// the core after the read, was lost 19 times in 20; twenty rounds each.
#[test]
fn a_half_closed_connection_gets_its_answer() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let other = net.addr();
    let hello =
        format!("HELLO bossd/4 join {other} 1764000000123 deadbeef00000001 0 3 0 oldest 0 0 ok\n");
    for round in 0..20 {
        let answer = ask_half_closed(a.addr, &hello);
        assert_eq!(
            answer,
            format!("REFUSE quorum mismatch: {} has 2, {other} has 3\n", a.addr),
            "round {round}"
        );
        let answer = ask_half_closed(a.addr, "-m\n");
        assert_eq!(answer, "false\nOK\n", "round {round}");
        let answer = ask_half_closed(a.addr, "-bogus\n");
        assert_eq!(answer, "ERR unknown command\n", "round {round}");
    }
    assert_eq!(a.status().peers, 0);
}

// Issue 14 (docs/PROTOCOL.md, "Versions"): a peer still speaking bossd/3
// (whose followers heartbeat each other) is refused with a REFUSE naming
// both versions and one warning, which names both too.
#[test]
fn a_peer_of_the_old_version_is_refused_naming_both() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let other = net.addr();
    let hello =
        format!("HELLO bossd/3 join {other} 1764000000123 deadbeef00000001 0 2 0 oldest 0 0 ok\n");
    let answer = ask_half_closed(a.addr, &hello);
    assert_eq!(
        answer,
        "REFUSE unsupported protocol version \"bossd/3\" (this is bossd/4)\n"
    );
    wait_until("the refusal is logged", &[&a], || {
        a.logged("peer-refused", &[])
    });
    let refused = a.events_named("peer-refused");
    assert_eq!(refused.len(), 1, "one line: {refused:?}");
    let reason = refused[0]
        .fields
        .iter()
        .find(|(k, _)| k == "reason")
        .map(|(_, v)| v.as_str())
        .expect("a reason");
    assert!(
        reason.contains("bossd/3") && reason.contains("bossd/4"),
        "{reason}"
    );
    assert_eq!(a.status().peers, 0);
}

// docs/GUARANTEES.md, console `-m`: exactly `true` or `false`, then OK.
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

// docs/GUARANTEES.md, console `-t`: the start time as ISO-8601 UTC with milliseconds, then unix
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

// docs/GUARANTEES.md, console `-msg`: the text is printed on every peer's console (stdout).
#[test]
fn msg_is_printed_on_the_peers_stdout() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let b = start_joined("B", &net, &a, &[]);
    let c = start_joined("C", &net, &a, &[]);
    wait_agreed(&[&a, &b, &c], Some(&a));
    let (lines, result) = b.ctl("-msg hello from B, 42!");
    assert_eq!(result, Ok(()));
    assert_eq!(lines, ["sent to 2 peers"]);
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
    // Issue 11: one peer is one peer.
    let mut c = c;
    c.sigkill();
    wait_agreed(&[&a, &b], Some(&a));
    assert_eq!(b.ctl("-msg to one").0, ["sent to 1 peer"]);
}

// docs/GUARANTEES.md, status line: exactly one line with the keys in order and
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
            "id={} role=none master=- epoch=0 peers=0 quorum=2 started={} rule=priority,oldest health=ok",
            a.id(),
            alone.started
        )
    );
    let b = start_joined("B", &net, &a, &["--rule", "priority,oldest"]);
    let st = wait_agreed(&[&a, &b], Some(&a));
    assert_eq!(
        st[0].line,
        format!(
            "id={} role=master master={} epoch={} peers=1 quorum=2 started={} rule=priority,oldest health=ok",
            a.id(),
            a.id(),
            st[0].epoch,
            alone.started
        )
    );
    assert_eq!(
        st[1].line,
        format!(
            "id={} role=follower master={} epoch={} peers=1 quorum=2 started={} rule=priority,oldest health=ok",
            b.id(),
            a.id(),
            st[0].epoch,
            st[1].started
        )
    );
}

// docs/GUARANTEES.md, console `-cl` and `-r`, with issue 5's clock skew: each `-cl` line gives
// the peer's address, start time, whether it is master and ms since last
// heard, in that order, then its clock's offset from this node's with the
// error; `-r` gives the skew of every member, this node's own +0+-0ms. Both
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
            .unwrap_or_else(|| panic!("skew=<+-n>+-<n>ms: {line:?}"));
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
                assert_eq!(skew, "+0+-0ms", "{r:?}");
            } else {
                let (offset, error) = parse_skew(skew).unwrap_or_else(|| panic!("skew in {r:?}"));
                assert!(offset.unsigned_abs() <= error + 50, "{r:?}");
            }
        }
    }
}

/// `+3+-1ms` as (3, 1); ASCII only (issue 11).
fn parse_skew(s: &str) -> Option<(i64, u64)> {
    if !s.is_ascii() {
        return None;
    }
    let (offset, error) = s.strip_suffix("ms")?.split_once("+-")?;
    if !offset.starts_with(['+', '-']) {
        return None;
    }
    Some((offset.parse().ok()?, error.parse().ok()?))
}

// ---------------------------------------------------------------------------
// Start-up and exit codes
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, running bossd: a start-up error (address already in use) exits 1, said in one
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

// Issue 11 (docs/GUARANTEES.md, running bossd): port 0 means a free port. The node binds, logs
// `event=listening` with the port it got, and is known by that port
// everywhere: its `-s` id, the HELLO a joining node reads (which then
// reports it as master) and the hook's BOSSD_ID.
#[test]
fn port_zero_listens_on_a_free_port_and_is_known_by_it() {
    let net = TestNet::new();
    let dir = common::TempDir::new("port0");
    let ids = dir.file("ids");
    let notify = format!("echo \"$BOSSD_ID\" >> '{}'", ids.display());
    let asked = std::net::SocketAddr::new(net.ip(1), 0);
    let mut a = Node::spawn("A", asked, &["--notify", &notify], StdinKind::Null);
    let real = listening_addr(&mut a).unwrap_or_else(|| panic!("A exited:\n{}", a.stderr_text()));
    assert_eq!(real.ip(), asked.ip(), "{}", a.stderr_text());
    assert_ne!(real.port(), 0, "the log names port 0:\n{}", a.stderr_text());
    a.addr = real;
    a.wait_ready();
    assert_eq!(a.status().id, real.to_string());
    let b = start_joined("B", &net, &a, &[]);
    let st = wait_agreed(&[&a, &b], Some(&a));
    assert_eq!(st[1].master.as_deref(), Some(real.to_string().as_str()));
    wait_until("A's hook ran with its real address", &[&a], || {
        std::fs::read_to_string(&ids).is_ok_and(|t| t.contains(&format!("{real}\n")))
    });
    let text = std::fs::read_to_string(&ids).unwrap_or_default();
    assert!(!text.contains(":0\n"), "a hook saw port 0: {text}");
}

// A node is known by the address it listens on, so 0.0.0.0 (which
// peers told of it would dial as their own host) is worth one warning at
// start; a real address is not warned about.
#[test]
fn an_unspecified_address_is_warned_about_once() {
    let asked = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let mut a = Node::spawn("A", asked, &[], StdinKind::Null);
    let real = listening_addr(&mut a).unwrap_or_else(|| panic!("A exited:\n{}", a.stderr_text()));
    wait_until("A warns about 0.0.0.0", &[&a], || {
        a.logged("unspecified-addr", &[])
    });
    let warned = a.events_named("unspecified-addr");
    assert_eq!(warned.len(), 1, "{}", a.stderr_text());
    assert_eq!(warned[0].field("addr"), Some(real.to_string().as_str()));
    let net = TestNet::new();
    let b = Node::start("B", net.addr(), &[]);
    assert!(!b.logged("unspecified-addr", &[]), "{}", b.stderr_text());
}

/// The address a node started on port 0 logs it listens on; `None` if it
/// exited first.
fn listening_addr(a: &mut Node) -> Option<std::net::SocketAddr> {
    let mut logged = None;
    wait_until("A logs the address it listens on", &[], || {
        logged = a
            .events()
            .iter()
            .find(|e| e.name == "listening")
            .and_then(|e| e.field("addr")?.parse::<std::net::SocketAddr>().ok());
        logged.is_some() || a.try_exit().is_some()
    });
    logged
}

// docs/GUARANTEES.md, port 0: the log line is how a caller learns the
// port, so it is written at every --log level, also where info lines are
// hidden; the other info lines stay hidden.
#[test]
fn port_zero_is_logged_whatever_the_log_level() {
    let net = TestNet::new();
    for level in ["warn", "error"] {
        let asked = std::net::SocketAddr::new(net.ip(1), 0);
        let mut a = Node::spawn("A", asked, &["--log", level], StdinKind::Null);
        let real = listening_addr(&mut a)
            .unwrap_or_else(|| panic!("--log {level}: A exited:\n{}", a.stderr_text()));
        assert_eq!(real.ip(), asked.ip(), "{}", a.stderr_text());
        assert_ne!(real.port(), 0, "the log names port 0:\n{}", a.stderr_text());
        a.addr = real;
        a.wait_ready();
        a.sigterm();
        a.wait_exit(Duration::from_secs(10));
        let infos: Vec<String> = a
            .events()
            .iter()
            .filter(|e| e.level == "INFO" && e.name != "listening")
            .map(|e| e.name.clone())
            .collect();
        assert!(
            infos.is_empty(),
            "--log {level} let info lines through: {infos:?}"
        );
    }
}

// docs/GUARANTEES.md, running bossd: usage errors exit 2 and say why in
// one line, which names the help of the form that was meant.
#[test]
fn usage_errors_exit_2() {
    for (args, help) in [
        (&[][..], "bossd --help"),
        (&["127.0.0.1"][..], "bossd --help"),
        (&["127.0.0.1", "notaport"][..], "bossd --help"),
        (&["nohost", "7000"][..], "bossd --help"),
        (&["127.0.0.1", "7000", "--bogus"][..], "bossd --help"),
        (
            &["127.0.0.1", "7000", "--rule", "tallest"][..],
            "bossd --help",
        ),
        (&["127.0.0.1", "7000", "--quorum", "0"][..], "bossd --help"),
        (
            &["127.0.0.1", "7000", "--join", "nowhere"][..],
            "bossd --help",
        ),
        (
            &["127.0.0.1", "7000", "--join", "127.0.0.1:0"][..],
            "bossd --help",
        ),
        (
            &["127.0.0.1", "7000", "--strict", "--strict"][..],
            "bossd --help",
        ),
        (
            &["127.0.0.1", "7000", "--timeout", "150"][..],
            "bossd --help",
        ),
        (&["help", "nothing"][..], "bossd --help"),
        (&["ctl", "127.0.0.1"][..], "bossd ctl --help"),
        (&["ctl", "127.0.0.1", "7000"][..], "bossd ctl --help"),
        (&["demo", "2"][..], "bossd demo --help"),
    ] {
        let out = run_to_exit(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "bossd {args:?}: stderr:\n{}",
            out.stderr
        );
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert!(
            lines.len() == 1
                && lines[0].starts_with("error: ")
                && lines[0].ends_with(&format!("; try '{help}'")),
            "bossd {args:?} says why in one line:\n{}",
            out.stderr
        );
    }
    // A mistyped option: the one line keeps clap's suggestion.
    let out = run_to_exit(&["127.0.0.1", "7000", "--stric"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "error: unexpected argument '--stric' found; a similar argument exists: '--strict'; \
         try 'bossd --help'\n"
    );
    // The check's options without --check: one line naming both flags,
    // not clap's list of missing arguments.
    for (flag, value) in [
        ("--check-interval", "2000"),
        ("--check-timeout", "2000"),
        ("--check-fall", "2"),
        ("--check-rise", "2"),
    ] {
        let out = run_to_exit(&["127.0.0.1", "7000", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", out.stderr);
        assert!(
            out.stderr.lines().count() == 1
                && out
                    .stderr
                    .starts_with(&format!("error: {flag} needs --check CMD")),
            "{flag}: {}",
            out.stderr
        );
    }
}

// Issue 11: a criterion listed twice in --rule is refused, naming it.
#[test]
fn a_repeated_rule_criterion_is_a_usage_error() {
    // A free address: were the rule taken, the node would run there.
    let addr = TestNet::new().addr();
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    let out = run_to_exit(&[&ip, &port, "--rule", "priority,oldest,priority"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].contains("\"priority\" is listed twice"),
        "{}",
        out.stderr
    );
}

// Issue 5 (docs/GUARANTEES.md, options of a node): `--help` lists every
// option with its meaning and default, and
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
        "--no-preempt",
        "--preempt-delay",
        "--state-dir",
        "--check",
        "--check-interval",
        "--check-timeout",
        "--check-fall",
        "--check-rise",
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

// Issue 11 (docs/GUARANTEES.md, running bossd): console commands that begin with `-` reach the node
// even where they look like ctl's own flags; ctl's options go before IP,
// or `--secret-file PATH` right after PORT; a missing command is a usage
// error.
#[test]
fn ctl_sends_every_command_word_to_the_node() {
    let net = TestNet::new();
    let dir = common::TempDir::new("ctl");
    let secret = dir.secret("secret", "ctl test secret");
    let a = Node::start("A", net.addr(), &["--secret-file", &secret]);
    let (ip, port) = (a.addr.ip().to_string(), a.addr.port().to_string());
    let out = run_to_exit(&["ctl", &ip, &port, "-h"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("-msg TEXT"),
        "the node's -h: {}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("Usage:"),
        "not ctl's help: {}",
        out.stdout
    );
    for flag in ["--help", "-V", "--version", "--secret-file=x"] {
        let out = run_to_exit(&["ctl", &ip, &port, "-s", flag]);
        assert_eq!(out.status.code(), Some(1), "-s {flag}: {}", out.stderr);
        assert_eq!(
            out.stderr, "bossd ctl: ERR -s takes no arguments\n",
            "-s {flag}"
        );
    }
    // A mutating command without the secret: the node refuses it.
    for (flag, answer) in [
        ("--help", "unknown command"),
        ("-V", "unknown command"),
        ("--version", "unknown command"),
        ("-q", "not permitted"),
    ] {
        let out = run_to_exit(&["ctl", &ip, &port, flag]);
        assert_eq!(out.status.code(), Some(1), "{flag}: {}", out.stderr);
        assert_eq!(out.stderr, format!("bossd ctl: ERR {answer}\n"), "{flag}");
    }
    // The secret before IP, or right after PORT; a mutating command runs.
    for args in [
        vec!["ctl", "--secret-file", &secret, &ip, &port, "-msg", "hi"],
        vec!["ctl", &ip, &port, "--secret-file", &secret, "-msg", "hi"],
    ] {
        let out = run_to_exit(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "sent to 0 peers\n", "{args:?}");
    }
    let out = run_to_exit(&["ctl", &ip, &port]);
    assert_eq!(out.status.code(), Some(2), "no command: {}", out.stderr);
    let out = run_to_exit(&["ctl", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    for word in ["bossd ctl", "--secret-file", "<COMMAND>", "5 s"] {
        assert!(
            out.stdout.contains(word),
            "ctl --help lacks {word}:\n{}",
            out.stdout
        );
    }
}

// Issue 11: ctl waits 5 s for an answer, so a frozen node cannot hang a
// script; it says so in one line and exits 1.
#[test]
fn ctl_gives_up_on_a_frozen_node() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    a.sigstop();
    let out = run_to_exit(&[
        "ctl",
        &a.addr.ip().to_string(),
        &a.addr.port().to_string(),
        "-s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!("bossd ctl: no answer from {} within 5 s\n", a.addr)
    );
}

// Issue 11 (docs/GUARANTEES.md, running bossd): `bossd --help` and `bossd help` both list the three
// forms, `bossd help ctl` and `bossd help demo` explain theirs.
#[test]
fn help_lists_the_three_forms() {
    for args in [&["--help"][..], &["help"][..], &["-h"][..]] {
        let out = run_to_exit(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", out.stderr);
        let usage = out
            .stdout
            .split("\n\n")
            .find(|p| p.starts_with("Usage:"))
            .unwrap_or_else(|| panic!("{args:?}: no usage:\n{}", out.stdout));
        for form in ["bossd <IP> <PORT>", "bossd ctl ", "bossd demo [N]"] {
            assert!(usage.contains(form), "{args:?}: {form} not in\n{usage}");
        }
    }
    let out = run_to_exit(&["help", "ctl"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("Usage: bossd ctl "), "{}", out.stdout);
    let out = run_to_exit(&["help", "demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("Usage: bossd demo [N]"),
        "{}",
        out.stdout
    );
    let out = run_to_exit(&["help", "nothing"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
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

// docs/GUARANTEES.md, console: the console works on stdin (the OK line may be omitted there);
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

// docs/GUARANTEES.md, console: on stdin, a line that is not UTF-8 or too
// long gets one ERR line and is dropped; the commands after it are read as
// usual, also those that came in the same write, and the tail of a long
// line that arrives later is not taken for a command.
#[test]
fn stdin_drops_a_bad_line_and_reads_on() {
    let net = TestNet::new();
    let mut a = Node::start_with("A", net.addr(), &[], StdinKind::Piped);
    let answered = |a: &Node, n: usize| a.stdout_text().lines().count() >= n;
    a.write_stdin_bytes(b"\xff\xfe\n-m\n");
    wait_until("the line after one not UTF-8", &[&a], || answered(&a, 2));
    a.write_stdin(&format!("{}\n-m\n", "x".repeat(5000)));
    wait_until("the line after one too long", &[&a], || answered(&a, 4));
    // A long line whose end comes in a later write.
    a.write_stdin(&"y".repeat(5000));
    wait_until("the ERR of a long line still open", &[&a], || {
        answered(&a, 5)
    });
    a.write_stdin("yyy\n-cn\n");
    wait_until("the line after its end", &[&a], || answered(&a, 6));
    assert_eq!(
        a.stdout_text().lines().collect::<Vec<_>>(),
        [
            "ERR line is not UTF-8",
            "false",
            "ERR line too long",
            "false",
            "ERR line too long",
            "0"
        ]
    );
    a.write_stdin("-q\n");
    let status = a.wait_exit(DEADLINE).expect("-q on stdin still works");
    assert_eq!(status.code(), Some(0), "{}", a.stderr_text());
}

// docs/GUARANTEES.md, console: with stdin /dev/null (end of file at once) the node keeps
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

/// A pseudo-terminal: the controlling side, and the terminal's path.
struct Pty {
    controller: std::fs::File,
    terminal: std::ffi::CString,
}

impl Pty {
    fn open() -> Pty {
        use std::os::fd::FromRawFd;
        // SAFETY: posix_openpt, grantpt, unlockpt, ptsname_r and fcntl on
        // the descriptor just opened, which the File then owns; the name
        // buffer is valid for its length.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            let controller = std::fs::File::from_raw_fd(fd);
            assert_eq!(libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC), 0);
            assert_eq!(libc::grantpt(fd), 0, "grantpt");
            assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
            let terminal = std::ffi::CStr::from_ptr(name.as_ptr()).to_owned();
            Pty {
                controller,
                terminal,
            }
        }
    }

    /// Reads what the terminal shows into `out` until it holds `token`,
    /// the terminal closes (the node exited) or `wait` passed.
    fn read_until(&mut self, out: &mut String, token: &str, wait: Duration) {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let end = std::time::Instant::now() + wait;
        while !out.contains(token) && std::time::Instant::now() < end {
            let mut p = libc::pollfd {
                fd: self.controller.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, a 100 ms timeout.
            if unsafe { libc::poll(&mut p, 1, 100) } != 1 {
                continue;
            }
            let mut buf = [0u8; 4096];
            match self.controller.read(&mut buf) {
                Ok(n @ 1..) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
                // EIO: every terminal side closed, the node exited.
                _ => return,
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write;
        self.controller
            .write_all(format!("{line}\n").as_bytes())
            .expect("type on the terminal");
    }
}

/// A child killed and reaped when dropped, pass or fail.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bossd IP PORT` in a session of its own whose controlling
/// terminal is `pty`, on its stdin, stdout and stderr: the node is the
/// terminal's foreground process, as in an interactive shell.
fn spawn_on_terminal(pty: &Pty, addr: std::net::SocketAddr) -> Reaped {
    use std::os::unix::process::CommandExt;
    let terminal = pty.terminal.clone();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bossd"));
    cmd.args([addr.ip().to_string(), addr.port().to_string()]);
    // SAFETY: setsid, open, ioctl, dup2 and close are async-signal-safe,
    // and the path was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::setsid() < 0 {
                return fail();
            }
            let fd = libc::open(terminal.as_ptr(), libc::O_RDWR);
            if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                return fail();
            }
            for target in 0..3 {
                if libc::dup2(fd, target) < 0 {
                    return fail();
                }
            }
            if fd > 2 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    Reaped(cmd.spawn().expect("start bossd on a terminal"))
}

// docs/GUARANTEES.md, console: the console works on a terminal too: commands typed are
// answered, the node does not spin while waiting for input, and `-q`
// leaves with exit 0.
#[test]
fn stdin_terminal_takes_commands() {
    let net = TestNet::new();
    let addr = net.addr();
    let mut pty = Pty::open();
    let mut node = spawn_on_terminal(&pty, addr);
    let mut seen = String::new();
    pty.read_until(&mut seen, "event=listening", DEADLINE);
    pty.type_line("-s");
    let want = format!("id={addr} role=none master=- ");
    pty.read_until(&mut seen, &want, DEADLINE);
    assert!(
        seen.contains(&want),
        "no status line on the terminal:\n{seen}"
    );
    let before = common::cpu_time_of(node.0.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = common::cpu_time_of(node.0.id()).saturating_sub(before);
    assert!(
        used < Duration::from_millis(500),
        "the node used {used:?} of CPU in one idle second on a terminal"
    );
    pty.type_line("-q");
    let end = std::time::Instant::now() + DEADLINE;
    let status = loop {
        pty.read_until(&mut seen, "\0", Duration::from_millis(100));
        if let Some(status) = node.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < end,
            "-q on the terminal did not end the node:\n{seen}"
        );
    };
    assert_eq!(
        status.code(),
        Some(0),
        "-q on the terminal must exit 0:\n{seen}"
    );
}

// docs/GUARANTEES.md, console: with stdin closed the node keeps running, answers over TCP and
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

// docs/GUARANTEES.md, console: a pipe closed right away (end of file before any command) does
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

// docs/GUARANTEES.md, console: a connection that neither finishes a peer handshake nor sends a
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
    hello.send("HELLO bossd/1 join \"x=y\"\t1\n");
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
        reason.is_some_and(|r| r.contains("\"bossd/1\"")),
        "{refused:?}"
    );
    assert!(b.logged("redirect-sent", &[("peer", &c_id), ("master", &a_id)]));
    assert!(c.logged("redirect-followed", &[("peer", &b_id), ("master", &a_id)]));
    assert!(c.logged("role-change", &[("to", "follower"), ("master", &a_id)]));
    assert!(c.logged("leaving", &[("cause", "console")]));
    assert!(c.logged("left", &[]));
}
