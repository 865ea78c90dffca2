//! What an idle node spends each second: wakeups, context switches and
//! system calls (`strace -c`), and what a health check that passes adds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Cluster, DEADLINE, Extras, LogDir, Proc, Sched, load1, median};
use crate::{Builds, CONVERGE_PAUSE, HEARTBEAT_MS};

/// What an idle node of five does each second: its wakeups and context
/// switches (/proc/PID/schedstat and /proc/PID/status) over a window, and
/// then its system calls over a second window (`strace -c -f -p`, which
/// slows the node, so the first window runs untraced). The master and
/// one follower.
pub fn syscalls(builds: &Builds, secs: f64) {
    let n = 5;
    let window = Duration::from_secs_f64(secs);
    // PINGs sent per second by each node: one per peer per heartbeat.
    let pings = (n - 1) as f64 * 1000.0 / HEARTBEAT_MS;
    let strace = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut wake = builds.table(&[
        "node",
        "CPU % of a core",
        "wakeups/s",
        "voluntary switches/s",
        "involuntary switches/s",
        "PINGs sent/s",
        "load",
    ]);
    let mut calls = builds.table(&[
        "system call",
        "master calls/s",
        "master errors/s",
        "follower calls/s",
        "follower errors/s",
        "follower calls per PING sent",
    ]);
    for b in builds.iter() {
        let (c, master) = Cluster::settled(&b.bin, n, Extras::default());
        let follower = (0..n).find(|&i| i != master).expect("a follower");
        let load = load1();
        let before: Vec<Sched> = c.nodes.iter().map(Proc::sched).collect();
        let t0 = Instant::now();
        thread::sleep(window);
        let after: Vec<Sched> = c.nodes.iter().map(Proc::sched).collect();
        let w = t0.elapsed().as_secs_f64();
        let d: Vec<Sched> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
        let per_s = |f: fn(&Sched) -> u64, which: &[usize]| {
            median(which.iter().map(|&i| f(&d[i]) as f64 / w).collect())
        };
        let followers: Vec<usize> = (0..n).filter(|&i| i != master).collect();
        for (name, which) in [
            ("master", vec![master]),
            ("followers (median of 4)", followers),
        ] {
            builds.row(
                &mut wake,
                b,
                vec![
                    name.into(),
                    format!("{:.3}", per_s(|s| s.cpu_ns, &which) / 1e7),
                    format!("{:.1}", per_s(|s| s.slices, &which)),
                    format!("{:.1}", per_s(|s| s.voluntary, &which)),
                    format!("{:.1}", per_s(|s| s.involuntary, &which)),
                    format!("{pings:.0}"),
                    format!("{load:.1}"),
                ],
            );
        }
        println!(
            "RESULT {}={:.1}",
            builds.key(b, "idle_wakeups_per_s"),
            per_s(|s| s.slices, &[follower])
        );
        if !strace {
            continue;
        }
        // Both traced over the same window.
        let traced: Vec<Strace> = [master, follower]
            .iter()
            .map(|&i| Strace::attach(c.nodes[i].pid(), LogDir::path().join(format!("strace-{i}"))))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("strace: {e}"));
        let t0 = Instant::now();
        thread::sleep(window);
        let w = t0.elapsed().as_secs_f64();
        let counts: Vec<Vec<SyscallCount>> = traced
            .into_iter()
            .map(|s| s.finish().unwrap_or_else(|e| panic!("strace: {e}")))
            .collect();
        let mut names: Vec<&str> = counts[1].iter().map(|s| s.name.as_str()).collect();
        for s in &counts[0] {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
        let find = |k: usize, name: &str| {
            counts[k]
                .iter()
                .find(|s| s.name == name)
                .map_or((0.0, 0.0), |s| (s.calls as f64 / w, s.errors as f64 / w))
        };
        for name in names {
            let (mc, me) = find(0, name);
            let (fc, fe) = find(1, name);
            builds.row(
                &mut calls,
                b,
                vec![
                    name.into(),
                    format!("{mc:.1}"),
                    format!("{me:.1}"),
                    format!("{fc:.1}"),
                    format!("{fe:.1}"),
                    format!("{:.2}", fc / pings),
                ],
            );
            let key = builds.key(b, &format!("syscalls_follower_{name}"));
            println!("RESULT {key}_per_s={fc:.1} {key}_errors_per_s={fe:.1}");
        }
    }
    wake.print(&format!(
        "Wakeups per idle node of {n} (heartbeat 100 ms, untraced, {secs} s; wakeups: timeslices from /proc/PID/schedstat; switches from /proc/PID/status)"
    ));
    if strace {
        calls.print(&format!(
            "System calls per idle node of {n} (strace -c -f -p, {secs} s; errors are mostly EAGAIN; strace slows the node, the counts stand)"
        ));
    } else {
        println!(
            "\nSKIPPED system calls per node: strace is not installed (apt-get install strace)"
        );
    }
}

/// One system call's line of `strace -c`.
struct SyscallCount {
    name: String,
    calls: u64,
    errors: u64,
}

