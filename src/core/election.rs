//! The election: who is master, at which epoch, and why.
//!
//! It owns the epoch's bounds (`MAX_EPOCH`, `MAX_EPOCH_LEAD_MS`), the
//! decision from the view and the peers' last STATE (`decide`), and the
//! strict lease. The role and epoch change only in `Node::set_state`.

use std::net::SocketAddr;

use super::{Cause, Node};
use crate::event::Event;
use crate::protocol::Role;
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

impl Node {
    /// Recomputes this node's role from its view and its peers' last STATE.
    /// `departed` is the peer whose loss (or leave) triggered this, if any.
    pub(super) fn decide(&mut self, event: Cause, departed: Option<SocketAddr>, now: Mono) {
        if self.left {
            return;
        }
        let me = self.cfg.addr;
        let view = 1 + self.peers.len();
        let old_master = self.master();
        let master_gone = departed.is_some() && departed == old_master && old_master != Some(me);
        let best = self.ranking()[0].addr;
        // With --strict a node bound to one master takes no other until the
        // binding runs out or that master releases it.
        let free_for = |who: SocketAddr| {
            !self.cfg.strict
                || self.epoch_master == Some(who)
                || self.bound_until.is_none_or(|t| now >= t)
        };
        let mut claimed = false;
        let (mut role, epoch, epoch_master) = if view < self.cfg.quorum as usize {
            (Role::None, self.epoch, self.epoch_master)
        } else if best == me {
            let contested = self.peers.values().any(|p| {
                p.state.epoch > self.epoch
                    || (p.state.epoch == self.epoch && p.state.epoch_master != Some(me))
            });
            let unknown = self.peers.values().any(|p| !p.state_known);
            if !free_for(me) || (!self.claimed && unknown) {
                (Role::None, self.epoch, self.epoch_master)
            } else if self.claimed && !contested {
                claimed = true;
                (Role::Master, self.epoch, self.epoch_master)
            } else {
                let highest = self
                    .peers
                    .values()
                    .map(|p| p.state.epoch)
                    .max()
                    .unwrap_or(0);
                let floor = if self.cfg.strict {
                    self.wall(now).ms()
                } else {
                    0
                };
                match self.epoch.max(highest).checked_add(1).map(|e| e.max(floor)) {
                    Some(epoch) if epoch <= MAX_EPOCH => {
                        claimed = true;
                        self.claim_sent = now;
                        (Role::Master, epoch, Some(me))
                    }
                    // No epoch is left to claim: rather no master than a
                    // fencing token that wraps or no client can hold.
                    _ => {
                        self.epoch_exhausted(highest);
                        (Role::None, self.epoch, self.epoch_master)
                    }
                }
            }
        } else {
            let s = self.peers[&best].state;
            let claims = s.role == Role::Master && s.epoch_master == Some(best);
            let acceptable =
                s.epoch > self.epoch || (s.epoch == self.epoch && self.epoch_master == Some(best));
            if claims && acceptable && free_for(best) {
                if self.epoch_master != Some(best) || self.role != Role::Follower {
                    self.bound_until = Some(now.plus(self.cfg.timeout_ms));
                }
                (Role::Follower, s.epoch, Some(best))
            } else {
                (Role::None, self.epoch, self.epoch_master)
            }
        };
        self.claimed = claimed;
        if claimed && self.cfg.strict && self.lease_until(now).is_none_or(|t| now >= t) {
            // A strict claimant is master only while a quorum is bound to it.
            role = Role::None;
        }
        let cause = if view < self.cfg.quorum as usize {
            Cause::QuorumLost
        } else if master_gone {
            match event {
                Cause::PeerLeft => Cause::MasterLeft,
                _ => Cause::MasterLost,
            }
        } else if self.role == Role::Master && role != Role::Master {
            if best == me {
                Cause::QuorumLost
            } else {
                Cause::Outranked
            }
        } else if role != Role::None
            && let Some(lost) = self.lost_master.take()
        {
            lost
        } else {
            event
        };
        if role == Role::None && matches!(cause, Cause::MasterLost | Cause::MasterLeft) {
            self.lost_master = Some(cause);
        }
        self.set_state(role, epoch, epoch_master, cause, now);
        self.check_start_doubt();
    }

    /// Until when a quorum is surely bound to this claimant (`--strict`):
    /// each follower is bound at least until the last heartbeat it
    /// acknowledged, or the claim, was sent, plus `timeout`; the lease
    /// ends a heartbeat before that, as a margin for clock rates.
    /// `None` when fewer than quorum - 1 peers follow.
    pub(super) fn lease_until(&self, _now: Mono) -> Option<Mono> {
        let need = self.cfg.quorum.saturating_sub(1) as usize;
        if need == 0 {
            // A quorum of one is this node alone: it is never unbound.
            return Some(Mono::MAX);
        }
        let me = Some(self.cfg.addr);
        let lease = self.cfg.timeout_ms.saturating_sub(self.cfg.heartbeat_ms);
        let mut bound: Vec<Mono> = self
            .peers
            .values()
            // Only followers of this claim: a STATE from before it (this node
            // may have stopped and claimed again) proves no binding now.
            .filter(|p| {
                p.state.role == Role::Follower
                    && p.state.epoch_master == me
                    && p.state.epoch == self.epoch
            })
            .map(|p| p.acked_sent.max(self.claim_sent).plus(lease))
            .collect();
        if bound.len() < need {
            return None;
        }
        bound.sort_unstable_by(|a, b| b.cmp(a));
        Some(bound[need - 1])
    }

    /// Logs once that no epoch above `highest` (or this node's own) can be
    /// claimed.
    pub(super) fn epoch_exhausted(&mut self, highest: u64) {
        if self.epoch_exhausted {
            return;
        }
        self.epoch_exhausted = true;
        let epoch = self.epoch.max(highest);
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
