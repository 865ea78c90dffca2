//! Reconnects: every address this node keeps trying to reach (`--join`
//! targets, lost peers, introductions), when it dials each next (backoff
//! with seeded jitter), and when it gives one up (`--reconnect-timeout`,
//! `-forget`, introductions past their attempts).
//!
//! It owns the reconnect set and its bounds (`MAX_WANTED`,
//! `MAX_DIALS_IN_FLIGHT`). It asks for dials (`Action::Connect`) and
//! never opens one; it never decides who is master.

use std::fmt;
use std::net::SocketAddr;

use super::{Action, LinkId, Node, Origin, Peer};
use crate::event::{Event, Forgotten};
use crate::protocol::LinkKind;
use crate::time::Mono;

/// Reconnect delays grow from one heartbeat up to this (guarantee 7,
/// docs/GUARANTEES.md).
pub const MAX_BACKOFF_MS: u64 = 5_000;

/// Attempts to reach a member we were introduced to before giving up: an
/// introduction names a node that was alive a moment ago, so a few quick
/// tries suffice; a dead one is reported by others leaving it out.
pub(super) const MESH_ATTEMPTS: u32 = 3;

/// Dials under way at once (a connect started and its handshake not done).
/// Each holds a descriptor and a slot of `--max-conns`, so a flood of
/// introductions must not open them all at once (issue 10: 10,000 MEETs
/// used up every descriptor). Honest dials come in bursts of at most the
/// cluster's size (a merge of two groups, a restart of everyone) and
/// finish in a round trip or two, so 64 at once spreads a burst of 200
/// over a few round trips on a LAN, a few milliseconds, while leaving
/// `--max-conns` (1024) for peers and consoles.
pub const MAX_DIALS_IN_FLIGHT: usize = 64;

/// Addresses this node tries to reach at once: `--join` targets, lost
/// peers and introductions together (the reconnect set, `bossd_reconnecting`
/// in `/metrics`). An honest cluster of n nodes has at most the n - 1
/// others in it; 2048 is twice the 1,000 nodes the core bench runs and
/// twice [`MAX_INTRODUCED_PER_PEER`](super::MAX_INTRODUCED_PER_PEER), so
/// one peer's introductions fill at most half of it; full, it costs twice
/// what 1024 did.
pub const MAX_WANTED: usize = 2048;

/// After a lost peer answers again, the other lost peers are dialled at
/// once rather than after their backoff (the network may have healed), at
/// most once in this long. A peer whose links break as soon as they open
/// never starts such a round; this bounds the rest, such as many members
/// coming back one after the other, to a round per half second, while a
/// partition healed a few seconds after the last still heals at once.
pub(super) const HEAL_INTERVAL_MS: u64 = 500;

/// Why an operator's connect request was not started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectError {
    ThisNode(SocketAddr),
    AlreadyPeer(SocketAddr),
    Leaving,
    /// The reconnect set holds [`MAX_WANTED`] addresses already.
    TooMany,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::ThisNode(a) => write!(f, "{a} is this node"),
            ConnectError::AlreadyPeer(a) => write!(f, "already connected to {a}"),
            ConnectError::Leaving => f.write_str("this node is leaving"),
            ConnectError::TooMany => write!(
                f,
                "this node already tries to reach {MAX_WANTED} addresses; -forget some first"
            ),
        }
    }
}

/// Why `-forget` did nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForgetError {
    /// A live peer is not being retried; it would be at once if forgotten.
    LivePeer(SocketAddr),
    /// The address is neither retried nor a `--join` target.
    Unknown(SocketAddr),
}

impl fmt::Display for ForgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForgetError::LivePeer(a) => write!(f, "{a} is a live peer, not a lost one"),
            ForgetError::Unknown(a) => write!(f, "{a} is not being retried"),
        }
    }
}

