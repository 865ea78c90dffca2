//! The node's invariants, checked after every `handle_*` (and every other
//! call that changes the node) in debug builds: the tests, the scripted
//! scenarios and the 10,000-seed simulator run with them on, so a state
//! the code never meant to reach fails where it is reached, not a few
//! events later where a guarantee breaks.
//!
//! It owns only checks: it never changes the node (beyond remembering
//! the epoch and master it last saw) and costs nothing in release builds.
//! Each check is about this node's own state, never about what a peer
//! sent, which may be anything.

use std::net::SocketAddr;

use super::heartbeat::MAX_PINGS_KEPT;
use super::skew::SKEW_SAMPLES;
use super::{
    JOURNAL_LEN, MAX_DIALS_IN_FLIGHT, MAX_EPOCH, MAX_INTRODUCED_PER_PEER, MAX_WANTED, Node,
};
use crate::protocol::Role;

impl Node {
    /// Checks every invariant in debug builds; nothing in release builds.
    pub(super) fn audit(&mut self) {
        if cfg!(debug_assertions) {
            self.check_links();
            self.check_standing();
            self.check_limits();
            self.check_kept();
            self.audited = (self.epoch, self.epoch_master);
        }
    }

    /// Peers and links agree: every peer has one link, that link names it,
    /// and a link that names a peer is that peer's only link.
    fn check_links(&self) {
        let me = self.cfg.addr;
        for (addr, p) in &self.peers {
            assert_ne!(*addr, me, "this node is no peer of its own");
            assert_eq!(
                p.hello.addr, *addr,
                "a peer is known by its HELLO's address"
            );
            let link = self.links.get(&p.link);
            assert_eq!(
                link.and_then(|l| l.peer),
                Some(*addr),
                "the link of peer {addr} names it"
            );
        }
        // Every peer's link names it, so as many links name a peer as
        // there are peers only if each of those links is its peer's one.
        let named = self.links.values().filter(|l| l.peer.is_some()).count();
        assert_eq!(
            named,
            self.peers.len(),
            "a link names a peer it is not the link of"
        );
        assert!(
            !self.wants.contains_key(&me),
            "this node never dials itself"
        );
        if self.left {
            assert!(self.links.is_empty() && self.peers.is_empty() && self.wants.is_empty());
            assert_eq!(self.role, Role::None, "a node that left has no role");
        }
    }

    /// The role, the claim and the epoch agree, and the epoch only grows:
    /// one master per epoch in this node's view.
    fn check_standing(&self) {
        let me = Some(self.cfg.addr);
        assert!(self.epoch <= MAX_EPOCH, "epochs stay within MAX_EPOCH");
        match self.role {
            Role::Master => assert!(
                self.claimed && self.epoch_master == me,
                "a master claims its epoch, which names it"
            ),
            Role::Follower => assert!(
                self.epoch_master.is_some() && self.epoch_master != me,
                "a follower follows another member"
            ),
            Role::None => {}
        }
        assert!(
            !self.claimed || self.epoch_master == me,
            "a claim names this node as the epoch's master"
        );
        let (epoch, master): (u64, Option<SocketAddr>) = self.audited;
        assert!(
            self.epoch >= epoch,
            "epoch {} went back from {epoch}",
            self.epoch
        );
        if self.epoch == epoch && master.is_some() {
            assert_eq!(
                self.epoch_master, master,
                "epoch {epoch} has one master in this node's view"
            );
        }
    }

    /// What is kept up to date instead of recomputed on every line equals
    /// its recomputation: the view digest, the peers by time last heard,
    /// the links in their handshake by time opened,
    /// the ranking's first two, and the
    /// best eligible member (the ranking's first eligible one).
    fn check_kept(&self) {
        assert_eq!(
            self.view_digest(),
            self.view_digest_recomputed(),
            "the kept view digest is the view's"
        );
        assert!(
            self.heard.len() == self.peers.len()
                && self
                    .peers
                    .iter()
                    .all(|(a, p)| self.heard.contains(&(p.last_heard, *a))),
            "the peers by time last heard are the peers"
        );
        assert!(
            self.handshakes.len() == self.links.values().filter(|l| l.peer.is_none()).count()
                && self
                    .links
                    .iter()
                    .filter(|(_, l)| l.peer.is_none())
                    .all(|(id, l)| self.handshakes.contains(&(l.opened, *id))),
            "the links in their handshake by time opened are those links"
        );
        if let Some(two) = self.ranked_two {
            let (a, b) = self.first_two();
            assert!(
                two.0 == a && two.1 == b,
                "the kept first two of the ranking are its first two"
            );
        }
        assert_eq!(
            self.best_eligible(),
            self.eligible_ranking().first().copied(),
            "the best eligible member is the eligible ranking's first"
        );
    }

