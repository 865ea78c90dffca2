//! The role-change hook (docs/GUARANTEES.md, hook): with `--notify CMD`, every change of
//! this node's role runs `sh -c CMD` with the change in its environment.
//!
//! [`Hooks`] is the facade the loop calls. It joins the pure [`queue`]
//! (which change is announced next, merging, the leave) with the
//! [`runner`] (the one child process, its time limit, killing and
//! reaping), gives each hook its environment (`BOSSD_ROLE`,
//! `BOSSD_PREV_ROLE`, `BOSSD_MASTER`, `BOSSD_EPOCH`, `BOSSD_ID`,
//! `BOSSD_CAUSE`) and logs every hook that ends with its exit status.
//! Hooks run one at a time, in the order of the changes. Nothing here
//! blocks: the loop calls [`Hooks::poll`] once per iteration and puts
//! [`Hooks::next_deadline`] into its poll timeout; SIGCHLD wakes it when a
//! hook ends. This module decides nothing about the election, never waits
//! for a child and never reads a clock.

pub mod queue;
pub mod runner;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::JournalEntry;
use crate::log::Level;
use crate::protocol::OptAddr;
use queue::{Next, Queue};
use runner::{Exit, Finished, Job, Runner};

pub use queue::{LEAVE_KILL_AFTER, LEAVE_WAIT, MAX_PENDING_HOOKS};

/// A hook still running after this long is killed (docs/GUARANTEES.md, hook): long enough
/// for a script that moves an address or restarts a service, short enough
/// that a hung one does not hold back the changes queued behind it for
/// long.
pub const HOOK_TIME_LIMIT: Duration = Duration::from_secs(30);

/// The hook queue and the one running hook.
///
/// Without a command every call does nothing, so the loop need not care
/// whether `--notify` was given.
pub struct Hooks {
    cmd: Option<String>,
    id: SocketAddr,
    time_limit: Duration,
    queue: Queue,
    runner: Runner,
}

/// How one hook ended, as [`Hooks::poll`] reports and logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The change the hook announced.
    pub entry: JournalEntry,
    pub end: End,
    /// From start to end, or zero when it did not start.
    pub elapsed: Duration,
}

/// The ways a hook ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// It exited by itself with this code.
    Exited(i32),
    /// A signal it was not sent by bossd ended it.
    Signalled(i32),
    /// It ran past the time limit and was killed.
    TimedOut,
    /// The node left and this hook held back the final change.
    KilledOnLeave,
    /// `sh` could not be started.
    NotStarted(String),
}

impl Hooks {
    /// Hooks running `sh -c cmd` for the node `id`; none without `cmd`.
    pub fn new(cmd: Option<String>, id: SocketAddr) -> Hooks {
        Hooks {
            cmd,
            id,
            time_limit: HOOK_TIME_LIMIT,
            queue: Queue::new(),
            runner: Runner::new(),
        }
    }

    /// The node's id once its listener is bound: with port 0 the kernel
    /// chooses the port, and BOSSD_ID carries the one it chose.
    pub fn set_id(&mut self, id: SocketAddr) {
        self.id = id;
    }

    /// Replaces [`HOOK_TIME_LIMIT`], for tests that cannot wait 30 s.
    pub fn with_time_limit(mut self, limit: Duration) -> Hooks {
        self.time_limit = limit;
        self
    }

    /// Queues the hook for one role change; it starts at the next
    /// [`Hooks::poll`] once the hooks before it have ended. When too many
    /// wait, the two oldest merge ([`Queue::push`]).
    pub fn push(&mut self, entry: JournalEntry) {
        if self.cmd.is_none() {
            return;
        }
        if let Some(merged) = self.queue.push(entry) {
            let waiting: [(&str, &dyn fmt::Display); 1] = [("waiting", &MAX_PENDING_HOOKS)];
            log_hook(Level::Warn, "hook-queue-full", &waiting, &merged);
        }
    }

