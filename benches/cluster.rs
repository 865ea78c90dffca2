//! Real `bossd` processes on loopback: how fast a cluster forms, how fast
//! it fails over, what a node costs at rest, and what a stall of the whole
//! cluster does to it.
//!
//! Every node listens on its own address `127.77.X.host` (a range the tests
//! never use, so this runs beside them), where `X` is new for each cluster.
//! Every process started is killed when its guard drops, even when the
//! bench panics. Times are measured by polling the nodes' `-s` over open
//! console connections, one pipelined round over all of them at a time;
//! the time of one round is printed as the resolution (`scale` polls as an
//! operator would instead, a fresh connection per `-s`). Nothing here
//! asserts a timing: the numbers are printed for docs/BENCHMARKS.md.
//!
//! `cargo bench --bench cluster [-- --quick] [-- --only crash --runs 30 --strict]`
//!
//! `--only` takes `converge`, `crash`, `silent`, `pause`, `starve`, `idle`,
//! `check` (idle CPU with a passing `--check`), `syscalls`, `floor` (an
//! idle cluster against the bare cost of its heartbeat traffic,
//! benches/cluster/floor.rs), `scale`,
//! `queries`, `watch` (crash failovers with watchers and with
//! `--state-dir`, benches/cluster/watch.rs), `eligibility` (a failing
//! check's failover and `-handover`'s hooks, benches/cluster/eligibility.rs). For failovers, `--runs` sets the runs,
//! `--nodes N` the cluster size (5), `--timing HEARTBEAT,TIMEOUT` the flags
//! (100,500), and `--strict` adds `--strict` with a majority quorum
//! (compare_etcd.sh uses these); `scale` takes `--timing` too. For
//! convergence, idle CPU, the pause and scale, `--nodes N` runs N nodes only (`--slow`: convergence with
//! heartbeat 1000 / timeout 5000); `--runs` sets the runs of the pause,
//! the starvation, scale and check too. `starve` needs root and is skipped by
//! `--quick`; `syscalls` needs `strace` for its second table. Lines
//! starting `RESULT` are for scripts.
//!
//! `BOSSD_BIN=PATH` runs another build of bossd instead. With
//! `BOSSD_BIN_BEFORE=PATH` as well, every measurement runs both builds,
//! alternating run by run so that the machine's load falls on both alike,
//! and every table gets a `build` column (`before`, `after`).

#[path = "cluster/cost.rs"]
mod cost;
#[path = "cluster/eligibility.rs"]
mod eligibility;
#[path = "cluster/floor.rs"]
mod floor;
#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/stall.rs"]
mod stall;
#[path = "util/mod.rs"]
mod util;
#[path = "cluster/watch.rs"]
mod watch;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bossd::console::StatusLine as Status;
use harness::{
    Cluster, DEADLINE, LogDir, Memory, Proc, Sched, agreed, ask_fresh, fresh_statuses,
    journal_since, load1, master_of, median, same_master, span,
};
use util::{Table, ms, percentile, rate, sorted};

/// The binary under test: cargo builds it with the bench profile
/// (`target/release/bossd`) before it runs a bench, and says where.
const BOSSD: &str = env!("CARGO_BIN_EXE_bossd");

/// The binary to run: `BOSSD_BIN` if set (to compare a build before and
/// after a change), else [`BOSSD`].
fn bossd_bin() -> String {
    std::env::var("BOSSD_BIN").unwrap_or_else(|_| BOSSD.to_owned())
}

/// Default heartbeat and timeout (docs/GUARANTEES.md, running bossd), for the silent failover bound.
const HEARTBEAT_MS: f64 = 100.0;
const TIMEOUT_MS: f64 = 500.0;

