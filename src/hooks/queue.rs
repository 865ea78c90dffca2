//! The role changes waiting for their hook, and what to do next: the pure
//! part of the hooks.
//!
//! A [`Queue`] owns the changes not yet announced, oldest first, which
//! change the running hook announces, and whether the node is leaving.
//! [`Queue::next`] answers, for a given `now`, one of: start the hook for
//! this change, kill the running one, or nothing until a given time (and
//! it tells when it merged what waits, for the caller to log). It keeps
//! the order of the changes, merges waiting changes when too many wait or
//! the node leaves, and decides the leave's kill and wait.
//!
//! It never runs a process, never reads a clock and never logs: the caller
//! does what it answers (`hooks/mod.rs` with `hooks/runner.rs`) and tells
//! it when a hook ended. The hook's own time limit is the runner's, not
//! decided here.
//!
//! Invariants: at most one hook runs; hooks start in the order of the
//! changes; each waiting change's `from` is the role the change before it
//! announced (merging keeps that chain); at most [`MAX_PENDING_HOOKS`]
//! wait; while leaving, once [`Queue::next`] answered, at most one waits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::core::JournalEntry;

/// Role changes waiting behind the running hook, at most. Changes come
/// from elections, a few a second at the very worst (a flapping link), so
/// 64 outlast a hook that hangs up to its 30 s limit in all but a storm.
/// When one more arrives, the two oldest waiting changes merge into one
/// (see [`Queue::push`]): the order is kept and the latest changes are
/// announced as they are.
pub const MAX_PENDING_HOOKS: usize = 64;

/// On leave, how long a hook of an earlier change may keep the final
/// change (to `none`) waiting before it is killed so the final one can run.
pub const LEAVE_KILL_AFTER: Duration = Duration::from_millis(400);

/// On leave, how long the node waits for its hooks before it exits anyway:
/// inside the one second guarantee 6 (docs/GUARANTEES.md) allows. A hook
/// still running then is left to finish on its own.
pub const LEAVE_WAIT: Duration = Duration::from_millis(800);

/// What the caller does next, as [`Queue::next`] decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Start the hook for this change (the queue now counts it running).
    Start(JournalEntry),
    /// Kill the running hook: it holds back the final change of a node
    /// that leaves. Then tell [`Queue::ended`] once it is reaped.
    Kill,
    /// The node leaves: the `count` waiting changes became this one, so
    /// the final change is announced next. Only to be logged.
    Merged { count: usize, entry: JournalEntry },
    /// Nothing to do until this time (if any) or until a hook ends.
    Idle(Option<Instant>),
}

/// The waiting changes and the running hook's change.
#[derive(Debug, Default)]
pub struct Queue {
    /// Changes not yet announced, oldest first.
    pending: VecDeque<JournalEntry>,
    running: Option<Current>,
    /// When the node began to leave.
    leaving_since: Option<Instant>,
}

#[derive(Debug)]
struct Current {
    entry: JournalEntry,
    /// [`Next::Kill`] was answered for it.
    killed: bool,
}

impl Queue {
    /// An empty queue of a node that does not leave.
    pub fn new() -> Queue {
        Queue::default()
    }

    /// Queues the hook for one role change, behind every earlier one.
    ///
    /// When [`MAX_PENDING_HOOKS`] changes already wait, the two oldest
    /// waiting ones merge: from the first's old role to the second's new
    /// role, with the second's epoch, master and cause; that merged change
    /// is returned, for the caller to log. Each hook's `BOSSD_PREV_ROLE` is
    /// still the role the hook before it announced, and nothing is
    /// reordered.
    pub fn push(&mut self, entry: JournalEntry) -> Option<JournalEntry> {
        let full = self.pending.len() >= MAX_PENDING_HOOKS.max(2);
        let merged = full.then(|| self.merge_two_oldest());
        self.pending.push_back(entry);
        merged
    }

    /// The node begins to leave at `now` (later calls keep the first
    /// time). From then on [`Queue::next`] merges the waiting changes into
    /// one, so the final change (to `none`) is announced next; a hook of an
    /// earlier change that still runs after [`LEAVE_KILL_AFTER`] is killed
    /// so the final one can start; and the node waits for its hooks at
    /// most [`LEAVE_WAIT`] ([`Queue::exit_ready`]).
    pub fn leave(&mut self, now: Instant) {
        self.leaving_since.get_or_insert(now);
    }

    /// What to do at `now`. Call it until it answers [`Next::Idle`].
    pub fn next(&mut self, now: Instant) -> Next {
        let kill_due = self.leave_kill_due(now);
        match self.running.as_mut() {
            Some(current) if kill_due && !current.killed => {
                current.killed = true;
                return Next::Kill;
            }
            _ => {}
        }
        if let Some(merged) = self.merge_if_leaving() {
            return merged;
        }
        match self.running {
            Some(_) => Next::Idle(self.deadline()),
            None => self.start_next(),
        }
    }