    /// Reaps the running hook if it ended, kills it if it is overdue, and
    /// starts the next one if none runs. Never blocks. Logs each hook that
    /// ended or could not start, and returns the same outcomes.
    pub fn poll(&mut self, now: Instant) -> Vec<Outcome> {
        let mut ended = Vec::new();
        if self.cmd.is_none() {
            return ended;
        }
        if let Some(done) = self.runner.poll(now) {
            ended.extend(self.finish(done));
        }
        loop {
            match self.queue.next(now) {
                Next::Start(entry) => ended.extend(self.start(entry, now)),
                Next::Kill => self.runner.kill(),
                Next::Merged { count, entry } => log_hook(
                    Level::Info,
                    "hook-leave-merged",
                    &[("count", &count)],
                    &entry,
                ),
                Next::Idle(_) => break,
            }
        }
        for outcome in &ended {
            log_outcome(outcome, self.time_limit);
        }
        ended
    }

    /// When [`Hooks::poll`] must run next to kill a hook on time; a hook
    /// that ends by itself wakes the loop through SIGCHLD instead.
    pub fn next_deadline(&self) -> Option<Instant> {
        let limit = self.runner.deadline()?;
        Some(self.queue.deadline().map_or(limit, |l| l.min(limit)))
    }

    /// The node begins to leave: the final change is announced next, an
    /// earlier hook that holds it back is killed, and the node waits for
    /// its hooks at most [`LEAVE_WAIT`] ([`Queue::leave`]).
    pub fn leave(&mut self, now: Instant) {
        self.queue.leave(now);
    }

    /// Whether a leaving node may exit as far as hooks go: none runs or
    /// waits, or [`LEAVE_WAIT`] is over.
    pub fn exit_ready(&self, now: Instant) -> bool {
        self.queue.exit_ready(now)
    }

    /// Whether no hook runs and none waits.
    pub fn is_idle(&self) -> bool {
        self.queue.is_idle()
    }

    /// The node exits now: a hook still running is left to finish on its
    /// own (it is not killed; it most likely announces the final change,
    /// and killing it would leave the node's resources half released),
    /// and changes never announced are logged.
    pub fn abandon(&mut self) {
        let pid = self.runner.abandon();
        let (running, dropped) = self.queue.abandon();
        if let (Some(pid), Some(entry)) = (pid, running) {
            log_hook(Level::Warn, "hook-abandoned", &[("pid", &pid)], &entry);
        }
        if dropped > 0 {
            crate::event!(Level::Warn, "hook-dropped", count = dropped);
        }
    }

    /// Starts the hook for `entry`; its outcome if it could not start.
    fn start(&mut self, entry: JournalEntry, now: Instant) -> Option<Outcome> {
        let cmd = self.cmd.as_deref().unwrap_or_default();
        let job = job_for(cmd, self.id, &entry, self.time_limit);
        match self.runner.start(&job, now) {
            Ok(pid) => {
                log_hook(Level::Debug, "hook-started", &[("pid", &pid)], &entry);
                None
            }
            Err(failed) => self.finish(failed),
        }
    }

    /// The running hook ended: its outcome, unless it was lost.
    fn finish(&mut self, done: Finished) -> Option<Outcome> {
        let entry = self.queue.ended()?;
        let end = match done.exit {
            Exit::Exited(code) => End::Exited(code),
            Exit::Signalled(sig) => End::Signalled(sig),
            Exit::TimedOut => End::TimedOut,
            Exit::Killed => End::KilledOnLeave,
            Exit::NotStarted(why) => End::NotStarted(why),
            Exit::Lost(why) => {
                // Only a started child can be lost, and it has a pid.
                let pid = done.pid.unwrap_or_default();
                let fields: [(&str, &dyn fmt::Display); 2] = [("pid", &pid), ("reason", &why)];
                log_hook(Level::Error, "hook-wait-failed", &fields, &entry);
                return None;
            }
        };
        Some(Outcome {
            entry,
            end,
            elapsed: done.elapsed,
        })
    }
}

