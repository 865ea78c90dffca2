//! Stalls of a whole cluster: every node paused together, and every node
//! starved of CPU together. Guarantee 10 (docs/GUARANTEES.md) asks that
//! neither changes a role, an epoch or runs a hook; these count what does.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::harness::{
    Cluster, DEADLINE, Extras, agreed, allowed_cpus, journal_since, list, load1, median, pin, span,
};
use crate::{Builds, CONVERGE_PAUSE, util::ms};

/// How long a whole-cluster pause lasts: a paused VM, a live migration,
/// three timeouts at the defaults.
const PAUSE: Duration = Duration::from_millis(1500);

/// After a stall ends and the cluster agrees again, how long the bench
/// keeps watching for late role changes (a reconnect after its backoff)
/// before it counts.
const SETTLE: Duration = Duration::from_secs(2);

/// Every node of an agreed cluster SIGSTOPped together for [`PAUSE`] and
/// resumed: what the cluster does about a silence nobody caused but the
/// host. Guarantee 10 (docs/GUARANTEES.md) asks for nothing at all.
pub fn pause(builds: &Builds, sizes: &[usize], runs: usize, quick: bool) {
    let settle = if quick {
        Duration::from_millis(500)
    } else {
        SETTLE
    };
    let mut t = builds.table(&UPSET_COLUMNS);
    for &n in sizes {
        let mut upsets = vec![Vec::new(); builds.len()];
        for _ in 0..runs {
            for (k, b) in builds.iter().enumerate() {
                upsets[k].push(disturb(&b.bin, n, None, settle, |c| {
                    for p in &c.nodes {
                        p.signal(libc::SIGSTOP);
                    }
                    thread::sleep(PAUSE);
                    for p in &c.nodes {
                        p.signal(libc::SIGCONT);
                    }
                }));
            }
        }
        for (k, b) in builds.iter().enumerate() {
            let key = builds.key(b, &format!("pause_{n}"));
            builds.row(&mut t, b, upset_row(n, &upsets[k], &key));
        }
    }
    t.print(&format!(
        "Whole-cluster pause: every node SIGSTOPped together for {} ms, then SIGCONT (heartbeat 100 ms, timeout 500 ms; counted until {} s after the cluster agrees again)",
        PAUSE.as_millis(),
        settle.as_secs_f64()
    ));
    print_upset_legend();
}

/// How long the busy loop holds the nodes' CPU.
const STARVE: Duration = Duration::from_secs(5);

/// Five nodes pinned to one CPU, next to a busy loop on that CPU for
/// [`STARVE`]: a host under heavy steal or a throttled cgroup. The loop
/// runs either as `SCHED_FIFO` (priority 1: every normal task on that CPU
/// waits for it, and the kernel's real-time throttling,
/// `sched_rt_runtime_us`, leaves them 5 % of it) or at nice -20. Needs
/// root; `--quick` skips it, since it would take a CPU from everything
/// else on the machine for seconds.
pub fn starve(builds: &Builds, runs: usize, quick: bool) {
    if quick {
        println!(
            "\nSKIPPED CPU starvation (--only starve): not in --quick, since it takes one CPU from the whole machine for {} s per run",
            STARVE.as_secs()
        );
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "\nSKIPPED CPU starvation (--only starve): needs root for a real-time or nice -20 busy loop; run as root"
        );
        return;
    }
    let cpus = allowed_cpus();
    let Some(&cpu) = cpus.last().filter(|_| cpus.len() >= 2) else {
        println!(
            "\nSKIPPED CPU starvation (--only starve): needs two CPUs, one to starve and one for the rest of the machine (this process may use {cpus:?})"
        );
        return;
    };
    // With real-time throttling off, a SCHED_FIFO loop would hold its CPU
    // entirely: no kernel thread bound to it would run for 5 s.
    let rt_runtime = std::fs::read_to_string("/proc/sys/kernel/sched_rt_runtime_us")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    let rt_period = std::fs::read_to_string("/proc/sys/kernel/sched_rt_period_us")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    let mut starvers = Vec::new();
    match (rt_runtime, rt_period) {
        (Some(r), Some(p)) if r >= 0 && r < p => starvers.push(Starver::Fifo),
        _ => println!(
            "\nSKIPPED CPU starvation by SCHED_FIFO: real-time throttling is off (kernel.sched_rt_runtime_us = {rt_runtime:?}, period {rt_period:?}), so the loop would hold its CPU entirely"
        ),
    }
    starvers.push(Starver::Nice);
    let n = 5;
    let columns = [
        &["busy loop", "nodes' CPU during it %"][..],
        &UPSET_COLUMNS[..],
    ]
    .concat();
    let mut t = builds.table(&columns);
    for starver in starvers {
        let mut upsets = vec![Vec::new(); builds.len()];
        let mut got = vec![Vec::new(); builds.len()];
        for _ in 0..runs {
            for (k, b) in builds.iter().enumerate() {
                let got_cpu = &mut got[k];
                upsets[k].push(disturb(&b.bin, n, Some(cpu), SETTLE, |c| {
                    let before: u64 = c.nodes.iter().map(|p| p.sched().cpu_ns).sum();
                    let t0 = Instant::now();
                    let busy = BusyLoop::start(starver, cpu, STARVE)
                        .unwrap_or_else(|e| panic!("cannot start the busy loop: {e}"));
                    thread::sleep(STARVE);
                    drop(busy);
                    let used: u64 = c.nodes.iter().map(|p| p.sched().cpu_ns).sum();
                    got_cpu.push((used - before) as f64 / t0.elapsed().as_nanos() as f64 * 100.0);
                }));
            }
        }
        for (k, b) in builds.iter().enumerate() {
            let key = builds.key(b, &format!("starve_{}_{n}", starver.key()));
            let mut cells = vec![starver.to_string(), list(&got[k], 1)];
            cells.extend(upset_row(n, &upsets[k], &key));
            builds.row(&mut t, b, cells);
        }
    }
    t.print(&format!(
        "CPU starvation: {n} nodes pinned to CPU {cpu} next to a busy loop on it for {} s (heartbeat 100 ms, timeout 500 ms; counted until {} s after the cluster agrees again)",
        STARVE.as_secs(),
        SETTLE.as_secs()
    ));
    println!(
        "(nodes' CPU during it: the {n} nodes' CPU time over the loop's window, % of one CPU; kernel.sched_rt_runtime_us = {} of {})",
        rt_runtime.map_or("?".into(), |v| v.to_string()),
        rt_period.map_or("?".into(), |v| v.to_string())
    );
    print_upset_legend();
}

