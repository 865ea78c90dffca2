//! The election core's speed: events per second handled by one `Node`,
//! and simulated clusters of 10, 100 and 200 nodes (the deterministic
//! simulator of tests/sim), counting the messages and the virtual time a
//! join, a crash failover, a second at rest and a healed partition take. The simulated
//! nodes are the real endpoints over a wire of bytes (tests/sim), so
//! framing and the link layer are in the figures too.
//!
//! Virtual time is the simulator's: every flush takes 0 to 2 ms, timers fire
//! exactly, heartbeat 100 ms and timeout 500 ms (the defaults). It says how
//! many round trips and timers a scenario needs, not how fast a machine is.
//! `--quick` runs the microbenchmarks briefly and clusters of 10 and 100
//! only; it asserts nothing about timings. Above [`HEAL_MAX_NODES`] no
//! partition is healed. `--sizes 1000` takes about 14 minutes and 2 GB.
//! `--trace MS` prints what the wire and the nodes hold every MS virtual
//! ms of each scenario, on stderr.
//!
//! `cargo bench --bench core [-- --quick] [-- --sizes 10,100,200] [-- --trace 1]`

#[path = "../tests/sim/mod.rs"]
mod sim;
#[path = "util/mod.rs"]
mod util;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bossd::core::{Action, Config, LinkId, Node};
use bossd::protocol::{Echo, Health, Hello, LinkKind, Message, Role, State};
use bossd::rule::Rule;
use bossd::time::{Mono, Wall};
use sim::Cluster;
use util::{Table, rate, thousands};

/// Most virtual time any scenario may take before the bench says it did
/// not converge.
const LIMIT_MS: u64 = 60_000;

/// Virtual time after agreement during which late lines caused by the
/// event (duplicate introductions) are still counted.
const TAIL_MS: u64 = 20;

/// The largest cluster whose partition is healed. Healing is left to the
/// mesh repair (`sync_view`: each member sends each peer whose view
/// differs its whole view, once both views settled), up to n³ MEETs: at
/// 200 nodes 776,846 of the heal's 1.2 M lines, and at 1,000 many GB in
/// flight at once in the simulator (docs/BENCHMARKS.md, "The core at
/// 1,000 nodes").
const HEAL_MAX_NODES: usize = 500;

/// The steady-state window after the failover, in virtual ms: ten
/// heartbeat rounds.
const REST_MS: u64 = 1_000;

/// How long the partition lasts before it heals, in virtual ms: long
/// enough for both sides to drop each other (timeout) and elect.
const PARTITION_MS: u64 = 2_000;

fn main() {
    let quick = util::quick();
    println!("# core bench: {}", util::machine());
    microbench(quick);
    let sizes: Vec<usize> = match util::flag_value("--sizes") {
        Some(s) => s
            .split(',')
            .map(|n| n.parse().expect("--sizes takes numbers"))
            .collect(),
        None if quick => vec![10, 100],
        // 1,000 is not in the defaults: `--sizes 1000` skips the
        // partition (HEAL_MAX_NODES) and takes about 14 minutes
        // (docs/BENCHMARKS.md, "The core at 1,000 nodes").
        None => vec![10, 100, 200],
    };
    let mut t = Table::new(&[
        "nodes",
        "scenario",
        "virtual ms",
        "messages",
        "of which heartbeats",
        "wall s",
        "sim lines/s",
    ]);
    let mut kinds = Table::new(&["nodes", "scenario", "messages by kind (heartbeats aside)"]);
    for n in sizes {
        for (name, o) in scenarios(n) {
            t.row(vec![
                n.to_string(),
                name.to_string(),
                o.virtual_ms.to_string(),
                thousands(o.total()),
                thousands(o.heartbeats()),
                format!("{:.2}", o.wall.as_secs_f64()),
                rate(o.total() as f64 / o.wall.as_secs_f64()),
            ]);
            let by_kind: Vec<String> = o
                .sent
                .iter()
                .filter(|(k, _)| **k != "PING")
                .map(|(k, v)| format!("{k} {}", thousands(*v)))
                .collect();
            kinds.row(vec![n.to_string(), name.to_string(), by_kind.join(", ")]);
        }
    }
    t.print("Simulated clusters (heartbeat 100 ms, timeout 500 ms, 0-2 ms per line)");
    kinds.print("Messages by kind");
}

// ---------------------------------------------------------------------------
// One node's events per second
// ---------------------------------------------------------------------------

