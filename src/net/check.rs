//! The health check (`--check CMD`): runs `sh -c CMD` at start and then
//! every `--check-interval`, and turns how each run ended into the node's
//! health.
//!
//! [`Check`] owns a [`Runner`] of its own (the hooks have theirs), so a
//! check never waits for a hook nor a hook for a check. One check runs at
//! a time: the next starts one interval after the previous one started,
//! or as soon as it ends if it is still running then. A check past
//! `--check-timeout` is killed with its process group and counts as a
//! failure. Its output is captured ([`Output::Capture`]), never copied to
//! the log as it comes: it runs every interval, and the same lines each
//! second would bury the log. The debounced verdict comes from
//! [`Verdict`] (`src/core/check.rs`); only a change of it is logged
//! (`check-failed`, with the last [`MAX_CAPTURED`](crate::hooks::runner::MAX_CAPTURED) bytes the failing run
//! wrote, and `check-passed`), plus a first run that fails, which explains
//! why a node never became eligible.
//!
//! Like the hooks, it never blocks and never reads a clock: the loop
//! calls [`Check::poll`] once per iteration (SIGCHLD wakes it when the
//! check ends) and puts [`Check::next_deadline`] into its poll timeout. It
//! decides nothing about the election: the loop hands verdict changes to
//! `Node::handle_check`.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::Node;
use crate::core::check::{RunResult, Verdict};
use crate::hooks::runner::{Exit, Finished, Job, Output, Runner};
use crate::log::Level;
use crate::protocol::OptAddr;

/// How long a leaving node waits for a killed check to be reaped before it
/// exits regardless; SIGKILL ends a process at once unless the kernel
/// holds it in an uninterruptible wait.
pub const CHECK_REAP_WAIT: Duration = Duration::from_millis(200);

/// What `--check` and its options ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub cmd: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}

/// One check that ended, as [`Check::poll`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub result: RunResult,
    pub elapsed: Duration,
    /// The new verdict, when this run changed it: `false` failing, `true`
    /// healthy.
    pub change: Option<bool>,
}

/// The health check and its one running process.
pub struct Check {
    spec: CheckSpec,
    id: SocketAddr,
    verdict: Verdict,
    runner: Runner,
    /// When the next check starts (or started, while it runs).
    next_start: Instant,
    /// Whether any run has ended yet: the first failure is logged.
    ran_once: bool,
    /// Set once the node leaves: nothing starts any more.
    left_at: Option<Instant>,
    /// A run started whose output pipe the loop has not taken yet
    /// ([`Check::take_started`]).
    started: bool,
}

impl Check {
    /// A check for the node `id` (its bound address, BOSSD_ID), its first
    /// run due at `now`.
    pub fn new(spec: CheckSpec, id: SocketAddr, now: Instant) -> Check {
        Check {
            verdict: Verdict::new(spec.fall, spec.rise),
            spec,
            id,
            runner: Runner::with_output(Output::Capture),
            next_start: now,
            ran_once: false,
            left_at: None,
            started: false,
        }
    }

    /// Whether the check passes, debounced.
    pub fn passing(&self) -> bool {
        self.verdict.passing()
    }

    /// Reaps the running check if it ended (or kills it past its time
    /// limit), and starts the next one when it is due, with `node`'s role,
    /// master and epoch in its environment. Never blocks.
    /// Logs a run that changed the verdict and returns the runs that
    /// ended (two at most: one reaped, and one that could not start).
    pub fn poll(&mut self, now: Instant, node: &Node) -> Vec<Ran> {
        let mut ran = Vec::new();
        ran.extend(self.runner.poll(now).and_then(|done| self.finish(done)));
        let due = self.left_at.is_none() && !self.runner.is_running() && now >= self.next_start;
        if due && let Err(failed) = self.start(now, node) {
            ran.extend(self.finish(failed));
        }
        ran
    }

