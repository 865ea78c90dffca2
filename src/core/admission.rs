//! Admission: what becomes of a HELLO, on a connection this node accepted
//! or one it dialled: refused (other settings, a duplicate, a peer in
//! its penalty), redirected to the master, replacing a restarted peer, or
//! established as a peer.
//!
//! It owns the handshake's decisions, made by `admit_inbound` and
//! `admit_outbound` without changing anything and carried out by
//! `on_inbound_hello` and `on_outbound_hello`, and the making of a peer
//! (`establish`, with a join's introductions). It never touches the
//! election's state: a new or lost peer only triggers `decide`.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::reconnect::{HEAL_INTERVAL_MS, Loss, Source};
use super::skew::SKEW_SAMPLES;
use super::{Cause, LinkId, Node, Origin, Peer};
use crate::event::Event;
use crate::protocol::{Hello, LinkKind, Message, Role, State};
use crate::time::Mono;

/// What becomes of a HELLO: decided by `Node::admit_inbound` or
/// `Node::admit_outbound` without changing anything, carried out by
/// `on_inbound_hello` or `on_outbound_hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Settings this cluster cannot share, or this node itself: why,
    /// naming both values.
    Mismatch(String),
    /// It broke the protocol and its backoff step runs: refused until this
    /// node's dial (`Some(ms)` left of the step, `None` while the dial runs).
    Penalized(Option<u64>),
    /// This member (address and instance) is a peer already.
    Duplicate,
    /// Same address, a new instance: the old process is gone, and its
    /// link `old` with it; what follows is decided on the view without it.
    Restarted { old: LinkId },
    /// Both sides dialled at once, and the link this node opened is the
    /// one both keep: the peer's is refused.
    Crossed,
    /// A join to a follower: sent on to the master. This node's own dial
    /// to the newcomer, if any, gives way.
    Redirect {
        master: SocketAddr,
        yield_dial: Option<LinkId>,
    },
    /// Established as a peer; this node's own dial to it, if any, gives way.
    Accept { yield_dial: Option<LinkId> },
}

/// A HELLO from the address of the established peer `existing`.
/// How the REFUSE of a HELLO from a member already connected starts; its
/// address follows.
const DUPLICATE_REFUSAL: &str = "already connected to ";

