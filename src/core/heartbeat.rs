//! Heartbeats: the PING each peer gets every heartbeat, what the echo of
//! ours in its PING tells (it is alive, the round trip, the acknowledged
//! send time a strict lease counts, the clock skew), the warning when the
//! round trip eats the lease's margin, and this node's own stalls.
//!
//! It owns the send times of recent heartbeats, when the next round goes
//! out, and dropping a peer silent past the timeout. What the election
//! makes of a lost peer is `election`'s; it never decides a role.
//!
//! One PING per peer per heartbeat, each way, and nothing answers it: a
//! PING echoes the peer's latest one (bossd/1 answered every PING with a
//! PONG, twice the lines and wakeups). Rounds start on multiples of the
//! heartbeat on the wall clock, so with clocks that agree (NTP) every
//! node's PINGs leave at once and a node's sends and receives share a
//! wakeup.

use std::net::SocketAddr;

use super::skew::{SKEW_SAMPLES, Skew};
use super::{Action, LinkId, Node};
use crate::event::Event;
use crate::protocol::{Echo, Message, Role};
use crate::time::{Mono, Wall};

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
            // Silent for up to a heartbeat before the loop slept and up to
            // one more until its deadline, the peers may have timed this
            // node out: the links they closed will read as crashes, one by
            // one, and the next in line would claim between two of them,
            // or on meeting a member before the master again.
            let hb = self.cfg.heartbeat_ms;
            if late_ms.saturating_add(hb.saturating_mul(2)) >= self.cfg.timeout_ms {
                self.settling_until = Some(now.plus(self.cfg.timeout_ms));
            }
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
        // The earliest heard first (`heard`), taken in address order.
        let mut silent: Vec<(SocketAddr, LinkId)> = self
            .heard
            .iter()
            .take_while(|(t, _)| now >= self.silent_at(*t))
            .filter_map(|(_, a)| Some((*a, self.peers.get(a)?.link)))
            .collect();
        silent.sort_unstable();
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
            self.next_heartbeat = Some(self.next_round(now));
        }
        if self.peers.is_empty() {
            self.next_heartbeat = None;
        }
    }

    /// The next round after `now`: the next multiple of the heartbeat on
    /// this node's wall clock.
    pub(super) fn next_round(&self, now: Mono) -> Mono {
        let every = self.cfg.heartbeat_ms.max(1);
        now.plus(every - self.wall(now).ms() % every)
    }

    /// Sends a heartbeat on `links`, remembering when it left; each echoes
    /// its peer's latest heartbeat.
    pub(super) fn ping(&mut self, links: &[LinkId], now: Mono) {
        self.heartbeat_seq += 1;
        if self.pings.len() == MAX_PINGS_KEPT {
            self.pings.pop_front();
        }
        self.pings.push_back((self.heartbeat_seq, now));
        let (seq, view, stamp_unix_ms) =
            (self.heartbeat_seq, self.view_digest(), self.wall(now).ms());
        for &link in links {
            let heard = self
                .links
                .get(&link)
                .and_then(|l| l.peer)
                .and_then(|a| self.peers.get(&a))
                .and_then(|p| p.heard_ping);
            let echo = heard.map(|(seq, at)| Echo {
                seq,
                held_ms: now.since(at),
                stamp_unix_ms,
            });
            self.send(link, Message::Ping { seq, view, echo });
        }
    }

    /// A heartbeat from the established peer `addr`: kept to be echoed,
    /// its view digest compared with ours, and its echo of ours, if any,
    /// taken in. The peer's first heartbeat is echoed at once, so its
    /// clock offset is known one round trip after the handshake; so is
    /// every heartbeat of a strict follower's master.
    pub(super) fn on_ping(
        &mut self,
        link: LinkId,
        addr: SocketAddr,
        seq: u64,
        view: u64,
        echo: Option<Echo>,
        now: Mono,
    ) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let first = p.heard_ping.is_none();
        p.heard_ping = Some((seq, now));
        let half = self.cfg.heartbeat_ms / 2;
        let may_echo = p.echoed_at.is_none_or(|t| now >= t.plus(half));
        self.sync_view(addr, view, now);
        if let Some(e) = echo {
            self.on_echo(addr, e, now);
        }
        // With --strict a follower echoes its master's PING at once, as
        // bossd/1's PONG did: the master's lease counts from the send
        // time of the PINGs a quorum echoed, and an echo held until the
        // follower's own round would leave it up to a heartbeat shorter,
        // so a round trip of timeout - 3 x heartbeat (not - 2 x) would
        // already cost it the lease between heartbeats.
        let strict_master =
            self.cfg.strict && self.role == Role::Follower && self.epoch_master == Some(addr);
        if (first || strict_master) && may_echo {
            if let Some(p) = self.peers.get_mut(&addr) {
                p.echoed_at = Some(now);
            }
            self.ping(&[link], now);
        }
    }

    /// Our heartbeat `e.seq` came back echoed by `addr`: the peer heard
    /// it, which dates the acknowledgement a strict lease counts from, and
    /// its stamp measures the clock skew. The peer's clock read
    /// `stamp - held` when ours arrived, between our send and our receipt
    /// less the time it held it.
    fn on_echo(&mut self, addr: SocketAddr, e: Echo, now: Mono) {
        let wall_at_zero = self.cfg.wall_at_zero;
        let Some(&(_, sent)) = self.pings.iter().find(|(n, _)| *n == e.seq) else {
            return;
        };
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        p.acked_sent = p.acked_sent.max(sent);
        let trip_ms = now.since(sent);
        // A held time longer than the whole trip is a lie or a broken
        // clock: the ack stands, but it measures nothing.
        let Some(round_trip_ms) = trip_ms.checked_sub(e.held_ms) else {
            return;
        };
        if p.skew_samples.len() == SKEW_SAMPLES {
            p.skew_samples.pop_front();
        }
        // The peer measured `held` on its clock: at rates 1 % apart (the
        // simulator's worst) that is 1 ms in 100, as clocks drifting
        // apart over the samples' age, which the estimate already follows.
        p.skew_samples.push_back(Skew::from_round_trip(
            wall_at_zero.at(sent),
            e.stamp_unix_ms.saturating_sub(e.held_ms),
            Wall(wall_at_zero.at(now).ms().saturating_sub(e.held_ms)),
        ));
        if self.cfg.strict {
            self.check_lease_margin(addr, round_trip_ms);
        }
        if self.cfg.strict && self.claimed {
            self.decide(super::Cause::Claim, None, now);
        }
        self.check_start_doubt();
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
