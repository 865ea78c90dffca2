//! The seeded cluster simulator sweep (issue 3): random clusters of 2..9
//! election cores under random faults, every run replayable from its seed.
//!
//! Each seed picks a size, a rule, a mode (default; majority quorum; strict
//! with a majority quorum) and a script of joins, crashes, restarts,
//! freezes of one node or of the whole cluster at once (a stall: nothing
//! handled, then everything queued at once), graceful leaves, one- and
//! two-way partitions and delays. After
//! every step the harness checks that no node's epoch goes back and, when
//! strict, that no two nodes are master at the same virtual instant and no
//! epoch has two masters (guarantees 8 and 9, docs/GUARANTEES.md). After
//! the faults heal and the network is quiet, every group must be a full
//! mesh that agrees on its rule-first member as master, and a group below
//! quorum has none (guarantees 1, 2 and 3). Nodes of non-strict clusters
//! have wall clocks up to 100 ms apart; every node's clock runs up to
//! 0.5 % fast or slow (so two are up to 1 % apart), and every clock offset
//! a node measured must hold the true one within its stated error plus
//! the drift its samples' age allows. The nodes are the real endpoints
//! over bytes cut into random chunks, with a shared secret (handshake,
//! sealed lines) for half the seeds.
//!
//! `SIM_SEED=<n>` replays one seed; `SIM_SEEDS=<count>` sets how many run
//! (default 10,000); `SIM_FIRST=<n>` where they start; `SIM_THREADS=<n>`
//! how many threads run them (default: one per core). The sweep takes a
//! few minutes of CPU, so it says how far it got (seeds done, violations so
//! far) every [`PROGRESS_EVERY`], straight to stderr, which libtest does
//! not capture: a plain `cargo test` shows it.

mod sim;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bossd::protocol::Role;
use bossd::rule::Rule;
use sim::hostile::Mode;
use sim::{Cluster, Spec, Wire, addr};

/// Deterministic choices from the seed, apart from the network's own.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.below(from.len() as u64) as usize])
    }

    fn subset(&mut self, n: usize) -> Vec<usize> {
        (0..n).filter(|_| self.below(2) == 0).collect()
    }
}

const RULES: [&str; 5] = [
    "oldest",
    "youngest",
    "priority,oldest",
    "lowest-addr",
    "highest-addr",
];

/// What the hostile members of a sweep did, to show they did something.
#[derive(Default)]
struct HostileTally {
    seeds: u64,
    lines: u64,
    meets: u64,
    violations: u64,
    meets_dropped: u64,
}

impl HostileTally {
    fn add(&mut self, other: &HostileTally) {
        self.seeds += other.seeds;
        self.lines += other.lines;
        self.meets += other.meets;
        self.violations += other.violations;
        self.meets_dropped += other.meets_dropped;
    }
}

