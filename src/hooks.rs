//! The role-change hook (docs/GUARANTEES.md, hook): with `--notify CMD`, every change of
//! this node's role runs `sh -c CMD` with the change in its environment.
//!
//! [`Hooks`] owns the changes not yet announced and the one hook process
//! that may be running. Hooks run one at a time, in the order of the
//! changes, and each is logged with its exit status. Nothing here blocks:
//! the loop calls [`Hooks::poll`] once per iteration, which reaps the
//! running hook with `try_wait`, kills it when it is past its time limit
//! and starts the next; SIGCHLD wakes the loop when a hook ends, and
//! [`Hooks::next_deadline`] goes into the poll timeout so the limit is
//! enforced on time. This module decides nothing about the election and
//! never waits for a child.
//!
//! A hook runs in its own process group, so the time limit (and a leave)
//! kills everything the hook started, not just its shell, and a Ctrl-C
//! meant for bossd does not reach it. Its stdin is `/dev/null`; its stdout
//! and stderr go to bossd's stderr, next to the log lines, and never mix
//! with console answers on stdout. Every descriptor bossd opens itself
//! (listener, connections, the poll, the signal pipe) is close-on-exec,
//! as std and mio create them, so a hook inherits none of them.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::core::JournalEntry;
use crate::log::Level;
use crate::protocol::OptAddr;

/// A hook still running after this long is killed (docs/GUARANTEES.md, hook): long enough
/// for a script that moves an address or restarts a service, short enough
/// that a hung one does not hold back the changes queued behind it for
/// long.
pub const HOOK_TIME_LIMIT: Duration = Duration::from_secs(30);

/// Role changes waiting behind the running hook, at most. Changes come
/// from elections, a few a second at the very worst (a flapping link), so
/// 64 outlast a hook that hangs up to its 30 s limit in all but a storm.
/// When one more arrives, the two oldest waiting changes merge into one
/// (see [`Hooks::push`]): the order is kept and the latest changes are
/// announced as they are.
pub const MAX_PENDING_HOOKS: usize = 64;

/// On leave, how long a hook of an earlier change may keep the final
/// change (to `none`) waiting before it is killed so the final one can run.
pub const LEAVE_KILL_AFTER: Duration = Duration::from_millis(400);

/// On leave, how long the node waits for its hooks before it exits anyway:
/// inside the one second guarantee 6 (docs/GUARANTEES.md) allows. A hook still running
/// then is left to finish on its own.
pub const LEAVE_WAIT: Duration = Duration::from_millis(800);