/// `strace -c -f` attached to a process until [`Strace::finish`]; killed
/// when dropped, which detaches it from the node.
struct Strace {
    child: Child,
    out: PathBuf,
}

impl Strace {
    /// Attaches, and returns once the kernel shows the node traced.
    fn attach(pid: i32, out: PathBuf) -> Result<Strace, String> {
        let child = Command::new("strace")
            .args(["-c", "-f", "-q", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start strace: {e}"))?;
        let s = Strace { child, out };
        let deadline = Instant::now() + Duration::from_secs(10);
        let tracer = s.child.id().to_string();
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.lines().any(|l| {
                l.strip_prefix("TracerPid:")
                    .is_some_and(|v| v.trim() == tracer)
            }) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!("strace did not attach to {pid} within 10 s"));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops tracing (SIGINT: strace detaches and writes its summary) and
    /// reads the counts.
    fn finish(mut self) -> Result<Vec<SyscallCount>, String> {
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        self.child.wait().map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&self.out).map_err(|e| e.to_string())?;
        Ok(parse_strace_summary(&text))
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of `strace -c`'s table: `% time, seconds, usecs/call, calls,
/// [errors,] syscall`, without the total.
fn parse_strace_summary(text: &str) -> Vec<SyscallCount> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (name, numbers) = w.split_last()?;
            if *name == "total" || !(4..=5).contains(&numbers.len()) {
                return None;
            }
            let n: Vec<u64> = numbers[3..]
                .iter()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            numbers[0].parse::<f64>().ok()?;
            Some(SyscallCount {
                name: (*name).to_owned(),
                calls: n[0],
                errors: n.get(1).copied().unwrap_or(0),
            })
        })
        .collect()
}

/// Idle CPU per node of a 5-node cluster with `--check true
/// --check-interval 1000` against the same cluster without a check, the
/// two alternating run by run so the machine's load falls on both alike:
/// bossd's own CPU (schedstat) and wakeups, and the CPU of the checks it
/// ran (cutime + cstime of the reaped children, in clock ticks).
pub fn check(builds: &Builds, secs: f64, runs: usize) {
    let n = 5;
    let window = Duration::from_secs_f64(secs);
    let configs: [(&str, &[&str]); 2] = [
        ("no check", &[]),
        (
            "--check true --check-interval 1000",
            &["--check", "true", "--check-interval", "1000"],
        ),
    ];
    let mut t = builds.table(&[
        "config",
        "runs",
        "window s",
        "bossd % of a core (median node)",
        "max node %",
        "wakeups/s per node",
        "checks' CPU % per node",
        "load",
    ]);
    // SAFETY: sysconf has no preconditions.
    let tick_s = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for b in builds.iter() {
        // Per config: each run's median node %, max node %, wakeups/s,
        // children's %, load.
        let mut seen: Vec<Vec<[f64; 5]>> = vec![Vec::new(); configs.len()];
        for _ in 0..runs {
            for (i, (_, args)) in configs.iter().enumerate() {
                let mut c = Cluster::start(&b.bin, n, args);
                c.join_all(CONVERGE_PAUSE, DEADLINE)
                    .expect("the cluster forms");
                thread::sleep(Duration::from_secs(1));
                let load = load1();
                let before: Vec<Sched> = c.nodes.iter().map(Proc::sched).collect();
                let t0 = Instant::now();
                thread::sleep(window);
                let after: Vec<Sched> = c.nodes.iter().map(Proc::sched).collect();
                let w = t0.elapsed().as_secs_f64();
                let d: Vec<Sched> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
                let pct: Vec<f64> = d
                    .iter()
                    .map(|s| s.cpu_ns as f64 / 1e9 / w * 100.0)
                    .collect();
                let max = pct.iter().cloned().fold(0.0, f64::max);
                let wake = median(d.iter().map(|s| s.slices as f64 / w).collect());
                let children = d.iter().map(|s| s.child_ticks).sum::<u64>() as f64 * tick_s / w
                    * 100.0
                    / n as f64;
                seen[i].push([median(pct), max, wake, children, load]);
            }
        }
        for (i, (name, _)) in configs.iter().enumerate() {
            let col = |k: usize| median(seen[i].iter().map(|r| r[k]).collect());
            builds.row(
                &mut t,
                b,
                vec![
                    (*name).into(),
                    runs.to_string(),
                    format!("{secs:.0}"),
                    format!("{:.3}", col(0)),
                    format!("{:.3}", col(1)),
                    format!("{:.1}", col(2)),
                    format!("{:.3}", col(3)),
                    format!("{:.1}", col(4)),
                ],
            );
            let key = if i == 0 {
                "idle_cpu_nocheck"
            } else {
                "idle_cpu_check"
            };
            println!("RESULT {}={:.4}", builds.key(b, key), col(0));
        }
    }
    t.print("Idle CPU per node with a passing health check (5 nodes, heartbeat 100 ms; medians over runs of the median node; checks' CPU from cutime+cstime in clock ticks)");
}