/// Runs one seed's scenario; panics on a violated guarantee.
fn run(seed: u64, tally: &mut HostileTally) {
    let mut d = Dice(seed);
    let n = 2 + d.below(8) as usize;
    let mode = d.below(3);
    let majority = (n / 2 + 1) as u32;
    let (quorum, strict) = match mode {
        0 => (2, false),
        1 => (majority.max(2), false),
        _ => (majority, true),
    };
    let rule: Rule = RULES[d.below(RULES.len() as u64) as usize].parse().unwrap();
    // Wall clocks up to 100 ms apart, drawn from their own dice so the
    // scripts stay those of earlier sweeps. Strict clusters keep agreeing
    // clocks: their epoch floor assumes them (docs/PROTOCOL.md).
    let mut clocks = Dice(seed ^ 0xc10c);
    // A state dir for half the seeds, from dice of its own: restarts then
    // start from the persisted epoch, and the harness checks that every
    // epoch is persisted before a STATE or role change carries it.
    let state_dir = Dice(seed ^ 0x57a7e).below(2) == 0;
    // Eligibility (issue 13), from dice of its own: preemption settings,
    // nodes with a check that start failing, hooks that take time, and
    // (below) checks, standby, handovers and priorities in the script.
    let mut e = Dice(seed ^ 0xe11b);
    let eligibility = e.below(2) == 0;
    let (no_preempt, preempt_delay_ms) = match (eligibility, e.below(4)) {
        (false, _) => (false, 0),
        (true, 0) => (true, 0),
        (true, 1) => (false, 100 + e.below(400)),
        _ => (false, 0),
    };
    let checked: Vec<bool> = (0..n).map(|_| eligibility && e.below(6) == 0).collect();
    let specs = (0..n)
        .map(|_| Spec {
            started_unix_ms: 1000 + d.below(50),
            priority: d.below(3) as i32,
            quorum,
            strict,
            rule: rule.clone(),
            wall_at_zero_ms: if strict {
                sim::WALL_AT_ZERO_MS
            } else {
                sim::WALL_AT_ZERO_MS - 100 + clocks.below(201)
            },
            state_dir,
            no_preempt,
            preempt_delay_ms,
            ..Spec::started(0)
        })
        .collect::<Vec<_>>();
    let specs = specs
        .into_iter()
        .zip(&checked)
        .map(|(s, &checked)| Spec { checked, ..s })
        .collect();
    // The wire, from dice of its own too: a secret for half the seeds,
    // and every node's clock rate up to 0.5 % off true (so up to 1 %
    // apart).
    let mut wire = Dice(seed ^ 0x3173);
    let secret = wire.below(2) == 0;
    let rate_ppm = (0..n)
        .map(|_| wire.below(2 * MAX_RATE_PPM + 1) as i64 - MAX_RATE_PPM as i64)
        .collect();
    let mut c = Cluster::with_wire(seed, specs, Wire { secret, rate_ppm });
    c.check_strict = strict;
    c.max_delay_ms = d.below(20);
    if eligibility {
        c.hook_max_ms = [0, 20, 200][e.below(3) as usize];
    }
    // Form a group first: everyone joins a random earlier node.
    for i in 1..n {
        let j = d.below(i as u64) as usize;
        let _ = c.connect(i, j);
    }
    // One seed in HOSTILE_ONE_IN also has a hostile member, with dice of
    // its own so that the other seeds' scripts stay those of earlier sweeps.
    let hostile = (Dice(seed ^ 0xbad_5eed).below(HOSTILE_ONE_IN) == 0)
        .then(|| c.add_hostile(seed, Mode::Chaos));
    if hostile.is_some() {
        c.check_strict_from_now(false);
    }
    let steps = d.below(12);
    for _ in 0..steps {
        let up = c.up();
        let down: Vec<usize> = (0..n).filter(|&i| !c.is_up(i)).collect();
        match d.below(10) {
            0 => {
                if let (Some(i), Some(j)) = (d.pick(&up), d.pick(&up)) {
                    let _ = c.connect(i, j);
                }
            }
            1 => {
                if let Some(i) = d.pick(&up) {
                    c.crash(i);
                }
            }
            2 => {
                if let Some(i) = d.pick(&down) {
                    c.start(i);
                    if let Some(j) = d.pick(&c.up()) {
                        let _ = c.connect(i, j);
                    }
                }
            }
            3 => {
                if let Some(i) = d.pick(&up)
                    && !c.is_frozen(i)
                {
                    c.leave(i);
                }
            }
            4 => {
                if let Some(i) = d.pick(&up) {
                    c.freeze(i);
                }
            }
            5 => c.thaw_all(),
            6 => {
                let a = d.subset(n);
                let b: Vec<usize> = (0..n).filter(|i| !a.contains(i)).collect();
                c.cut(&a, &b);
                if d.below(3) != 0 {
                    c.cut(&b, &a);
                }
            }
            7 => c.heal(),
            8 => {
                // The whole cluster stalls together (a paused VM host,
                // starved CPUs): everything queued arrives at once after.
                for i in c.up() {
                    c.freeze(i);
                }
                c.run_for(d.below(2000));
                c.thaw_all();
            }
            _ => {}
        }
        if eligibility {
            eligibility_step(&mut c, &mut e);
        }
        c.run_for(d.below(1500));
        if hostile.is_some() && std::env::var_os("NO_READ").is_none() {
            read_everything(&mut c);
        }
    }
    // Quiet: heal and thaw everything, then let backoffs (at most 5 s with
    // jitter) and mesh repair run their course.
    c.heal();
    c.thaw_all();
    if let Some(h) = hostile {
        let sent = &c.hostile(h).expect("still there").sent;
        tally.seeds += 1;
        tally.lines += sent.values().sum::<u64>();
        tally.meets += sent.get("MEET").copied().unwrap_or(0);
        for i in c.up() {
            let counts = c.node(i).counts();
            tally.violations += counts.violations;
            tally.meets_dropped += counts.meets_dropped;
        }
        // The hostile member goes; once the leases and bindings it could
        // have given out (a timeout) have run out, guarantee 8 holds again.
        c.remove_hostile(h);
        c.run_for(1_000);
        c.check_strict_from_now(strict);
    }
    c.run_for(25_000);
    check_quiet(&c);
    check_skew(&c);
}