/// The columns of [`upset_row`].
const UPSET_COLUMNS: [&str; 11] = [
    "nodes",
    "runs",
    "load",
    "role changes",
    "claims",
    "new epochs",
    "hook runs",
    "peers logged silent",
    "last change ms after",
    "agreed again ms",
    "agreed at end",
];

fn print_upset_legend() {
    println!(
        "(per run, in run order; role changes: new lines in all nodes' -j journals (\">=\" where a journal overflowed); claims: of them, changes to master; hook runs: --notify runs; peers logged silent: peer-silent log lines; last change: the last new journal line's time after the stall ended (negative: during it); agreed again: until every node reported one master, one epoch and a full mesh)"
    );
}

/// What a stall did to a cluster, counted from its journals, hooks, logs
/// and status lines.
#[derive(Clone)]
struct Upset {
    load: f64,
    role_changes: usize,
    /// A journal lost lines the bench had not read: at least this many.
    overflowed: bool,
    claims: usize,
    new_epochs: u64,
    hooks: usize,
    silent: usize,
    last_change_ms: Option<f64>,
    agreed_again_ms: Option<f64>,
    agreed_at_end: bool,
}

/// One row of [`UPSET_COLUMNS`] from the runs of one case, and its
/// `RESULT` line.
fn upset_row(n: usize, runs: &[Upset], key: &str) -> Vec<String> {
    let counts = |f: fn(&Upset) -> f64| list(&runs.iter().map(f).collect::<Vec<_>>(), 0);
    let changes: Vec<String> = runs
        .iter()
        .map(|u| format!("{}{}", if u.overflowed { ">=" } else { "" }, u.role_changes))
        .collect();
    let times = |f: fn(&Upset) -> Option<f64>| {
        runs.iter()
            .map(|u| f(u).map_or("-".into(), ms))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let med = |f: fn(&Upset) -> f64| median(runs.iter().map(f).collect());
    println!(
        "RESULT {key}_role_changes_median={} {key}_new_epochs_median={} {key}_hooks_median={}",
        med(|u| u.role_changes as f64),
        med(|u| u.new_epochs as f64),
        med(|u| u.hooks as f64)
    );
    vec![
        n.to_string(),
        runs.len().to_string(),
        span(&runs.iter().map(|u| u.load).collect::<Vec<_>>()),
        changes.join(", "),
        counts(|u| u.claims as f64),
        counts(|u| u.new_epochs as f64),
        counts(|u| u.hooks as f64),
        counts(|u| u.silent as f64),
        times(|u| u.last_change_ms),
        times(|u| u.agreed_again_ms),
        format!(
            "{} of {}",
            runs.iter().filter(|u| u.agreed_at_end).count(),
            runs.len()
        ),
    ]
}

/// A fresh cluster of `n` nodes with `--notify` hooks (pinned to `cpu` if
/// given) forms and runs a second; then `fault` stalls it and returns when
/// the stall is over. Counts what the stall caused until the cluster
/// agrees again and `settle` more has passed.
fn disturb(
    bin: &str,
    n: usize,
    cpu: Option<usize>,
    settle: Duration,
    fault: impl FnOnce(&mut Cluster),
) -> Upset {
    let mut c = Cluster::start_with(bin, n, &[], Extras { notify: true, cpu });
    c.join_all(CONVERGE_PAUSE, DEADLINE)
        .expect("the cluster forms");
    // A steady cluster, its formation's hooks run.
    thread::sleep(Duration::from_secs(1));
    c.hooks_quiet();
    let all: Vec<usize> = (0..n).collect();
    let before = c.tally();
    let load = load1();
    fault(&mut c);
    let ended = SystemTime::now();
    let t0 = Instant::now();
    let agreed_again_ms = c
        .wait(&all, t0, CONVERGE_PAUSE, DEADLINE, |s| agreed(s, n))
        .ok()
        .map(|m| m.elapsed_ms);
    thread::sleep(settle);
    c.hooks_quiet();
    let after = c.tally();
    let agreed_at_end = agreed(&c.statuses(&all), n);
    let mut role_changes = 0;
    let mut overflowed = false;
    let mut claims = 0;
    let mut last_change_ms: Option<f64> = None;
    for (old, new) in before.journals.iter().zip(&after.journals) {
        let (lines, lost) = journal_since(old, new);
        role_changes += lines.len();
        overflowed |= lost;
        claims += lines.iter().filter(|l| l.contains("->master ")).count();
        for l in lines {
            let at = l
                .split(' ')
                .next()
                .and_then(|t| humantime::parse_rfc3339(t).ok());
            if let Some(at) = at {
                let after_ms = match at.duration_since(ended) {
                    Ok(d) => d.as_secs_f64() * 1e3,
                    Err(e) => -e.duration().as_secs_f64() * 1e3,
                };
                last_change_ms = Some(last_change_ms.map_or(after_ms, |m| m.max(after_ms)));
            }
        }
    }
    let sum = |v: &[usize]| v.iter().sum::<usize>();
    Upset {
        load,
        role_changes,
        overflowed,
        claims,
        new_epochs: after.epoch - before.epoch,
        hooks: sum(&after.hooks) - sum(&before.hooks),
        silent: sum(&after.silent) - sum(&before.silent),
        last_change_ms,
        agreed_again_ms,
        agreed_at_end,
    }
}

/// What loads the nodes' CPU in [`starve`].
#[derive(Clone, Copy)]
enum Starver {
    /// `SCHED_FIFO`, priority 1: the lowest real-time priority, above
    /// every normal task, below the kernel's own real-time threads.
    Fifo,
    /// `SCHED_OTHER` at nice -20.
    Nice,
}

impl Starver {
    fn key(self) -> &'static str {
        match self {
            Starver::Fifo => "fifo",
            Starver::Nice => "nice",
        }
    }
}

