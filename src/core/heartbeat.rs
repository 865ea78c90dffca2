//! Heartbeats: the PING each peer gets every heartbeat, what its PONG
//! tells (it is alive, the round trip, the acknowledged send time a
//! strict lease counts), and the warning when the round trip eats the
//! lease's margin.
//!
//! It owns the send times of recent heartbeats, when the next round goes
//! out, and dropping a peer silent past the timeout. What the election
//! makes of a lost peer is `election`'s; it never decides a role.

use std::net::SocketAddr;

use super::{Action, LinkId, Node};
use crate::event::Event;
use crate::protocol::Message;
use crate::time::Mono;

/// Heartbeat send times kept to date acknowledgements: an answer older
/// than this many heartbeats could not extend a lease anyway, since the
/// timeout is far shorter than 64 heartbeats in any sane setting.
pub(super) const MAX_PINGS_KEPT: usize = 64;

/// The loop counts as stalled when it woke this fraction of the timeout
/// or more past its deadline. Ordinary scheduling delays are a few ms; a
/// quarter of the timeout is where its own lateness starts to eat the
/// margin a peer's heartbeats have (timeout - heartbeat, four fifths of
/// the timeout at the default ratio), and a stall that short cannot make
/// a live peer look silent once its socket was read.
const STALL_FRACTION: u64 = 4;

impl Node {
    /// The loop woke `late_ms` after the deadline it slept for (guarantee
    /// 10, docs/GUARANTEES.md). With `--strict` the lease is seen to
    /// first, and never extended: a master whose lease ran out while it
    /// stood still steps down before it answers anything. A stall of a
    /// quarter of the timeout or more was this node's own doing, so the
    /// silence it saw proves nothing: every peer (and every handshake)
    /// gets a fresh timeout from now, counted after the loop read what
    /// waits in the sockets.
    pub(super) fn resumed(&mut self, late_ms: u64, now: Mono) {
        if self.cfg.strict {
            self.strict_due(now);
        }
        if late_ms >= (self.cfg.timeout_ms / STALL_FRACTION).max(1) {
            self.heard_from = self.heard_from.max(now);
            if !self.peers.is_empty() {
                self.event(Event::Stalled {
                    late_ms,
                    timeout_ms: self.cfg.timeout_ms,
                });
            }
        }
    }

    /// When `last_heard` (a peer's last line, or a handshake's start)
    /// stops counting: a timeout after it, or after this node's last
    /// stall if that ended later.
    pub(super) fn silent_at(&self, last_heard: Mono) -> Mono {
        last_heard.max(self.heard_from).plus(self.cfg.timeout_ms)
    }

    /// Peers silent for the timeout are dropped from the view: their
    /// links close, and they count as lost.
    pub(super) fn expire_silent(&mut self, now: Mono) {
        let silent: Vec<(SocketAddr, LinkId)> = self
            .peers
            .iter()
            .filter(|(_, p)| now >= self.silent_at(p.last_heard))
            .map(|(a, p)| (*a, p.link))
            .collect();
        for (addr, link) in silent {
            self.event(Event::PeerSilent {
                peer: addr,
                timeout_ms: self.cfg.timeout_ms,
            });
            self.link_closed(link, now);
            self.actions.push_back(Action::Close(link));
        }
    }

    /// A heartbeat to every peer when one is due; none while there are no
    /// peers.
    pub(super) fn heartbeat_due(&mut self, now: Mono) {
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            let links: Vec<LinkId> = self.peers.values().map(|p| p.link).collect();
            self.ping(&links, now);
            self.next_heartbeat = Some(now.plus(self.cfg.heartbeat_ms));
        }
        if self.peers.is_empty() {
            self.next_heartbeat = None;
        }
    }

    /// Sends a heartbeat on `links`, remembering when it left.
    pub(super) fn ping(&mut self, links: &[LinkId], now: Mono) {
        self.heartbeat_seq += 1;
        if self.pings.len() == MAX_PINGS_KEPT {
            self.pings.pop_front();
        }
        self.pings.push_back((self.heartbeat_seq, now));
        let ping = Message::Ping {
            seq: self.heartbeat_seq,
            view: self.view_digest(),
        };
        for &link in links {
            self.send(link, ping.clone());
        }
    }

    /// With `--strict`: warns once per peer while a heartbeat's round trip
    /// to it takes more than half the lease's margin, timeout - heartbeat,
    /// beyond which a master loses its lease between heartbeats. It counts
    /// as recovered below a quarter, so a round trip hovering at the
    /// bound does not warn at every heartbeat.
    pub(super) fn check_lease_margin(&mut self, addr: SocketAddr, round_trip_ms: u64) {
        let (heartbeat_ms, timeout_ms) = (self.cfg.heartbeat_ms, self.cfg.timeout_ms);
        let margin_ms = timeout_ms.saturating_sub(heartbeat_ms);
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if !p.lease_margin_warned && round_trip_ms > margin_ms / 2 {
            p.lease_margin_warned = true;
            self.event(Event::LeaseMarginLow {
                peer: addr,
                round_trip_ms,
                heartbeat_ms,
                timeout_ms,
            });
        } else if p.lease_margin_warned && round_trip_ms <= margin_ms / 4 {
            p.lease_margin_warned = false;
            self.event(Event::LeaseMarginRecovered {
                peer: addr,
                round_trip_ms,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    //! Silence around this node's own stalls (guarantee 10).

    use super::*;
    use crate::protocol::LinkKind;

    /// Node 1 (timeout 1,000 ms) with node 2 as a peer on link 3, last
    /// heard at 1 ms.
    fn with_peer() -> Node {
        let mut n = crate::core::test_node(1);
        n.handle_accepted(3, Mono(1));
        let Message::Hello(mut h) = crate::core::test_node(2).hello(LinkKind::Mesh) else {
            unreachable!("hello() makes a HELLO")
        };
        h.instance = 2;
        n.handle_message(3, Message::Hello(h), Mono(1));
        assert_eq!(n.peers.len(), 1);
        n
    }

    #[test]
    fn a_peer_silent_past_the_timeout_is_dropped() {
        let mut n = with_peer();
        n.handle_resumed(0, Mono(1_001));
        n.handle_timeout(Mono(1_001));
        assert!(n.peers.is_empty());
    }

    #[test]
    fn after_a_stall_every_peer_gets_a_fresh_timeout() {
        let mut n = with_peer();
        // Woke 1,500 ms late: the silence was this node's own.
        n.handle_resumed(1_500, Mono(2_000));
        n.handle_timeout(Mono(2_000));
        assert_eq!(n.peers.len(), 1, "not dropped on resuming");
        assert_eq!(n.next_deadline(), Some(Mono(2_100)), "heartbeats went on");
        n.handle_timeout(Mono(2_999));
        assert_eq!(n.peers.len(), 1, "heard within the fresh timeout");
        n.handle_timeout(Mono(3_000));
        assert!(n.peers.is_empty(), "silent a whole timeout after the stall");
    }

    #[test]
    fn lateness_below_a_quarter_timeout_is_no_stall() {
        let mut n = with_peer();
        n.handle_resumed(249, Mono(1_001));
        n.handle_timeout(Mono(1_001));
        assert!(n.peers.is_empty());
    }
}
