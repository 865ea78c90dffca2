//! The election: who is master, at which epoch, and why.
//!
//! It owns the epoch's bounds (`MAX_EPOCH`, `MAX_EPOCH_LEAD_MS`), the
//! strict lease ([`LeaseTerms`]) and [`elect`]: a pure function from a
//! [`Ballot`] (this node's [`Standing`], the best member of its view,
//! each peer's last STATE, `now`) to a [`Decision`] (the new standing and
//! its cause). `Node::decide` gathers the ballot and applies the
//! decision in one place; the role and epoch change only in
//! `Node::set_state`. `elect` never sends, logs or reads a clock: `now`
//! and the strict epoch floor come in the ballot.

use std::net::SocketAddr;

use super::{Cause, Node};
use crate::event::Event;
use crate::protocol::{Role, State};
use crate::time::Mono;

/// The largest epoch, 2^53 - 1 (guarantee 9, docs/GUARANTEES.md). An epoch
/// is a fencing token that applications store and compare: in SQL
/// `BIGINT`, in a Java `long`, and in JSON read by JavaScript, whose
/// numbers are doubles and exact only up to 2^53 - 1. A peer announcing a
/// larger epoch breaks the protocol, and a node that would have to claim a
/// larger one stays without a role instead.
pub const MAX_EPOCH: u64 = (1 << 53) - 1;

/// How far a peer's epoch may run ahead of this node's wall clock, in ms:
/// one day. With `--strict` a new epoch is at least the claimant's wall
/// clock in ms, so an honest epoch is ahead of ours only by the two clocks'
/// disagreement (which strict mode needs far below a day) plus the few
/// re-claims since; without `--strict` epochs count elections from 1 and
/// stay far below any wall clock in ms (about 1.8 x 10^12 in 2027). An
/// epoch further ahead is a jump no honest node could make, so it breaks
/// the protocol: one line cannot use the range up, and the highest
/// acceptable epoch grows only as fast as the clock, which would take
/// 285,000 years to reach `MAX_EPOCH`.
pub const MAX_EPOCH_LEAD_MS: u64 = 86_400_000;

/// The part of a node's state the election reads and rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Standing {
    pub(super) role: Role,
    /// The last epoch accepted or claimed; never decreases.
    pub(super) epoch: u64,
    /// The master of `epoch`, if there was one.
    pub(super) epoch_master: Option<SocketAddr>,
    /// This node claims mastership of `epoch` (its STATE says master).
    pub(super) claimed: bool,
    /// When the current claim was sent.
    pub(super) claim_sent: Mono,
    /// With `--strict`, no master but `epoch_master` is followed before this.
    pub(super) bound_until: Option<Mono>,
    /// Why the last master was lost, while no new one is known.
    pub(super) lost_master: Option<Cause>,
}

impl Standing {
    /// The master this standing follows or is, if any.
    pub(super) fn master(&self) -> Option<SocketAddr> {
        match self.role {
            Role::None => None,
            Role::Master | Role::Follower => self.epoch_master,
        }
    }
}

/// What the election knows of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Voter {
    pub(super) addr: SocketAddr,
    /// Its last STATE (all none and 0 until `known`).
    pub(super) state: State,
    /// Whether `state` came from the peer: until then no claim goes over it.
    pub(super) known: bool,
    /// Send time of the latest heartbeat it acknowledged.
    pub(super) acked_sent: Mono,
}

/// Everything one decision looks at.
#[derive(Clone, Debug)]
pub(super) struct Ballot<'a> {
    pub(super) me: SocketAddr,
    /// The member the election puts first (`Node::choose_best`): the
    /// best eligible member under the rule, or the master that keeps its
    /// place without preemption. `None`: no member is eligible.
    pub(super) best: Option<SocketAddr>,
    /// A master that stepped down has not released its role yet: no new
    /// claim is made or followed (guarantee 11).
    pub(super) waiting: bool,
    /// This node is settling after a stall its peers may have timed it out
    /// for (guarantee 10): it makes no new claim yet.
    pub(super) settling: bool,
    pub(super) quorum: u32,
    pub(super) strict: bool,
    /// The lowest epoch a new claim may take: with `--strict` this node's
    /// wall clock in ms, else 0.
    pub(super) floor: u64,
    /// How long a follower stays bound to a master it heard.
    pub(super) timeout_ms: u64,
    pub(super) lease: LeaseTerms,
    pub(super) now: Mono,
    pub(super) standing: Standing,
    /// Every peer of the view (this node not among them).
    pub(super) peers: &'a [Voter],
    /// What set this decision off, and the peer whose loss or leave did.
    pub(super) trigger: Cause,
    pub(super) departed: Option<SocketAddr>,
}

