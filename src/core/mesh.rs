//! The full mesh: introductions (MEET) and the view digest that repairs
//! what they missed.
//!
//! It owns the bounds on introductions (`MAX_INTRODUCED_PER_PEER`, and
//! with `reconnect` `MAX_WANTED`). It decides whom to introduce and whom
//! to dial because of an introduction; `reconnect` does the dialling. It
//! never dials, and never lets a MEET grow the reconnect set past its
//! bounds (dropped MEETs are counted instead).

use std::net::SocketAddr;

use super::Node;
use super::reconnect::{MAX_WANTED, Rng, Source};
use crate::event::Event;
use crate::protocol::{LinkKind, Message};
use crate::time::Mono;

/// Introductions from one peer that may wait to be dialled at once. An
/// honest member introduces at most the other members of its group, n - 2
/// in a cluster of n, so 1024 never slows a cluster of up to 1,026; and one
/// hostile peer can fill at most half of [`MAX_WANTED`]. MEETs beyond either
/// bound are dropped and counted (`bossd_meets_dropped_total`). At 512,
/// 1,000 nodes joining one at once dropped 229,825 introductions, and the
/// 113,000 pairs they left unmeshed fell to the mesh repair, which sends
/// every member to every peer whose view differs: about n³ MEETs
/// (docs/BENCHMARKS.md, "The core at 1,000 nodes").
pub const MAX_INTRODUCED_PER_PEER: usize = 1024;

impl Node {
    /// `by` introduced `addr` (MEET): dial it, within the bounds on
    /// introductions.
    pub(super) fn introduce(&mut self, addr: SocketAddr, by: SocketAddr, now: Mono) {
        let heartbeat_ms = self.cfg.heartbeat_ms;
        if let Some(w) = self.wants.get_mut(&addr) {
            // A member of our group: never to be redirected.
            w.kind = LinkKind::Mesh;
            // An introduction is news that the node is alive: a retry
            // waiting out its backoff starts over now, though at most once
            // a heartbeat (a flood of MEETs naming it must not become a
            // flood of dials), and not for a peer that broke the protocol
            // (the others may have let it in since).
            if let Some(next) = w.next_try
                && !w.penalized
                && w.met.is_none_or(|t| now >= t.plus(heartbeat_ms))
            {
                w.failures = 0;
                w.met = Some(now);
                w.next_try = Some(next.min(now));
            }
            return;
        }
        let full = self.wants.len() >= MAX_WANTED
            || (self.wants.len() >= MAX_INTRODUCED_PER_PEER
                && self
                    .wants
                    .values()
                    .filter(|w| w.source == Source::Introduced { by })
                    .count()
                    >= MAX_INTRODUCED_PER_PEER);
        if full {
            self.meets_dropped(by);
            return;
        }
        self.want(addr, LinkKind::Mesh, Source::Introduced { by }, now);
    }

    /// Counts a MEET from `by` dropped over a bound; warns once per link.
    pub(super) fn meets_dropped(&mut self, by: SocketAddr) {
        self.meets_dropped = self.meets_dropped.saturating_add(1);
        let Some(p) = self.peers.get_mut(&by) else {
            return;
        };
        if !p.meets_dropped {
            p.meets_dropped = true;
            self.event(Event::MeetsDropped { peer: by });
        }
    }

    /// A digest of the view's addresses: equal on every member of a full
    /// mesh. Kept as it changes (`view_sum`, updated where a peer joins or
    /// leaves the view), so a PING received costs no walk of the view:
    /// hashing the view on every PING was most of a heartbeat round at 999
    /// peers (docs/BENCHMARKS.md, "The core at 1,000 nodes").
    pub(super) fn view_digest(&self) -> u64 {
        addr_hash(&self.cfg.addr).wrapping_add(self.view_sum)
    }

    /// [`Node::view_digest`] recomputed over the whole view, for the
    /// invariant checks.
    pub(super) fn view_digest_recomputed(&self) -> u64 {
        std::iter::once(&self.cfg.addr)
            .chain(self.peers.keys())
            .map(addr_hash)
            .fold(0, u64::wrapping_add)
    }

    /// Repairs the mesh: a peer whose view differs from ours is sent our
    /// members (it ignores those it has), and only once the difference
    /// has settled: the peer's last two PINGs carried the same digest, and
    /// ours has not changed for a heartbeat. While a cluster forms, views
    /// grow by the introductions still in flight and differ for that
    /// reason alone; repairing them then sent every member to every peer
    /// on every change (200 nodes forming: about 30,000 MEETs a node,
    /// where 200 do).
    ///
    /// A node repairs one peer per two timeouts, not each peer that
    /// often: n - 1 members to each of n - 1 differing peers a second
    /// was 40,000 MEETs a second per node at 200 nodes, whose load made
    /// links time out, views differ and the repair go on (1.2 million
    /// MEETs per node in a minute, docs/BENCHMARKS.md). A node whose view
    /// lacks a member differs from every peer that has it, so each of
    /// those repairs it within two timeouts all the same.
    pub(super) fn sync_view(&mut self, addr: SocketAddr, their_view: u64, now: Mono) {
        let ours = self.view_digest();
        if ours != self.view_seen.0 {
            self.view_seen = (ours, now);
        }
        let settled_since = self.view_seen.1.plus(self.cfg.heartbeat_ms);
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let theirs_settled = p.their_view == their_view;
        p.their_view = their_view;
        if their_view == ours || !theirs_settled || now < settled_since {
            return;
        }
        let interval = self.cfg.timeout_ms.saturating_mul(2);
        if now < p.next_sync || now < self.next_repair {
            return;
        }
        p.next_sync = now.plus(interval);
        self.next_repair = now.plus(interval);
        let link = p.link;
        let members: Vec<SocketAddr> = self.peers.keys().copied().filter(|a| *a != addr).collect();
        for m in members {
            self.send(link, Message::Meet(m));
        }
    }
}

/// One address's share of the view digest: the digest is the wrapping sum
/// of these over the view, so a member joining adds its share and one
/// leaving takes it away.
pub(super) fn addr_hash(a: &SocketAddr) -> u64 {
    let mut r = Rng(match a {
        SocketAddr::V4(v4) => u64::from(v4.ip().to_bits()) << 16 | u64::from(v4.port()),
        SocketAddr::V6(v6) => {
            (v6.ip().to_bits() as u64) << 16
                ^ u64::from(v6.port())
                ^ (v6.ip().to_bits() >> 64) as u64
        }
    });
    r.next()
}