/// The hook queue and the one running hook.
///
/// Without a command every call does nothing, so the loop need not care
/// whether `--notify` was given.
pub struct Hooks {
    cmd: Option<String>,
    id: SocketAddr,
    time_limit: Duration,
    /// Changes not yet announced, oldest first.
    pending: VecDeque<JournalEntry>,
    running: Option<Running>,
    /// When the node began to leave.
    leaving_since: Option<Instant>,
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

struct Running {
    child: Child,
    entry: JournalEntry,
    started: Instant,
    /// Why it was killed, once it was: it still runs until it is reaped.
    killed: Option<End>,
}

impl Hooks {
    /// Hooks running `sh -c cmd` for the node `id`; none without `cmd`.
    pub fn new(cmd: Option<String>, id: SocketAddr) -> Hooks {
        Hooks {
            cmd,
            id,
            time_limit: HOOK_TIME_LIMIT,
            pending: VecDeque::new(),
            running: None,
            leaving_since: None,
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
    /// [`Hooks::poll`] once the hooks before it have ended.
    ///
    /// When [`MAX_PENDING_HOOKS`] changes already wait, the two oldest
    /// waiting ones merge: from the first's old role to the second's new
    /// role, with the second's epoch, master and cause. Every hook's
    /// `BOSSD_PREV_ROLE` is still the role the hook before it announced,
    /// and nothing is reordered.
    pub fn push(&mut self, entry: JournalEntry) {
        if self.cmd.is_none() {
            return;
        }
        if self.pending.len() >= MAX_PENDING_HOOKS.max(2) {
            // Both exist: the queue holds at least two.
            let first = self.pending.pop_front().expect("queue is full");
            let second = self.pending.pop_front().expect("queue is full");
            let merged = merge(first, second);
            log_hook(
                Level::Warn,
                "hook-queue-full",
                &[("waiting", &MAX_PENDING_HOOKS)],
                &merged,
            );
            self.pending.push_front(merged);
        }
        self.pending.push_back(entry);
    }

    /// Reaps the running hook if it ended, kills it if it is overdue, and
    /// starts the next one if none runs. Never blocks. Logs each hook that
    /// ended or could not start, and returns the same outcomes.
    pub fn poll(&mut self, now: Instant) -> Vec<Outcome> {
        let mut ended = Vec::new();
        if self.cmd.is_none() {
            return ended;
        }
        let leave_kill_due = self.leave_kill_due(now);
        if let Some(r) = self.running.as_mut() {
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    let end = r.killed.clone().unwrap_or_else(|| end_of(status));
                    let elapsed = now.saturating_duration_since(r.started);
                    if let Some(r) = self.running.take() {
                        ended.push(Outcome {
                            entry: r.entry,
                            end,
                            elapsed,
                        });
                    }
                }
                Ok(None) if r.killed.is_none() => {
                    if now >= r.started + self.time_limit {
                        kill_group(&r.child);
                        r.killed = Some(End::TimedOut);
                    } else if leave_kill_due {
                        kill_group(&r.child);
                        r.killed = Some(End::KilledOnLeave);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // The child cannot be waited for (it never should): give
                    // up on it rather than hold every later hook back.
                    log_hook(
                        Level::Error,
                        "hook-wait-failed",
                        &[("pid", &r.child.id()), ("reason", &e)],
                        &r.entry,
                    );
                    self.running = None;
                }
            }
        }
        if self.leaving_since.is_some() && self.pending.len() > 1 {
            // Leaving, only the final change matters: one hook announces it,
            // from the role the last announced hook left the node in.
            let n = self.pending.len();
            let merged = self
                .pending
                .drain(..)
                .reduce(merge)
                .expect("more than one waits");
            log_hook(Level::Info, "hook-leave-merged", &[("count", &n)], &merged);
            self.pending.push_back(merged);
        }
        while self.running.is_none() {
            let (Some(cmd), Some(entry)) = (self.cmd.as_deref(), self.pending.pop_front()) else {
                break;
            };
            match spawn(cmd, self.id, &entry) {
                Ok(child) => {
                    log_hook(
                        Level::Debug,
                        "hook-started",
                        &[("pid", &child.id())],
                        &entry,
                    );
                    self.running = Some(Running {
                        child,
                        entry,
                        started: now,
                        killed: None,
                    });
                }
                Err(e) => ended.push(Outcome {
                    entry,
                    end: End::NotStarted(e.to_string()),
                    elapsed: Duration::ZERO,
                }),
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
        let r = self.running.as_ref().filter(|r| r.killed.is_none())?;
        let limit = r.started + self.time_limit;
        let leave = self
            .leaving_since
            .filter(|_| !self.pending.is_empty())
            .map(|t| t + LEAVE_KILL_AFTER);
        Some(leave.map_or(limit, |l| l.min(limit)))
    }

    /// The node begins to leave. What happens to the hooks then: waiting
    /// changes merge into one, so the final change (to `none`) is announced
    /// next; a hook of an earlier change that still runs after
    /// [`LEAVE_KILL_AFTER`] is killed so the final one can start; and the
    /// node waits for its hooks at most [`LEAVE_WAIT`] ([`Hooks::exit_ready`]).
    pub fn leave(&mut self, now: Instant) {
        self.leaving_since.get_or_insert(now);
    }

    /// Whether a leaving node may exit as far as hooks go: none runs or
    /// waits, or [`LEAVE_WAIT`] is over.
    pub fn exit_ready(&self, now: Instant) -> bool {
        self.is_idle() || self.leaving_since.is_some_and(|t| now >= t + LEAVE_WAIT)
    }

    /// Whether no hook runs and none waits.
    pub fn is_idle(&self) -> bool {
        self.running.is_none() && self.pending.is_empty()
    }

    /// The node exits now: a hook still running is left to finish on its
    /// own (it is not killed; it most likely announces the final change,
    /// and killing it would leave the node's resources half released),
    /// and changes never announced are logged.
    pub fn abandon(&mut self) {
        if let Some(r) = self.running.take() {
            log_hook(
                Level::Warn,
                "hook-abandoned",
                &[("pid", &r.child.id())],
                &r.entry,
            );
        }
        if !self.pending.is_empty() {
            crate::event!(Level::Warn, "hook-dropped", count = self.pending.len());
            self.pending.clear();
        }
    }

    fn leave_kill_due(&self, now: Instant) -> bool {
        !self.pending.is_empty()
            && self
                .leaving_since
                .is_some_and(|t| now >= t + LEAVE_KILL_AFTER)
    }
}

/// Starts `sh -c cmd` for one change (see the module comment for its
/// descriptors and process group).
fn spawn(cmd: &str, id: SocketAddr, e: &JournalEntry) -> std::io::Result<Child> {
    // The hook's stdout goes where the log goes: stdout carries console
    // answers. If stderr cannot be duplicated, the output is dropped.
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::null(), Stdio::from);
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("BOSSD_ROLE", e.to.to_string())
        .env("BOSSD_PREV_ROLE", e.from.to_string())
        .env("BOSSD_MASTER", OptAddr(e.master).to_string())
        .env("BOSSD_EPOCH", e.epoch.to_string())
        .env("BOSSD_ID", id.to_string())
        .env("BOSSD_CAUSE", e.cause.to_string())
        // systemd's notify socket and watchdog are bossd's, not its hooks'.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
}

/// Two consecutive changes as one: from the first's old role to the
/// second's new state.
fn merge(first: JournalEntry, second: JournalEntry) -> JournalEntry {
    JournalEntry {
        from: first.from,
        ..second
    }
}

fn end_of(status: ExitStatus) -> End {
    match (status.code(), status.signal()) {
        (Some(code), _) => End::Exited(code),
        (None, Some(sig)) => End::Signalled(sig),
        // Neither a code nor a signal does not happen on Unix.
        (None, None) => End::Exited(-1),
    }
}

/// SIGKILL to the hook's process group, which the hook leads.
fn kill_group(child: &Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects. The child is not reaped yet,
    // so its pid, and with it its process group id, cannot have been reused.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
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
    use super::*;
    use crate::core::Cause;
    use crate::protocol::Role;

    fn entry(epoch: u64, from: Role, to: Role) -> JournalEntry {
        JournalEntry {
            at_ms: epoch,
            epoch,
            from,
            to,
            master: None,
            cause: Cause::Claim,
        }
    }

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

    /// A file in a directory of its own, removed with it when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let dir = std::env::temp_dir()
                .join(format!("bossd-hooks-unit-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the temp dir");
            TempFile(dir.join(name))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
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

    #[test]
    fn a_full_queue_merges_its_two_oldest_and_keeps_the_chain() {
        // No poll: nothing starts, so every change waits.
        let mut hooks = Hooks::new(Some("true".into()), id());
        let roles = [Role::Master, Role::None, Role::Follower];
        let mut prev = Role::None;
        let total = MAX_PENDING_HOOKS + 5;
        for epoch in 1..=total as u64 {
            let to = roles[epoch as usize % 3];
            hooks.push(entry(epoch, prev, to));
            prev = to;
        }
        assert_eq!(hooks.pending.len(), MAX_PENDING_HOOKS);
        // The first waiting change absorbed the oldest six.
        let first = &hooks.pending[0];
        assert_eq!((first.from, first.epoch), (Role::None, 6));
        let mut prev = Role::None;
        let mut last_epoch = 0;
        for e in &hooks.pending {
            assert_eq!(e.from, prev, "each hook starts where the last ended");
            assert!(e.epoch > last_epoch, "order kept");
            prev = e.to;
            last_epoch = e.epoch;
        }
        assert_eq!(last_epoch, total as u64, "the latest change is kept as is");
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

    // docs/GUARANTEES.md, hook: a hook still running after the limit is killed, with
    // everything it started, and the next hook runs.
    #[test]
    fn a_hook_past_its_limit_is_killed_with_its_children() {
        let file = TempFile::new("killed");
        let cmd = format!(
            "if [ $BOSSD_EPOCH = 1 ]; then sleep 30 & echo $! > {f}; wait; fi",
            f = file.0.display()
        );
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
        let pid: i32 = std::fs::read_to_string(&file.0)
            .expect("the hook wrote its child's pid")
            .trim()
            .parse()
            .expect("a pid");
        // The sleep was killed with the group; init reaps it soon after.
        let gone = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.contains(") Z") {
                break;
            }
            assert!(Instant::now() < gone, "the hook's child {pid} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
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
        let pid = hooks.running.as_ref().expect("it runs").child.id() as i32;
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