/// What [`elect`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Decision {
    pub(super) standing: Standing,
    /// Why, for the journal (when the role or master changes).
    pub(super) cause: Cause,
    /// No epoch above this one is left to claim: logged once.
    pub(super) exhausted: Option<u64>,
}

/// Where this node stands against the view, before the strict lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stance {
    /// No role: below quorum, bound elsewhere, or no acceptable claim yet.
    Wait,
    /// Master: keeps its uncontested claim.
    Hold,
    /// Master: claims this new epoch.
    Claim(u64),
    /// Follows the best member's claim of this epoch.
    Follow(u64),
    /// It is the best but no epoch is left above this one.
    Exhausted(u64),
}

/// The election, level-triggered: the role, epoch and master this node
/// takes from its view and the last STATE each peer sent. The best member
/// claims an epoch above every epoch in the view (once every peer's
/// STATE is known); the others follow it once its claim arrives. With
/// `--strict` a node bound to one master takes no other until the binding
/// ends, and a claimant is master only while a quorum is bound to it.
pub(super) fn elect(b: &Ballot) -> Decision {
    let was = b.standing;
    let stance = stance(b);
    let mut next = Standing {
        claimed: matches!(stance, Stance::Hold | Stance::Claim(_)),
        ..was
    };
    match stance {
        Stance::Wait | Stance::Exhausted(_) => next.role = Role::None,
        Stance::Hold => next.role = Role::Master,
        Stance::Claim(epoch) => {
            (next.role, next.epoch, next.epoch_master) = (Role::Master, epoch, Some(b.me));
            next.claim_sent = b.now;
        }
        Stance::Follow(epoch) => {
            if was.epoch_master != b.best || was.role != Role::Follower {
                next.bound_until = Some(b.now.plus(b.timeout_ms));
            }
            (next.role, next.epoch, next.epoch_master) = (Role::Follower, epoch, b.best);
        }
    }
    if next.claimed && b.strict && !leased(b, next.epoch, next.claim_sent) {
        // A strict claimant is master only while a quorum is bound to it.
        next.role = Role::None;
    }
    let (cause, spent) = cause(b, next.role);
    // The next election's journal entry names why the last master was
    // lost, not the claim that ended the wait.
    if next.role == Role::None
        && matches!(
            cause,
            Cause::MasterLost
                | Cause::MasterLeft
                | Cause::Standby
                | Cause::CheckFailed
                | Cause::Handover
                | Cause::Leave
        )
    {
        next.lost_master = Some(cause);
    } else if spent {
        next.lost_master = None;
    }
    let exhausted = match stance {
        Stance::Exhausted(highest) => Some(was.epoch.max(highest)),
        _ => None,
    };
    Decision {
        standing: next,
        cause,
        exhausted,
    }
}

