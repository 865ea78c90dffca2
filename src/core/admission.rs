//! Admission: what becomes of a HELLO, on a connection this node accepted
//! or one it dialled: refused (other settings, a duplicate, a peer in
//! its penalty), redirected to the master, replacing a restarted peer, or
//! established as a peer.
//!
//! It owns the handshake's decisions and the making of a peer
//! (`establish`). It never touches the election's state: a new or lost
//! peer only triggers `decide`.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::reconnect::{HEAL_INTERVAL_MS, Loss, Source};
use super::skew::SKEW_SAMPLES;
use super::{Cause, LinkId, Node, Origin, Peer};
use crate::event::Event;
use crate::protocol::{Hello, LinkKind, Message, Role, State};
use crate::time::Mono;

impl Node {
    pub(super) fn on_handshake_message(
        &mut self,
        link: LinkId,
        origin: Origin,
        msg: Message,
        now: Mono,
    ) {
        match (origin, msg) {
            (Origin::Inbound, Message::Hello(h)) => self.on_inbound_hello(link, h, now),
            (Origin::Outbound { addr, kind }, Message::Hello(h)) => {
                self.on_outbound_hello(link, addr, kind, h, now)
            }
            (Origin::Outbound { addr, .. }, Message::Refuse(reason)) => {
                self.event(Event::RefusedByPeer { peer: addr, reason });
                // A refusal is the other side's considered answer: retrying
                // would get the same one.
                self.wants.remove(&addr);
                self.close(link, now);
            }
            (Origin::Outbound { addr, .. }, Message::Redirect(master)) => {
                self.event(Event::RedirectFollowed { peer: addr, master });
                // The join stays wanted, retried with backoff, until this
                // node is meshed with the redirecting member: the master it
                // names may be dead and the group about to elect another.
                if self.peers.contains_key(&master)
                    && let Some(w) = self.wants.get_mut(&addr)
                {
                    w.kind = LinkKind::Mesh;
                }
                self.close(link, now);
                if master != self.cfg.addr && !self.peers.contains_key(&master) {
                    // An introduction by the redirecting member: if the
                    // master it names is dead, the join to that member
                    // goes on and is redirected to the next one.
                    self.want(master, LinkKind::Join, Source::Introduced { by: addr }, now);
                }
            }
            (origin, other) => {
                let reason = format!("{} before the handshake", other.name());
                self.handshake_violation(link, origin, &reason, now);
            }
        }
    }

    /// A link still in its handshake broke the protocol: it is closed and
    /// logged; a dial that gets this counts as failed, retried with
    /// backoff, so one line per attempt.
    pub(super) fn handshake_violation(
        &mut self,
        link: LinkId,
        origin: Origin,
        reason: &str,
        now: Mono,
    ) {
        let dialed = match origin {
            Origin::Outbound { addr, .. } => Some(addr),
            Origin::Inbound => None,
        };
        self.event(Event::ProtocolViolation {
            peer: dialed,
            message: None,
            reason: reason.to_owned(),
        });
        self.close(link, now);
    }

