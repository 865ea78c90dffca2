//! Issue 13's targets on real processes: how soon a master whose health
//! check fails is replaced, and how soon the next master's hook starts
//! after a planned `-handover`.
//!
//! Both cases stamp what the shell does through one FIFO that the bench
//! reads on a thread of its own: the check and the hook write a line to
//! it with the builtin `echo` (no program started for a timestamp, which
//! on this machine costs 1-3 ms, more than the targets), and the bench
//! stamps each line as it arrives, on the same clock as its watchers.
//!
//! - **Failing check → agreement**: 5 nodes, each with `--check` on a
//!   file of its own (`--check-interval 50 --check-fall 1`; the bench's
//!   `--check-interval MS` changes it), default and
//!   `--strict` with a majority quorum, a fresh cluster per run. The
//!   bench removes the master's file; its check then writes `fail` and
//!   exits 1. From that line to the moment the last of the other four
//!   nodes' watchers (`-w`) reads its line of the new master's epoch.
//! - **`-handover` → the new master's hook**: 5 nodes with
//!   `--no-preempt` and a `--notify` hook that writes `start` and `end`
//!   lines and sleeps 100 ms when it leaves the master role; `-handover`
//!   on the master, repeatedly on one cluster. From the old master's hook
//!   writing `end` to the new master's hook writing `start`: the old
//!   `sh` exiting and being reaped, the release on the wire, the claim
//!   and the new `sh` starting.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{DEADLINE, LogDir, agreed, load1, master_of, same_master, span};
use crate::util::{ms, percentile, sorted};
use crate::watch::{epoch_of, reading_watcher, start};
use crate::{Build, Builds};

/// Nodes per cluster.
const NODES: usize = 5;

/// How long the old master's hook sleeps when it leaves the master role.
const OLD_HOOK_MS: u64 = 100;

/// A FIFO whose lines a thread stamps as they arrive. The bench holds it
/// open for writing too, so it never reads an end of file between
/// writers and no writer's open blocks.
struct Fifo {
    path: PathBuf,
    lines: Receiver<(Instant, String)>,
}

impl Fifo {
    fn create(name: &str) -> Fifo {
        let path = LogDir::path().join(name);
        let _ = std::fs::remove_file(&path);
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a path");
        // SAFETY: `c` is a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo {}", path.display());
        let f: File = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open the FIFO");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(f);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                if tx
                    .send((Instant::now(), line.trim_end().to_owned()))
                    .is_err()
                {
                    return;
                }
                line.clear();
            }
        });
        Fifo { path, lines }
    }

    /// The next line for which `want` holds, and when it came; the others
    /// are dropped.
    fn next(&self, want: impl Fn(&str) -> bool) -> (Instant, String) {
        loop {
            let (at, line) = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|e| panic!("no line in {}: {e}", self.path.display()));
            if want(&line) {
                return (at, line);
            }
        }
    }

    /// Drops every line that came so far.
    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// One failing check's run (see [`CheckRun`]).