fn stance(b: &Ballot) -> Stance {
    let was = &b.standing;
    if 1 + b.peers.len() < b.quorum as usize {
        return Stance::Wait;
    }
    let Some(best) = b.best else {
        return Stance::Wait;
    };
    if best != b.me {
        let Some(s) = b.peers.iter().find(|p| p.addr == best).map(|p| p.state) else {
            return Stance::Wait;
        };
        let claims = s.role == Role::Master && s.epoch_master == Some(best);
        let acceptable =
            s.epoch > was.epoch || (s.epoch == was.epoch && was.epoch_master == Some(best));
        // While a master's release is awaited, only the master already
        // followed is followed.
        let kept = was.role == Role::Follower && was.epoch_master == Some(best);
        return if claims && acceptable && free_for(b, best) && (!b.waiting || kept) {
            Stance::Follow(s.epoch)
        } else {
            Stance::Wait
        };
    }
    let contested = b.peers.iter().any(|p| {
        p.state.epoch > was.epoch
            || (p.state.epoch == was.epoch && p.state.epoch_master != Some(b.me))
    });
    let unknown = b.peers.iter().any(|p| !p.known);
    if !free_for(b, b.me) || (!was.claimed && (unknown || b.waiting || b.settling)) {
        return Stance::Wait;
    }
    if was.claimed && !contested {
        return Stance::Hold;
    }
    let highest = b.peers.iter().map(|p| p.state.epoch).max().unwrap_or(0);
    match was
        .epoch
        .max(highest)
        .checked_add(1)
        .map(|e| e.max(b.floor))
    {
        Some(epoch) if epoch <= MAX_EPOCH => Stance::Claim(epoch),
        // No epoch is left to claim: rather no master than a fencing
        // token that wraps or no client can hold.
        _ => Stance::Exhausted(highest),
    }
}

/// With `--strict` a node bound to one master takes no other until the
/// binding runs out or that master releases it.
fn free_for(b: &Ballot, who: SocketAddr) -> bool {
    let was = &b.standing;
    !b.strict || was.epoch_master == Some(who) || was.bound_until.is_none_or(|t| b.now >= t)
}

/// Whether a quorum is bound to this claimant of `epoch` now
/// (`--strict`), its claim sent at `claim_sent`. The epoch is the claim's,
/// not the one held before it: followers of an older claim are bound to
/// nothing new (seed 1406 of the sweep found a master made by them).
fn leased(b: &Ballot, epoch: u64, claim_sent: Mono) -> bool {
    let bound = b.peers.iter().map(|p| (p.state, p.acked_sent));
    let lease = b.lease.end(epoch, claim_sent, bound);
    lease.is_some_and(|t| b.now < t)
}

/// What a strict lease is counted from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LeaseTerms {
    pub(super) me: SocketAddr,
    pub(super) quorum: u32,
    /// How long past a heartbeat a follower is surely bound: the timeout
    /// less a heartbeat, as a margin for clock rates.
    pub(super) lease_ms: u64,
}

impl LeaseTerms {
    /// Until when a quorum is surely bound to the claimant of `epoch`
    /// (`--strict`), from each peer's last STATE and the send time of the
    /// last heartbeat it acknowledged: each follower is bound at least
    /// until that, or the claim, was sent, plus the timeout. The lease
    /// ends `lease_ms` after. `None` when fewer than quorum - 1 peers follow.
    pub(super) fn end(
        &self,
        epoch: u64,
        claim_sent: Mono,
        peers: impl Iterator<Item = (State, Mono)>,
    ) -> Option<Mono> {
        let need = self.quorum.saturating_sub(1) as usize;
        if need == 0 {
            // A quorum of one is this node alone: it is never unbound.
            return Some(Mono::MAX);
        }
        let mut bound: Vec<Mono> = peers
            // Only followers of this claim: a STATE from before it (this
            // node may have stopped and claimed again) proves no binding now.
            .filter(|(s, _)| {
                s.role == Role::Follower && s.epoch_master == Some(self.me) && s.epoch == epoch
            })
            .map(|(_, acked_sent)| acked_sent.max(claim_sent).plus(self.lease_ms))
            .collect();
        if bound.len() < need {
            return None;
        }
        bound.sort_unstable_by(|a, b| b.cmp(a));
        Some(bound[need - 1])
    }
}

