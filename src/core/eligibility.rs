//! Who may be master, and how the role moves on purpose: health (the
//! check's verdict, `-standby`), `-priority`, `-handover`, preemption
//! (`--no-preempt`, `--preempt-delay`) and the ordered release of the
//! role (guarantee 11, docs/GUARANTEES.md).
//!
//! It owns the operator's and the check's inputs, the peers' RANK and
//! RELEASE lines, the choice of the member the election puts first
//! ([`Node::choose_best`]) and the timers of all this. It never changes
//! the role itself: every input ends in `decide`. A master that stops
//! claiming while it has peers owes them a RELEASE, sent once its hook for
//! leaving the role has ended (`handle_hook_ended`) or `MAX_YIELD_MS`
//! passed; its peers follow no new claim until then.

use std::net::SocketAddr;

use super::{Cause, HandoverError, LEAVE_YIELD_MS, LinkId, MAX_YIELD_MS, Node, Release};
use crate::event::Event;
use crate::protocol::{Health, Message, Role};
use crate::time::Mono;

impl Node {
    /// The health check's verdict changed (already debounced by --check-fall /
    /// --check-rise): `passing` false makes this node failing (ineligible),
    /// true healthy again. Causes `check-failed` / `check-passed`.
    pub fn handle_check(&mut self, passing: bool, now: Mono) {
        if !self.left && self.failing == passing {
            let was = self.health();
            self.failing = !passing;
            let cause = if passing {
                Cause::CheckPassed
            } else {
                Cause::CheckFailed
            };
            self.health_changed(was, cause, now);
        }
        self.audit();
    }

    /// `-standby on|off`: a node in standby stays in the mesh but is never
    /// master; a master in standby hands over at once. Returns whether
    /// anything changed.
    pub fn set_standby(&mut self, on: bool, now: Mono) -> bool {
        let changed = !self.left && self.standby != on;
        if changed {
            let was = self.health();
            self.standby = on;
            self.health_changed(was, Cause::Standby, now);
        }
        self.audit();
        changed
    }

    /// `-priority N`: takes effect at once here and is told to every
    /// peer; with a rule that uses `priority` it may move the master
    /// (subject to preemption).
    pub fn set_priority(&mut self, priority: i32, now: Mono) {
        if !self.left && self.cfg.priority != priority {
            self.cfg.priority = priority;
            self.ranked_two = None;
            self.event(Event::PriorityChanged { priority });
            self.send_rank();
            self.decide(Cause::Priority, None, now);
        }
        self.audit();
    }

    /// `-handover [IP PORT]`: this master steps down for `to`, or for the
    /// best other eligible member, which it names in its RELEASE. Needs
    /// `--no-preempt`, else the rule would elect this node again at once.
    pub fn handover(
        &mut self,
        to: Option<SocketAddr>,
        now: Mono,
    ) -> Result<SocketAddr, HandoverError> {
        let target = self.handover_target(to);
        if let Ok(t) = target {
            self.handing_over = Some(t);
            self.decide(Cause::Handover, None, now);
        }
        self.audit();
        target
    }

    fn handover_target(&self, to: Option<SocketAddr>) -> Result<SocketAddr, HandoverError> {
        if !self.cfg.no_preempt {
            return Err(HandoverError::NeedsNoPreempt);
        }
        if self.role != Role::Master || self.handing_over.is_some() || self.left {
            return Err(HandoverError::NotMaster);
        }
        match to {
            Some(a) if a == self.cfg.addr => Err(HandoverError::ToItself),
            Some(a) => match self.peers.get(&a) {
                None => Err(HandoverError::NotInView(a)),
                Some(p) if !p.health.eligible() => Err(HandoverError::NotEligible(a, p.health)),
                Some(_) => Ok(a),
            },
            None => self.next_master().ok_or(HandoverError::NoneEligible),
        }
    }

    /// Every hook for this node's role changes so far has ended (the loop
    /// says so; without `--notify` as soon as it asks, see
    /// [`Node::awaits_hook`]): a master that stepped down tells its peers
    /// the role is free now.
    pub fn handle_hook_ended(&mut self, now: Mono) {
        if let Some(r) = self.releasing.take() {
            self.release(r, now);
        }
        self.audit();
    }

    /// Whether this node waits for its hooks to end before it sends a
    /// RELEASE: the loop calls [`Node::handle_hook_ended`] once none runs
    /// or waits.
    pub fn awaits_hook(&self) -> bool {
        self.releasing.is_some()
    }