fn existing_member(existing: &Peer, h: &Hello) -> Admission {
    if existing.hello.instance == h.instance {
        Admission::Duplicate
    } else {
        Admission::Restarted { old: existing.link }
    }
}

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
                // A refusal is the other side's considered answer: retrying
                // would get the same one. Except "already connected": the
                // other side still holds a link to us that we lost, and
                // finds it dead soon (its EOF may be read after our HELLO,
                // as after a stall); meanwhile its own dial to us may have
                // been refused as crossing ours. So the dial counts as
                // failed and is retried with backoff; once we are peers
                // again the retry is dropped.
                let stale = reason.starts_with(DUPLICATE_REFUSAL);
                self.event(Event::RefusedByPeer { peer: addr, reason });
                if !stale {
                    self.wants.remove(&addr);
                }
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

    /// What becomes of a HELLO on a connection this node accepted; pure.
    pub(super) fn admit_inbound(&self, h: &Hello, now: Mono) -> Admission {
        if let Some(reason) = self.mismatch(h) {
            return Admission::Mismatch(reason);
        }
        if let Some(wait) = self.penalty_left(h.addr, now) {
            return Admission::Penalized(wait);
        }
        if let Some(existing) = self.peers.get(&h.addr) {
            return existing_member(existing, h);
        }
        // Both sides dialled at once. Both keep the link the lower address
        // opened, so exactly one survives.
        let yield_dial = self.dialing(h.addr);
        if yield_dial.is_some() && h.addr >= self.cfg.addr {
            return Admission::Crossed;
        }
        if h.kind == LinkKind::Join
            && self.role == Role::Follower
            && let Some(master) = self.master().filter(|m| *m != h.addr)
        {
            return Admission::Redirect { master, yield_dial };
        }
        Admission::Accept { yield_dial }
    }

    /// What becomes of the HELLO that answers this node's dial; pure.
    pub(super) fn admit_outbound(&self, h: &Hello) -> Admission {
        if let Some(reason) = self.mismatch(h) {
            return Admission::Mismatch(reason);
        }
        match self.peers.get(&h.addr) {
            Some(existing) => existing_member(existing, h),
            None => Admission::Accept { yield_dial: None },
        }
    }

    pub(super) fn on_inbound_hello(&mut self, link: LinkId, h: Hello, now: Mono) {
        let mut admission = self.admit_inbound(&h, now);
        if let Admission::Restarted { old } = admission {
            // Same address, new instance: the old process is gone.
            self.event(Event::PeerRestarted { peer: h.addr });
            self.close(old, now);
            self.replaced(h.addr, now);
            // The view changed (and maybe the master): decide again on it.
            admission = self.admit_inbound(&h, now);
        }
        match admission {
            Admission::Mismatch(reason) => {
                self.event(Event::PeerRefused {
                    peer: Some(h.addr),
                    reason: reason.clone(),
                });
                self.refuse(link, reason, now);
            }
            Admission::Penalized(wait) => self.refuse_violator(link, h.addr, wait, now),
            Admission::Duplicate => {
                let reason = format!("{DUPLICATE_REFUSAL}{}", self.cfg.addr);
                self.event(Event::DuplicateRefused { peer: h.addr });
                self.refuse(link, reason, now);
            }
            Admission::Crossed => {
                let reason = format!("duplicate link; {} keeps its own", self.cfg.addr);
                self.refuse(link, reason, now);
            }
            Admission::Redirect { master, yield_dial } => {
                self.yield_dial(yield_dial, now);
                self.event(Event::RedirectSent {
                    peer: h.addr,
                    master,
                });
                self.send(link, Message::Redirect(master));
                self.close(link, now);
            }
            Admission::Restarted { .. } => unreachable!("replaced() removed the old peer"),
            Admission::Accept { yield_dial } => {
                self.yield_dial(yield_dial, now);
                let reply = self.hello_on(link, h.kind);
                self.send(link, reply);
                let kind = h.kind;
                self.establish(link, kind, h, now);
            }
        }
    }

    /// It broke the protocol: this node calls it back when its backoff
    /// step ends, and not before (one violation per step).
    fn refuse_violator(&mut self, link: LinkId, addr: SocketAddr, wait: Option<u64>, now: Mono) {
        let when = match wait {
            Some(ms) => format!("it dials again in {ms} ms"),
            None => "it is dialling now".to_owned(),
        };
        let reason = format!(
            "{} backs off after a protocol violation by {addr}; {when}",
            self.cfg.addr
        );
        self.event(Event::ViolatorRefused {
            peer: addr,
            reason: when,
        });
        self.refuse(link, reason, now);
    }

    /// This node's own dial, crossed by the peer's, gives way.
    fn yield_dial(&mut self, dial: Option<LinkId>, now: Mono) {
        if let Some(dial) = dial {
            self.close(dial, now);
        }
    }

    pub(super) fn on_outbound_hello(
        &mut self,
        link: LinkId,
        dialed: SocketAddr,
        kind: LinkKind,
        h: Hello,
        now: Mono,
    ) {
        let admission = self.admit_outbound(&h);
        if let Admission::Mismatch(reason) = admission {
            self.event(Event::JoinDeclined {
                peer: dialed,
                reason,
            });
            self.wants.remove(&dialed);
            self.close(link, now);
            return;
        }
        if h.addr != dialed {
            self.renamed(dialed, h.addr);
        }
        match admission {
            Admission::Duplicate => {
                self.event(Event::DuplicateClosed { peer: h.addr });
                self.close(link, now);
                return;
            }
            Admission::Restarted { old } => {
                self.close(old, now);
                self.replaced(h.addr, now);
            }
            _ => debug_assert_eq!(admission, Admission::Accept { yield_dial: None }),
        }
        // The kind this node announced, whatever the reply says: the
        // acceptor answers with the same kind (`on_inbound_hello`).
        self.establish(link, kind, h, now);
    }

    /// The member dialled at `dialed` answers as `addr`.
    fn renamed(&mut self, dialed: SocketAddr, addr: SocketAddr) {
        self.event(Event::PeerRenamed { dialed, peer: addr });
        self.reached(dialed);
        // A `--join` target is known by the address it announces.
        if self.joins.remove(&dialed) {
            self.joins.insert(addr);
        }
    }

    /// The peer at `addr` restarted (a new instance): its old link, just
    /// closed, counts as lost, and the new one goes on from the backoff
    /// step of the old one (a member restarting in a loop, or a stranger
    /// taking its address over and over, is no reason to start afresh).
    pub(super) fn replaced(&mut self, addr: SocketAddr, now: Mono) {
        if let Some(old) = self.remove_peer(&addr) {
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
        if h.no_preempt != self.cfg.no_preempt {
            return Some(format!(
                "no-preempt mismatch: {} has {}, {} has {}",
                self.cfg.addr, self.cfg.no_preempt, h.addr, h.no_preempt
            ));
        }
        if h.preempt_delay_ms != self.cfg.preempt_delay_ms {
            return Some(format!(
                "preempt-delay mismatch: {} has {}, {} has {}",
                self.cfg.addr, self.cfg.preempt_delay_ms, h.addr, h.preempt_delay_ms
            ));
        }
        None
    }

    pub(super) fn establish(&mut self, link: LinkId, kind: LinkKind, h: Hello, now: Mono) {
        let addr = h.addr;
        let want = self.reached(addr);
        let (failures, flaps) = want.as_ref().map_or((0, 0), |w| (w.failures, w.flaps));
        // Dials to it had failed, and not because its links broke as soon
        // as they opened: the network between us may have healed.
        let healed = want.is_some_and(|w| w.failures > 0 && !w.suspect);
        self.link_established(link, addr);
        let relay_to = self.flood_join(link, kind, addr);
        let peer = Peer {
            relay_to,
            failures,
            flaps,
            ..self.new_peer(link, h, now)
        };
        self.insert_peer(addr, peer);
        self.event(Event::PeerJoined { peer: addr });
        self.heartbeats_soon(now);
        if healed && now >= self.next_heal {
            self.heal(now);
        }
        let state = self.state_msg();
        self.send(link, state);
        let announced = self.links.get(&link).map(|l| l.announced);
        if announced != Some((self.health(), self.cfg.priority)) {
            // Our HELLO left before the health or priority changed.
            self.send(
                link,
                Message::Rank {
                    health: self.health(),
                    priority: self.cfg.priority,
                },
            );
        }
        // A first heartbeat at once, which the peer echoes at once, so the
        // peer's clock offset is known one round trip after the handshake.
        self.ping(&[link], now);
        self.decide(Cause::PeerJoined, None, now);
    }

    /// Introduces the newcomer `addr` that came on a join `link`; returns
    /// the group to relay its acceptor's MEETs to, on a join this node
    /// dialed.
    ///
    /// A join link (`--join`, `-c`, a REDIRECT; both ends know it from
    /// HELLO) may connect two groups, G1 of the dialer and G2 of the
    /// acceptor. Each end introduces the newcomer to every other member
    /// of its group, so G2 dials the dialer and G1 the acceptor; and the
    /// acceptor sends the dialer its members ahead of its STATE, which
    /// the dialer passes on to G1 (`on_meet`), so G1 dials the rest of
    /// G2. One introduction per new pair, and no timer needed.
    ///
    /// A mesh link (an introduction, or a lost peer dialed again) floods
    /// nothing: its two ends were introduced by a member who told the rest
    /// of its group. Whatever is still missing (members of two groups a
    /// mesh link joined: a healed partition, a restart) the view digest
    /// in PING repairs (`sync_view`). Flooding every link cost n³/2 MEETs
    /// to form a mesh of n (docs/BENCHMARKS.md).
    fn flood_join(
        &mut self,
        link: LinkId,
        kind: LinkKind,
        addr: SocketAddr,
    ) -> Option<Vec<SocketAddr>> {
        let group_at_dial = self
            .links
            .get_mut(&link)
            .and_then(|l| l.group_at_dial.take());
        if kind != LinkKind::Join {
            return None;
        }
        let others: Vec<(SocketAddr, LinkId)> =
            self.peers.iter().map(|(a, p)| (*a, p.link)).collect();
        for &(_, other) in &others {
            self.send(other, Message::Meet(addr));
        }
        let accepted = self
            .links
            .get(&link)
            .is_some_and(|l| matches!(l.origin, Origin::Inbound));
        if !accepted {
            return Some(group_at_dial.unwrap_or_default());
        }
        for &(member, _) in &others {
            self.send(link, Message::Meet(member));
        }
        None
    }

    /// A peer whose handshake just finished on `link`.
    fn new_peer(&self, link: LinkId, hello: Hello, now: Mono) -> Peer {
        Peer {
            link,
            health: hello.health,
            eligible_since: now,
            hello,
            state: State {
                role: Role::None,
                epoch: 0,
                epoch_master: None,
            },
            last_heard: now,
            // Introductions (a join's, or the one that made this mesh
            // link) are still in flight: view digests differ until they
            // land, so the mesh is not repaired by digest before the next
            // heartbeat.
            next_sync: now.plus(self.cfg.heartbeat_ms),
            their_view: 0,
            acked_sent: Mono::ZERO,
            heard_ping: None,
            pinged_at: None,
            sampled_at: Mono::ZERO,
            echoed_at: None,
            state_known: false,
            skew_samples: VecDeque::with_capacity(SKEW_SAMPLES),
            relay_to: None,
            relayed: 0,
            established: now,
            failures: 0,
            flaps: 0,
            meets_dropped: false,
            lease_margin_warned: false,
        }
    }

    /// An address that failed before answers: the network (or a
    /// partition) may have healed, so the other lost peers waiting out
    /// their backoff are dialed now, not up to 5 s later. Mesh links
    /// flood no introductions, which used to start them.
    fn heal(&mut self, now: Mono) {
        self.next_heal = now.plus(HEAL_INTERVAL_MS);
        for w in self.wants.values_mut() {
            if w.next_try.is_some() && !w.suspect {
                w.next_try = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each admission decision, reached through the node's own handshake.

    use super::*;
    use crate::core::Action;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 7400))
    }

    fn node(n: u8) -> Node {
        crate::core::test_node(n)
    }

    fn hello(n: u8, instance: u64, kind: LinkKind) -> Hello {
        let Message::Hello(mut h) = node(n).hello(kind) else {
            unreachable!("hello() makes a HELLO")
        };
        h.instance = instance;
        h
    }

    /// `n` accepted as a peer of `node` on `link`, from its first process.
    fn accept(node: &mut Node, link: LinkId, n: u8, kind: LinkKind) {
        node.handle_accepted(link, Mono(1));
        let h = hello(n, u64::from(n), kind);
        node.handle_message(link, Message::Hello(h), Mono(1));
        assert!(node.peers.contains_key(&addr(n)));
    }

    #[test]
    fn settings_and_the_node_itself_are_refused() {
        let n = node(1);
        let mut other = hello(2, 2, LinkKind::Mesh);
        other.quorum = 2;
        let Admission::Mismatch(reason) = n.admit_inbound(&other, Mono(1)) else {
            panic!("a quorum mismatch is refused")
        };
        assert_eq!(
            reason,
            "quorum mismatch: 127.0.0.1:7400 has 1, 127.0.0.2:7400 has 2"
        );
        let itself = hello(3, 1, LinkKind::Mesh);
        assert!(matches!(
            n.admit_inbound(&itself, Mono(1)),
            Admission::Mismatch(_)
        ));
        assert!(matches!(n.admit_outbound(&other), Admission::Mismatch(_)));
    }

    #[test]
    fn a_member_is_a_peer_once_and_a_new_instance_replaces_it() {
        let mut n = node(1);
        accept(&mut n, 10, 2, LinkKind::Mesh);
        let again = hello(2, 2, LinkKind::Mesh);
        assert_eq!(n.admit_inbound(&again, Mono(2)), Admission::Duplicate);
        assert_eq!(n.admit_outbound(&again), Admission::Duplicate);
        let restarted = hello(2, 22, LinkKind::Mesh);
        assert_eq!(
            n.admit_inbound(&restarted, Mono(2)),
            Admission::Restarted { old: 10 }
        );
        n.handle_accepted(11, Mono(2));
        n.handle_message(11, Message::Hello(restarted), Mono(2));
        assert_eq!(n.peers[&addr(2)].link, 11, "the new link replaced the old");
        assert_eq!(n.peers[&addr(2)].hello.instance, 22);
        assert!(!n.links.contains_key(&10));
    }

    #[test]
    fn a_refusal_as_already_connected_is_retried_others_are_not() {
        let mut n = node(2);
        for (link, k) in [(20, 1u8), (30, 3)] {
            n.connect(addr(k), Mono(0)).unwrap();
            n.handle_dialed(link, addr(k), LinkKind::Join, Mono(1));
        }
        // 1 still holds a link to us that we lost (its EOF not read yet).
        let stale = format!("{DUPLICATE_REFUSAL}{}", addr(1));
        n.handle_message(20, Message::Refuse(stale), Mono(2));
        n.handle_message(30, Message::Refuse("rule mismatch".into()), Mono(2));
        while n.poll_action().is_some() {}
        let retry = n.wants.get(&addr(1)).and_then(|w| w.next_try);
        assert!(retry.is_some_and(|t| t > Mono(2)), "retried with backoff");
        assert!(!n.wants.contains_key(&addr(3)), "a considered answer");
        // Once 1 dials us and the two are peers, the retry is dropped.
        accept(&mut n, 21, 1, LinkKind::Mesh);
        n.handle_timeout(retry.expect("checked"));
        assert!(!n.wants.contains_key(&addr(1)));
        assert!(
            n.poll_action()
                .into_iter()
                .all(|a| !matches!(a, Action::Connect { .. }))
        );
    }

    #[test]
    fn crossed_dials_keep_the_lower_address_link() {
        let mut n = node(2);
        n.connect(addr(1), Mono(0)).unwrap();
        n.connect(addr(3), Mono(0)).unwrap();
        n.handle_dialed(20, addr(1), LinkKind::Join, Mono(1));
        n.handle_dialed(30, addr(3), LinkKind::Join, Mono(1));
        let lower = hello(1, 1, LinkKind::Join);
        let higher = hello(3, 3, LinkKind::Join);
        assert_eq!(
            n.admit_inbound(&lower, Mono(1)),
            Admission::Accept {
                yield_dial: Some(20)
            },
            "the lower address opened the link both keep"
        );
        assert_eq!(n.admit_inbound(&higher, Mono(1)), Admission::Crossed);
    }

    #[test]
    fn a_follower_redirects_a_join_to_its_master() {
        let mut n = node(2);
        accept(&mut n, 10, 1, LinkKind::Join);
        let claim = State {
            role: Role::Master,
            epoch: 4,
            epoch_master: Some(addr(1)),
        };
        n.handle_message(10, Message::State(claim), Mono(2));
        assert_eq!(n.role, Role::Follower);
        let join = hello(3, 3, LinkKind::Join);
        assert_eq!(
            n.admit_inbound(&join, Mono(2)),
            Admission::Redirect {
                master: addr(1),
                yield_dial: None
            }
        );
        let mesh = hello(3, 3, LinkKind::Mesh);
        assert_eq!(
            n.admit_inbound(&mesh, Mono(2)),
            Admission::Accept { yield_dial: None },
            "a mesh link is no join"
        );
    }

    #[test]
    fn a_violator_waits_out_its_backoff() {
        let mut n = node(1);
        accept(&mut n, 10, 2, LinkKind::Mesh);
        n.handle_message(10, Message::Hello(hello(2, 2, LinkKind::Mesh)), Mono(5));
        assert!(
            !n.peers.contains_key(&addr(2)),
            "a HELLO after the handshake"
        );
        let back = hello(2, 2, LinkKind::Mesh);
        let Admission::Penalized(Some(ms)) = n.admit_inbound(&back, Mono(5)) else {
            panic!("refused while its backoff runs")
        };
        assert!(ms > 0);
        let after = Mono(5).plus(ms);
        n.handle_timeout(after);
        let dial =
            std::iter::from_fn(|| n.poll_action()).find(|a| matches!(a, Action::Connect { .. }));
        assert_eq!(
            dial,
            Some(Action::Connect {
                addr: addr(2),
                kind: LinkKind::Mesh
            }),
            "this node calls it back when the step ends"
        );
        assert_eq!(
            n.admit_inbound(&back, after),
            Admission::Penalized(None),
            "and refuses it while that dial runs"
        );
        n.handle_dial_failed(addr(2), "connection refused", after);
        assert_eq!(
            n.admit_inbound(&back, after),
            Admission::Accept { yield_dial: None },
            "once that dial failed it is let in: it may be reachable one way only"
        );
    }
}