/// Why the role is now `role`, for the journal, and whether that spends
/// the remembered loss of the last master.
fn cause(b: &Ballot, role: Role) -> (Cause, bool) {
    let was = &b.standing;
    let old_master = was.master();
    let master_gone = b.departed.is_some() && b.departed == old_master && old_master != Some(b.me);
    let cause = if 1 + b.peers.len() < b.quorum as usize {
        Cause::QuorumLost
    } else if master_gone {
        match b.trigger {
            Cause::PeerLeft => Cause::MasterLeft,
            _ => Cause::MasterLost,
        }
    } else if was.role == Role::Master
        && role != Role::Master
        && matches!(
            b.trigger,
            Cause::Standby
                | Cause::CheckFailed
                | Cause::CheckPassed
                | Cause::Handover
                | Cause::Leave
                | Cause::Priority
        )
    {
        // A master that steps down for a change of eligibility or priority
        // (its own or a better member's) journals that change, as every
        // other member does (docs/GUARANTEES.md, health, standby, preemption
        // and handover).
        b.trigger
    } else if was.role == Role::Master && role != Role::Master {
        if b.best.is_none() || b.best == Some(b.me) {
            Cause::QuorumLost
        } else {
            Cause::Outranked
        }
    } else if role != Role::None
        && let Some(lost) = was.lost_master
    {
        return (lost, true);
    } else {
        b.trigger
    };
    (cause, false)
}

impl Node {
    /// Recomputes this node's role from its view and its peers' last
    /// STATE ([`elect`]) and applies it. `departed` is the peer whose loss
    /// (or leave) triggered this, if any.
    pub(super) fn decide(&mut self, trigger: Cause, departed: Option<SocketAddr>, now: Mono) {
        if self.left {
            return;
        }
        let peers: Vec<Voter> = self
            .peers
            .iter()
            .map(|(addr, p)| Voter {
                addr: *addr,
                state: p.state,
                known: p.state_known,
                acked_sent: p.acked_sent,
            })
            .collect();
        self.before_decision();
        let (was_claimed, was_epoch) = (self.claimed, self.epoch);
        let decision = elect(&Ballot {
            me: self.cfg.addr,
            best: self.choose_best(now),
            waiting: self.awaiting.is_some(),
            settling: self.settling_until.is_some(),
            quorum: self.cfg.quorum,
            strict: self.cfg.strict,
            // Also with a state dir: the disk keeps what this node saw, the
            // clock keeps a claim above what a cut-off majority may have
            // seen (the sweep found epoch reuse in strict mode without it).
            floor: if self.cfg.strict {
                self.wall(now).ms()
            } else {
                0
            },
            timeout_ms: self.cfg.timeout_ms,
            lease: self.lease_terms(),
            now,
            standing: self.standing(),
            peers: &peers,
            trigger,
            departed,
        });
        self.apply(decision, now);
        self.after_decision(was_claimed, was_epoch, now);
    }

    fn apply(&mut self, d: Decision, now: Mono) {
        if let Some(epoch) = d.exhausted {
            self.epoch_exhausted(epoch);
        }
        let s = d.standing;
        let claim_dropped = self.claimed && !s.claimed;
        let unchanged =
            (s.role, s.epoch, s.epoch_master) == (self.role, self.epoch, self.epoch_master);
        self.claimed = s.claimed;
        self.claim_sent = s.claim_sent;
        self.bound_until = s.bound_until;
        self.lost_master = s.lost_master;
        self.set_state(s.role, s.epoch, s.epoch_master, d.cause, now);
        if claim_dropped && unchanged {
            // A strict claimant without its lease had no role to lose:
            // its peers still learn that it claims no more.
            let state = self.state_msg();
            let links: Vec<_> = self.peers.values().map(|p| p.link).collect();
            for link in links {
                self.send(link, state.clone());
            }
        }
        self.check_start_doubt();
    }

    pub(super) fn standing(&self) -> Standing {
        Standing {
            role: self.role,
            epoch: self.epoch,
            epoch_master: self.epoch_master,
            claimed: self.claimed,
            claim_sent: self.claim_sent,
            bound_until: self.bound_until,
            lost_master: self.lost_master,
        }
    }

    fn lease_terms(&self) -> LeaseTerms {
        LeaseTerms {
            me: self.cfg.addr,
            quorum: self.cfg.quorum,
            lease_ms: self.cfg.timeout_ms.saturating_sub(self.cfg.heartbeat_ms),
        }
    }