    /// The running hook ended (or did not start): the change it announced.
    pub fn ended(&mut self) -> Option<JournalEntry> {
        self.running.take().map(|c| c.entry)
    }

    /// When [`Queue::next`] will answer [`Next::Kill`], if nothing else
    /// happens first.
    pub fn deadline(&self) -> Option<Instant> {
        let running = self.running.as_ref().is_some_and(|c| !c.killed);
        let waiting = !self.pending.is_empty();
        let since = self.leaving_since.filter(|_| running && waiting)?;
        Some(since + LEAVE_KILL_AFTER)
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

    /// The node exits now: forgets everything. The running hook's change
    /// and how many changes were never announced.
    pub fn abandon(&mut self) -> (Option<JournalEntry>, usize) {
        let dropped = self.pending.len();
        self.pending.clear();
        (self.ended(), dropped)
    }

    /// The changes waiting, oldest first.
    pub fn pending(&self) -> impl ExactSizeIterator<Item = &JournalEntry> {
        self.pending.iter()
    }

    fn start_next(&mut self) -> Next {
        let Some(entry) = self.pending.pop_front() else {
            return Next::Idle(None);
        };
        self.running = Some(Current {
            entry: entry.clone(),
            killed: false,
        });
        Next::Start(entry)
    }

    fn leave_kill_due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|t| now >= t)
    }

    /// Merges the two oldest waiting changes; the queue holds at least two.
    fn merge_two_oldest(&mut self) -> JournalEntry {
        let first = self.pending.pop_front().expect("the queue is full");
        let second = self.pending.pop_front().expect("the queue is full");
        let merged = merge(first, second);
        self.pending.push_front(merged.clone());
        merged
    }

    /// While leaving, only the final change matters: one hook announces
    /// it, from the role the last announced hook left the node in.
    fn merge_if_leaving(&mut self) -> Option<Next> {
        let count = self.pending.len();
        if self.leaving_since.is_none() || count < 2 {
            return None;
        }
        let merged = self.pending.drain(..).reduce(merge)?;
        self.pending.push_back(merged.clone());
        Some(Next::Merged {
            count,
            entry: merged,
        })
    }
}