    pub(super) fn on_inbound_hello(&mut self, link: LinkId, h: Hello, now: Mono) {
        if let Some(reason) = self.mismatch(&h) {
            self.event(Event::PeerRefused {
                peer: Some(h.addr),
                reason: reason.clone(),
            });
            self.refuse(link, reason, now);
            return;
        }
        if let Some(wait) = self.penalty_left(h.addr, now) {
            // It broke the protocol: this node calls it back when its
            // backoff step ends, and not before (one violation per step).
            let when = match wait {
                Some(ms) => format!("it dials again in {ms} ms"),
                None => "it is dialling now".to_owned(),
            };
            let reason = format!(
                "{} backs off after a protocol violation by {}; {when}",
                self.cfg.addr, h.addr
            );
            self.event(Event::ViolatorRefused {
                peer: h.addr,
                reason: when,
            });
            self.refuse(link, reason, now);
            return;
        }
        if let Some(existing) = self.peers.get(&h.addr) {
            if existing.hello.instance == h.instance {
                let reason = format!("already connected to {}", self.cfg.addr);
                self.event(Event::DuplicateRefused { peer: h.addr });
                self.refuse(link, reason, now);
                return;
            }
            // Same address, new instance: the old process is gone.
            let old = existing.link;
            self.event(Event::PeerRestarted { peer: h.addr });
            self.close(old, now);
            self.replaced(h.addr, now);
        }
        if let Some(dial) = self.dialing(h.addr) {
            // Both sides dialled at once. Both keep the link the lower
            // address opened, so exactly one survives.
            if h.addr < self.cfg.addr {
                self.close(dial, now);
            } else {
                let reason = format!("duplicate link; {} keeps its own", self.cfg.addr);
                self.refuse(link, reason, now);
                return;
            }
        }
        if h.kind == LinkKind::Join
            && self.role == Role::Follower
            && let Some(master) = self.master().filter(|m| *m != h.addr)
        {
            self.event(Event::RedirectSent {
                peer: h.addr,
                master,
            });
            self.send(link, Message::Redirect(master));
            self.close(link, now);
            return;
        }
        let reply = self.hello(h.kind);
        self.send(link, reply);
        let kind = h.kind;
        self.establish(link, kind, h, now);
    }

    pub(super) fn on_outbound_hello(
        &mut self,
        link: LinkId,
        dialed: SocketAddr,
        kind: LinkKind,
        h: Hello,
        now: Mono,
    ) {
        if let Some(reason) = self.mismatch(&h) {
            self.event(Event::JoinDeclined {
                peer: dialed,
                reason,
            });
            self.wants.remove(&dialed);
            self.close(link, now);
            return;
        }
        if h.addr != dialed {
            self.event(Event::PeerRenamed {
                dialed,
                peer: h.addr,
            });
            self.reached(dialed);
            // A `--join` target is known by the address it announces.
            if self.joins.remove(&dialed) {
                self.joins.insert(h.addr);
            }
        }
        if let Some(existing) = self.peers.get(&h.addr) {
            if existing.hello.instance == h.instance {
                self.event(Event::DuplicateClosed { peer: h.addr });
                self.close(link, now);
                return;
            }
            let old = existing.link;
            self.close(old, now);
            self.replaced(h.addr, now);
        }
        // The kind this node announced, whatever the reply says: the
        // acceptor answers with the same kind (`on_inbound_hello`).
        self.establish(link, kind, h, now);
    }

    /// The peer at `addr` restarted (a new instance): its old link, just
    /// closed, counts as lost, and the new one goes on from the backoff
    /// step of the old one (a member restarting in a loop, or a stranger
    /// taking its address over and over, is no reason to start afresh).
    pub(super) fn replaced(&mut self, addr: SocketAddr, now: Mono) {
        if let Some(old) = self.peers.remove(&addr) {
            self.lose(addr, &old, Loss::Closed, now);
        }
        self.decide(Cause::PeerLost, Some(addr), now);
    }

    /// Why a peer with these settings cannot join us, naming both values.
    pub(super) fn mismatch(&self, h: &Hello) -> Option<String> {
        if h.instance == self.cfg.instance {
            return Some(format!("{} connected to itself", self.cfg.addr));
        }
        if h.addr == self.cfg.addr {
            return Some(format!("{} is this node's own address", h.addr));
        }
        if h.rule != self.cfg.rule {
            return Some(format!(
                "rule mismatch: {} has {}, {} has {}",
                self.cfg.addr, self.cfg.rule, h.addr, h.rule
            ));
        }
        if h.quorum != self.cfg.quorum {
            return Some(format!(
                "quorum mismatch: {} has {}, {} has {}",
                self.cfg.addr, self.cfg.quorum, h.addr, h.quorum
            ));
        }
        if h.strict != self.cfg.strict {
            return Some(format!(
                "strict mismatch: {} has {}, {} has {}",
                self.cfg.addr, self.cfg.strict, h.addr, h.strict
            ));
        }
        None
    }

