//! Heartbeats: the PINGs of each round and whom they go to, what the
//! echo of ours in a peer's PING tells (it is alive, the round trip, the
//! acknowledged send time a strict lease counts, the clock skew), the
//! master's vouching for its view, the warning when the round trip eats
//! the lease's margin, and this node's own stalls.
//!
//! It owns the send times of recent heartbeats, when the next round goes
//! out and to whom, and dropping a peer silent past the timeout. What the
//! election makes of a lost peer is `election`'s; it never decides a role.
//!
//! Nothing answers a PING as such: a PING echoes the peer's latest one
//! (bossd/1 answered every PING with a PONG, twice the lines and
//! wakeups). Rounds start on multiples of the heartbeat on the wall
//! clock, so with clocks that agree (NTP) every node's PINGs leave at once
//! and a node's sends and receives share a wakeup.
//!
//! Not every peer gets a PING every round (bossd/4). The master and its
//! peers heartbeat each other; the master's PING says how long ago it
//! last heard the stalest member of its view (`fresh_ms`), and a follower
//! whose view digest is the master's takes that as heard for all of them
//! (`vouched`). So at rest a follower reads one line a round, its
//! master's PING, and answers it at once with its own, in the same
//! wakeup: no timer of its own wakes it in such a round. It heartbeats
//! everyone, as before, while it has no master or its master is late;
//! a peer about to fall silent despite the vouch (the master stopped
//! hearing someone) directly; and each other peer once every
//! [`REFRESH_ROUNDS`], for the round trips the clock skew rests on. A
//! PING from a peer this node has not sent one to lately is echoed at
//! once, so whoever needs to hear a peer does.
use std::net::SocketAddr;

use super::mesh::addr_hash;
use super::skew::{SKEW_SAMPLES, Skew};
use super::{Action, LinkId, Node, Peer};
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