fn main() {
    if let Ok(role) = std::env::var(floor::ROLE_VAR) {
        floor::run_child(&role);
    }
    let quick = util::quick();
    let only = util::flag_value("--only");
    let strict = std::env::args().any(|a| a == "--strict");
    let runs = util::flag_value("--runs").map(|r| r.parse::<usize>().expect("--runs N"));
    let nodes = util::flag_value("--nodes").map(|n| n.parse::<usize>().expect("--nodes N"));
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let builds = Builds::from_env();
    let _logs = LogDir::create();
    println!("# cluster bench: {}", util::machine());
    for b in builds.iter() {
        let label = if builds.comparing() {
            format!("{}: ", b.label)
        } else {
            String::new()
        };
        println!(
            "binary: {label}{}{}",
            b.bin,
            if quick { " (--quick)" } else { "" }
        );
    }

    let mut rss_big = vec![None; builds.len()];
    if wants("converge") {
        rss_big = converge(&builds, quick);
    }
    if wants("crash") {
        failover(
            &builds,
            Fault::Crash,
            runs.unwrap_or(if quick { 3 } else { 40 }),
            strict,
        );
    }
    if wants("silent") {
        failover(
            &builds,
            Fault::Freeze,
            runs.unwrap_or(if quick { 1 } else { 20 }),
            false,
        );
    }
    if wants("pause") {
        let sizes = nodes.map_or(if quick { vec![3] } else { vec![3, 5] }, |n| vec![n]);
        stall::pause(
            &builds,
            &sizes,
            runs.unwrap_or(if quick { 1 } else { 3 }),
            quick,
        );
    }
    if wants("starve") {
        stall::starve(&builds, runs.unwrap_or(3), quick);
    }
    if wants("idle") {
        let sizes = nodes.map_or(
            if quick {
                vec![5]
            } else {
                vec![5, 10, 20, 50, 100]
            },
            |n| vec![n],
        );
        idle(&builds, &sizes, if quick { 2 } else { 10 }, rss_big);
    }
    if wants("check") {
        cost::check(
            &builds,
            if quick { 1.0 } else { 10.0 },
            runs.unwrap_or(if quick { 1 } else { 3 }),
        );
    }
    if wants("syscalls") {
        cost::syscalls(&builds, if quick { 1.0 } else { 10.0 });
    }
    if wants("floor") {
        floor::floor(
            &builds,
            if quick { 1.0 } else { 10.0 },
            runs.unwrap_or(if quick { 1 } else { 3 }),
        );
    }
    if wants("scale") {
        let sizes = nodes.map_or(if quick { vec![10] } else { vec![100, 200] }, |n| vec![n]);
        scale(
            &builds,
            &sizes,
            runs.unwrap_or(if quick { 1 } else { 2 }),
            quick,
        );
    }
    if wants("queries") {
        queries(&builds, if quick { 0.5 } else { 3.0 });
    }
    if wants("watch") {
        watch::failovers(&builds, runs.unwrap_or(if quick { 2 } else { 40 }));
    }
    if wants("eligibility") {
        eligibility::eligibility(&builds, runs.unwrap_or(if quick { 2 } else { 30 }));
    }
}

// ---------------------------------------------------------------------------
// The builds under test
// ---------------------------------------------------------------------------

/// One build of bossd.
struct Build {
    /// `before` or `after` when two builds are compared, else empty.
    label: &'static str,
    bin: String,
}

/// The builds every measurement runs: `BOSSD_BIN_BEFORE` and then
/// [`bossd_bin`] when comparing, else [`bossd_bin`] alone.
struct Builds(Vec<Build>);

impl Builds {
    fn from_env() -> Builds {
        let after = bossd_bin();
        match std::env::var("BOSSD_BIN_BEFORE") {
            Ok(before) => Builds(vec![
                Build {
                    label: "before",
                    bin: before,
                },
                Build {
                    label: "after",
                    bin: after,
                },
            ]),
            Err(_) => Builds(vec![Build {
                label: "",
                bin: after,
            }]),
        }
    }