    pub(super) fn establish(&mut self, link: LinkId, kind: LinkKind, h: Hello, now: Mono) {
        let addr = h.addr;
        let want = self.reached(addr);
        let failures = want.as_ref().map_or(0, |w| w.failures);
        let flaps = want.as_ref().map_or(0, |w| w.flaps);
        // Dials to it had failed, and not because its links broke as soon
        // as they opened: the network between us may have healed.
        let healed = want.is_some_and(|w| w.failures > 0 && !w.suspect);
        if let Some(l) = self.links.get_mut(&link) {
            l.peer = Some(addr);
        }
        // A join link (`--join`, `-c`, a REDIRECT; both ends know it from
        // HELLO) may connect two groups, G1 of the dialer and G2 of the
        // acceptor. Each end introduces the newcomer to every other member
        // of its group, so G2 dials the dialer and G1 the acceptor; and
        // the acceptor sends the dialer its members ahead of its STATE,
        // which the dialer passes on to G1 (`on_peer_message`), so G1
        // dials the rest of G2. One introduction per new pair, and no
        // timer needed.
        //
        // A mesh link (an introduction, or a lost peer dialed again)
        // floods nothing: its two ends were introduced by a member who
        // told the rest of its group. Whatever is still missing (members
        // of two groups a mesh link joined: a healed partition, a restart)
        // the view digest in PING repairs (`sync_view`). Flooding every
        // link cost n³/2 MEETs to form a mesh of n (docs/BENCHMARKS.md).
        let mut relay_to = None;
        let group_at_dial = self
            .links
            .get_mut(&link)
            .and_then(|l| l.group_at_dial.take());
        if kind == LinkKind::Join {
            let others: Vec<(SocketAddr, LinkId)> =
                self.peers.iter().map(|(a, p)| (*a, p.link)).collect();
            for &(_, other) in &others {
                self.send(other, Message::Meet(addr));
            }
            let accepted = self
                .links
                .get(&link)
                .is_some_and(|l| matches!(l.origin, Origin::Inbound));
            if accepted {
                for &(member, _) in &others {
                    self.send(link, Message::Meet(member));
                }
            } else {
                relay_to = Some(group_at_dial.unwrap_or_default());
            }
        }
        self.peers.insert(
            addr,
            Peer {
                link,
                hello: h,
                state: State {
                    role: Role::None,
                    epoch: 0,
                    epoch_master: None,
                },
                last_heard: now,
                // Introductions (a join's, or the one that made this mesh
                // link) are still in flight: view digests differ until
                // they land, so the mesh is not repaired by digest before
                // the next heartbeat.
                next_sync: now.plus(self.cfg.heartbeat_ms),
                acked_sent: Mono::ZERO,
                state_known: false,
                skew_samples: VecDeque::with_capacity(SKEW_SAMPLES),
                relay_to,
                relayed: 0,
                established: now,
                failures,
                flaps,
                meets_dropped: false,
                lease_margin_warned: false,
            },
        );
        self.event(Event::PeerJoined { peer: addr });
        if self.next_heartbeat.is_none() {
            self.next_heartbeat = Some(now.plus(self.cfg.heartbeat_ms));
        }
        if healed && now >= self.next_heal {
            // An address that failed before answers: the network (or a
            // partition) may have healed, so the other lost peers waiting
            // out their backoff are dialed now, not up to 5 s later. Mesh
            // links flood no introductions, which used to start them.
            self.next_heal = now.plus(HEAL_INTERVAL_MS);
            for w in self.wants.values_mut() {
                if w.next_try.is_some() && !w.suspect {
                    w.next_try = Some(now);
                }
            }
        }
        let state = self.state_msg();
        self.send(link, state);
        // A first heartbeat at once, so the peer's clock offset is known
        // one round trip after the handshake.
        self.ping(&[link], now);
        self.decide(Cause::PeerJoined, None, now);
    }
}