/// An address this node keeps trying to reach.
pub(super) struct Want {
    pub(super) kind: LinkKind,
    pub(super) source: Source,
    pub(super) failures: u32,
    /// `None` while a dial is under way.
    pub(super) next_try: Option<Mono>,
    /// When an introduction last brought its dial forward, if one did.
    pub(super) met: Option<Mono>,
    /// It broke the protocol: until `next_try` and the dial then, its
    /// HELLOs are refused.
    pub(super) penalized: bool,
    /// Links to it in a row that broke right after their handshake.
    pub(super) flaps: u32,
    /// Its last link broke the protocol or broke within `timeout_ms` of
    /// its handshake: another lost peer answering again (a healed
    /// network) does not cut its backoff short, which must grow.
    pub(super) suspect: bool,
    /// Why the last attempt got no answer at all, for the answer to `-c`.
    pub(super) last_error: Option<String>,
    /// A `join-failed` warning was logged for this target: its success
    /// is logged too (`join-reached`).
    pub(super) warned: bool,
}

/// How the join of one address (`--join`, `-c`) stands: what the console
/// answers `-c` with once the first attempt had an outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinProgress<'a> {
    /// The address is a peer.
    Joined,
    /// Still tried: `failures` attempts ended without a link, the last one
    /// unanswered for `last_error` if that is how it ended (a redirect or
    /// a closed handshake leaves it `None`).
    Trying {
        failures: u32,
        last_error: Option<&'a str>,
    },
    /// Not tried any more: refused, declined, renamed, or this node left.
    Ended,
}

/// Why an address is wanted, which decides how long it is tried. Ordered:
/// a later reason outranks an earlier one for the same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Source {
    /// Named by a peer (MEET, or the master a REDIRECT names): tried
    /// [`MESH_ATTEMPTS`] times.
    Introduced { by: SocketAddr },
    /// A peer lost without LEAVE at `lost_at`: tried until
    /// `reconnect_timeout_ms` later.
    Lost { lost_at: Mono },
    /// `--join` or `-c`: tried until reached.
    Join,
}

/// How a link to a peer ended, for how soon it is dialled again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Loss {
    /// Closed, reset or silent.
    Closed,
    /// This node closed it for a protocol violation.
    Violation,
}

/// splitmix64: tiny, seedable, and good enough for jitter.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`, or 0 when `n` is 0.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// The wait before the next dial after `failures` failures: a step from
/// two heartbeats doubling up to [`MAX_BACKOFF_MS`], drawn between half
/// and all of it, never under a heartbeat (guarantee 7,
/// docs/GUARANTEES.md).
pub(super) fn backoff_ms(heartbeat_ms: u64, failures: u32, rng: &mut Rng) -> u64 {
    let base = heartbeat_ms
        .max(1)
        .saturating_mul(1 << failures.min(16))
        .min(MAX_BACKOFF_MS);
    (base / 2 + rng.below(base / 2 + 1)).max(heartbeat_ms.min(base))
}

impl Node {
    /// Starts joining the cluster at `addr` (`-c`); retried until reached.
    pub fn connect(&mut self, addr: SocketAddr, now: Mono) -> Result<(), ConnectError> {
        if self.left {
            return Err(ConnectError::Leaving);
        }
        if addr == self.cfg.addr {
            return Err(ConnectError::ThisNode(addr));
        }
        if self.peers.contains_key(&addr) {
            return Err(ConnectError::AlreadyPeer(addr));
        }
        if !self.want(addr, LinkKind::Join, Source::Join, now) {
            return Err(ConnectError::TooMany);
        }
        self.dial_due(now);
        self.audit();
        Ok(())
    }

    /// A `--join` target: joined as [`Node::connect`] does, and, being
    /// configuration, retried for ever, also whenever it is lost later.
    pub fn join(&mut self, addr: SocketAddr, now: Mono) -> Result<(), ConnectError> {
        if self.left {
            return Err(ConnectError::Leaving);
        }
        if addr == self.cfg.addr {
            return Err(ConnectError::ThisNode(addr));
        }
        self.joins.insert(addr);
        match self.connect(addr, now) {
            Err(ConnectError::AlreadyPeer(_)) => Ok(()),
            other => other,
        }
    }

    /// Stops trying to reach `addr` now (`-forget`): a lost peer, an
    /// introduction or a `--join` target. If it comes back, it joins as
    /// any newcomer does.
    pub fn forget(&mut self, addr: SocketAddr, now: Mono) -> Result<(), ForgetError> {
        if self.peers.contains_key(&addr) {
            return Err(ForgetError::LivePeer(addr));
        }
        let wanted = self.wants.remove(&addr).is_some();
        let joined = self.joins.remove(&addr);
        if !wanted && !joined {
            return Err(ForgetError::Unknown(addr));
        }
        if let Some(link) = self.dialing(addr) {
            self.close(link, now);
        }
        self.event(Event::PeerForgotten {
            peer: addr,
            why: Forgotten::Operator,
        });
        self.dial_due(now);
        self.audit();
        Ok(())
    }