    fn comparing(&self) -> bool {
        self.0.len() > 1
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Build> {
        self.0.iter()
    }

    /// A table with a leading `build` column when comparing.
    fn table(&self, header: &[&str]) -> Table {
        let mut h = Vec::with_capacity(header.len() + 1);
        if self.comparing() {
            h.push("build");
        }
        h.extend_from_slice(header);
        Table::new(&h)
    }

    /// A row of a [`Builds::table`]: `b`'s label first when comparing.
    fn row(&self, t: &mut Table, b: &Build, mut cells: Vec<String>) {
        if self.comparing() {
            cells.insert(0, b.label.to_owned());
        }
        t.row(cells);
    }

    /// A `RESULT` key, prefixed by the build's label when comparing.
    fn key(&self, b: &Build, key: &str) -> String {
        if self.comparing() {
            format!("{}_{key}", b.label)
        } else {
            key.to_owned()
        }
    }
}

// ---------------------------------------------------------------------------
// The measurements
// ---------------------------------------------------------------------------

/// Heartbeat and timeout slow enough that 100 nodes' heartbeats fit on
/// two cores (see `idle`): 10 times the defaults.
const SLOW: &[&str] = &["--heartbeat", "1000", "--timeout", "5000"];

/// How long a cluster may take to converge before the run counts as failed.
const CONVERGE_LIMIT: Duration = Duration::from_secs(15);

/// Pause between polling rounds while waiting for convergence: polling
/// 100 consoles back to back would take a core from the nodes.
const CONVERGE_PAUSE: Duration = Duration::from_millis(5);

/// The largest cluster that converged, and the memory of each of its nodes.
type BigRss = Option<(usize, Vec<Memory>)>;

/// N nodes start alone; then all but the first are told `-c` to the first
/// at once. The time from the first `-c` until every node reports the same
/// master and epoch with `peers=N-1`. Returns, per build, the size of the
/// largest cluster that converged and the RSS (KiB) of each of its nodes.
fn converge(builds: &Builds, quick: bool) -> Vec<BigRss> {
    let runs = if quick { 1 } else { 3 };
    // `--nodes N [--slow]` runs one case, for a profiler.
    let one = util::flag_value("--nodes").map(|n| n.parse::<usize>().expect("--nodes N"));
    let slow = std::env::args().any(|a| a == "--slow");
    let cases: Vec<(usize, &[&str])> = if let Some(n) = one {
        vec![(n, if slow { SLOW } else { &[] })]
    } else if quick {
        vec![(3, &[]), (10, &[])]
    } else {
        vec![
            (3, &[]),
            (10, &[]),
            (50, &[]),
            (100, &[]),
            (50, SLOW),
            (100, SLOW),
        ]
    };
    let mut t = builds.table(&[
        "nodes",
        "heartbeat/timeout ms",
        "runs",
        "median ms",
        "min ms",
        "max ms",
        "poll round ms",
        "load",
    ]);
    let mut rss: Vec<BigRss> = vec![None; builds.len()];
    for (n, args) in cases {
        let mut times = vec![Vec::new(); builds.len()];
        let mut round = vec![Vec::new(); builds.len()];
        let mut load = vec![Vec::new(); builds.len()];
        let mut failed: Vec<Option<String>> = vec![None; builds.len()];
        for _ in 0..runs {
            for (k, b) in builds.iter().enumerate() {
                if failed[k].is_some() {
                    continue;
                }
                load[k].push(load1());
                let mut c = Cluster::start(&b.bin, n, args);
                match c.join_all(CONVERGE_PAUSE, CONVERGE_LIMIT) {
                    Ok(m) => {
                        times[k].push(m.elapsed_ms);
                        round[k].push(m.round_ms);
                        if rss[k].as_ref().is_none_or(|(big, _)| *big <= n) {
                            rss[k] = Some((n, c.nodes.iter().map(|p| p.rss_kib()).collect()));
                        }
                    }
                    Err(why) => failed[k] = Some(why),
                }
            }
        }
        let timing = if args.is_empty() {
            "100/500".to_string()
        } else {
            format!("{}/{}", args[1], args[3])
        };
        for (k, b) in builds.iter().enumerate() {
            if let Some(why) = &failed[k] {
                println!("{n} nodes ({timing}) did not converge:\n{why}");
                builds.row(
                    &mut t,
                    b,
                    vec![
                        n.to_string(),
                        timing.clone(),
                        format!("{} of {runs}", times[k].len()),
                        format!("not within {} s", CONVERGE_LIMIT.as_secs()),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        span(&load[k]),
                    ],
                );
                continue;
            }
            let s = sorted(times[k].clone());
            builds.row(
                &mut t,
                b,
                vec![
                    n.to_string(),
                    timing.clone(),
                    runs.to_string(),
                    ms(percentile(&s, 50.0)),
                    ms(s[0]),
                    ms(s[s.len() - 1]),
                    ms(median(round[k].clone())),
                    span(&load[k]),
                ],
            );
            println!(
                "RESULT {}={:.2}",
                builds.key(
                    b,
                    &format!("converge_{n}_{}_median_ms", timing.replace('/', "_"))
                ),
                percentile(&s, 50.0)
            );
        }
    }
    t.print("Convergence: N-1 nodes join one node at once (-c), until all agree with a full mesh");
    rss
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL: the kernel closes the master's connections.
    Crash,
    /// SIGSTOP: the master goes silent with its connections open.
    Freeze,
}

/// A fresh 5-node cluster per run; the master gets the fault, and the time
/// until the 4 survivors agree on a new master (higher epoch, `peers=3`).
fn failover(builds: &Builds, fault: Fault, runs: usize, strict: bool) {
    // `--nodes N` and `--timing HEARTBEAT,TIMEOUT` change the cluster, for
    // compare_etcd.sh; a strict cluster gets a majority quorum.
    let n: usize = util::flag_value("--nodes").map_or(5, |v| v.parse().expect("--nodes N"));
    let mut args: Vec<String> = Vec::new();
    if strict {
        args.extend([
            "--strict".into(),
            "--quorum".into(),
            (n / 2 + 1).to_string(),
        ]);
    }
    let timing = util::flag_value("--timing");
    let (heartbeat_ms, timeout_ms) = match &timing {
        Some(t) => {
            let (h, o) = t.split_once(',').expect("--timing HEARTBEAT,TIMEOUT");
            args.extend(["--heartbeat".into(), h.into(), "--timeout".into(), o.into()]);
            (h.parse::<f64>().expect("ms"), o.parse::<f64>().expect("ms"))
        }
        None => (HEARTBEAT_MS, TIMEOUT_MS),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let args = args.as_slice();
    let mut times = vec![Vec::new(); builds.len()];
    let mut round = vec![Vec::new(); builds.len()];
    let mut load = vec![Vec::new(); builds.len()];
    for _ in 0..runs {
        for (k, b) in builds.iter().enumerate() {
            load[k].push(load1());
            let mut c = Cluster::start(&b.bin, n, args);
            c.join_all(Duration::ZERO, DEADLINE)
                .expect("the cluster forms");
            // Let heartbeats run for a while: a steady cluster, not a fresh one.
            thread::sleep(Duration::from_millis(300));
            let before = c.statuses(&(0..n).collect::<Vec<_>>());
            let master = master_of(&before);
            let survivors: Vec<usize> = (0..n).filter(|&i| i != master).collect();
            let old_epoch = before[master].epoch;
            let old_id = before[master].id.clone();
            let t0 = Instant::now();
            c.nodes[master].signal(match fault {
                Fault::Crash => libc::SIGKILL,
                Fault::Freeze => libc::SIGSTOP,
            });
            let m = c
                .wait(&survivors, t0, Duration::ZERO, DEADLINE, |s| {
                    agreed(s, n - 1)
                        && s[0].epoch > old_epoch
                        && s[0].master.as_ref() != Some(&old_id)
                })
                .unwrap_or_else(|why| panic!("no failover: {why}"));
            times[k].push(m.elapsed_ms);
            round[k].push(m.round_ms);
        }
    }
    let key = match (fault, strict) {
        (Fault::Crash, false) => "crash",
        (Fault::Crash, true) => "crash_strict",
        (Fault::Freeze, _) => "silent",
    };
    let name = format!(
        "{} failover: {} of the master, {n} nodes, heartbeat {heartbeat_ms} ms, timeout {timeout_ms} ms{}",
        if fault == Fault::Crash {
            "Crash"
        } else {
            "Silent"
        },
        if fault == Fault::Crash {
            "SIGKILL"
        } else {
            "SIGSTOP"
        },
        if strict { ", --strict" } else { "" }
    );
    let mut t = builds.table(&[
        "runs",
        "over 10 ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "min ms",
        "max ms",
        "poll round ms",
        "load",
    ]);
    for (k, b) in builds.iter().enumerate() {
        let s = sorted(times[k].clone());
        builds.row(
            &mut t,
            b,
            vec![
                runs.to_string(),
                s.iter().filter(|&&v| v > 10.0).count().to_string(),
                ms(percentile(&s, 50.0)),
                ms(percentile(&s, 90.0)),
                ms(percentile(&s, 99.0)),
                ms(s[0]),
                ms(s[s.len() - 1]),
                ms(median(round[k].clone())),
                span(&load[k]),
            ],
        );
        println!(
            "RESULT {}={:.3} {}={:.3} {}={runs}",
            builds.key(b, &format!("{key}_p50_ms")),
            percentile(&s, 50.0),
            builds.key(b, &format!("{key}_p99_ms")),
            percentile(&s, 99.0),
            builds.key(b, &format!("{key}_runs")),
        );
    }
    t.print(&name);
    if fault == Fault::Freeze {
        println!(
            "(guarantee 5 in docs/GUARANTEES.md allows timeout + 2 x heartbeat = {} ms; the target is timeout + 1 heartbeat = {} ms)",
            timeout_ms + 2.0 * heartbeat_ms,
            timeout_ms + heartbeat_ms
        );
    }
}

/// CPU used by each node of idle clusters over `secs` seconds, its
/// wakeups, and the nodes' resident memory.
fn idle(builds: &Builds, sizes: &[usize], secs: u64, rss_big: Vec<BigRss>) {
    let mut t = builds.table(&[
        "nodes",
        "window s",
        "median % of a core",
        "max %",
        "all nodes %",
        "utime+stime, all nodes %",
        "wakeups/s per node",
        "still agreed",
        "load",
    ]);
    let mut rss = builds.table(&[
        "cluster",
        "VmRSS KiB",
        "max VmRSS",
        "RssAnon KiB",
        "max RssAnon",
        "Pss KiB",
    ]);
    let mut rss_row = |b: &Build, name: String, v: Vec<Memory>| {
        let med = |f: fn(&Memory) -> u64| {
            let s = sorted(v.iter().map(|m| f(m) as f64).collect());
            (percentile(&s, 50.0), s[s.len() - 1])
        };
        let (rss_med, rss_max) = med(|m| m.rss);
        let (anon_med, anon_max) = med(|m| m.anon);
        let (pss_med, _) = med(|m| m.pss);
        builds.row(
            &mut rss,
            b,
            vec![
                name,
                format!("{rss_med:.0}"),
                format!("{rss_max:.0}"),
                format!("{anon_med:.0}"),
                format!("{anon_max:.0}"),
                format!("{pss_med:.0}"),
            ],
        );
    };
    for b in builds.iter() {
        let alone = Cluster::start(&b.bin, 1, &[]);
        rss_row(b, "1 node alone".into(), vec![alone.nodes[0].rss_kib()]);
    }
    // SAFETY: sysconf has no preconditions.
    let tick_s = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for &n in sizes {
        for b in builds.iter() {
            let mut c = Cluster::start(&b.bin, n, &[]);
            c.join_all(CONVERGE_PAUSE, DEADLINE)
                .expect("the cluster forms");
            // The console connections stay open but silent until the end.
            thread::sleep(Duration::from_secs(1));
            let load = load1();
            let before: Vec<Sched> = c.nodes.iter().map(Proc::sched).collect();
            let t0 = Instant::now();
            thread::sleep(Duration::from_secs(secs));
            let after: Vec<Sched> = c.nodes.iter().map(Proc::sched).collect();
            let window = t0.elapsed().as_secs_f64();
            let d: Vec<Sched> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
            let pct: Vec<f64> = d
                .iter()
                .map(|s| s.cpu_ns as f64 / 1e9 / window * 100.0)
                .collect();
            let ticks: u64 = d.iter().map(|s| s.ticks).sum();
            let all: Vec<usize> = (0..n).collect();
            let still = agreed(&c.statuses(&all), n);
            let s = sorted(pct.clone());
            builds.row(
                &mut t,
                b,
                vec![
                    n.to_string(),
                    secs.to_string(),
                    format!("{:.3}", percentile(&s, 50.0)),
                    format!("{:.3}", s[s.len() - 1]),
                    format!("{:.1}", pct.iter().sum::<f64>()),
                    format!("{:.1}", ticks as f64 * tick_s / window * 100.0),
                    format!(
                        "{:.0}",
                        median(d.iter().map(|s| s.slices as f64 / window).collect())
                    ),
                    if still { "yes" } else { "no" }.into(),
                    format!("{load:.1}"),
                ],
            );
            println!(
                "RESULT {}={:.4}",
                builds.key(b, &format!("idle_cpu_{n}_median_pct")),
                percentile(&s, 50.0)
            );
            rss_row(
                b,
                format!("{n} nodes, idle"),
                c.nodes.iter().map(|p| p.rss_kib()).collect(),
            );
        }
    }
    t.print("Idle CPU per node (heartbeat 100 ms; /proc/PID/schedstat, ns; utime+stime from /proc/PID/stat in clock ticks; wakeups: timeslices from schedstat)");
    for (b, big) in builds.iter().zip(rss_big) {
        if let Some((n, v)) = big {
            rss_row(b, format!("{n} nodes, just converged"), v);
        }
    }
    rss.print("Memory per node (medians unless max)");
}

/// Pause between an operator's polling rounds in [`scale`]: a round opens
/// a connection to every node, so polling back to back would take a core
/// from the nodes.
const OPERATOR_PAUSE: Duration = Duration::from_millis(20);

/// Pause between polls while the steady state is watched.
const STEADY_POLL: Duration = Duration::from_millis(250);

/// N nodes start alone; all but the first are told `-c` to the first at
/// once, each over its own fresh connection, and every node's `-s` is
/// polled over a fresh connection per query, as an operator's script
/// would: the time until all agree on one master and epoch, and until the
/// mesh is full. Then the steady state: how often a poll found the
/// cluster agreed, the role changes and epochs, and the CPU the nodes take.
fn scale(builds: &Builds, sizes: &[usize], runs: usize, quick: bool) {
    let limit = if quick {
        CONVERGE_LIMIT
    } else {
        Duration::from_secs(60)
    };
    let steady = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut t = builds.table(&[
        "nodes",
        "run",
        "load",
        "agreed ms",
        "full mesh ms",
        "poll round ms",
        "polls agreed after",
        "role changes after",
        "new epochs after",
        "CPU % per node (median)",
        "all nodes %",
        "MEETs sent per node (median / max)",
    ]);
    // `--timing HEARTBEAT,TIMEOUT` as for failovers: what the heartbeats'
    // share of the machine does to forming.
    let timing: Vec<String> = util::flag_value("--timing").map_or_else(Vec::new, |t| {
        let (h, o) = t.split_once(',').expect("--timing HEARTBEAT,TIMEOUT");
        vec!["--heartbeat".into(), h.into(), "--timeout".into(), o.into()]
    });
    let timing: Vec<&str> = timing.iter().map(String::as_str).collect();
    for &n in sizes {
        for run in 1..=runs {
            for b in builds.iter() {
                let load = load1();
                let mut c = Cluster::start(&b.bin, n, &timing);
                // From here on, only operators' connections.
                c.consoles.clear();
                let addrs: Vec<SocketAddr> = c.nodes.iter().map(|p| p.addr).collect();
                let first = addrs[0];
                let t0 = Instant::now();
                let cmd = format!("-c {} {}\n", first.ip(), first.port());
                let unanswered = ask_fresh(&addrs[1..], &cmd)
                    .iter()
                    .filter(|a| a.is_none())
                    .count();
                if unanswered > 0 {
                    println!("{n} nodes: {unanswered} did not answer -c");
                }
                let (mut agreed_ms, mut mesh_ms) = (None, None);
                let (mut rounds, mut polling) = (0u32, Duration::ZERO);
                let mut last = Vec::new();
                while mesh_ms.is_none() && t0.elapsed() < limit {
                    let r0 = Instant::now();
                    last = fresh_statuses(&addrs);
                    rounds += 1;
                    polling += r0.elapsed();
                    let elapsed = t0.elapsed().as_secs_f64() * 1e3;
                    if let Some(s) = last.iter().cloned().collect::<Option<Vec<Status>>>() {
                        if agreed_ms.is_none() && same_master(&s) {
                            agreed_ms = Some(elapsed);
                        }
                        if agreed(&s, n) {
                            mesh_ms = Some(elapsed);
                        }
                    }
                    thread::sleep(OPERATOR_PAUSE);
                }
                if mesh_ms.is_none() {
                    println!(
                        "{n} nodes: no full mesh within {} s: {}",
                        limit.as_secs(),
                        summarize(&last)
                    );
                }
                let round_ms = polling.as_secs_f64() * 1e3 / f64::from(rounds.max(1));
                // The steady state (or what a cluster that never formed does).
                let journals = |addrs: &[SocketAddr]| -> Vec<Vec<String>> {
                    ask_fresh(addrs, "-j\n")
                        .into_iter()
                        .map(Option::unwrap_or_default)
                        .collect()
                };
                let epoch = |s: &[Option<Status>]| s.iter().flatten().map(|s| s.epoch).max();
                let j0 = journals(&addrs);
                let e0 = epoch(&last);
                let cpu0: Vec<Sched> = c.nodes.iter().map(Proc::sched).collect();
                let w0 = Instant::now();
                let (mut polls, mut good) = (0, 0);
                let mut e1 = e0;
                while w0.elapsed() < steady {
                    let s = fresh_statuses(&addrs);
                    polls += 1;
                    if let Some(s) = s.iter().cloned().collect::<Option<Vec<Status>>>()
                        && agreed(&s, n)
                    {
                        good += 1;
                    }
                    e1 = e1.max(epoch(&s));
                    thread::sleep(STEADY_POLL);
                }
                let cpu1: Vec<Sched> = c.nodes.iter().map(Proc::sched).collect();
                let w = w0.elapsed().as_secs_f64();
                let j1 = journals(&addrs);
                let meets: Vec<f64> = addrs
                    .iter()
                    .filter_map(|a| harness::meets_sent(*a))
                    .map(|m| m as f64)
                    .collect();
                let changes: usize = j0
                    .iter()
                    .zip(&j1)
                    .map(|(a, b)| journal_since(a, b).0.len())
                    .sum();
                let pct: Vec<f64> = cpu1
                    .iter()
                    .zip(&cpu0)
                    .map(|(a, b)| a.since(b).cpu_ns as f64 / 1e9 / w * 100.0)
                    .collect();
                builds.row(
                    &mut t,
                    b,
                    vec![
                        n.to_string(),
                        run.to_string(),
                        format!("{load:.1}"),
                        agreed_ms.map_or(format!("not in {} s", limit.as_secs()), ms),
                        mesh_ms.map_or(format!("not in {} s", limit.as_secs()), ms),
                        ms(round_ms),
                        format!("{good} of {polls}"),
                        changes.to_string(),
                        match (e0, e1) {
                            (Some(a), Some(b)) => (b - a).to_string(),
                            _ => "?".into(),
                        },
                        format!("{:.2}", median(pct.clone())),
                        format!("{:.0}", pct.iter().sum::<f64>()),
                        format!(
                            "{:.0} / {:.0}",
                            median(meets.clone()),
                            meets.iter().copied().fold(0.0, f64::max)
                        ),
                    ],
                );
                let key = builds.key(b, &format!("scale_{n}"));
                println!(
                    "RESULT {key}_agreed_ms={:.1} {key}_mesh_ms={:.1}",
                    agreed_ms.unwrap_or(f64::NAN),
                    mesh_ms.unwrap_or(f64::NAN)
                );
            }
        }
    }
    t.print(&format!(
        "Scale ({}): N-1 nodes told -c to one node at once, polled as an operator would (a fresh TCP connection per -s, rounds {} ms apart); then {} s of steady state, polled every {} ms",
        if timing.is_empty() {
            "heartbeat 100, timeout 500".to_owned()
        } else {
            timing.join(" ")
        },
        OPERATOR_PAUSE.as_millis(),
        steady.as_secs(),
        STEADY_POLL.as_millis()
    ));
    println!(
        "(agreed: every node reports the same master and epoch; full mesh: and peers=N-1; \"after\" columns: the steady window, which follows the full mesh, or the limit when there was none)"
    );
}

/// What a round of status lines says, for a cluster that did not form.
fn summarize(s: &[Option<Status>]) -> String {
    let answered: Vec<&Status> = s.iter().flatten().collect();
    let role = |r: &str| answered.iter().filter(|x| x.role == r).count();
    let mut groups: Vec<(Option<&String>, u64)> = answered
        .iter()
        .map(|x| (x.master.as_ref(), x.epoch))
        .collect();
    groups.sort();
    groups.dedup();
    let peers = sorted(answered.iter().map(|x| x.peers as f64).collect());
    format!(
        "{} of {} answered; {} master, {} follower, {} none; {} distinct (master, epoch); peers min {} median {} max {}",
        answered.len(),
        s.len(),
        role("master"),
        role("follower"),
        role("none"),
        groups.len(),
        peers.first().copied().unwrap_or(f64::NAN),
        percentile(&peers, 50.0),
        peers.last().copied().unwrap_or(f64::NAN),
    )
}

/// `-s` queries answered per second on one TCP console connection, with
/// many queries in flight, and one at a time for comparison.
fn queries(builds: &Builds, secs: f64) {
    let mut t = builds.table(&["in flight", "queries/s", "MB/s answered", "seconds"]);
    for b in builds.iter() {
        let mut c = Cluster::start(&b.bin, 5, &[]);
        c.join_all(Duration::ZERO, DEADLINE)
            .expect("the cluster forms");
        let addr = c.nodes[0].addr;
        for window in [1u64, 64, 1024] {
            let (n, bytes, d) = pipeline(addr, window, Duration::from_secs_f64(secs));
            let s = d.as_secs_f64();
            builds.row(
                &mut t,
                b,
                vec![
                    window.to_string(),
                    rate(n as f64 / s),
                    format!("{:.1}", bytes as f64 / s / 1e6),
                    format!("{s:.1}"),
                ],
            );
            println!(
                "RESULT {}={:.0}",
                builds.key(b, &format!("queries_window_{window}_per_s")),
                n as f64 / s
            );
        }
    }
    t.print("Pipelined -s queries on one connection (to the master of 5 nodes)");
}

/// Sends `-s` lines with up to `window` unanswered, for `span`; returns
/// the queries answered, the answer bytes and the time taken.
fn pipeline(addr: SocketAddr, window: u64, span: Duration) -> (u64, u64, Duration) {
    /// Queries written per write call, at most.
    const BATCH: u64 = 256;
    let stream = TcpStream::connect(addr).expect("connect to the console");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = stream.try_clone().expect("clone");
    let mut writer = stream;
    let answered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let reading = {
        let (answered, done, bytes) = (answered.clone(), done.clone(), bytes.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut lines = 0u64;
            while !done.load(Ordering::Relaxed) {
                let n = reader.read(&mut buf).expect("read answers");
                assert!(n > 0, "the node closed the console connection");
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                // Each answer is the status line and `OK`.
                answered.store(lines / 2, Ordering::Release);
            }
        })
    };
    let t0 = Instant::now();
    let mut sent = 0u64;
    let batch = "-s\n".repeat(BATCH as usize);
    while t0.elapsed() < span {
        let room = window - (sent - answered.load(Ordering::Acquire));
        if room == 0 {
            std::hint::spin_loop();
            continue;
        }
        let k = room.min(BATCH);
        writer
            .write_all(&batch.as_bytes()[..3 * k as usize])
            .expect("write queries");
        sent += k;
    }
    // Wait for what is in flight, then stop the reader.
    while answered.load(Ordering::Acquire) < sent {
        thread::yield_now();
    }
    let d = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    writer
        .write_all(b"-s\n")
        .expect("a last query wakes the reader");
    reading.join().expect("reader");
    (sent, bytes.load(Ordering::Relaxed), d)
}
