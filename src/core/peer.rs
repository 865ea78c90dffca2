//! Established peers: what each line from one does once its handshake
//! is done (STATE, MEET, MSG, PING, LEAVE), and what becomes of a
//! peer that breaks the protocol.
//!
//! It owns the dispatch of a peer's lines and the relay of a join's
//! introductions; each line's meaning is left to its concern (`election`
//! for STATE, `mesh` for MEET, `heartbeat` and `skew` for PING).
//! It never changes the role itself: a STATE or a lost peer only calls
//! `decide`.

use std::net::SocketAddr;

use super::eligibility::health_cause;
use super::mesh::MAX_INTRODUCED_PER_PEER;
use super::reconnect::Loss;
use super::{Action, Cause, LinkId, Node};
use crate::event::Event;
use crate::protocol::{Health, Message, Role, State};
use crate::time::Mono;

impl Node {
    /// A line from the established peer `addr` on its link.
    pub(super) fn on_peer_message(
        &mut self,
        link: LinkId,
        addr: SocketAddr,
        msg: Message,
        now: Mono,
    ) {
        self.heard_now(addr, now);
        let from_my_master = self.epoch_master == Some(addr) && addr != self.cfg.addr;
        if from_my_master && self.role == Role::Follower {
            self.bound_until = Some(now.plus(self.cfg.timeout_ms));
        }
        match msg {
            Message::State(s) => self.on_state(link, addr, s, from_my_master, now),
            Message::Meet(other) => self.on_meet(addr, other, now),
            Message::Msg(text) => self.actions.push_back(Action::Deliver {
                from: addr,
                text: crate::protocol::printable(&text),
            }),
            Message::Ping {
                seq,
                view,
                fresh_ms,
                echo,
            } => self.on_ping(link, addr, seq, view, fresh_ms, echo, now),
            Message::Leave => self.on_leave(link, addr, from_my_master, now),
            Message::Rank { health, priority } => self.on_rank(addr, health, priority, now),
            Message::Release { epoch, next } => self.on_release(addr, epoch, next, now),
            other => {
                let reason = format!("{} after the handshake", other.name());
                self.violation(link, addr, None, &reason, now);
            }
        }
    }

    fn on_state(&mut self, link: LinkId, addr: SocketAddr, s: State, from_master: bool, now: Mono) {
        if let Some(reason) = self.epoch_refusal(s.epoch, now) {
            // A peer sending it is broken or hostile: following it would
            // use the range up (guarantee 9).
            self.violation(link, addr, Some(("STATE", s.epoch)), &reason, now);
            return;
        }
        let mut trigger = Cause::Claim;
        if let Some(p) = self.peers.get_mut(&addr) {
            let claimed = p.state.role == Role::Master && p.state.epoch_master == Some(addr);
            let health = p.health;
            p.state = s;
            p.state_known = true;
            p.relay_to = None;
            if claimed && s.role != Role::Master {
                // It stepped down while reachable: its RELEASE follows
                // once its hook has ended (guarantee 11).
                trigger = match health {
                    Health::Ok => Cause::Handover,
                    other => health_cause(Health::Ok, other),
                };
                self.await_release(addr, trigger, now);
            }
        }
        if from_master && s.role != Role::Master {
            // The master gave up its claim: it releases us.
            self.bound_until = None;
        }
        self.decide(trigger, None, now);
    }

    /// `by` introduced `other`. On a join link this node dialed, MEETs
    /// before the peer's first STATE are the acceptor's members
    /// (`establish`): they are passed on to the members we had when we
    /// dialed (those who linked to us since came mostly from the
    /// acceptor's group), and not dialed from here, since the acceptor
    /// introduced us to each of them.
    fn on_meet(&mut self, by: SocketAddr, other: SocketAddr, now: Mono) {
        let left_lately = self.departed.get(&other).is_some_and(|t| now < *t);
        let Some(p) = self.peers.get(&by) else {
            return;
        };
        if p.relay_to.is_some() {
            if other != self.cfg.addr && !left_lately {
                self.relay_meet(by, other);
            }
        } else if other != self.cfg.addr && !self.peers.contains_key(&other) && !left_lately {
            self.introduce(other, by, now);
        }
    }

    /// Passes `other`, introduced by the acceptor `by` of our join, on to
    /// our group, within [`MAX_INTRODUCED_PER_PEER`] per link.
    fn relay_meet(&mut self, by: SocketAddr, other: SocketAddr) {
        let Some(p) = self.peers.get_mut(&by) else {
            return;
        };
        if p.relayed >= MAX_INTRODUCED_PER_PEER {
            self.meets_dropped(by);
            return;
        }
        p.relayed += 1;
        let links: Vec<LinkId> = self.peers[&by]
            .relay_to
            .iter()
            .flatten()
            .filter(|a| **a != other)
            .filter_map(|a| self.peers.get(a))
            .map(|p| p.link)
            .collect();
        for l in links {
            self.send(l, Message::Meet(other));
        }
    }

    /// `addr` leaves the cluster: it is dropped at once and not called
    /// back, and introductions naming it are ignored for two timeouts.
    fn on_leave(&mut self, link: LinkId, addr: SocketAddr, from_master: bool, now: Mono) {
        self.event(Event::PeerLeft { peer: addr });
        if from_master {
            self.bound_until = None;
        }
        if self.awaiting.is_some_and(|(a, _)| a == addr) {
            // A leaving master's LEAVE is its release.
            self.awaiting = None;
            self.lost_master = Some(Cause::MasterLeft);
        }
        self.departed
            .insert(addr, now.plus(self.cfg.timeout_ms.saturating_mul(2)));
        self.remove_link(link);
        self.remove_peer(&addr);
        self.wants.remove(&addr);
        self.actions.push_back(Action::Close(link));
        self.decide(Cause::PeerLeft, Some(addr), now);
    }

    /// The established peer `addr` broke the protocol on `link` (`message`
    /// names the line and its epoch, when an epoch was the fault). The link
    /// closes and the peer counts as lost, but it is neither forgotten nor
    /// let straight back: it is dialled again after the next step of its
    /// backoff, and its own HELLOs are refused until then, so a peer that
    /// breaks every link costs one link and one log line per step.
    pub(super) fn violation(
        &mut self,
        link: LinkId,
        addr: SocketAddr,
        message: Option<(&'static str, u64)>,
        reason: &str,
        now: Mono,
    ) {
        self.violations = self.violations.saturating_add(1);
        self.event(Event::ProtocolViolation {
            peer: Some(addr),
            message,
            reason: reason.to_owned(),
        });
        self.remove_link(link);
        self.actions.push_back(Action::Close(link));
        if self.peers.get(&addr).is_some_and(|p| p.link == link) {
            let peer = self.remove_peer(&addr).expect("checked above");
            self.lose(addr, &peer, Loss::Violation, now);
            self.decide(Cause::PeerLost, Some(addr), now);
        }
    }
}