    /// How the join of `addr` stands, for the console's answer to `-c`.
    pub fn join_progress(&self, addr: SocketAddr) -> JoinProgress<'_> {
        if self.peers.contains_key(&addr) {
            return JoinProgress::Joined;
        }
        match self.wants.get(&addr) {
            Some(w) => JoinProgress::Trying {
                failures: w.failures,
                last_error: w.last_error.as_deref(),
            },
            None => JoinProgress::Ended,
        }
    }

    /// The most introductions from any one peer waiting to be dialled (at
    /// most [`MAX_INTRODUCED_PER_PEER`](super::MAX_INTRODUCED_PER_PEER)).
    pub fn introduced_by_one_peer(&self) -> usize {
        let mut by: Vec<SocketAddr> = self
            .wants
            .values()
            .filter_map(|w| match w.source {
                Source::Introduced { by } => Some(by),
                _ => None,
            })
            .collect();
        by.sort_unstable();
        by.chunk_by(|a, b| a == b)
            .map(<[SocketAddr]>::len)
            .max()
            .unwrap_or(0)
    }

    /// Starts (or keeps) trying to reach `addr`, for `source`; its first
    /// dial is due now. `false` when the reconnect set is full.
    pub(super) fn want(
        &mut self,
        addr: SocketAddr,
        kind: LinkKind,
        source: Source,
        now: Mono,
    ) -> bool {
        if self.left || addr == self.cfg.addr || self.peers.contains_key(&addr) {
            return false;
        }
        if let Some(w) = self.wants.get_mut(&addr) {
            // An operator's join outranks an introduction: it never gives up.
            if kind == LinkKind::Join {
                w.kind = LinkKind::Join;
            }
            if source > w.source {
                w.source = source;
            }
            return true;
        }
        if self.wants.len() >= MAX_WANTED && !self.make_room(source) {
            return false;
        }
        self.wants.insert(
            addr,
            Want {
                kind,
                source,
                failures: 0,
                next_try: Some(now),
                met: None,
                penalized: false,
                suspect: false,
                flaps: 0,
                last_error: None,
                warned: false,
            },
        );
        true
    }

    /// Frees a place in the full reconnect set for an address wanted for
    /// `source`: introductions give way to lost peers and joins, the one
    /// that failed most first. `false` when none can give way.
    pub(super) fn make_room(&mut self, source: Source) -> bool {
        if matches!(source, Source::Introduced { .. }) {
            return false;
        }
        let victim = self
            .wants
            .iter()
            .filter(|(_, w)| matches!(w.source, Source::Introduced { .. }))
            .filter(|(_, w)| w.next_try.is_some())
            .max_by_key(|(a, w)| (w.failures, std::cmp::Reverse(**a)))
            .map(|(a, w)| (*a, w.failures));
        let Some((addr, attempts)) = victim else {
            return false;
        };
        self.wants.remove(&addr);
        self.event(Event::GaveUp {
            peer: addr,
            attempts,
        });
        true
    }

    /// The peer `addr` went away without LEAVE: it is wanted again. A link
    /// that lasted is dialled again at once, and so is the first in a row
    /// lost within `timeout_ms` of its handshake (it may be an old link
    /// whose close waited behind a healed cut). From the second such link
    /// on, and after a protocol violation, the next dial goes on from the
    /// backoff step the address had reached, so a peer whose links break
    /// as soon as they open is not redialled in a loop.
    pub(super) fn lose(&mut self, addr: SocketAddr, peer: &Peer, loss: Loss, now: Mono) {
        let source = if self.joins.contains(&addr) {
            Source::Join
        } else {
            Source::Lost { lost_at: now }
        };
        if !self.want(addr, LinkKind::Mesh, source, now) {
            if !self.left {
                self.event(Event::PeerForgotten {
                    peer: addr,
                    why: Forgotten::Full,
                });
            }
            return;
        }
        let short = now.since(peer.established) < self.cfg.timeout_ms;
        let flaps = if short || loss == Loss::Violation {
            peer.flaps.saturating_add(1)
        } else {
            0
        };
        if let Some(w) = self.wants.get_mut(&addr) {
            w.flaps = flaps;
        }
        if loss == Loss::Closed && flaps <= 1 {
            return;
        }
        let failures = peer.failures.saturating_add(1);
        let delay = self.backoff(failures);
        if let Some(w) = self.wants.get_mut(&addr) {
            w.failures = failures;
            w.next_try = Some(now.plus(delay));
            w.penalized = loss == Loss::Violation;
            w.suspect = true;
        }
    }

    /// Whether `addr`'s HELLOs are refused now: it broke the protocol, and
    /// neither its backoff step nor this node's next dial to it is over.
    /// `Some(Some(ms))` while the step runs, `Some(None)` during the dial.
    pub(super) fn penalty_left(&self, addr: SocketAddr, now: Mono) -> Option<Option<u64>> {
        let w = self.wants.get(&addr).filter(|w| w.penalized)?;
        match w.next_try {
            None => Some(None),
            Some(next) => (now < next).then(|| Some(next.since(now))),
        }
    }

    /// When the next dial is due, if one can start. With every dial slot
    /// taken, no want can start before a dial ends, and that comes with
    /// an event (or the handshake deadline).
    pub(super) fn next_dial(&self) -> Option<Mono> {
        let (mut in_flight, mut due) = (0, None::<Mono>);
        for w in self.wants.values() {
            match w.next_try {
                None => in_flight += 1,
                Some(t) => due = Some(due.map_or(t, |d| d.min(t))),
            }
        }
        due.filter(|_| in_flight < MAX_DIALS_IN_FLIGHT)
    }

    /// Dials under way: wants whose dial started and did not end.
    pub(super) fn dials_in_flight(&self) -> usize {
        self.wants.values().filter(|w| w.next_try.is_none()).count()
    }

    /// Starts the dials that are due, earliest first, as far as
    /// [`MAX_DIALS_IN_FLIGHT`] allows; the rest wait for a dial to end. A
    /// lost peer past `reconnect_timeout_ms` is forgotten instead.
    pub(super) fn dial_due(&mut self, now: Mono) {
        // Called after every line: nothing to walk in a mesh at rest.
        if self.left || self.wants.is_empty() {
            return;
        }
        let timeout_ms = self.cfg.reconnect_timeout_ms;
        let mut in_flight = 0;
        let mut expired = Vec::new();
        let mut due: Vec<(Mono, SocketAddr)> = Vec::new();
        for (a, w) in &self.wants {
            let Some(t) = w.next_try else {
                in_flight += 1;
                continue;
            };
            if t > now {
                continue;
            }
            match w.source {
                Source::Lost { lost_at } if now >= lost_at.plus(timeout_ms) => expired.push(*a),
                _ => due.push((t, *a)),
            }
        }
        // With every slot taken, what is due waits for a dial to end; an
        // expired lost peer is forgotten all the same.
        let free = MAX_DIALS_IN_FLIGHT.saturating_sub(in_flight);
        for addr in expired {
            self.wants.remove(&addr);
            self.event(Event::PeerForgotten {
                peer: addr,
                why: Forgotten::ReconnectTimeout { timeout_ms },
            });
        }
        if due.len() > free {
            due.select_nth_unstable(free);
            due.truncate(free);
        }
        due.sort_unstable();
        for (_, addr) in due {
            self.dial(addr);
        }
    }

    pub(super) fn dial(&mut self, addr: SocketAddr) {
        if self.peers.contains_key(&addr) {
            self.wants.remove(&addr);
            return;
        }
        let Some(w) = self.wants.get_mut(&addr) else {
            return;
        };
        w.next_try = None;
        let kind = w.kind;
        self.actions.push_back(Action::Connect { addr, kind });
    }

    /// The handshake with `dialed` finished (under that address or
    /// another): it is wanted no more. Logs `join-reached` if its failure
    /// was logged; returns what was wanted.
    pub(super) fn reached(&mut self, dialed: SocketAddr) -> Option<Want> {
        let w = self.wants.remove(&dialed)?;
        if w.warned {
            self.event(Event::JoinReached {
                peer: dialed,
                attempts: w.failures.saturating_add(1),
            });
        }
        Some(w)
    }

    /// A dial to `addr` ended without a handshake: the next waits out the
    /// backoff, or an introduction past its attempts is given up.
    /// `unanswered` says why when nothing answered at all (not for a
    /// redirect). The first such failure of an operator's join (`--join`,
    /// `-c`) is a warning; later ones are not, as the retries go on.
    pub(super) fn dial_failed(&mut self, addr: SocketAddr, unanswered: Option<&str>, now: Mono) {
        let Some(w) = self.wants.get_mut(&addr) else {
            return;
        };
        if w.next_try.is_some() {
            // No dial of ours was under way: an old link's news.
            return;
        }
        w.failures = w.failures.saturating_add(1);
        if let Some(reason) = unanswered {
            w.last_error = Some(reason.to_owned());
            if w.kind == LinkKind::Join && !w.warned {
                w.warned = true;
                let attempts = w.failures;
                self.event(Event::JoinFailed {
                    peer: addr,
                    attempts,
                    reason: reason.to_owned(),
                });
            }
        }
        let Some(w) = self.wants.get_mut(&addr) else {
            return;
        };
        // A violator is let in again once this node's dial after its
        // penalty failed: it may be reachable one way only.
        w.penalized = false;
        if matches!(w.source, Source::Introduced { .. }) && w.failures >= MESH_ATTEMPTS {
            let attempts = w.failures;
            self.wants.remove(&addr);
            self.event(Event::GaveUp {
                peer: addr,
                attempts,
            });
            return;
        }
        let failures = w.failures;
        let delay = self.backoff(failures);
        let w = self.wants.get_mut(&addr).expect("checked above");
        w.next_try = Some(now.plus(delay));
    }

    /// The wait before the next dial after `failures` failures
    /// ([`backoff_ms`], with this node's jitter).
    pub(super) fn backoff(&mut self, failures: u32) -> u64 {
        backoff_ms(self.cfg.heartbeat_ms, failures, &mut self.rng)
    }

    /// The link of a dial to `addr` still in its handshake, if any.
    pub(super) fn dialing(&self, addr: SocketAddr) -> Option<LinkId> {
        self.links.iter().find_map(|(id, l)| match l.origin {
            Origin::Outbound { addr: a, .. } if a == addr && l.peer.is_none() => Some(*id),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest and largest of many draws for each failure count.
    fn range(heartbeat_ms: u64, failures: u32) -> (u64, u64) {
        let mut rng = Rng(7);
        (0..2_000)
            .map(|_| backoff_ms(heartbeat_ms, failures, &mut rng))
            .fold((u64::MAX, 0), |(lo, hi), d| (lo.min(d), hi.max(d)))
    }

    #[test]
    fn the_step_doubles_from_two_heartbeats_to_the_cap() {
        // (failures, the step): half of it to all of it is drawn.
        for (failures, step) in [(1, 200), (2, 400), (3, 800), (5, 3_200), (6, 5_000)] {
            let (lo, hi) = range(100, failures);
            assert!(lo >= step / 2 && hi <= step, "{failures}: {lo}..={hi}");
            assert!(hi - lo > step / 4, "{failures}: jitter spreads the draws");
        }
        assert_eq!(range(100, 40).1, MAX_BACKOFF_MS, "capped, and no overflow");
        assert_eq!(range(100, u32::MAX).1, MAX_BACKOFF_MS);
    }

    #[test]
    fn never_under_a_heartbeat() {
        assert_eq!(range(100, 0), (100, 100), "no failure yet: one heartbeat");
        assert!(range(1_000, 1).0 >= 1_000);
        // A heartbeat above the cap: the cap still bounds the wait.
        assert_eq!(range(8_000, 3), (MAX_BACKOFF_MS, MAX_BACKOFF_MS));
        assert!(range(0, 3).1 <= 8, "a zero heartbeat counts as 1 ms");
        assert_eq!(range(u64::MAX, u32::MAX), (MAX_BACKOFF_MS, MAX_BACKOFF_MS));
    }

    #[test]
    fn the_jitter_replays_from_the_seed() {
        let draws = |seed| {
            let mut rng = Rng(seed);
            (1..10)
                .map(|f| backoff_ms(100, f, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
        assert_eq!(Rng(1).below(0), 0);
    }
}