fn check_run(bin: &str, strict: bool, interval: u64, fifo: &Fifo) -> CheckRun {
    let dir = LogDir::path();
    let up = |a: SocketAddr| dir.join(format!("up-{}", a.ip()));
    let mut c = start(bin, NODES, |a| {
        File::create(up(a)).expect("create a check's file");
        let mut args = vec![
            "--check".into(),
            format!(
                "test -e {} || {{ echo fail {} > {}; exit 1; }}",
                quoted(&up(a)),
                a.ip(),
                quoted(&fifo.path)
            ),
            "--check-interval".into(),
            interval.to_string(),
            "--check-fall".into(),
            "1".into(),
        ];
        if strict {
            args.extend([
                "--strict".into(),
                "--quorum".into(),
                (NODES / 2 + 1).to_string(),
            ]);
        }
        args
    });
    c.join_all(Duration::ZERO, DEADLINE)
        .expect("the cluster forms");
    let addrs: Vec<SocketAddr> = c.nodes.iter().map(|p| p.addr).collect();
    let watchers: Vec<_> = addrs.iter().map(|&a| reading_watcher(a)).collect();
    // A steady cluster whose checks have all passed.
    thread::sleep(Duration::from_millis(300));
    let all: Vec<usize> = (0..NODES).collect();
    let before = c.statuses(&all);
    let master = master_of(&before);
    let (old_epoch, old_id) = (before[master].epoch, before[master].id.clone());
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != master).collect();
    fifo.drain();
    for w in &watchers {
        while w.try_recv().is_ok() {}
    }
    std::fs::remove_file(up(addrs[master])).expect("remove the master's check file");
    let failed = format!("fail {}", addrs[master].ip());
    let (t0, _) = fifo.next(|l| l == failed);
    let m = c
        .wait(&others, t0, Duration::ZERO, DEADLINE, |s| {
            same_master(s) && s[0].epoch > old_epoch && s[0].master.as_ref() != Some(&old_id)
        })
        .unwrap_or_else(|why| panic!("no new master after a failing check: {why}"));
    let new_epoch = c.statuses(&others)[0].epoch;
    let since = |at: Instant| signed(t0, at);
    let first = |i: usize, want: &dyn Fn(&str) -> bool| loop {
        let (at, line) = watchers[i]
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("node {i}'s watcher read no change: {e}"));
        if want(&line) {
            return (at, line);
        }
    };
    let step_down = since(first(master, &|_| true).0);
    let (mut claim, mut watched) = (f64::NAN, f64::MIN);
    for &i in &others {
        let (at, line) = first(i, &|l| epoch_of(l).is_some_and(|e| e >= new_epoch));
        if line.contains("->master") {
            claim = since(at);
        }
        watched = watched.max(since(at));
    }
    CheckRun {
        step_down,
        claim,
        watched,
        polled: m.elapsed_ms,
    }
}

/// One failing check's run, in ms from the check's failing line: the old
/// master's watcher reads its first change, the new master's its claim,
/// the last of the others' its line of the new epoch, and the poll round
/// that saw the others agree ends.
struct CheckRun {
    step_down: f64,
    claim: f64,
    watched: f64,
    polled: f64,
}

/// One of a [`CheckRun`]'s times, for its row.
type Part = fn(&CheckRun) -> f64;

/// `to - from` in ms, negative when `to` came first.
fn signed(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64() * 1e3
    } else {
        -(from.duration_since(to).as_secs_f64() * 1e3)
    }
}

/// One handover's times in ms: old hook end → new hook start, the old
/// hook's run time, and `-handover` sent → new hook start.
struct Handover {
    gap: f64,
    old_hook: f64,
    total: f64,
}

/// `runs` handovers round one cluster.
fn handovers(bin: &str, runs: usize, fifo: &Fifo) -> Vec<Handover> {
    let hook = format!(
        "echo \"start $BOSSD_ID $BOSSD_PREV_ROLE $BOSSD_ROLE\" > {f}; \
         if [ \"$BOSSD_PREV_ROLE\" = master ]; then sleep {s}; fi; \
         echo \"end $BOSSD_ID $BOSSD_PREV_ROLE $BOSSD_ROLE\" > {f}",
        f = quoted(&fifo.path),
        s = OLD_HOOK_MS as f64 / 1e3,
    );
    let mut c = start(bin, NODES, |_| {
        vec!["--no-preempt".into(), "--notify".into(), hook.clone()]
    });
    c.join_all(Duration::ZERO, DEADLINE)
        .expect("the cluster forms");
    let all: Vec<usize> = (0..NODES).collect();
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        // Every hook of the last change has run.
        thread::sleep(Duration::from_millis(300));
        fifo.drain();
        let before = c.statuses(&all);
        let master = master_of(&before);
        let (old_epoch, old_id) = (before[master].epoch, before[master].id.clone());
        let sent = Instant::now();
        c.consoles[master].send("-handover\n");
        c.consoles[master].answer();
        // The old master's hook's lines and the new master's first, in
        // whatever order they come (a start before the end would break
        // guarantee 11 and show as a negative gap).
        let (old_start, old_end) = (
            format!("start {old_id} master "),
            format!("end {old_id} master "),
        );
        let (mut a, mut b, mut n) = (None, None, None);
        while a.is_none() || b.is_none() || n.is_none() {
            let (at, line) = fifo.next(|_| true);
            if line.starts_with(&old_start) {
                a.get_or_insert(at);
            } else if line.starts_with(&old_end) {
                b.get_or_insert(at);
            } else if line.starts_with("start ") && line.ends_with(" master") {
                n.get_or_insert(at);
            }
        }
        let (a, b, n) = (
            a.expect("old start"),
            b.expect("old end"),
            n.expect("new start"),
        );
        out.push(Handover {
            gap: signed(b, n),
            old_hook: signed(a, b),
            total: signed(sent, n),
        });
        c.wait(&all, Instant::now(), Duration::ZERO, DEADLINE, |s| {
            agreed(s, NODES) && s[0].epoch > old_epoch && s[0].master.as_ref() != Some(&old_id)
        })
        .unwrap_or_else(|why| panic!("no agreement after -handover: {why}"));
    }
    out
}