/// One step of the eligibility script: a check fails or passes, a node
/// goes into or out of standby, the master hands over, or a priority
/// changes (issue 13), on a random running node.
fn eligibility_step(c: &mut Cluster, e: &mut Dice) {
    let Some(i) = e.pick(&c.up()) else {
        return;
    };
    if c.is_frozen(i) {
        return;
    }
    match e.below(6) {
        0 => c.check(i, false),
        1 => c.check(i, true),
        2 => {
            let on = e.below(3) == 0;
            c.console(i, if on { "-standby on" } else { "-standby off" });
        }
        3 => {
            let target = e.pick(&c.up()).filter(|_| e.below(2) == 0);
            match target {
                Some(j) => c.console(i, &format!("-handover 127.0.0.1 {}", 7000 + j)),
                None => c.console(i, "-handover"),
            };
        }
        4 => {
            let p = e.below(5) as i32 - 2;
            c.console(i, &format!("-priority {p}"));
        }
        _ => {}
    }
}

/// How far a node's clock may run from true time, parts per million:
/// two nodes' rates are up to twice this apart (1 %).
const MAX_RATE_PPM: u64 = 5_000;

/// One seed in this many has a hostile member (issue 10).
const HOSTILE_ONE_IN: u64 = 10;

/// Asks every running node everything an operator can read, as `-cl`,
/// `-r`, `-j`, `-s`, `/status` and `/metrics` show it: what a hostile
/// member announced (start times, priorities, addresses) must render.
fn read_everything(c: &mut Cluster) {
    for i in c.up() {
        for command in ["-cl", "-r", "-j", "-s", "-t", "-cn"] {
            c.console(i, command);
        }
        let clock = bossd::console::Clock {
            now: bossd::time::Mono(c.now),
            wall_at_zero: c.node(i).config().wall_at_zero,
        };
        bossd::http::status(c.node(i), clock);
        let counters = bossd::http::Counters::default();
        bossd::http::metrics(c.node(i), &counters, bossd::http::Open::default());
    }
}

/// How old the round trips a clock offset rests on can be. To a peer it
/// heartbeats every round, the core keeps the last 8, one per 100 ms
/// heartbeat, plus delays: 1 s. A follower heartbeats another follower
/// only once every 50 rounds while the master vouches for both (every
/// cluster here has fewer than 50 nodes, so the interval does not grow), and
/// starts the estimate over with each such sample: that one is at most
/// 50 heartbeats old, plus the 8 heartbeats before it that the estimate
/// may still hold from rounds that went to everyone, plus delays.
const SKEW_WINDOW_MS: u64 = 6_000;

/// Every clock offset a node measured holds the true one within its error,
/// whatever delays, freezes and cuts the round trips went through.
fn check_skew(c: &Cluster) {
    for i in c.up() {
        for p in c.node(i).peers() {
            let j = (p.hello.addr.port() - 7000) as usize;
            let (Some(skew), true) = (p.skew, c.is_up(j)) else {
                continue;
            };
            let truth = c.wall(j) - c.wall(i);
            // Clocks at different rates drift apart while the samples
            // the estimate rests on age: by their rate gap over
            // SKEW_WINDOW_MS at most (nothing when the rates agree).
            let drift = (c.rate_gap_ppm(i, j) as u64 * SKEW_WINDOW_MS).div_ceil(1_000_000);
            assert!(
                skew.offset_ms.abs_diff(truth) <= skew.error_ms + drift,
                "node {i} measured {j}'s clock {skew} off, truly {truth:+}ms{}",
                c.dump()
            );
        }
    }
}

