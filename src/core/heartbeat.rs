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

impl Node {
    /// Peers silent for the timeout are dropped from the view: their
    /// links close, and they count as lost.
    pub(super) fn expire_silent(&mut self, now: Mono) {
        let silent: Vec<(SocketAddr, LinkId)> = self
            .peers
            .iter()
            .filter(|(_, p)| now >= p.last_heard.plus(self.cfg.timeout_ms))
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