/// Times single events on a master with 4, 99 and 999 established peers,
/// draining the actions each produces as the loop would.
fn microbench(quick: bool) {
    let iters: u64 = if quick { 2_000 } else { 50_000 };
    let mut t = Table::new(&["event", "4 peers", "99 peers", "999 peers", "what it costs"]);
    let cases: [(&str, &str); 6] = [
        (
            "PING received",
            "keep it to echo; compare view digests (equal: a full mesh)",
        ),
        (
            "PING echoing ours",
            "find our PING's send time, sample the skew",
        ),
        ("STATE received", "re-run the election: rank the view"),
        ("MEET of a known peer", "look the address up, ignore it"),
        ("timeout, nothing due", "scan peers, links and reconnects"),
        ("timeout, heartbeat due", "one PING per peer"),
    ];
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for peers in [4usize, 99, 999] {
        let (mut node, links, view) = master_with(peers);
        let mut now = Mono(1_000);
        let mut seq = 0;
        // Every event is timed over `iters` calls, rotating over the peers.
        let mut time = |name: &'static str, node: &mut Node, f: &mut dyn FnMut(&mut Node, u64)| {
            let reps = if name.starts_with("timeout, heartbeat") {
                (iters / peers as u64).max(50)
            } else {
                iters
            };
            let d = util::median_time(if quick { 1 } else { 5 }, || {
                for k in 0..reps {
                    f(node, k);
                    while let Some(a) = node.poll_action() {
                        black_box(a);
                    }
                }
            });
            results
                .entry(name)
                .or_default()
                .push(reps as f64 / d.as_secs_f64());
        };
        let link = |k: u64| links[k as usize % links.len()];
        time(cases[0].0, &mut node, &mut |n, k| {
            seq += 1;
            n.handle_message(
                link(k),
                Message::Ping {
                    seq,
                    view,
                    fresh_ms: 0,
                    echo: None,
                },
                now,
            )
        });
        time(cases[1].0, &mut node, &mut |n, k| {
            n.handle_message(
                link(k),
                Message::Ping {
                    seq: 2,
                    view,
                    fresh_ms: 0,
                    echo: Some(Echo {
                        seq: 1,
                        held_ms: 0,
                        stamp_unix_ms: 1_795_000_000_000,
                    }),
                },
                now,
            )
        });
        let me = node.config().addr;
        let epoch = node.epoch();
        time(cases[2].0, &mut node, &mut |n, k| {
            n.handle_message(
                link(k),
                Message::State(State {
                    role: Role::Follower,
                    epoch,
                    epoch_master: Some(me),
                }),
                now,
            )
        });
        time(cases[3].0, &mut node, &mut |n, k| {
            n.handle_message(
                link(k),
                Message::Meet(peer_addr((k as usize + 1) % peers)),
                now,
            )
        });
        time(cases[4].0, &mut node, &mut |n, _| n.handle_timeout(now));
        time(cases[5].0, &mut node, &mut |n, _| {
            // Each call is one heartbeat later; peers are kept heard from.
            now = now.plus(100);
            n.handle_timeout(now);
            for &l in &links {
                n.handle_message(
                    l,
                    Message::Ping {
                        seq: 2,
                        view,
                        fresh_ms: 0,
                        echo: Some(Echo {
                            seq: 0,
                            held_ms: 0,
                            stamp_unix_ms: 1_795_000_000_000,
                        }),
                    },
                    now,
                );
            }
        });
    }
    for (name, what) in cases {
        let r = &results[name];
        t.row(vec![
            name.to_string(),
            rate(r[0]),
            rate(r[1]),
            rate(r[2]),
            what.to_string(),
        ]);
    }
    t.print(&format!(
        "One core: events per second (median of {} runs; the heartbeat row also delivers one PING per peer)",
        if quick { 1 } else { 5 }
    ));
}

fn peer_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (1 + i % 250) as u8], 7000))
}