/// Guarantees 1, 2 and 3 (docs/GUARANTEES.md) after quiet, per group.
fn check_quiet(c: &Cluster) {
    let up = c.up();
    let mut seen = BTreeSet::new();
    for &i in &up {
        if seen.contains(&i) {
            continue;
        }
        let group: Vec<usize> = {
            let mut g: BTreeSet<usize> = BTreeSet::from([i]);
            let mut todo = vec![i];
            while let Some(x) = todo.pop() {
                for p in c.node(x).peers() {
                    let j = (p.hello.addr.port() - 7000) as usize;
                    if c.is_up(j) && g.insert(j) {
                        todo.push(j);
                    }
                }
            }
            g.into_iter().collect()
        };
        seen.extend(group.iter().copied());
        let quorum = c.node(i).config().quorum as usize;
        let eligible: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&j| c.node(j).health().eligible())
            .collect();
        if group.len() >= quorum && eligible.is_empty() {
            // Guarantee 1: a group with no eligible member has no master.
            for &j in &group {
                assert_eq!(
                    c.peer_count(j),
                    group.len() - 1,
                    "not a full mesh at {j}{}",
                    c.dump()
                );
                assert_eq!(
                    c.view(j).0,
                    Role::None,
                    "master of an ineligible group at {j}{}",
                    c.dump()
                );
            }
        } else if group.len() >= quorum {
            let master = c.assert_agreement(&group);
            let rule = c.node(i).config().rule.clone();
            let master_node = (master.port() - 7000) as usize;
            assert!(
                c.node(master_node).health().eligible(),
                "the master is not eligible{}",
                c.dump()
            );
            if c.node(i).config().no_preempt {
                // The sticky master: any eligible member may keep the role.
                continue;
            }
            let best = eligible
                .iter()
                .map(|&j| {
                    let cfg = c.node(j).config();
                    bossd::rule::Candidate {
                        addr: cfg.addr,
                        started_unix_ms: cfg.started_unix_ms,
                        priority: cfg.priority,
                        instance: cfg.instance,
                    }
                })
                .min_by(|a, b| rule.compare(a, b))
                .unwrap();
            assert_eq!(
                master,
                best.addr,
                "the master is not the group's first eligible member{}",
                c.dump()
            );
        } else {
            for &j in &group {
                assert_eq!(
                    c.peer_count(j),
                    group.len() - 1,
                    "not a full mesh at {j}{}",
                    c.dump()
                );
                assert_eq!(c.view(j).0, Role::None, "lone master at {j}{}", c.dump());
            }
        }
    }
    let _ = addr;
}

/// How often the sweep reports progress: often enough that a long run
/// never looks hung (libtest warns after 60 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Writes a line to the stderr descriptor itself: libtest captures only
/// `print!` and `eprint!`, and this line is meant to be seen.
fn progress(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "simulate: {text}");
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// How many threads the sweep runs seeds on: every core the machine has
/// (the seeds are independent), unless `SIM_THREADS` says otherwise.
fn threads() -> usize {
    env_u64("SIM_THREADS")
        .map(|n| n.max(1) as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Stop after this many failed seeds: their replay lines are enough.
const MAX_FAILED: usize = 5;

#[test]
fn seeded_sweep() {
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("SIM_FIRST").unwrap_or(0);
            (first..first + env_u64("SIM_SEEDS").unwrap_or(10_000)).collect()
        }
    };
    let count = seeds.len();
    let workers = threads().min(count.max(1));
    let quiet_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let total = Mutex::new(HostileTally::default());
    let started = Instant::now();
    progress(&format!("{count} seeds to run on {workers} threads"));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut tally = HostileTally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || failed.lock().unwrap().len() >= MAX_FAILED {
                        break;
                    }
                    let seed = seeds[i];
                    if let Err(e) = catch_unwind(AssertUnwindSafe(|| run(seed, &mut tally))) {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failed.lock().unwrap().push((seed, msg));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                total.lock().unwrap().add(&tally);
            });
        }
        let mut reported = Instant::now();
        while done.load(Ordering::Relaxed) < count && failed.lock().unwrap().len() < MAX_FAILED {
            std::thread::sleep(Duration::from_millis(50));
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                progress(&format!(
                    "{} of {count} seeds done, {} violations so far, {} s",
                    done.load(Ordering::Relaxed),
                    failed.lock().unwrap().len(),
                    started.elapsed().as_secs()
                ));
            }
        }
    });
    std::panic::set_hook(quiet_hook);
    let mut failed = failed.into_inner().unwrap();
    failed.sort();
    for (seed, msg) in &failed {
        eprintln!(
            "seed {seed} failed: {msg}\nreplay: SIM_SEED={seed} cargo test --test simulate\n"
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed; first: SIM_SEED={} cargo test --test simulate",
        failed.len(),
        failed[0].0
    );
    let tally = total.into_inner().unwrap();
    progress(&format!(
        "{count} seeds, 0 violations, {} s; {} with a hostile member, which sent {} lines ({} MEETs): honest nodes closed {} links for protocol violations and dropped {} MEETs",
        started.elapsed().as_secs(),
        tally.seeds,
        tally.lines,
        tally.meets,
        tally.violations,
        tally.meets_dropped
    ));
}