/// A peer this node leaves to the master's vouching still gets one PING
/// from it every this many rounds, and echoes it at once, so the two
/// measure their clock skew (5 s at the default heartbeat; two nodes'
/// clocks drift apart by 50 ms at most in that time at rates 1 % apart,
/// far less with NTP). Each side of a pair sends its own, half this
/// apart. In a cluster of more than this many nodes the interval is the
/// cluster's size rounded up to a power of two ([`Node::refresh_rounds`]),
/// so that a node sends fewer than two refresh lines a round (its own and
/// its echoes of the others') at any size: at
/// 200 nodes every 256 rounds (25.6 s, 2.6 ms of drift at 100 ppm apart),
/// against 8 lines a round per node with 50.
pub const REFRESH_ROUNDS: u64 = 50;

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

    /// When a peer last heard at `last_heard` falls silent: as
    /// [`Node::silent_at`], and not before a timeout after the master's
    /// latest vouch for this node's view. Handshakes get no such floor:
    /// the master vouches for members, not for links still forming.
    pub(super) fn peer_silent_at(&self, last_heard: Mono) -> Mono {
        self.silent_at(last_heard.max(self.vouched))
    }

    /// Peers silent for the timeout are dropped from the view: their
    /// links close, and they count as lost.
    pub(super) fn expire_silent(&mut self, now: Mono) {
        // The earliest heard first (`heard`), taken in address order.
        let mut silent: Vec<(SocketAddr, LinkId)> = self
            .heard
            .iter()
            .take_while(|(t, _)| now >= self.peer_silent_at(*t))
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

    /// A round of heartbeats when one is due, to the peers that need one
    /// ([`Node::pings_in_round`]); no rounds while there are no peers.
    pub(super) fn heartbeat_due(&mut self, now: Mono) {
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            let everyone = self.pings_everyone(now);
            let round = self.wall(now).ms() / self.cfg.heartbeat_ms.max(1);
            let links: Vec<LinkId> = self
                .peers
                .iter()
                .filter(|(a, p)| self.pings_in_round(everyone, round, **a, p, now))
                .map(|(_, p)| p.link)
                .collect();
            if !links.is_empty() {
                self.ping(&links, now);
            }
            self.plan_next_round(everyone, now);
        }
        if self.peers.is_empty() {
            self.next_heartbeat = None;
        }
    }

    /// When the loop wakes for heartbeats next: the first round someone
    /// other than the master needs one ([`Node::others_due_after`]), or
    /// the round the master would count as late, whichever comes first.
    fn plan_next_round(&mut self, everyone: bool, now: Mono) {
        // A master already late is late again next round, not now.
        let late = self.master_late_at().max(self.next_round(now));
        self.next_heartbeat = Some(self.others_due_after(everyone, now).min(late));
    }

    /// The view or the role changed: the next round goes out as it falls
    /// due, whatever the last one planned to skip.
    pub(super) fn heartbeats_soon(&mut self, now: Mono) {
        let next = self.next_round(now);
        self.next_heartbeat = Some(self.next_heartbeat.map_or(next, |t| t.min(next)));
    }

    /// The first round after `now` in which a peer other than the master
    /// needs this node's heartbeat, as things stand: the next one unless
    /// this node follows a master on time (`everyone` false); else the
    /// first refresh round or the first round within [`Node::lead_ms`]
    /// of a peer's silence, at most [`Node::refresh_rounds`] ahead. Nothing a
    /// PING or a stall does can bring it forward; a new peer or a new
    /// role can ([`Node::heartbeats_soon`]).
    fn others_due_after(&self, everyone: bool, now: Mono) -> Mono {
        let hb = self.cfg.heartbeat_ms.max(1);
        let next = self.next_round(now);
        if everyone || self.role != Role::Follower {
            return next;
        }
        let round = self.wall(next).ms() / hb;
        let lead = self.lead_ms();
        let every = self.refresh_rounds();
        self.peers
            .iter()
            .filter(|(a, _)| self.epoch_master != Some(**a))
            .map(|(a, p)| {
                let to_refresh = every - round.wrapping_add(self.refresh_phase(*a)) % every;
                let refresh = next.plus((to_refresh % every).saturating_mul(hb));
                let direct = self.round_at_or_after(Mono(
                    self.peer_silent_at(p.last_heard).ms().saturating_sub(lead),
                ));
                refresh.min(direct.max(next))
            })
            .min()
            .unwrap_or(next.plus(hb.saturating_mul(every)))
    }

    /// The first round in which this follower's master, unheard since,
    /// counts as late ([`Node::pings_everyone`]); `Mono::MAX` when this
    /// node follows none.
    fn master_late_at(&self) -> Mono {
        if self.role != Role::Follower {
            return Mono::MAX;
        }
        self.epoch_master
            .and_then(|m| self.peers.get(&m))
            .map_or(Mono::MAX, |m| {
                self.round_at_or_after(m.last_heard.plus(self.master_late_ms() + 1))
            })
    }

    /// How long unheard a follower's master counts as late: one and a
    /// half heartbeats ([`Node::pings_everyone`]).
    fn master_late_ms(&self) -> u64 {
        let hb = self.cfg.heartbeat_ms;
        hb.saturating_add(hb / 2)
    }

    /// The first round at `t` or after it.
    fn round_at_or_after(&self, t: Mono) -> Mono {
        self.next_round(Mono(t.ms().saturating_sub(1)))
    }

    /// Whether this round's heartbeats go to every peer, as they did
    /// before the master vouched for its followers: on the master, on a
    /// node with no master (an election runs on everyone's heartbeats),
    /// and on a follower whose master was last heard more than one and a
    /// half heartbeats ago. A master that froze is late at the same round
    /// for all its followers, two rounds at most after its last PING, long
    /// before its last vouch runs out at the default timings.
    fn pings_everyone(&self, now: Mono) -> bool {
        if self.role != Role::Follower {
            return true;
        }
        let late_ms = self.master_late_ms();
        self.epoch_master
            .and_then(|m| self.peers.get(&m))
            .is_none_or(|m| now.since(m.last_heard) > late_ms)
    }

    /// Whether the peer at `addr` gets this round's heartbeat: every peer
    /// when `everyone`; else (the master's PINGs are on time, and each is
    /// echoed as it comes) a peer that would fall
    /// silent within [`Node::lead_ms`] (the vouch stopped covering it:
    /// the master no longer hears someone, or its view is not ours), and
    /// each peer in its refresh round. Never a peer that got one within
    /// the last half heartbeat (an echo at once): it has this round's.
    fn pings_in_round(
        &self,
        everyone: bool,
        round: u64,
        addr: SocketAddr,
        p: &Peer,
        now: Mono,
    ) -> bool {
        if p.pinged_at
            .is_some_and(|t| now < t.plus(self.cfg.heartbeat_ms / 2))
        {
            return false;
        }
        everyone
            || self.peer_silent_at(p.last_heard) <= now.plus(self.lead_ms())
            || round
                .wrapping_add(self.refresh_phase(addr))
                .is_multiple_of(self.refresh_rounds())
    }

    /// The rounds between two refreshes of a pair: [`REFRESH_ROUNDS`], or
    /// in a larger cluster its size (this node and its peers) rounded up
    /// to a power of two, which both sides of a pair reckon alike unless
    /// their views straddle one.
    fn refresh_rounds(&self) -> u64 {
        let size = self.peers.len().saturating_add(1).next_power_of_two() as u64;
        REFRESH_ROUNDS.max(size)
    }

    /// How long before a peer would fall silent it gets heartbeats
    /// directly: two heartbeats, so that its own, echoing ours, has a
    /// round to arrive in; or half the timeout when that is longer, so a
    /// slow network still gets the answer back in time.
    fn lead_ms(&self) -> u64 {
        let hb = self.cfg.heartbeat_ms;
        hb.saturating_mul(2).max(self.cfg.timeout_ms / 2)
    }

    /// Where in [`Node::refresh_rounds`] this node's refresh of `addr` falls:
    /// spread over the rounds by the pair, and the two sides half the
    /// interval apart, so that each one's PING finds the other not having
    /// sent one lately and is echoed at once.
    fn refresh_phase(&self, addr: SocketAddr) -> u64 {
        let every = self.refresh_rounds();
        let pair = addr_hash(&self.cfg.addr) ^ addr_hash(&addr);
        let half = if self.cfg.addr > addr { every / 2 } else { 0 };
        pair % every + half
    }

    /// The next round after `now`: the next multiple of the heartbeat on
    /// this node's wall clock.
    pub(super) fn next_round(&self, now: Mono) -> Mono {
        let every = self.cfg.heartbeat_ms.max(1);
        now.plus(every - self.wall(now).ms() % every)
    }

    /// Sends a heartbeat on `links`, remembering when it left; each echoes
    /// its peer's latest heartbeat, and all say how long ago this node
    /// last heard the stalest member of its view (what a master vouches).
    pub(super) fn ping(&mut self, links: &[LinkId], now: Mono) {
        self.heartbeat_seq += 1;
        if self.pings.len() == MAX_PINGS_KEPT {
            self.pings.pop_front();
        }
        self.pings.push_back((self.heartbeat_seq, now));
        let (seq, view, stamp_unix_ms) =
            (self.heartbeat_seq, self.view_digest(), self.wall(now).ms());
        let fresh_ms = self.heard.first().map_or(0, |(t, _)| now.since(*t));
        for &link in links {
            let peer = self
                .links
                .get(&link)
                .and_then(|l| l.peer)
                .and_then(|a| self.peers.get_mut(&a));
            let heard = peer.and_then(|p| {
                p.pinged_at = Some(now);
                p.heard_ping
            });
            let echo = heard.map(|(seq, at)| Echo {
                seq,
                held_ms: now.since(at),
                stamp_unix_ms,
            });
            self.send(
                link,
                Message::Ping {
                    seq,
                    view,
                    fresh_ms,
                    echo,
                },
            );
        }
    }

    /// A heartbeat from the established peer `addr`: kept to be echoed,
    /// its view digest compared with ours, its vouch taken if it is our
    /// master's, and its echo of ours, if any, taken in. The peer's first
    /// heartbeat is echoed at once, so its clock offset is known one round
    /// trip after the handshake; so is a heartbeat from a peer this node
    /// sent none to in the last three quarters of a heartbeat (one that
    /// heartbeats us while we leave it to the master's vouch: it hears us
    /// all the same) unless it says it heard us lately, and every
    /// heartbeat of a follower's master.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_ping(
        &mut self,
        link: LinkId,
        addr: SocketAddr,
        seq: u64,
        view: u64,
        fresh_ms: u64,
        echo: Option<Echo>,
        now: Mono,
    ) {
        let hb = self.cfg.heartbeat_ms;
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let first = p.heard_ping.is_none();
        // It echoes a PING of ours it read less than three quarters of a
        // heartbeat before it sent this one: it heard us lately, however
        // long the lines took on the way, and needs no answer. Answering
        // it would start a ping-pong wherever a round trip takes that
        // long (a WAN, a starved host): each answer arriving that late
        // would be answered in turn.
        let lately = hb - hb / 4;
        let heard_us = echo.is_some_and(|e| e.held_ms < lately);
        let unanswered = !heard_us && p.pinged_at.is_none_or(|t| now >= t.plus(lately));
        p.heard_ping = Some((seq, now));
        let may_echo = p.echoed_at.is_none_or(|t| now >= t.plus(hb / 2));
        self.vouch(addr, view, fresh_ms, now);
        self.sync_view(addr, view, now);
        if let Some(e) = echo {
            self.on_echo(addr, e, now);
        }
        // A follower echoes its master's PING at once instead of sending
        // its own on a timer: the two leave in one wakeup, and the rounds
        // in which a follower at rest heartbeats nobody else wake it not
        // at all. With --strict that matters twice, as bossd/1's PONG
        // did: the master's lease counts from the send time of the PINGs
        // a quorum echoed, and an echo held until the follower's own
        // round would leave it up to a heartbeat shorter, so a round trip
        // of timeout - 3 x heartbeat (not - 2 x) would already cost it
        // the lease between heartbeats.
        let from_master = self.role == Role::Follower && self.epoch_master == Some(addr);
        if (first || unanswered || from_master) && may_echo {
            if let Some(p) = self.peers.get_mut(&addr) {
                p.echoed_at = Some(now);
            }
            self.ping(&[link], now);
        }
        // The vouch moved on, and with it when the others need a PING;
        // a round already due (this PING came in the millisecond it fell
        // due) still runs.
        if from_master && self.next_heartbeat.is_some_and(|t| t > now) {
            self.plan_next_round(self.pings_everyone(now), now);
        }
    }

    /// Our master's PING says it heard every member of its view within
    /// `fresh_ms` before it sent it; when its view is ours, that is every
    /// member of ours, and none of them counts as silent before a timeout
    /// from then. Only the master's counts: a follower hears most peers
    /// rarely, and says so in its own `fresh_ms`. The vouch is dated on
    /// our clock when the PING arrived, so it runs late by the PING's
    /// transit: a frozen member is dropped that much later, within the
    /// timeout and a heartbeat of its last line.
    fn vouch(&mut self, addr: SocketAddr, view: u64, fresh_ms: u64, now: Mono) {
        if self.role == Role::Follower
            && self.epoch_master == Some(addr)
            && view == self.view_digest()
        {
            self.vouched = self.vouched.max(Mono(now.ms().saturating_sub(fresh_ms)));
        }
    }

    /// Our heartbeat `e.seq` came back echoed by `addr`: the peer heard
    /// it, which dates the acknowledgement a strict lease counts from, and
    /// its stamp measures the clock skew. The peer's clock read
    /// `stamp - held` when ours arrived, between our send and our receipt
    /// less the time it held it.
    fn on_echo(&mut self, addr: SocketAddr, e: Echo, now: Mono) {
        let wall_at_zero = self.cfg.wall_at_zero;
        let (hb, timeout_ms) = (self.cfg.heartbeat_ms, self.cfg.timeout_ms);
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
        // The peer measured `held` on its clock: at rates 1 % apart (the
        // simulator's worst) that is 1 ms in 100, as clocks drifting
        // apart over the samples' age, which the estimate already follows.
        // Held longer than the timeout (a peer heartbeated only in its
        // refresh rounds, or one that was frozen), it would measure the
        // rates as much as the offset: no sample.
        if e.held_ms <= timeout_ms {
            // Samples taken further apart than the ones a round keeps
            // (a peer only refreshed) have drifted apart: the new one
            // starts the estimate over.
            if now > p.sampled_at.plus(hb.saturating_mul(SKEW_SAMPLES as u64)) {
                p.skew_samples.clear();
            }
            if p.skew_samples.len() == SKEW_SAMPLES {
                p.skew_samples.pop_front();
            }
            p.skew_samples.push_back(Skew::from_round_trip(
                wall_at_zero.at(sent),
                e.stamp_unix_ms.saturating_sub(e.held_ms),
                Wall(wall_at_zero.at(now).ms().saturating_sub(e.held_ms)),
            ));
            p.sampled_at = now;
        }
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
    //! Silence around this node's own stalls (guarantee 10), and whom a
    //! round's heartbeats go to while the master vouches for the view.

    use super::*;
    use crate::protocol::{LinkKind, State};

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

    /// Node 2 (heartbeat 100, timeout 1,000) with peers 1, 3 and 4 on
    /// links 11, 13 and 14, all with quorum `quorum`; unless `quorum` is
    /// above 4, node 1 has claimed epoch 1 and node 2 follows it. Rounds
    /// fall on multiples of 100 ms.
    fn follower(quorum: u32) -> Node {
        follower_among(quorum, &[1, 3, 4])
    }

    /// Node 2 as in [`follower`], with peers `others` (1 among them) on
    /// links 10 + each.
    fn follower_among(quorum: u32, others: &[u8]) -> Node {
        let mut cfg = crate::core::test_node(2).cfg.clone();
        cfg.quorum = quorum;
        let mut n = Node::new(cfg);
        for &k in others {
            let link = 10 + LinkId::from(k);
            n.handle_accepted(link, Mono(1));
            let Message::Hello(mut h) = crate::core::test_node(k).hello(LinkKind::Mesh) else {
                unreachable!("hello() makes a HELLO")
            };
            h.quorum = quorum;
            n.handle_message(link, Message::Hello(h), Mono(1));
        }
        assert_eq!(n.peers.len(), others.len());
        let unknown = State {
            role: Role::None,
            epoch: 0,
            epoch_master: None,
        };
        for &k in others.iter().filter(|&&k| k != 1) {
            n.handle_message(10 + LinkId::from(k), Message::State(unknown), Mono(2));
        }
        let master = crate::core::test_node(1).cfg.addr;
        let claim = State {
            role: Role::Master,
            epoch: 1,
            epoch_master: Some(master),
        };
        n.handle_message(11, Message::State(claim), Mono(2));
        while n.poll_action().is_some() {}
        n
    }

    /// The master's PING at `t`, vouching `fresh_ms` for node 2's view;
    /// returns the links node 2 pinged on it (its echo).
    fn vouch_at(n: &mut Node, seq: u64, fresh_ms: u64, t: u64) -> Vec<LinkId> {
        let view = n.view_digest();
        let ping = Message::Ping {
            seq,
            view,
            fresh_ms,
            echo: None,
        };
        n.handle_message(11, ping, Mono(t));
        pinged(n)
    }

    /// [`follower`] with quorum 2 after three rounds, each after a PING
    /// of its master vouching for its view 60 ms before (at 50, 150 and
    /// 250).
    fn vouched_follower() -> Node {
        let mut n = follower(2);
        for k in 1..=3 {
            vouch_at(&mut n, k, 60, k * 100 - 50);
            round(&mut n, k * 100);
        }
        n
    }

    /// Runs the round at `t` and returns the links it pinged.
    fn round(n: &mut Node, t: u64) -> Vec<LinkId> {
        n.handle_timeout(Mono(t));
        pinged(n)
    }

    /// The PINGs the actions so far send on `link`: each one's number and
    /// echo (the other actions are dropped).
    fn pings_on(n: &mut Node, link: LinkId) -> Vec<(u64, Option<Echo>)> {
        let mut out = Vec::new();
        while let Some(a) = n.poll_action() {
            if let Action::Send(l, Message::Ping { seq, echo, .. }) = a
                && l == link
            {
                out.push((seq, echo));
            }
        }
        out
    }

    /// The links the actions so far send a PING on.
    fn pinged(n: &mut Node) -> Vec<LinkId> {
        let mut pinged = Vec::new();
        while let Some(a) = n.poll_action() {
            if let Action::Send(link, Message::Ping { .. }) = a {
                pinged.push(link);
            }
        }
        pinged
    }

    #[test]
    fn a_masters_ping_in_the_millisecond_a_round_falls_due_does_not_skip_it() {
        let mut n = follower(2);
        let mut count = std::collections::BTreeMap::new();
        for k in 1..=REFRESH_ROUNDS {
            // The loop reads the PING first, then finds the round due.
            let t = k * 100;
            let mut links = vouch_at(&mut n, k, 60, t);
            if n.next_deadline().is_some_and(|d| d <= Mono(t)) {
                links.extend(round(&mut n, t));
            }
            for link in links {
                *count.entry(link).or_insert(0) += 1;
            }
        }
        assert_eq!(count.get(&11), Some(&REFRESH_ROUNDS), "{count:?}");
        assert_eq!(count.get(&13), Some(&1), "refreshed: {count:?}");
        assert_eq!(count.get(&14), Some(&1), "refreshed: {count:?}");
    }

    #[test]
    fn a_vouched_follower_echoes_its_master_and_refreshes_the_rest() {
        let mut n = follower(2);
        assert_eq!(n.role, Role::Follower);
        let mut count = std::collections::BTreeMap::new();
        let mut wakeups = 0;
        for t in 1..=REFRESH_ROUNDS * 100 {
            let mut links = Vec::new();
            if t % 100 == 50 {
                links = vouch_at(&mut n, t, 60, t);
                assert_eq!(links, vec![11], "the master's PING at {t} echoed at once");
            }
            // The loop wakes only when the node asks to.
            if n.next_deadline().is_some_and(|d| d <= Mono(t)) {
                wakeups += 1;
                links.extend(round(&mut n, t));
            }
            for link in links {
                *count.entry(link).or_insert(0) += 1;
            }
        }
        assert_eq!(n.peers.len(), 3, "nobody dropped");
        // One PING to the master for each of its own; one in
        // REFRESH_ROUNDS to each other peer, the master's vouch standing
        // for their silence; and a wakeup of its own only for those.
        assert_eq!(count.get(&11), Some(&REFRESH_ROUNDS), "{count:?}");
        assert_eq!(count.get(&13), Some(&1), "{count:?}");
        assert_eq!(count.get(&14), Some(&1), "{count:?}");
        assert!(wakeups <= 2, "{wakeups} wakeups in {REFRESH_ROUNDS} rounds");
    }

    #[test]
    fn in_a_cluster_of_100_each_other_peer_is_refreshed_once_in_128_rounds() {
        let others: Vec<u8> = std::iter::once(1).chain(3..=101).collect();
        let mut n = follower_among(2, &others);
        assert_eq!(n.role, Role::Follower);
        assert_eq!(n.refresh_rounds(), 128, "100 nodes round up to 128");
        let mut count = std::collections::BTreeMap::new();
        for t in 1..=128 * 100 {
            let mut links = Vec::new();
            if t % 100 == 50 {
                links = vouch_at(&mut n, t, 60, t);
            }
            if n.next_deadline().is_some_and(|d| d <= Mono(t)) {
                links.extend(round(&mut n, t));
            }
            for link in links {
                *count.entry(link).or_insert(0) += 1;
            }
        }
        assert_eq!(n.peers.len(), 100, "nobody dropped");
        assert_eq!(count.get(&11), Some(&128), "the master's echoes");
        for k in 3..=101u8 {
            let link = 10 + LinkId::from(k);
            assert_eq!(
                count.get(&link),
                Some(&1),
                "peer {k} refreshed once: {count:?}"
            );
        }
    }

    #[test]
    fn with_no_master_every_peer_gets_every_round() {
        // Quorum 5 in a view of 4: no master.
        let mut n = follower(5);
        assert_eq!(n.role, Role::None);
        for k in 1..=5 {
            vouch_at(&mut n, k, 60, k * 100 - 50);
            assert_eq!(round(&mut n, k * 100), vec![11, 13, 14], "round {k}");
        }
    }

    #[test]
    fn a_late_master_makes_every_peer_get_every_round() {
        let mut n = vouched_follower();
        // Heard (and echoed) at 250; at 400 that is exactly 1.5
        // heartbeats ago, on time: no round to wake for.
        assert_eq!(n.next_deadline(), Some(Mono(500)));
        assert!(round(&mut n, 400).is_empty());
        assert_eq!(round(&mut n, 500), vec![11, 13, 14], "late");
        assert_eq!(round(&mut n, 600), vec![11, 13, 14]);
        assert_eq!(vouch_at(&mut n, 4, 60, 650), vec![11], "echoed");
        assert!(round(&mut n, 700).is_empty(), "on time again");
        assert_eq!(n.next_deadline(), Some(Mono(900)), "late again from 900");
    }

    #[test]
    fn an_aging_vouch_brings_direct_heartbeats_in_time() {
        let mut n = follower(2);
        // The master stops hearing someone at 100: its vouch stays there.
        for k in 1..=20 {
            let t = k * 100 - 50;
            let mut pinged = vouch_at(&mut n, k, t.saturating_sub(100), t);
            pinged.extend(round(&mut n, k * 100));
            pinged.sort_unstable();
            pinged.dedup();
            // 3 and 4 fall silent at 1,100 (their vouch, plus the timeout);
            // from half a timeout before that they get every round.
            if (600..1100).contains(&(k * 100)) {
                assert_eq!(pinged, vec![11, 13, 14], "round {k}");
            } else if k * 100 < 600 {
                // The master's echo, and the others only in a refresh
                // round.
                assert!(pinged.contains(&11), "round {k}");
                assert!(pinged.len() < 3, "round {k}: {pinged:?}");
            }
            if k * 100 >= 1100 {
                // Nobody answered: dropped once the vouch ran out.
                assert_eq!(n.peers.len(), 1, "round {k}");
            }
        }
    }

    #[test]
    fn only_the_masters_vouch_for_the_same_view_counts() {
        let mut n = follower(2);
        let view = n.view_digest();
        for t in (100..1_500).step_by(100) {
            // Peer 3 vouches with our view, the master with another.
            let ping = |view| Message::Ping {
                seq: t,
                view,
                fresh_ms: 0,
                echo: None,
            };
            n.handle_message(13, ping(view), Mono(t - 50));
            n.handle_message(11, ping(view ^ 1), Mono(t - 50));
            n.handle_timeout(Mono(t));
            while n.poll_action().is_some() {}
        }
        // Peer 4 was last heard at 1: silent since 1,001.
        assert!(!n.peers.contains_key(&crate::core::test_node(4).cfg.addr));
        assert_eq!(n.peers.len(), 2);
    }

    #[test]
    fn a_ping_from_a_peer_not_pinged_lately_is_echoed_at_once() {
        let mut n = vouched_follower();
        let first = |seq| Message::Ping {
            seq,
            view: 0,
            fresh_ms: 0,
            echo: None,
        };
        // Its first PING is echoed at once.
        n.handle_message(13, first(1), Mono(310));
        let echoed = |n: &mut Node| -> Vec<Option<u64>> {
            pings_on(n, 13)
                .into_iter()
                .map(|(_, e)| e.map(|e| e.seq))
                .collect()
        };
        assert_eq!(echoed(&mut n), vec![Some(1)]);
        // Its next one, a heartbeat later, too: we sent it none since.
        n.handle_message(13, first(2), Mono(410));
        assert_eq!(echoed(&mut n), vec![Some(2)]);
        // One right after our echo is not.
        n.handle_message(13, first(3), Mono(420));
        assert_eq!(echoed(&mut n), vec![]);
    }

    /// A round trip of 90 ms, beyond three quarters of the heartbeat (a
    /// WAN, a starved host): the peer's answer to our PING arrives when
    /// we have sent it none for that long, and is not answered in turn,
    /// nor is a PING of its that crossed a newer one of ours; one that
    /// held ours long (it has not heard us since) is.
    #[test]
    fn a_late_answer_to_our_ping_is_not_answered() {
        let mut n = vouched_follower();
        // Our PINGs to peer 3 (link 13), by number.
        let sent = |n: &mut Node| -> Vec<u64> {
            pings_on(n, 13).into_iter().map(|(seq, _)| seq).collect()
        };
        let ping = |seq, ours: u64, held_ms| Message::Ping {
            seq,
            view: 0,
            fresh_ms: 0,
            echo: Some(Echo {
                seq: ours,
                held_ms,
                stamp_unix_ms: 0,
            }),
        };
        n.handle_message(13, ping(1, 0, 0), Mono(310));
        let ours = sent(&mut n);
        assert_eq!(ours.len(), 1, "its first PING is echoed at once");
        // Its answer, 90 ms later, held 2 ms on its side.
        n.handle_message(13, ping(2, ours[0], 2), Mono(400));
        assert!(sent(&mut n).is_empty(), "an answer to ours is not answered");
        // 90 ms later again, a PING that echoes the same PING of ours but
        // held it 180 ms: the peer has not heard us since, so it is.
        n.handle_message(13, ping(3, ours[0], 180), Mono(490));
        assert_eq!(sent(&mut n).len(), 1, "ours held long is answered");
        // One that read an older PING of ours than our latest just before
        // it left, its round crossing our answer: it heard us.
        n.handle_message(13, ping(4, ours[0], 2), Mono(580));
        assert!(sent(&mut n).is_empty(), "a crossing PING is not answered");
    }
}