    /// What peers can make this node hold stays within its bounds (issue
    /// 10's limits).
    fn check_limits(&self) {
        assert!(
            self.wants.len() <= MAX_WANTED,
            "reconnect set over MAX_WANTED"
        );
        // Each of these counts within the reconnect set, so a small set
        // needs no count (a check after every event must stay cheap).
        assert!(
            self.wants.len() <= MAX_DIALS_IN_FLIGHT
                || self.dials_in_flight() <= MAX_DIALS_IN_FLIGHT,
            "dials in flight over MAX_DIALS_IN_FLIGHT"
        );
        assert!(
            self.wants.len() <= MAX_INTRODUCED_PER_PEER
                || self.introduced_by_one_peer() <= MAX_INTRODUCED_PER_PEER,
            "introductions by one peer over MAX_INTRODUCED_PER_PEER"
        );
        assert!(
            self.journal.len() <= JOURNAL_LEN,
            "journal over JOURNAL_LEN"
        );
        assert!(
            self.pings.len() <= MAX_PINGS_KEPT,
            "pings over MAX_PINGS_KEPT"
        );
        for p in self.peers.values() {
            assert!(p.skew_samples.len() <= SKEW_SAMPLES);
            assert!(p.relayed <= MAX_INTRODUCED_PER_PEER);
        }
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use std::net::SocketAddr;

    use crate::core::Node;
    use crate::protocol::{LinkKind, Message};
    use crate::time::Mono;

    fn node() -> Node {
        crate::core::test_node(1)
    }

    #[test]
    fn a_sound_node_passes() {
        let mut n = node();
        n.audit();
        let peer = SocketAddr::from(([127, 0, 0, 2], 7400));
        n.connect(peer, Mono(0)).unwrap();
        n.handle_dialed(7, peer, LinkKind::Join, Mono(1));
        n.audit();
    }

    #[test]
    #[should_panic(expected = "went back")]
    fn an_epoch_going_back_is_caught() {
        let mut n = node();
        n.epoch = 0;
        n.audited = (5, None);
        n.audit();
    }

    /// `n` with one peer on link 3.
    fn with_peer() -> Node {
        let mut n = node();
        n.handle_accepted(3, Mono(1));
        let Message::Hello(mut h) = n.hello(LinkKind::Mesh) else {
            unreachable!()
        };
        (h.addr, h.instance) = (SocketAddr::from(([127, 0, 0, 2], 7400)), 2);
        n.handle_message(3, Message::Hello(h), Mono(1));
        assert_eq!(n.peers.len(), 1);
        n
    }

    #[test]
    #[should_panic(expected = "names it")]
    fn a_peer_without_its_link_is_caught() {
        let mut n = with_peer();
        n.links.remove(&3);
        n.audit();
    }

    #[test]
    #[should_panic(expected = "it is not the link of")]
    fn a_second_link_to_one_member_is_caught() {
        let mut n = with_peer();
        n.handle_accepted(4, Mono(1));
        n.links.get_mut(&4).unwrap().peer = n.links[&3].peer;
        n.audit();
    }

    #[test]
    #[should_panic(expected = "the kept view digest")]
    fn a_stale_view_digest_is_caught() {
        let mut n = with_peer();
        n.view_sum = n.view_sum.wrapping_add(1);
        n.audit();
    }

    #[test]
    #[should_panic(expected = "the kept first two")]
    fn a_stale_ranking_is_caught() {
        let mut n = with_peer();
        n.check_start_doubt();
        n.peers.values_mut().for_each(|p| p.hello.priority = 5);
        n.cfg.rule = "priority".parse().unwrap();
        n.audit();
    }

    #[test]
    #[should_panic(expected = "one master")]
    fn two_masters_for_one_epoch_are_caught() {
        let mut n = node();
        n.audited = (n.epoch, Some(SocketAddr::from(([127, 0, 0, 9], 7400))));
        n.audit();
    }
}