    /// Whether a leave waits for the release of the role: the node has
    /// not left yet, its peer links stay open until LEAVE is sent.
    pub fn leave_pending(&self) -> bool {
        self.leaving && !self.left
    }

    /// Whether the core holds this link (a peer's or a handshake's).
    pub fn has_link(&self, link: LinkId) -> bool {
        self.links.contains_key(&link)
    }

    /// A RANK from the established peer `addr`.
    pub(super) fn on_rank(&mut self, addr: SocketAddr, health: Health, priority: i32, now: Mono) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let (was, was_priority) = (p.health, p.hello.priority);
        if (was, was_priority) == (health, priority) {
            return;
        }
        let claiming = p.state.role == Role::Master && p.state.epoch_master == Some(addr);
        p.health = health;
        p.hello.priority = priority;
        if priority != was_priority {
            self.ranked_two = None;
        }
        if health.eligible() && !was.eligible() {
            p.eligible_since = now;
        }
        self.event(Event::PeerRanked {
            peer: addr,
            health,
            priority,
        });
        let cause = if was == health {
            Cause::Priority
        } else {
            health_cause(was, health)
        };
        if claiming && was.eligible() && !health.eligible() {
            // The master is about to step down: wait for its release.
            self.await_release(addr, cause, now);
        }
        self.decide(cause, None, now);
    }

    /// A RELEASE from the established peer `addr`: the role it held is free.
    pub(super) fn on_release(
        &mut self,
        addr: SocketAddr,
        epoch: u64,
        next: Option<SocketAddr>,
        now: Mono,
    ) {
        if let Some(p) = self.peers.get_mut(&addr)
            && p.state.role == Role::Master
            && p.state.epoch <= epoch
        {
            // Its claim of that epoch is over, whatever STATE said last.
            p.state.role = Role::None;
        }
        if self.awaiting.is_some_and(|(a, _)| a == addr) {
            self.awaiting = None;
        }
        if self.epoch_master == Some(addr) {
            self.bound_until = None;
        }
        let cause = self.lost_master.unwrap_or(Cause::Handover);
        if let Some(n) = next
            && self.cfg.no_preempt
            && (n == self.cfg.addr || self.peers.contains_key(&n))
        {
            self.designated = Some((n, now.plus(MAX_YIELD_MS)));
        }
        self.decide(cause, None, now);
    }

    /// The peer `addr` claimed and now stops (its STATE) or becomes
    /// ineligible (its RANK): until its RELEASE no new claim is made or
    /// followed here (guarantee 11).
    pub(super) fn await_release(&mut self, addr: SocketAddr, cause: Cause, now: Mono) {
        if self.awaiting.is_none_or(|(a, _)| a != addr) {
            self.event(Event::AwaitingRelease { peer: addr });
        }
        self.awaiting = Some((addr, now.plus(MAX_YIELD_MS)));
        if self.lost_master.is_none() {
            self.lost_master = Some(cause);
        }
    }

    /// The member the election puts first: the best eligible member under
    /// the rule, except that an eligible master keeps its place under
    /// `--no-preempt`, and under `--preempt-delay` against members not yet
    /// eligible and in the group that long. Of two masters (merged
    /// groups) the one that ranks first keeps its place. `None`: no member
    /// is eligible, and there is no master.
    pub(super) fn choose_best(&self, now: Mono) -> Option<SocketAddr> {
        if !self.cfg.no_preempt && self.cfg.preempt_delay_ms == 0 {
            return self.best_eligible();
        }
        let eligible = self.eligible_ranking();
        let first = *eligible.first()?;
        let Some(incumbent) = eligible.iter().copied().find(|a| self.claims(*a)) else {
            if self.cfg.no_preempt
                && let Some((d, _)) = self.designated
                && eligible.contains(&d)
            {
                return Some(d);
            }
            if self.master_elsewhere().is_some() {
                return None;
            }
            return Some(first);
        };
        if self.cfg.no_preempt {
            return Some(incumbent);
        }
        eligible
            .iter()
            .copied()
            .find(|a| *a == incumbent || self.matured_at(*a) <= now)
    }

    /// The first of [`Node::eligible_ranking`] in one pass, without
    /// sorting the view: a strict master decides on every echoed
    /// heartbeat (docs/BENCHMARKS.md, "The core at 1,000 nodes"). The
    /// rule orders any two members strictly (address and instance break
    /// ties), so the least is the ranking's first.
    pub(super) fn best_eligible(&self) -> Option<SocketAddr> {
        // The first of the whole ranking, kept while the view and the
        // priorities stay, is the best eligible member when it is eligible
        // itself: a crash failover at 1,000 nodes runs the election on each
        // of 2n² STATEs, and this walk was a quarter of it.
        if let Some((Some(first), _)) = self.ranked_two
            && self.member_eligible(first.addr)
        {
            return Some(first.addr);
        }
        let rule = &self.cfg.rule;
        std::iter::once((self.eligible(), self.me()))
            .chain(
                self.peers
                    .values()
                    .map(|p| (p.health.eligible(), super::candidate(&p.hello))),
            )
            .filter(|(eligible, _)| *eligible)
            .map(|(_, c)| c)
            .min_by(|a, b| rule.compare(a, b))
            .map(|c| c.addr)
    }

    /// The eligible members of the view, best first under the rule.
    pub(super) fn eligible_ranking(&self) -> Vec<SocketAddr> {
        self.ranking()
            .into_iter()
            .map(|c| c.addr)
            .filter(|a| self.member_eligible(*a))
            .collect()
    }

    /// A master some peer follows that is not (yet) in this node's view:
    /// a node rejoining a group, say after a freeze, meets its members
    /// one by one and may meet a follower before the master it follows.
    /// Under `--no-preempt` or `--preempt-delay` it must not claim in that
    /// moment, or it would take the role from the group's master by
    /// reaching a follower first; it waits until it meets that master
    /// (which then keeps its place) or the follower loses it.
    fn master_elsewhere(&self) -> Option<SocketAddr> {
        self.peers.values().find_map(|p| {
            let m = p.state.epoch_master?;
            let follows = p.state_known && p.state.role == Role::Follower;
            (follows && m != self.cfg.addr && !self.peers.contains_key(&m)).then_some(m)
        })
    }

    /// `--preempt-delay`: the earliest time a member that ranks before the
    /// eligible master will have been eligible and in the group long
    /// enough to take over, if that is still to come.
    pub(super) fn next_preemption(&self, now: Mono) -> Option<Mono> {
        if self.cfg.no_preempt || self.cfg.preempt_delay_ms == 0 {
            return None;
        }
        let eligible = self.eligible_ranking();
        let incumbent = eligible.iter().position(|a| self.claims(*a))?;
        eligible[..incumbent]
            .iter()
            .map(|a| self.matured_at(*a))
            .filter(|t| *t > now)
            .min()
    }

    /// Timers: an overdue RELEASE goes out, a wait for one ends, a
    /// designation lapses, a delayed preemption is due.
    pub(super) fn eligibility_due(&mut self, now: Mono) {
        if let Some(r) = self.releasing
            && now >= r.until
        {
            self.releasing = None;
            self.release(r, now);
        }
        let mut again = false;
        if self.awaiting.is_some_and(|(_, t)| now >= t) {
            self.awaiting = None;
            again = true;
        }
        if self.designated.is_some_and(|(_, t)| now >= t) {
            self.designated = None;
            again = true;
        }
        if self.preempt_at.is_some_and(|t| now >= t) {
            self.preempt_at = None;
            again = true;
        }
        if again {
            let cause = self.lost_master.unwrap_or(Cause::Claim);
            self.decide(cause, None, now);
        }
    }

    /// The earliest of the timers [`Node::eligibility_due`] serves.
    pub(super) fn eligibility_deadline(&self) -> Option<Mono> {
        self.releasing
            .map(|r| r.until)
            .into_iter()
            .chain(self.awaiting.map(|(_, t)| t))
            .chain(self.designated.map(|(_, t)| t))
            .chain(self.preempt_at)
            .min()
    }

    /// After a decision: a master that stopped claiming while it has
    /// peers owes them a RELEASE; one that claims again owes nothing.
    pub(super) fn after_decision(&mut self, was_claimed: bool, was_epoch: u64, now: Mono) {
        if was_claimed && !self.claimed && !self.peers.is_empty() && self.releasing.is_none() {
            let wait = if self.leaving {
                LEAVE_YIELD_MS
            } else {
                MAX_YIELD_MS
            };
            self.releasing = Some(Release {
                epoch: was_epoch,
                to: self.handing_over,
                since: now,
                until: now.plus(wait),
            });
        }
        if self.claimed {
            self.releasing = None;
            self.handing_over = None;
        }
        self.before_decision();
        self.preempt_at = self.next_preemption(now);
    }

    /// Before and after a decision: a designated member that claims, or
    /// is no longer eligible, needs no designation any more, and the wait
    /// for a release ends when the awaited master is gone, or eligible and
    /// claiming again.
    pub(super) fn before_decision(&mut self) {
        if let Some((d, _)) = self.designated
            && (self.claims(d) || !self.member_eligible(d))
        {
            self.designated = None;
        }
        if let Some((a, _)) = self.awaiting
            && (!self.peers.contains_key(&a) || (self.claims(a) && self.member_eligible(a)))
        {
            self.awaiting = None;
        }
    }

    /// Sends the RELEASE (or, leaving, the LEAVE) the stepped-down master
    /// `r` owes its peers.
    fn release(&mut self, r: Release, now: Mono) {
        self.handovers = self.handovers.saturating_add(1);
        if self.leaving {
            self.finish_leave(now);
            return;
        }
        let next = r.to.or_else(|| self.next_master());
        self.event(Event::Released {
            epoch: r.epoch,
            next,
            waited_ms: now.since(r.since),
        });
        let links: Vec<LinkId> = self.peers.values().map(|p| p.link).collect();
        for link in links {
            self.send(
                link,
                Message::Release {
                    epoch: r.epoch,
                    next,
                },
            );
        }
        self.handing_over = None;
        if let Some(n) = next
            && self.cfg.no_preempt
        {
            self.designated = Some((n, now.plus(MAX_YIELD_MS)));
        }
        let cause = self.lost_master.unwrap_or(Cause::Handover);
        self.decide(cause, None, now);
    }

    /// The best eligible member other than this node.
    fn next_master(&self) -> Option<SocketAddr> {
        self.ranking()
            .into_iter()
            .map(|c| c.addr)
            .find(|a| *a != self.cfg.addr && self.member_eligible(*a))
    }

    /// Whether `addr`, a member of the view, may be master as this node knows.
    fn member_eligible(&self, addr: SocketAddr) -> bool {
        if addr == self.cfg.addr {
            return self.eligible();
        }
        self.peers.get(&addr).is_some_and(|p| p.health.eligible())
    }

    /// Whether `addr` claims mastership (its last STATE; this node's claim).
    pub(super) fn claims(&self, addr: SocketAddr) -> bool {
        if addr == self.cfg.addr {
            return self.claimed;
        }
        self.peers
            .get(&addr)
            .is_some_and(|p| p.state.role == Role::Master && p.state.epoch_master == Some(addr))
    }

    /// When `addr` will have been eligible and in the group for
    /// `--preempt-delay`: this node is in the group since its oldest link.
    fn matured_at(&self, addr: SocketAddr) -> Mono {
        let since = if addr == self.cfg.addr {
            let joined = self.peers.values().map(|p| p.established).min();
            joined.map_or(self.eligible_since, |j| j.max(self.eligible_since))
        } else {
            self.peers
                .get(&addr)
                .map_or(Mono::MAX, |p| p.eligible_since.max(p.established))
        };
        since.plus(self.cfg.preempt_delay_ms)
    }

    fn health_changed(&mut self, was: Health, cause: Cause, now: Mono) {
        let health = self.health();
        if health == was {
            return;
        }
        if health.eligible() {
            self.eligible_since = now;
        }
        self.event(Event::HealthChanged { health, cause });
        self.send_rank();
        self.decide(cause, None, now);
    }

    /// Tells every peer this node's health and priority.
    fn send_rank(&mut self) {
        let rank = Message::Rank {
            health: self.health(),
            priority: self.cfg.priority,
        };
        let links: Vec<LinkId> = self.peers.values().map(|p| p.link).collect();
        for link in links {
            self.send(link, rank.clone());
        }
    }
}

/// The cause of a member's health going from `was` to `now`.
pub(super) fn health_cause(was: Health, now: Health) -> Cause {
    match (was, now) {
        (Health::Standby, _) | (_, Health::Standby) => Cause::Standby,
        (_, Health::Failing) => Cause::CheckFailed,
        _ => Cause::CheckPassed,
    }
}