    /// Until when a quorum is surely bound to this claimant (`--strict`;
    /// [`LeaseTerms::end`]).
    pub(super) fn lease_until(&self) -> Option<Mono> {
        let peers = self.peers.values().map(|p| (p.state, p.acked_sent));
        self.lease_terms().end(self.epoch, self.claim_sent, peers)
    }

    /// With `--strict`, time alone can change the role: a binding to the
    /// last master runs out, or this master's lease does.
    pub(super) fn strict_due(&mut self, now: Mono) {
        let unbound = self.bound_until.is_some_and(|t| now >= t);
        if unbound {
            self.bound_until = None;
        }
        let lease_over = self.role == Role::Master && self.lease_until().is_none_or(|t| now >= t);
        if unbound || lease_over {
            self.decide(Cause::QuorumLost, None, now);
        }
    }

    /// Logs once that no epoch above `epoch` can be claimed.
    pub(super) fn epoch_exhausted(&mut self, epoch: u64) {
        if self.epoch_exhausted {
            return;
        }
        self.epoch_exhausted = true;
        self.event(Event::EpochExhausted { epoch });
    }

    /// Why a peer's epoch breaks the protocol, if it does: above
    /// [`MAX_EPOCH`], or more than [`MAX_EPOCH_LEAD_MS`] ahead of this
    /// node's wall clock.
    pub(super) fn epoch_refusal(&self, epoch: u64, now: Mono) -> Option<String> {
        if epoch > MAX_EPOCH {
            return Some(format!("epoch above {MAX_EPOCH}, the largest"));
        }
        let limit = self.epoch_limit(now);
        (epoch > limit)
            .then(|| format!("epoch more than a day ahead of this node's clock ({limit} at most)"))
    }