impl std::fmt::Display for Starver {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Starver::Fifo => "SCHED_FIFO 1",
            Starver::Nice => "nice -20",
        })
    }
}

/// A busy loop (`sh -c 'while :; do :; done'`, no system calls) pinned to
/// one CPU: killed when dropped. Three more limits stop it if the bench
/// cannot: it dies with the bench (`PR_SET_PDEATHSIG`), and the kernel
/// kills it after one second of CPU time more than its window
/// (`RLIMIT_CPU`) or of real-time running without a blocking call
/// (`RLIMIT_RTTIME`).
struct BusyLoop(Child);

impl BusyLoop {
    fn start(how: Starver, cpu: usize, window: Duration) -> std::io::Result<BusyLoop> {
        let cpu_secs = window.as_secs() + 1;
        let rt_us = (window + Duration::from_secs(1)).as_micros() as libc::rlim_t;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec the closure only makes system
        // calls (prctl, setrlimit, sched_setaffinity, sched_setscheduler,
        // setpriority) on the child itself and reads errno; it allocates
        // nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                let check = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
                let limit = |cur, max| libc::rlimit {
                    rlim_cur: cur,
                    rlim_max: max,
                };
                check(libc::setrlimit(libc::RLIMIT_CORE, &limit(0, 0)))?;
                // SIGXCPU (which ends sh) at the soft limit, SIGKILL at the hard one.
                check(libc::setrlimit(
                    libc::RLIMIT_CPU,
                    &limit(cpu_secs, cpu_secs + 1),
                ))?;
                check(libc::setrlimit(libc::RLIMIT_RTTIME, &limit(rt_us, rt_us)))?;
                pin(0, cpu)?;
                match how {
                    Starver::Fifo => {
                        let param = libc::sched_param { sched_priority: 1 };
                        check(libc::sched_setscheduler(0, libc::SCHED_FIFO, &param))
                    }
                    Starver::Nice => check(libc::setpriority(libc::PRIO_PROCESS, 0, -20)),
                }
            });
        }
        cmd.spawn().map(BusyLoop)
    }
}

impl Drop for BusyLoop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