/// The job announcing `e` to `sh -c cmd` on the node `id`.
fn job_for(cmd: &str, id: SocketAddr, e: &JournalEntry, time_limit: Duration) -> Job {
    let env = [
        ("BOSSD_ROLE", e.to.to_string()),
        ("BOSSD_PREV_ROLE", e.from.to_string()),
        ("BOSSD_MASTER", OptAddr(e.master).to_string()),
        ("BOSSD_EPOCH", e.epoch.to_string()),
        ("BOSSD_ID", id.to_string()),
        ("BOSSD_CAUSE", e.cause.to_string()),
    ];
    Job {
        cmd: cmd.to_owned(),
        env: env.map(|(k, v)| (k.to_owned(), v)).to_vec(),
        time_limit,
    }
}

fn log_outcome(o: &Outcome, limit: Duration) {
    let (entry, ms) = (&o.entry, o.elapsed.as_millis());
    match &o.end {
        End::Exited(0) => log_hook(
            Level::Info,
            "hook-exited",
            &[("status", &0), ("elapsed_ms", &ms)],
            entry,
        ),
        End::Exited(code) => log_hook(
            Level::Warn,
            "hook-failed",
            &[("status", code), ("elapsed_ms", &ms)],
            entry,
        ),
        End::Signalled(sig) => log_hook(
            Level::Warn,
            "hook-failed",
            &[("signal", sig), ("elapsed_ms", &ms)],
            entry,
        ),
        End::TimedOut => log_hook(
            Level::Warn,
            "hook-killed",
            &[("after_ms", &limit.as_millis()), ("reason", &"time-limit")],
            entry,
        ),
        End::KilledOnLeave => log_hook(
            Level::Warn,
            "hook-killed",
            &[("after_ms", &ms), ("reason", &"leaving")],
            entry,
        ),
        End::NotStarted(e) => log_hook(Level::Error, "hook-not-started", &[("reason", e)], entry),
    }
}

/// Logs the hook event `event` with `fields`, followed by the change the
/// hook announces in the fields of `role-change`: `from= to= epoch=
/// master= cause=`.
fn log_hook(
    level: Level,
    event: &str,
    fields: &[(&str, &dyn fmt::Display)],
    change: &JournalEntry,
) {
    if !crate::log::enabled(level) {
        return;
    }
    let master = OptAddr(change.master);
    let mut all = fields.to_vec();
    all.extend_from_slice(&[
        ("from", &change.from as &dyn fmt::Display),
        ("to", &change.to),
        ("epoch", &change.epoch),
        ("master", &master),
        ("cause", &change.cause),
    ]);
    crate::log::write(level, &crate::log::format_event(event, &all));
}

#[cfg(test)]
mod tests {
    use super::queue::tests::entry;
    use super::runner::tests::TempFile;
    use super::*;
    use crate::protocol::Role;

    fn id() -> SocketAddr {
        "127.0.0.1:7000".parse().expect("an address")
    }

    /// Polls until no hook runs or waits, as the loop would; the outcomes.
    fn run_until_idle(hooks: &mut Hooks) -> Vec<Outcome> {
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        loop {
            out.extend(hooks.poll(Instant::now()));
            if hooks.is_idle() {
                return out;
            }
            assert!(Instant::now() < give_up, "hooks did not finish: {out:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn without_a_command_nothing_queues() {
        let mut hooks = Hooks::new(None, id());
        hooks.push(entry(1, Role::None, Role::Master));
        assert!(hooks.is_idle());
        assert!(hooks.poll(Instant::now()).is_empty());
        assert_eq!(hooks.next_deadline(), None);
    }

    // docs/GUARANTEES.md, hook: one at a time, in the order of the changes, with the
    // change in the environment, logged with the exit status.
    #[test]
    fn hooks_run_one_at_a_time_in_order() {
        let file = TempFile::new("order");
        let cmd = format!(
            "echo \"start $BOSSD_EPOCH $BOSSD_PREV_ROLE $BOSSD_ROLE $BOSSD_MASTER $BOSSD_ID $BOSSD_CAUSE\" >> {f}; \
             sleep 0.1; echo \"end $BOSSD_EPOCH\" >> {f}; exit $((BOSSD_EPOCH % 2 * 3))",
            f = file.0.display()
        );
        let mut hooks = Hooks::new(Some(cmd), id());
        hooks.push(entry(1, Role::None, Role::Master));
        hooks.push(entry(2, Role::Master, Role::None));
        hooks.push(entry(3, Role::None, Role::Follower));
        let ends: Vec<End> = run_until_idle(&mut hooks)
            .into_iter()
            .map(|o| o.end)
            .collect();
        assert_eq!(ends, [End::Exited(3), End::Exited(0), End::Exited(3)]);
        let text = std::fs::read_to_string(&file.0).expect("the hooks wrote");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "start 1 none master - 127.0.0.1:7000 claim",
                "end 1",
                "start 2 master none - 127.0.0.1:7000 claim",
                "end 2",
                "start 3 none follower - 127.0.0.1:7000 claim",
                "end 3",
            ]
        );
    }