    /// The largest epoch a peer may announce now.
    pub(super) fn epoch_limit(&self, now: Mono) -> u64 {
        self.wall(now).plus(MAX_EPOCH_LEAD_MS).ms().min(MAX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    //! The election as a table, like raft-rs' `quorum/` tests: each row is
    //! a view and a standing, and the role, epoch, master and cause it
    //! must give.

    use super::*;

    const ME: u8 = 1;
    const TIMEOUT: u64 = 1_000;
    const NOW: u64 = 10_000;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 7400))
    }

    fn state(role: Role, epoch: u64, master: Option<u8>) -> State {
        State {
            role,
            epoch,
            epoch_master: master.map(addr),
        }
    }

    /// A peer whose STATE is known, acknowledging a heartbeat sent 100 ms ago.
    fn peer(n: u8, role: Role, epoch: u64, master: Option<u8>) -> Voter {
        Voter {
            addr: addr(n),
            state: state(role, epoch, master),
            known: true,
            acked_sent: Mono(NOW - 100),
        }
    }

    fn standing(role: Role, epoch: u64, master: Option<u8>, claimed: bool) -> Standing {
        Standing {
            role,
            epoch,
            epoch_master: master.map(addr),
            claimed,
            claim_sent: Mono::ZERO,
            bound_until: None,
            lost_master: None,
        }
    }

    struct Row {
        name: &'static str,
        best: Option<u8>,
        waiting: bool,
        settling: bool,
        quorum: u32,
        strict: bool,
        floor: u64,
        was: Standing,
        peers: Vec<Voter>,
        trigger: Cause,
        departed: Option<u8>,
        /// Role, epoch, master and cause.
        want: (Role, u64, Option<u8>, Cause),
    }

    impl Default for Row {
        fn default() -> Row {
            Row {
                name: "",
                best: Some(ME),
                waiting: false,
                settling: false,
                quorum: 2,
                strict: false,
                floor: 0,
                was: standing(Role::None, 0, None, false),
                peers: Vec::new(),
                trigger: Cause::PeerJoined,
                departed: None,
                want: (Role::None, 0, None, Cause::PeerJoined),
            }
        }
    }

    fn run(row: &Row) -> Decision {
        elect(&Ballot {
            me: addr(ME),
            best: row.best.map(addr),
            waiting: row.waiting,
            settling: row.settling,
            quorum: row.quorum,
            strict: row.strict,
            floor: row.floor,
            timeout_ms: TIMEOUT,
            lease: LeaseTerms {
                me: addr(ME),
                quorum: row.quorum,
                lease_ms: TIMEOUT - 100,
            },
            now: Mono(NOW),
            standing: row.was,
            peers: &row.peers,
            trigger: row.trigger,
            departed: row.departed.map(addr),
        })
    }

    fn check(rows: &[Row]) {
        for row in rows {
            let d = run(row);
            let s = d.standing;
            let (role, epoch, master, cause) = row.want;
            assert_eq!(
                (s.role, s.epoch, s.epoch_master, d.cause),
                (role, epoch, master.map(addr), cause),
                "{}",
                row.name
            );
            assert!(s.epoch >= row.was.epoch, "{}: epoch went back", row.name);
            if s.role == Role::Master {
                assert_eq!(s.epoch_master, Some(addr(ME)), "{}", row.name);
            }
        }
    }

    use Role::{Follower, Master, None as NoRole};

    #[test]
    fn the_best_member_claims_and_the_others_follow() {
        check(&[
            Row {
                name: "alone below quorum: no role",
                want: (NoRole, 0, None, Cause::QuorumLost),
                trigger: Cause::Start,
                ..Row::default()
            },
            Row {
                name: "alone with a quorum of 1: master at once",
                quorum: 1,
                trigger: Cause::Start,
                want: (Master, 1, Some(ME), Cause::Start),
                ..Row::default()
            },
            Row {
                name: "the best waits for every peer's STATE",
                peers: vec![Voter {
                    known: false,
                    ..peer(2, NoRole, 0, None)
                }],
                want: (NoRole, 0, None, Cause::PeerJoined),
                ..Row::default()
            },
            Row {
                name: "settling after a stall, the best claims nothing",
                settling: true,
                peers: vec![peer(3, Follower, 4, Some(2))],
                was: standing(Follower, 4, Some(2), false),
                want: (NoRole, 4, Some(2), Cause::PeerJoined),
                ..Row::default()
            },
            Row {
                name: "settling, a master keeps its uncontested claim",
                settling: true,
                peers: vec![peer(3, Follower, 4, Some(ME))],
                was: standing(Master, 4, Some(ME), true),
                want: (Master, 4, Some(ME), Cause::PeerJoined),
                ..Row::default()
            },
            Row {
                name: "the best claims above every epoch in the view",
                quorum: 3,
                peers: vec![peer(2, Follower, 4, Some(3)), peer(3, NoRole, 7, None)],
                trigger: Cause::Claim,
                want: (Master, 8, Some(ME), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "an uncontested claim is held",
                was: standing(Master, 5, Some(ME), true),
                peers: vec![peer(2, Follower, 5, Some(ME))],
                trigger: Cause::Claim,
                want: (Master, 5, Some(ME), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "a peer on a higher epoch contests the claim",
                was: standing(Master, 5, Some(ME), true),
                peers: vec![peer(2, NoRole, 6, None)],
                trigger: Cause::Claim,
                want: (Master, 7, Some(ME), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "a peer naming another master of our epoch contests it",
                was: standing(Master, 5, Some(ME), true),
                peers: vec![peer(2, Follower, 5, Some(3))],
                trigger: Cause::Claim,
                want: (Master, 6, Some(ME), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "a follower follows the best member's claim",
                best: Some(2),
                peers: vec![peer(2, Master, 3, Some(2))],
                trigger: Cause::Claim,
                want: (Follower, 3, Some(2), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "a claim below our epoch is not followed",
                best: Some(2),
                was: standing(NoRole, 5, Some(3), false),
                peers: vec![peer(2, Master, 4, Some(2))],
                trigger: Cause::Claim,
                want: (NoRole, 5, Some(3), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "our epoch again only from its own master",
                best: Some(2),
                was: standing(NoRole, 5, Some(3), false),
                peers: vec![peer(2, Master, 5, Some(2))],
                trigger: Cause::Claim,
                want: (NoRole, 5, Some(3), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "a best member that claims nothing is not followed",
                best: Some(2),
                peers: vec![peer(2, Follower, 3, Some(4))],
                want: (NoRole, 0, None, Cause::PeerJoined),
                ..Row::default()
            },
        ]);
    }

    #[test]
    fn causes_name_what_ended_the_last_role() {
        let follower = standing(Follower, 3, Some(2), false);
        check(&[
            Row {
                name: "the master is lost",
                best: Some(3),
                quorum: 1,
                was: follower,
                peers: vec![peer(3, NoRole, 3, Some(2))],
                trigger: Cause::PeerLost,
                departed: Some(2),
                want: (NoRole, 3, Some(2), Cause::MasterLost),
                ..Row::default()
            },
            Row {
                name: "the master leaves",
                best: Some(3),
                quorum: 1,
                was: follower,
                peers: vec![peer(3, NoRole, 3, Some(2))],
                trigger: Cause::PeerLeft,
                departed: Some(2),
                want: (NoRole, 3, Some(2), Cause::MasterLeft),
                ..Row::default()
            },
            Row {
                name: "the next master's entry names the loss, not its claim",
                best: Some(3),
                quorum: 1,
                was: Standing {
                    lost_master: Some(Cause::MasterLost),
                    ..standing(NoRole, 3, Some(2), false)
                },
                peers: vec![peer(3, Master, 4, Some(3))],
                trigger: Cause::Claim,
                want: (Follower, 4, Some(3), Cause::MasterLost),
                ..Row::default()
            },
            Row {
                name: "a master outranked by a newcomer",
                best: Some(2),
                was: standing(Master, 5, Some(ME), true),
                peers: vec![peer(2, NoRole, 0, None)],
                want: (NoRole, 5, Some(ME), Cause::Outranked),
                ..Row::default()
            },
            Row {
                name: "a master outranked after a priority change",
                best: Some(2),
                was: standing(Master, 5, Some(ME), true),
                peers: vec![peer(2, Follower, 5, Some(ME))],
                trigger: Cause::Priority,
                want: (NoRole, 5, Some(ME), Cause::Priority),
                ..Row::default()
            },
            Row {
                name: "a master outranked by a member whose check passes again",
                best: Some(2),
                was: standing(Master, 5, Some(ME), true),
                peers: vec![peer(2, Follower, 5, Some(ME))],
                trigger: Cause::CheckPassed,
                want: (NoRole, 5, Some(ME), Cause::CheckPassed),
                ..Row::default()
            },
            Row {
                name: "a master below quorum",
                quorum: 3,
                was: standing(Master, 5, Some(ME), true),
                peers: vec![peer(2, Follower, 5, Some(ME))],
                trigger: Cause::PeerLost,
                departed: Some(3),
                want: (NoRole, 5, Some(ME), Cause::QuorumLost),
                ..Row::default()
            },
        ]);
        // The loss is remembered while no master is known, and spent by
        // the entry that names it.
        let lost = run(&Row {
            best: Some(3),
            quorum: 1,
            was: follower,
            peers: vec![peer(3, NoRole, 3, Some(2))],
            trigger: Cause::PeerLost,
            departed: Some(2),
            ..Row::default()
        });
        assert_eq!(lost.standing.lost_master, Some(Cause::MasterLost));
        let found = run(&Row {
            best: Some(3),
            quorum: 1,
            was: lost.standing,
            peers: vec![peer(3, Master, 4, Some(3))],
            trigger: Cause::Claim,
            ..Row::default()
        });
        assert_eq!(found.standing.lost_master, None);
    }

    #[test]
    fn no_epoch_past_the_largest() {
        let row = Row {
            name: "a peer at MAX_EPOCH leaves nothing to claim",
            peers: vec![peer(2, NoRole, MAX_EPOCH, None)],
            want: (NoRole, 0, None, Cause::PeerJoined),
            ..Row::default()
        };
        check(std::slice::from_ref(&row));
        assert_eq!(run(&row).exhausted, Some(MAX_EPOCH));
        assert!(!run(&row).standing.claimed);
        let fine = Row {
            peers: vec![peer(2, NoRole, MAX_EPOCH - 1, None)],
            ..Row::default()
        };
        assert_eq!(run(&fine).exhausted, None);
        assert_eq!(run(&fine).standing.epoch, MAX_EPOCH);
    }

    #[test]
    fn strict_binds_followers_and_leases_the_master() {
        let bound = |until: u64| Standing {
            bound_until: Some(Mono(until)),
            ..standing(Follower, 3, Some(3), false)
        };
        let floor = 1_700_000_000_000;
        check(&[
            Row {
                name: "a strict claim is at least the wall clock",
                quorum: 1,
                strict: true,
                floor,
                trigger: Cause::Start,
                want: (Master, floor, Some(ME), Cause::Start),
                ..Row::default()
            },
            Row {
                name: "bound to one master, another's claim waits",
                best: Some(2),
                strict: true,
                was: bound(NOW + 1),
                peers: vec![peer(2, Master, 4, Some(2)), peer(3, Master, 3, Some(3))],
                trigger: Cause::Claim,
                want: (NoRole, 3, Some(3), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "once the binding ends, it is followed",
                best: Some(2),
                strict: true,
                was: bound(NOW),
                peers: vec![peer(2, Master, 4, Some(2)), peer(3, Master, 3, Some(3))],
                trigger: Cause::Claim,
                want: (Follower, 4, Some(2), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "a strict claimant no quorum follows yet is no master",
                strict: true,
                floor,
                peers: vec![peer(2, NoRole, 0, None)],
                want: (NoRole, floor, Some(ME), Cause::PeerJoined),
                ..Row::default()
            },
            Row {
                name: "a strict claimant a quorum follows is master",
                strict: true,
                was: standing(Master, 5, Some(ME), true),
                peers: vec![peer(2, Follower, 5, Some(ME))],
                trigger: Cause::Claim,
                want: (Master, 5, Some(ME), Cause::Claim),
                ..Row::default()
            },
            Row {
                name: "its lease over, a strict master loses its role",
                strict: true,
                was: standing(Master, 5, Some(ME), true),
                peers: vec![Voter {
                    acked_sent: Mono(NOW - TIMEOUT),
                    ..peer(2, Follower, 5, Some(ME))
                }],
                trigger: Cause::QuorumLost,
                want: (NoRole, 5, Some(ME), Cause::QuorumLost),
                ..Row::default()
            },
        ]);
        let followed = run(&Row {
            best: Some(2),
            peers: vec![peer(2, Master, 3, Some(2))],
            ..Row::default()
        });
        assert_eq!(followed.standing.bound_until, Some(Mono(NOW + TIMEOUT)));
        let claim = run(&Row {
            strict: true,
            floor,
            peers: vec![peer(2, NoRole, 0, None)],
            ..Row::default()
        });
        assert!(claim.standing.claimed, "still claims, to be followed");
        assert_eq!(claim.standing.claim_sent, Mono(NOW));
    }

    #[test]
    fn a_lease_lasts_while_a_quorum_is_bound() {
        let terms = |quorum| LeaseTerms {
            me: addr(ME),
            quorum,
            lease_ms: 900,
        };
        let follows = |acked: u64| (state(Follower, 5, Some(ME)), Mono(acked));
        let none = std::iter::empty();
        assert_eq!(terms(1).end(5, Mono(0), none), Some(Mono::MAX), "alone");
        let three = [follows(100), follows(300), follows(200)];
        assert_eq!(
            terms(3).end(5, Mono(0), three.into_iter()),
            Some(Mono(1_100)),
            "the second latest of three bounds a quorum of 3"
        );
        assert_eq!(
            terms(3).end(5, Mono(250), three.into_iter()),
            Some(Mono(1_150)),
            "no follower is bound before the claim"
        );
        let stale = [(state(Follower, 4, Some(ME)), Mono(100))];
        assert_eq!(
            terms(2).end(5, Mono(0), stale.into_iter()),
            None,
            "older epoch"
        );
        let other = [(state(Follower, 5, Some(2)), Mono(100))];
        assert_eq!(
            terms(2).end(5, Mono(0), other.into_iter()),
            None,
            "another master"
        );
        assert_eq!(terms(5).end(5, Mono(0), three.into_iter()), None, "too few");
    }
}