/// Cells for p50, p90, p99 and max of `v`.
fn stats(v: Vec<f64>) -> Vec<String> {
    let s = sorted(v);
    vec![
        ms(percentile(&s, 50.0)),
        ms(percentile(&s, 90.0)),
        ms(percentile(&s, 99.0)),
        ms(s[s.len() - 1]),
    ]
}

/// Both cases, `runs` times each, and one table.
pub fn eligibility(builds: &Builds, runs: usize) {
    // `--check-interval MS` (50) for every node's check.
    let interval: u64 = crate::util::flag_value("--check-interval")
        .map_or(50, |v| v.parse().expect("--check-interval MS"));
    let fifo = Fifo::create("eligibility.fifo");
    let mut t = builds.table(&[
        "case",
        "from → to",
        "runs",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "target",
        "load",
    ]);
    let mut row = |b: &Build, case: &str, what: &str, v: Vec<f64>, target: &str, load: &[f64]| {
        let mut cells = vec![case.to_owned(), what.to_owned(), v.len().to_string()];
        cells.extend(stats(v));
        cells.extend([target.to_owned(), span(load)]);
        builds.row(&mut t, b, cells);
    };
    for b in builds.iter() {
        for strict in [false, true] {
            let case = if strict {
                "failing check, --strict --quorum 3"
            } else {
                "failing check"
            };
            let (mut r, mut load) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                load.push(load1());
                r.push(check_run(&b.bin, strict, interval, &fifo));
            }
            let watched: Vec<f64> = r.iter().map(|r| r.watched).collect();
            let key = if strict { "check_strict" } else { "check" };
            println!(
                "RESULT {}={:.3} {}={:.3}",
                builds.key(b, &format!("{key}_p50_ms")),
                percentile(&sorted(watched.clone()), 50.0),
                builds.key(b, &format!("{key}_p99_ms")),
                percentile(&sorted(watched.clone()), 99.0),
            );
            let parts: [(&str, Part); 3] = [
                (
                    "check exits → old master's watcher reads its step-down",
                    |r| r.step_down,
                ),
                (
                    "check exits → new master's watcher reads its claim",
                    |r| r.claim,
                ),
                ("check exits → poll round sees agreement", |r| r.polled),
            ];
            row(
                b,
                case,
                "check exits → last other watcher reads new master",
                watched,
                "p50 ≤ 2 ms",
                &load,
            );
            for (what, f) in parts {
                row(b, case, what, r.iter().map(f).collect(), "-", &load);
            }
        }
        let load = vec![load1()];
        let h = handovers(&b.bin, runs, &fifo);
        let gap: Vec<f64> = h.iter().map(|h| h.gap).collect();
        println!(
            "RESULT {}={:.3} {}={:.3}",
            builds.key(b, "handover_gap_p50_ms"),
            percentile(&sorted(gap.clone()), 50.0),
            builds.key(b, "handover_gap_p99_ms"),
            percentile(&sorted(gap.clone()), 99.0),
        );
        let case = "-handover, --no-preempt";
        row(
            b,
            case,
            "old hook ends → new master's hook starts",
            gap,
            "≤ 5 ms",
            &load,
        );
        row(
            b,
            case,
            &format!("old hook's run time (sleeps {OLD_HOOK_MS} ms)"),
            h.iter().map(|h| h.old_hook).collect(),
            "-",
            &load,
        );
        row(
            b,
            case,
            "-handover sent → new master's hook starts",
            h.iter().map(|h| h.total).collect(),
            "old hook + 5 ms",
            &load,
        );
    }
    t.print(&format!(
        "Issue 13: failing check and -handover, {NODES} nodes, 100/500, --check-interval {interval} --check-fall 1; times stamped by the bench reading what the check and hooks echo to a FIFO"
    ));
}