/// Two consecutive changes as one: from the first's old role to the
/// second's new state.
fn merge(first: JournalEntry, second: JournalEntry) -> JournalEntry {
    JournalEntry {
        from: first.from,
        ..second
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::Cause;
    use crate::protocol::Role;

    /// A change with `epoch` as its number and its time.
    pub(crate) fn entry(epoch: u64, from: Role, to: Role) -> JournalEntry {
        JournalEntry {
            at: crate::time::Mono(epoch),
            epoch,
            from,
            to,
            master: None,
            cause: Cause::Claim,
        }
    }

    fn epochs(q: &Queue) -> Vec<u64> {
        q.pending().map(|e| e.epoch).collect()
    }

    fn started(next: Next) -> u64 {
        match next {
            Next::Start(e) => e.epoch,
            other => panic!("expected a start, got {other:?}"),
        }
    }

    #[test]
    fn hooks_start_one_at_a_time_in_order() {
        let t = Instant::now();
        let mut q = Queue::new();
        assert_eq!(q.next(t), Next::Idle(None));
        for epoch in 1..=3 {
            assert_eq!(q.push(entry(epoch, Role::None, Role::Master)), None);
        }
        assert_eq!(started(q.next(t)), 1);
        assert_eq!(q.next(t), Next::Idle(None), "one runs: the rest wait");
        assert_eq!(epochs(&q), [2, 3]);
        assert_eq!(q.ended().map(|e| e.epoch), Some(1));
        assert_eq!(started(q.next(t)), 2);
        q.ended();
        assert_eq!(started(q.next(t)), 3);
        assert!(!q.is_idle());
        q.ended();
        assert!(q.is_idle());
        assert_eq!(q.ended(), None);
    }

    #[test]
    fn a_full_queue_merges_its_two_oldest_and_keeps_the_chain() {
        let mut q = Queue::new();
        let roles = [Role::Master, Role::None, Role::Follower];
        let mut prev = Role::None;
        let total = MAX_PENDING_HOOKS + 5;
        let mut merges = 0;
        for epoch in 1..=total as u64 {
            let to = roles[epoch as usize % 3];
            if q.push(entry(epoch, prev, to)).is_some() {
                merges += 1;
            }
            prev = to;
        }
        assert_eq!((q.pending().len(), merges), (MAX_PENDING_HOOKS, 5));
        // The first waiting change absorbed the oldest six.
        let first = q.pending().next().expect("changes wait");
        assert_eq!((first.from, first.epoch), (Role::None, 6));
        let mut prev = Role::None;
        let mut last_epoch = 0;
        for e in q.pending() {
            assert_eq!(e.from, prev, "each hook starts where the last ended");
            assert!(e.epoch > last_epoch, "order kept");
            prev = e.to;
            last_epoch = e.epoch;
        }
        assert_eq!(last_epoch, total as u64, "the latest change is kept as is");
    }

    // The merge happens at the first `next` after the leave, and again for
    // changes that arrive after it.
    #[test]
    fn leaving_merges_what_waits_and_what_comes_after() {
        let t = Instant::now();
        let mut q = Queue::new();
        q.push(entry(1, Role::None, Role::Follower));
        assert_eq!(started(q.next(t)), 1);
        q.push(entry(2, Role::Follower, Role::Master));
        q.push(entry(3, Role::Master, Role::Follower));
        q.leave(t);
        q.push(entry(4, Role::Follower, Role::None));
        let merged = entry(4, Role::Follower, Role::None);
        let expected = Next::Merged {
            count: 3,
            entry: merged.clone(),
        };
        assert_eq!(q.next(t), expected);
        assert_eq!(q.next(t), Next::Idle(Some(t + LEAVE_KILL_AFTER)));
        q.leave(t + LEAVE_WAIT);
        assert!(q.exit_ready(t + LEAVE_WAIT), "the first leave counts");
        q.push(entry(5, Role::None, Role::Master));
        let expected = Next::Merged {
            count: 2,
            entry: entry(5, Role::Follower, Role::Master),
        };
        assert_eq!(q.next(t), expected);
        q.ended();
        assert_eq!(started(q.next(t)), 5);
        assert_eq!((q.is_idle(), q.pending().len()), (false, 0));
    }

    #[test]
    fn a_node_that_stays_never_merges_for_a_leave() {
        let t = Instant::now();
        let mut q = Queue::new();
        q.push(entry(1, Role::None, Role::Follower));
        q.push(entry(2, Role::Follower, Role::Master));
        assert_eq!(started(q.next(t)), 1);
        assert_eq!(q.next(t), Next::Idle(None));
        assert_eq!(q.pending().len(), 1);
    }

    // The final change (to `none`) waits behind an earlier hook: that hook
    // is killed once LEAVE_KILL_AFTER is over, and only once.
    #[test]
    fn leaving_kills_an_earlier_hook_that_holds_back_the_final_one() {
        let t = Instant::now();
        let mut q = Queue::new();
        q.push(entry(1, Role::None, Role::Follower));
        assert_eq!(started(q.next(t)), 1);
        q.push(entry(2, Role::Follower, Role::None));
        assert_eq!(q.deadline(), None, "not leaving: the hook may run on");
        q.leave(t);
        let kill_at = t + LEAVE_KILL_AFTER;
        assert_eq!(q.next(t), Next::Idle(Some(kill_at)));
        assert_eq!(
            q.next(kill_at - Duration::from_millis(1)),
            Next::Idle(Some(kill_at))
        );
        assert_eq!(q.next(kill_at), Next::Kill);
        assert_eq!(q.next(kill_at), Next::Idle(None), "killed once");
        assert!(!q.exit_ready(kill_at));
        q.ended();
        let last = q.next(kill_at);
        assert_eq!(last, Next::Start(entry(2, Role::Follower, Role::None)));
        q.ended();
        assert!(q.exit_ready(kill_at));
    }

    // A hook of the final change is never killed for the leave: the node
    // exits without it after LEAVE_WAIT.
    #[test]
    fn a_slow_final_hook_is_waited_for_at_most_leave_wait() {
        let t = Instant::now();
        let mut q = Queue::new();
        q.push(entry(1, Role::Follower, Role::None));
        q.leave(t);
        assert_eq!(started(q.next(t)), 1);
        let late = t + Duration::from_secs(60);
        assert_eq!(q.next(late), Next::Idle(None));
        assert!(!q.exit_ready(t + LEAVE_WAIT - Duration::from_millis(1)));
        assert!(q.exit_ready(t + LEAVE_WAIT));
        let (running, dropped) = q.abandon();
        assert_eq!((running.map(|e| e.epoch), dropped), (Some(1), 0));
        assert!(q.is_idle());
    }

    #[test]
    fn a_node_that_stays_is_always_ready_only_when_idle() {
        let t = Instant::now();
        let mut q = Queue::new();
        assert!(q.exit_ready(t));
        q.push(entry(1, Role::None, Role::Master));
        assert!(!q.exit_ready(t + Duration::from_secs(3600)));
        let (running, dropped) = q.abandon();
        assert_eq!((running, dropped), (None, 1));
    }
}