/// A node that is master of itself and `peers` followers, through the
/// real handshake: each peer dials in, says HELLO and follows. Also the
/// digest of its view, from the last PING it sent: the followers' PINGs
/// carry it too, as in a full mesh, so no event below repairs the mesh.
fn master_with(peers: usize) -> (Node, Vec<LinkId>, u64) {
    let me: SocketAddr = "10.255.0.1:7000".parse().expect("an address");
    let mut node = Node::new(Config {
        addr: me,
        started_unix_ms: 1_000,
        instance: 1,
        priority: 0,
        quorum: 2,
        strict: false,
        rule: Rule::default(),
        heartbeat_ms: 100,
        timeout_ms: 500,
        reconnect_timeout_ms: bossd::config::DEFAULT_RECONNECT_TIMEOUT_MS,
        seed: 1,
        wall_at_zero: Wall(1_000_000),
        durable: None,
        checked: false,
        no_preempt: false,
        preempt_delay_ms: 0,
    });
    let mut links = Vec::new();
    let mut view = 0;
    for i in 0..peers {
        let link = i + 1;
        node.handle_accepted(link, Mono::ZERO);
        node.handle_message(
            link,
            Message::Hello(Hello {
                kind: LinkKind::Mesh,
                addr: peer_addr(i),
                started_unix_ms: 2_000 + i as u64,
                instance: 100 + i as u64,
                priority: 0,
                quorum: 2,
                strict: false,
                rule: Rule::default(),
                no_preempt: false,
                preempt_delay_ms: 0,
                health: Health::Ok,
            }),
            Mono::ZERO,
        );
        links.push(link);
        while let Some(a) = node.poll_action() {
            if let Action::Send(_, Message::Ping { view: v, .. }) = a {
                view = v;
            }
        }
    }
    for &link in &links {
        let s = State {
            role: Role::Follower,
            epoch: node.epoch(),
            epoch_master: Some(me),
        };
        node.handle_message(link, Message::State(s), Mono::ZERO);
    }
    while node.poll_action().is_some() {}
    assert_eq!(node.role(), Role::Master, "the bench's node must be master");
    (node, links, view)
}

// ---------------------------------------------------------------------------
// Simulated clusters
// ---------------------------------------------------------------------------

struct Outcome {
    virtual_ms: u64,
    sent: BTreeMap<&'static str, u64>,
    wall: Duration,
}

impl Outcome {
    fn total(&self) -> u64 {
        self.sent.values().sum()
    }

    fn heartbeats(&self) -> u64 {
        self.sent.get("PING").copied().unwrap_or(0)
    }
}

/// Runs, on one cluster of `n` nodes in turn: the first n - 1 all join
/// node 0 at once; the last joins through a follower; the master (node 0)
/// crashes; the survivors are cut in two halves for `PARTITION_MS`, and
/// heal.
fn scenarios(n: usize) -> Vec<(&'static str, Outcome)> {
    let mut c = Cluster::oldest_first(n as u64, n);
    // One drain per node and instant, as the real loop's iteration: at
    // 1,000 nodes a drain per delivery was most of the time (it walks
    // every link of the node).
    c.batch = true;
    let mut out = Vec::new();
    let first: Vec<usize> = (0..n - 1).collect();
    out.push((
        "form: n-1 join one node at once",
        measure(&mut c, &first, |c| {
            for i in 1..n - 1 {
                c.connect(i, 0).expect("a join starts");
            }
        }),
    ));
    note(n, &out);
    let all: Vec<usize> = (0..n).collect();
    out.push((
        "join: 1 node via a follower",
        measure(&mut c, &all, |c| {
            c.connect(n - 1, 1).expect("a join starts")
        }),
    ));
    note(n, &out);
    let survivors: Vec<usize> = (1..n).collect();
    out.push((
        "crash failover (SIGKILL master)",
        measure(&mut c, &survivors, |c| c.crash(0)),
    ));
    note(n, &out);
    out.push((
        "steady state: 1 s at rest after the failover",
        rest(&mut c, &survivors, REST_MS),
    ));
    note(n, &out);
    if n > HEAL_MAX_NODES {
        eprintln!(
            "# {n} nodes: no partition and heal above {HEAL_MAX_NODES} nodes \
             (the mesh repair floods about n^3/2 MEETs; docs/BENCHMARKS.md)"
        );
        return out;
    }
    let (a, b) = survivors.split_at(survivors.len() / 2);
    c.cut(a, b);
    c.cut(b, a);
    run_until(&mut c, |c| agreed(c, a) && agreed(c, b), "both sides elect");
    let cut_at = c.now;
    c.run_for(PARTITION_MS.saturating_sub(c.now - cut_at));
    out.push((
        "heal a 2 s partition into halves",
        measure(&mut c, &survivors, |c| c.heal()),
    ));
    note(n, &out);
    out
}