    /// When [`Check::poll`] must run next: the running check's time limit,
    /// or the next start. A check that ends by itself wakes the loop
    /// through SIGCHLD.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.runner.is_running() {
            return self.runner.deadline();
        }
        self.left_at.is_none().then_some(self.next_start)
    }

    /// Whether a run started since the last call: its output pipe is new,
    /// for the loop to watch.
    pub fn take_started(&mut self) -> bool {
        std::mem::take(&mut self.started)
    }

    /// The running check's output pipe, for the loop to watch; readable
    /// means [`Check::read_output`].
    pub fn output_source(&mut self) -> Option<&mut mio::unix::pipe::Receiver> {
        self.runner.output_source()
    }

    /// Drains what the running check wrote (bounded), never blocking.
    pub fn read_output(&mut self) {
        self.runner.read_output();
    }

    /// Whether the last read left output in the pipe: the loop must come
    /// round again at once, as the check may be blocked on a full pipe.
    pub fn output_unread(&self) -> bool {
        self.runner.output_unread()
    }

    /// The node leaves: a running check is killed (and reaped by the next
    /// polls), and none starts any more.
    pub fn leave(&mut self, now: Instant) {
        self.left_at.get_or_insert(now);
        self.runner.kill();
    }

    /// Whether a leaving node may exit as far as the check goes: none runs,
    /// or the killed one was not reaped within [`CHECK_REAP_WAIT`].
    pub fn exit_ready(&self, now: Instant) -> bool {
        !self.runner.is_running()
            || self
                .left_at
                .is_some_and(|t| now.saturating_duration_since(t) >= CHECK_REAP_WAIT)
    }

    /// The node exits now: a check still not reaped is forgotten (it was
    /// killed; init reaps it).
    pub fn abandon(&mut self) {
        if let Some(pid) = self.runner.abandon() {
            crate::event!(Level::Warn, "check-abandoned", pid = pid);
        }
    }

    /// Starts a check; how it ended if `sh` could not start.
    fn start(&mut self, now: Instant, node: &Node) -> Result<u32, Finished> {
        // Between starts: a check that outlasts the interval delays the
        // next one rather than overlapping it.
        self.next_start = now + self.spec.interval;
        let env = [
            ("BOSSD_ROLE", node.role().to_string()),
            ("BOSSD_MASTER", OptAddr(node.master()).to_string()),
            ("BOSSD_EPOCH", node.epoch().to_string()),
            ("BOSSD_ID", self.id.to_string()),
        ];
        let job = Job {
            cmd: self.spec.cmd.clone(),
            env: env.map(|(k, v)| (k.to_owned(), v)).to_vec(),
            time_limit: self.spec.timeout,
        };
        let started = self.runner.start(&job, now);
        self.started = started.is_ok();
        started
    }

    /// The verdict after one run; logs it if it changed.
    fn finish(&mut self, done: Finished) -> Option<Ran> {
        let result = match &done.exit {
            Exit::Exited(0) => RunResult::Pass,
            Exit::TimedOut => RunResult::Timeout,
            Exit::Exited(_) | Exit::Signalled(_) | Exit::NotStarted(_) => RunResult::Fail,
            // Killed on leave: the node is going, nothing to judge.
            Exit::Killed => return None,
            Exit::Lost(why) => {
                crate::event!(Level::Error, "check-wait-failed", reason = why);
                RunResult::Fail
            }
        };
        let first = !self.ran_once;
        self.ran_once = true;
        let change = self.verdict.record(result == RunResult::Pass);
        if change == Some(false) || (first && result != RunResult::Pass) {
            self.log_failed(&done);
        } else if change == Some(true) {
            crate::event!(
                Level::Info,
                "check-passed",
                elapsed_ms = done.elapsed.as_millis(),
                rise = if first { 1 } else { self.spec.rise },
            );
        }
        Some(Ran {
            result,
            elapsed: done.elapsed,
            change,
        })
    }

    /// `check-failed` with how the run ended, the fall, and (when it wrote
    /// any) the last [`MAX_CAPTURED`](crate::hooks::runner::MAX_CAPTURED) bytes of its output.
    fn log_failed(&self, done: &Finished) {
        if !crate::log::enabled(Level::Warn) {
            return;
        }
        let (ms, fall) = (done.elapsed.as_millis(), self.spec.fall);
        let timeout_ms = self.spec.timeout.as_millis();
        let mut fields: Vec<(&str, &dyn fmt::Display)> = match &done.exit {
            Exit::Exited(code) => vec![("status", code), ("elapsed_ms", &ms)],
            Exit::Signalled(sig) => vec![("signal", sig), ("elapsed_ms", &ms)],
            Exit::TimedOut => vec![("reason", &"timeout"), ("timeout_ms", &timeout_ms)],
            Exit::NotStarted(why) | Exit::Lost(why) => vec![("reason", why)],
            Exit::Killed => return,
        };
        fields.push(("fall", &fall));
        if !done.output.is_empty() {
            fields.push(("output", &done.output));
        }
        crate::log::write(
            Level::Warn,
            &crate::log::format_event("check-failed", &fields),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::runner::tests::TempFile;

    fn spec(cmd: &str, interval_ms: u64, timeout_ms: u64) -> CheckSpec {
        CheckSpec {
            cmd: cmd.into(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            fall: 1,
            rise: 1,
        }
    }

    fn node() -> Node {
        crate::core::test_node(1)
    }

    /// Polls as the loop would until `runs` checks ended; what they were.
    fn run(check: &mut Check, runs: usize) -> Vec<Ran> {
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < runs {
            out.extend(check.poll(Instant::now(), &node()));
            assert!(Instant::now() < give_up, "only {out:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
        out
    }

    #[test]
    fn the_first_run_starts_at_once_and_the_next_an_interval_later() {
        let t0 = Instant::now();
        let id = "127.0.0.1:7000".parse().expect("an address");
        let mut check = Check::new(spec("true", 60_000, 1_000), id, t0);
        assert_eq!(check.next_deadline(), Some(t0));
        assert!(check.poll(t0, &node()).is_empty());
        assert!(check.take_started() && !check.take_started());
        let ran = run(&mut check, 1);
        assert_eq!(ran[0].result, RunResult::Pass);
        assert_eq!(ran[0].change, Some(true));
        assert!(check.passing());
        // Not due again for a minute.
        assert_eq!(check.next_deadline(), Some(t0 + Duration::from_secs(60)));
        assert!(check.poll(Instant::now(), &node()).is_empty());
        assert!(!check.take_started());
    }

    #[test]
    fn results_change_the_verdict_once() {
        let file = TempFile::new("verdict");
        let cmd = format!("test -e '{}'", file.0.display());
        let id = "127.0.0.1:7000".parse().expect("an address");
        let mut check = Check::new(spec(&cmd, 10, 1_000), id, Instant::now());
        let ran = run(&mut check, 3);
        assert!(
            ran.iter()
                .all(|r| r.result == RunResult::Fail && r.change.is_none())
        );
        std::fs::write(&file.0, "").expect("create the file");
        let ran = run(&mut check, 3);
        let changes: Vec<_> = ran.iter().filter_map(|r| r.change).collect();
        assert_eq!(changes, [true]);
    }

    #[test]
    fn a_check_past_its_timeout_counts_as_a_timeout() {
        let id = "127.0.0.1:7000".parse().expect("an address");
        let mut check = Check::new(spec("sleep 30", 10, 50), id, Instant::now());
        let ran = run(&mut check, 1);
        assert_eq!(ran[0].result, RunResult::Timeout);
        assert!(!check.passing());
    }

    #[test]
    fn a_leave_kills_the_running_check_and_starts_no_other() {
        let id = "127.0.0.1:7000".parse().expect("an address");
        let t0 = Instant::now();
        let mut check = Check::new(spec("sleep 30", 10, 60_000), id, t0);
        assert!(check.poll(t0, &node()).is_empty());
        assert!(check.take_started());
        check.leave(t0);
        assert!(!check.exit_ready(t0));
        let give_up = Instant::now() + Duration::from_secs(20);
        while !check.exit_ready(t0) {
            // Killed on leave: not a result.
            assert!(check.poll(Instant::now(), &node()).is_empty());
            assert!(Instant::now() < give_up, "the killed check was not reaped");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(check.next_deadline(), None);
        assert!(check.poll(Instant::now(), &node()).is_empty());
        assert!(!check.take_started());
    }
}