    // docs/GUARANTEES.md, hook: a hook still running after the limit is
    // killed and the next hook runs. That the kill reaches the hook's own
    // children is hooks/runner.rs's test.
    #[test]
    fn a_hook_past_its_limit_is_killed_and_the_next_runs() {
        let cmd = "if [ $BOSSD_EPOCH = 1 ]; then sleep 30; fi".to_owned();
        let mut hooks = Hooks::new(Some(cmd), id()).with_time_limit(Duration::from_millis(200));
        hooks.push(entry(1, Role::None, Role::Master));
        hooks.push(entry(2, Role::Master, Role::None));
        hooks.poll(Instant::now());
        let deadline = hooks.next_deadline().expect("a hook runs");
        assert!(deadline <= Instant::now() + Duration::from_millis(200));
        let outcomes = run_until_idle(&mut hooks);
        let ends: Vec<(u64, End)> = outcomes
            .into_iter()
            .map(|o| (o.entry.epoch, o.end))
            .collect();
        assert_eq!(ends, [(1, End::TimedOut), (2, End::Exited(0))]);
    }

    // On leave the waiting changes merge into the final one, and an
    // earlier hook that holds it back is killed.
    #[test]
    fn leaving_runs_the_final_change_next() {
        let file = TempFile::new("leave");
        let cmd = format!(
            "echo \"$BOSSD_PREV_ROLE $BOSSD_ROLE\" >> {f}; [ $BOSSD_ROLE = none ] || sleep 30",
            f = file.0.display()
        );
        let mut hooks = Hooks::new(Some(cmd), id());
        hooks.push(entry(1, Role::None, Role::Follower));
        hooks.poll(Instant::now());
        hooks.push(entry(2, Role::Follower, Role::Master));
        hooks.push(entry(3, Role::Master, Role::None));
        let left = Instant::now();
        hooks.leave(left);
        assert!(!hooks.exit_ready(left));
        assert_eq!(hooks.next_deadline(), Some(left + LEAVE_KILL_AFTER));
        let ends: Vec<(Role, Role, End)> = run_until_idle(&mut hooks)
            .into_iter()
            .map(|o| (o.entry.from, o.entry.to, o.end))
            .collect();
        assert_eq!(
            ends,
            [
                (Role::None, Role::Follower, End::KilledOnLeave),
                (Role::Follower, Role::None, End::Exited(0)),
            ]
        );
        assert!(hooks.exit_ready(Instant::now()));
        let text = std::fs::read_to_string(&file.0).expect("the hooks wrote");
        assert_eq!(text, "none follower\nfollower none\n");
    }

    #[test]
    fn a_slow_final_hook_is_left_running_at_exit() {
        let mut hooks = Hooks::new(Some("sleep 5".into()), id());
        hooks.push(entry(1, Role::Follower, Role::None));
        let left = Instant::now();
        hooks.leave(left);
        hooks.poll(left);
        assert!(!hooks.exit_ready(left));
        assert_eq!(hooks.next_deadline(), Some(left + HOOK_TIME_LIMIT));
        assert!(hooks.exit_ready(left + LEAVE_WAIT));
        let pid = hooks.runner.pid().expect("it runs") as i32;
        hooks.abandon();
        assert!(hooks.is_idle());
        // Not killed by bossd; the test cleans up after itself.
        // SAFETY: kill(2) on the group of a child this test started.
        unsafe {
            assert_eq!(libc::kill(-pid, 0), 0, "the hook still runs");
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}