/// The last scenario's figures on stderr as soon as it ends: a large
/// cluster takes minutes.
fn note(n: usize, out: &[(&str, Outcome)]) {
    if let Some((name, o)) = out.last() {
        eprintln!(
            "# {n} nodes, {name}: {} virtual ms, {} messages, {:.1} s",
            o.virtual_ms,
            thousands(o.total()),
            o.wall.as_secs_f64()
        );
    }
}

/// Starts `event` and runs until `members` agree with a full mesh
/// (guarantees 1 and 3, docs/GUARANTEES.md), counting what was sent until then plus `TAIL_MS`.
fn measure(c: &mut Cluster, members: &[usize], event: impl FnOnce(&mut Cluster)) -> Outcome {
    let before = c.sent.clone();
    let wall = Instant::now();
    let t0 = c.now;
    event(c);
    run_until(c, |c| agreed(c, members), "agreement");
    let virtual_ms = c.now - t0;
    c.run_for(TAIL_MS);
    let sent = sent_since(c, &before);
    Outcome {
        virtual_ms,
        sent,
        wall: wall.elapsed(),
    }
}

/// What `c` sent since its counts were `before`, by kind (kinds with none
/// left out).
fn sent_since(c: &Cluster, before: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
    c.sent
        .iter()
        .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Runs `members`, agreed, for `ms` at rest and counts what they send
/// (heartbeats, and whatever else a settled mesh says); they must still
/// agree after.
fn rest(c: &mut Cluster, members: &[usize], ms: u64) -> Outcome {
    assert!(agreed(c, members), "agreed before the rest");
    let before = c.sent.clone();
    let wall = Instant::now();
    c.run_for(ms);
    assert!(agreed(c, members), "still agreed after {ms} ms at rest");
    let sent = sent_since(c, &before);
    Outcome {
        virtual_ms: ms,
        sent,
        wall: wall.elapsed(),
    }
}

/// Runs the cluster one virtual ms at a time until `cond` holds.
fn run_until(c: &mut Cluster, cond: impl Fn(&Cluster) -> bool, what: &str) {
    let t0 = c.now;
    let every: Option<u64> = util::flag_value("--trace").map(|v| v.parse().expect("--trace MS"));
    let wall = Instant::now();
    while !cond(c) {
        assert!(
            c.now - t0 < LIMIT_MS,
            "no {what} within {LIMIT_MS} virtual ms"
        );
        c.run_for(1);
        if every.is_some_and(|e| (c.now - t0).is_multiple_of(e)) {
            trace(c, c.now - t0, wall.elapsed());
        }
    }
}

/// `--trace MS`: every MS virtual ms of a scenario, one line on stderr of
/// what the wire and the nodes hold.
fn trace(c: &Cluster, t: u64, wall: Duration) {
    let f = c.in_flight();
    let (mut peers, mut links, mut wanted, mut dials, mut introduced, mut actions, mut dropped) =
        (0, 0, 0, 0, 0, 0, 0);
    for i in c.up() {
        let n = c.node(i);
        let k = n.counts();
        peers += n.status().peers;
        links += k.links;
        wanted += k.wanted;
        dials += k.dials_in_flight;
        introduced += k.introduced;
        actions += k.actions;
        dropped += k.meets_dropped;
    }
    let rss_kb = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4);
    let lines: Vec<String> = f.lines.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let sent: Vec<String> = c.sent.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!(
        "# t={t} wall={:.1}s rss={}MB q={} qbytes={} outbox={} peers={peers} links={links} \
         wanted={wanted} dials={dials} introduced={introduced} actions={actions} \
         meets_dropped={dropped} in_flight[{}] sent[{}]",
        wall.as_secs_f64(),
        rss_kb / 1024,
        f.deliveries,
        f.bytes,
        c.outboxes(),
        lines.join(" "),
        sent.join(" ")
    );
}

/// Every member reports the same master and epoch, the master is a
/// member, and each has every other member as a peer.
fn agreed(c: &Cluster, members: &[usize]) -> bool {
    let first = c.node(members[0]);
    let (Some(master), epoch) = (first.master(), first.epoch()) else {
        return false;
    };
    members.iter().all(|&i| {
        let node = c.node(i);
        let role = if sim::addr(i) == master {
            Role::Master
        } else {
            Role::Follower
        };
        node.master() == Some(master)
            && node.epoch() == epoch
            && node.role() == role
            && node.status().peers == members.len() - 1
    })
}
