//! The election core: a pure, deterministic state machine (sans-IO).
//!
//! It owns the membership view, the handshake decisions, the election and
//! the epoch, the reconnect plan and the journal. It is told what happened
//! (`handle_*`, with `now` in monotonic milliseconds), and the caller drains
//! what to do ([`Node::poll_action`]) and when to call again
//! ([`Node::next_deadline`]). It never touches a socket, never reads a
//! clock and draws randomness only from its own seeded generator, so a run
//! replays exactly from its inputs.
//!
//! The election is level-triggered: after every event the node recomputes
//! its role from its view and the last STATE each peer sent (`decide`).
//! The best member of a view claims mastership with an epoch above every
//! epoch in the view; the others follow it once its claim arrives.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;

use crate::event::{Event, Forgotten};
use crate::protocol::{Hello, LinkKind, Message, Role, State};
use crate::rule::{Candidate, Criterion, Rule};
use crate::time::{Mono, Wall};

/// Identifies one connection; the caller chooses the numbers.
pub type LinkId = usize;

/// Journal entries kept for `-j`: enough to read a bad afternoon, small
/// enough to answer in one screen.
pub const JOURNAL_LEN: usize = 100;

/// Reconnect delays grow from one heartbeat up to this (guarantee 7,
/// docs/GUARANTEES.md).
pub const MAX_BACKOFF_MS: u64 = 5_000;

/// Attempts to reach a member we were introduced to before giving up: an
/// introduction names a node that was alive a moment ago, so a few quick
/// tries suffice; a dead one is reported by others leaving it out.
const MESH_ATTEMPTS: u32 = 3;

/// The largest epoch, 2^53 - 1 (guarantee 9, docs/GUARANTEES.md). An epoch
/// is a fencing token that applications store and compare: in SQL
/// `BIGINT`, in a Java `long`, and in JSON read by JavaScript, whose
/// numbers are doubles and exact only up to 2^53 - 1. A peer announcing a
/// larger epoch breaks the protocol, and a node that would have to claim a
/// larger one stays without a role instead.
pub const MAX_EPOCH: u64 = (1 << 53) - 1;

/// How far a peer's epoch may run ahead of this node's wall clock, in ms:
/// one day. With `--strict` a new epoch is at least the claimant's wall
/// clock in ms, so an honest epoch is ahead of ours only by the two clocks'
/// disagreement (which strict mode needs far below a day) plus the few
/// re-claims since; without `--strict` epochs count elections from 1 and
/// stay far below any wall clock in ms (about 1.8 x 10^12 in 2027). An
/// epoch further ahead is a jump no honest node could make, so it breaks
/// the protocol: one line cannot use the range up, and the highest
/// acceptable epoch grows only as fast as the clock, which would take
/// 285,000 years to reach `MAX_EPOCH`.
pub const MAX_EPOCH_LEAD_MS: u64 = 86_400_000;

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
/// others in it; 1024 is five times the 200 nodes the benchmarks run and
/// the default `--max-conns`, and costs under 100 KiB when full.
pub const MAX_WANTED: usize = 1024;

/// Introductions from one peer that may wait to be dialled at once. An
/// honest member introduces at most the other members of its group, n - 2
/// in a cluster of n, so 512 never slows a cluster of up to 500; and one
/// hostile peer can fill at most half of [`MAX_WANTED`]. MEETs beyond either
/// bound are dropped and counted (`bossd_meets_dropped_total`).
pub const MAX_INTRODUCED_PER_PEER: usize = 512;

/// After a lost peer answers again, the other lost peers are dialled at
/// once rather than after their backoff (the network may have healed), at
/// most once in this long. A peer whose links break as soon as they open
/// never starts such a round; this bounds the rest, such as many members
/// coming back one after the other, to a round per half second, while a
/// partition healed a few seconds after the last still heals at once.
const HEAL_INTERVAL_MS: u64 = 500;

/// Heartbeat send times kept to date acknowledgements: an answer older
/// than this many heartbeats could not extend a lease anyway, since the
/// timeout is far shorter than 64 heartbeats in any sane setting.
const MAX_PINGS_KEPT: usize = 64;

/// Capacity the action queue keeps once drained: a heartbeat round to
/// every peer of a large cluster, not the peak of a burst.
const ACTIONS_KEEP: usize = 256;

/// Round trips kept per peer to estimate its clock offset. The estimate is
/// the tightest of the last 8, as NTP's clock filter keeps (RFC 5905
/// §10.1): enough to ride out a few delayed answers, few enough that
/// clocks drifting apart are followed within 8 heartbeats.
const SKEW_SAMPLES: usize = 8;

/// What a node is and the settings it must share with its cluster.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub started_unix_ms: u64,
    pub instance: u64,
    pub priority: i32,
    pub quorum: u32,
    pub strict: bool,
    pub rule: Rule,
    pub heartbeat_ms: u64,
    pub timeout_ms: u64,
    /// A peer lost without LEAVE is retried this long after it was last
    /// connected, then forgotten (`--reconnect-timeout`); `--join` targets
    /// are retried for ever.
    pub reconnect_timeout_ms: u64,
    /// Seeds the generator for backoff jitter.
    pub seed: u64,
    /// Unix milliseconds at `now` = 0. With `--strict`, a new epoch is at
    /// least the wall clock in milliseconds, so an epoch a restarted node
    /// forgot is never used twice (clocks agreeing to better than the time
    /// between two elections).
    pub wall_at_zero: Wall,
}

/// Something the caller must do, drained with [`Node::poll_action`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Queue this message on the link.
    Send(LinkId, Message),
    /// Open a connection and report it with `handle_dialed` or `handle_dial_failed`.
    Connect { addr: SocketAddr, kind: LinkKind },
    /// Close the link once what was queued on it is written.
    Close(LinkId),
    /// Something to log ([`crate::log::emit`] writes it).
    Log(Event),
    /// A peer's `-msg` text for this node's console.
    Deliver { from: SocketAddr, text: String },
    /// This node's role or master changed.
    RoleChanged(JournalEntry),
}

/// One role change, as `-j` lists it and the notify hook receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub at: Mono,
    pub epoch: u64,
    pub from: Role,
    pub to: Role,
    pub master: Option<SocketAddr>,
    pub cause: Cause,
}

/// Why the role changed; one word so it can travel in an environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Start,
    PeerJoined,
    PeerLost,
    PeerLeft,
    MasterLost,
    MasterLeft,
    QuorumLost,
    Outranked,
    Claim,
    Leave,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Start => "start",
            Cause::PeerJoined => "peer-joined",
            Cause::PeerLost => "peer-lost",
            Cause::PeerLeft => "peer-left",
            Cause::MasterLost => "master-lost",
            Cause::MasterLeft => "master-left",
            Cause::QuorumLost => "quorum-lost",
            Cause::Outranked => "outranked",
            Cause::Claim => "claim",
            Cause::Leave => "leave",
        })
    }
}

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

/// How much this node holds of what peers can make it hold, for
/// `/metrics` and the simulator's limit checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Links open, in the handshake or established.
    pub links: usize,
    /// Addresses being tried: `--join` targets, lost peers, introductions
    /// (at most [`MAX_WANTED`]).
    pub wanted: usize,
    /// Of those, dials under way (at most [`MAX_DIALS_IN_FLIGHT`]).
    pub dials_in_flight: usize,
    /// Of those, introductions.
    pub introduced: usize,
    /// Actions waiting for [`Node::poll_action`].
    pub actions: usize,
    /// Journal entries (at most [`JOURNAL_LEN`]).
    pub journal: usize,
    /// Peers that left lately, whose introductions are ignored.
    pub departed: usize,
    /// MEETs dropped over [`MAX_WANTED`] or [`MAX_INTRODUCED_PER_PEER`].
    pub meets_dropped: u64,
    /// Protocol violations by established peers.
    pub violations: u64,
}

/// A peer that finished the handshake, as `-cl` and `-r` show it.
#[derive(Clone, Debug)]
pub struct PeerInfo<'a> {
    pub hello: &'a Hello,
    pub state: State,
    pub last_heard: Mono,
    /// The peer's clock against ours; `None` until its first PONG.
    pub skew: Option<Skew>,
}

/// How far another node's wall clock is from this node's, measured by a
/// heartbeat's round trip (NTP-style, from three timestamps).
///
/// A PING leaves at `t1` and its PONG arrives at `t4`, both on our clock;
/// the peer stamps the PONG with its clock, `t2`, at some moment between.
/// So the peer's clock minus ours lies within `t2 - t4 .. t2 - t1`,
/// widened by 1 ms because every timestamp is truncated to whole
/// milliseconds: the estimate is the middle, `t2 - (t1 + t4) / 2`, and the
/// error half the round trip plus that millisecond. However the delay is
/// split between the two directions, the true offset lies within the
/// error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skew {
    /// The other clock minus ours, in ms: positive when it is ahead.
    pub offset_ms: i64,
    /// The true offset lies within `offset_ms` +- `error_ms`.
    pub error_ms: u64,
}

/// A place in the ranking that start times decide by no more than the
/// clock skew between the two nodes, so the order may be their clocks'
/// doing rather than when they started. Each node's `started` is read from
/// its own wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartDoubt {
    /// `Oldest` or `Youngest`: the criterion that ordered the two.
    pub criterion: Criterion,
    /// The member ranked first of the two.
    pub winner: SocketAddr,
    pub loser: SocketAddr,
    /// How far apart the two start times are, as each node read its clock.
    pub start_gap_ms: u64,
    /// The loser's clock against the winner's.
    pub skew: Skew,
}

/// The status line's values (docs/GUARANTEES.md, status line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: SocketAddr,
    pub role: Role,
    pub master: Option<SocketAddr>,
    pub epoch: u64,
    pub peers: usize,
    pub quorum: u32,
    pub started_unix_ms: u64,
    pub rule: Rule,
}

/// One node's election state machine.
pub struct Node {
    cfg: Config,
    links: BTreeMap<LinkId, Link>,
    peers: BTreeMap<SocketAddr, Peer>,
    role: Role,
    /// The last epoch this node accepted or claimed; never decreases.
    epoch: u64,
    /// The master of `epoch`, if there was one.
    epoch_master: Option<SocketAddr>,
    wants: BTreeMap<SocketAddr, Want>,
    journal: VecDeque<JournalEntry>,
    actions: VecDeque<Action>,
    rng: Rng,
    left: bool,
    /// Why the last master was lost, while no new one is known: the next
    /// election's journal entry names it rather than the claim that ended it.
    lost_master: Option<Cause>,
    /// This node claims mastership of `epoch` (the STATE it sends says
    /// master); without `--strict` that is the same as being master.
    claimed: bool,
    /// When the current claim was sent.
    claim_sent: Mono,
    /// With `--strict`, this node follows no master but `epoch_master`
    /// before this time (guarantee 8 in docs/GUARANTEES.md).
    bound_until: Option<Mono>,
    /// Peers that left gracefully, until when an introduction naming them
    /// is ignored: a member that has not yet seen the LEAVE may still name
    /// them (guarantee 6 in docs/GUARANTEES.md: no reconnecting to a node that left).
    departed: BTreeMap<SocketAddr, Mono>,
    /// Send times of recent heartbeats, to date the acknowledgements.
    pings: VecDeque<(u64, Mono)>,
    /// When heartbeats go out next; `None` while there are no peers.
    next_heartbeat: Option<Mono>,
    /// Number of the last heartbeat sent.
    heartbeat_seq: u64,
    /// The ranking's first two members (address and instance each) when
    /// their order was last checked against the clock skew, and whether a
    /// warning was logged for them: one warning per decision.
    start_doubt_checked: Option<(MemberId, MemberId, bool)>,
    /// `--join` targets: configuration, retried for ever, also once lost.
    joins: BTreeSet<SocketAddr>,
    /// Earliest time a returning peer makes the others be dialled at once.
    next_heal: Mono,
    /// Whether the error that no epoch is left to claim was logged.
    epoch_exhausted: bool,
    meets_dropped: u64,
    violations: u64,
}

/// A member of one process's life: address and instance.
type MemberId = (SocketAddr, u64);

struct Link {
    origin: Origin,
    /// The peer's address once the handshake finished on this link.
    peer: Option<SocketAddr>,
    /// When the link opened: a dial not through its handshake within
    /// `timeout_ms` (a cut network answers nothing) counts as failed.
    opened: Mono,
    /// A join this node dialed: its peers at the dial, its own group
    /// (`Peer::relay_to`). Peers that link to it while the handshake runs
    /// are mostly the acceptor's members, introduced by its flood.
    group_at_dial: Option<Vec<SocketAddr>>,
}

#[derive(Clone, Copy)]
enum Origin {
    /// Dialed by this node to `addr`, announcing `kind` in its HELLO.
    Outbound {
        addr: SocketAddr,
        kind: LinkKind,
    },
    Inbound,
}

struct Peer {
    link: LinkId,
    hello: Hello,
    state: State,
    /// When any line from the peer last arrived: silence past `timeout_ms`
    /// drops it from the view.
    last_heard: Mono,
    /// Earliest time to send this peer our members again when its view
    /// digest differs from ours.
    next_sync: Mono,
    /// Send time of the latest heartbeat this peer acknowledged.
    acked_sent: Mono,
    /// Whether `state` came from the peer (its STATE follows its HELLO):
    /// until then its epoch is unknown, and no claim may be made above it.
    state_known: bool,
    /// The last few clock offsets measured by heartbeats, oldest first.
    skew_samples: VecDeque<Skew>,
    /// On a join link this node dialed, until the peer's first STATE: our
    /// peers when we dialed it (our group), to whom the MEETs
    /// the acceptor sends ahead of its STATE (its group) are passed on.
    relay_to: Option<Vec<SocketAddr>>,
    /// MEETs passed on from this link so far: at most
    /// [`MAX_INTRODUCED_PER_PEER`].
    relayed: usize,
    /// When the handshake finished, the reconnect backoff step its address
    /// had reached by then, and how many links to it in a row broke within
    /// `timeout_ms` of their handshake (or for a protocol violation): from
    /// the second such link on, the next dial goes on from that step
    /// instead of starting over.
    established: Mono,
    failures: u32,
    flaps: u32,
    /// Whether this link's MEETs were dropped over a limit (warned once).
    meets_dropped: bool,
    /// Whether its round trip was reported as eating the lease margin
    /// (`--strict`); cleared when it recovers.
    lease_margin_warned: bool,
}

/// An address this node keeps trying to reach.
struct Want {
    kind: LinkKind,
    source: Source,
    failures: u32,
    /// `None` while a dial is under way.
    next_try: Option<Mono>,
    /// When an introduction last brought its dial forward, if one did.
    met: Option<Mono>,
    /// It broke the protocol: until `next_try` and the dial then, its
    /// HELLOs are refused.
    penalized: bool,
    /// Links to it in a row that broke right after their handshake.
    flaps: u32,
    /// Its last link broke the protocol or broke within `timeout_ms` of
    /// its handshake: another lost peer answering again (a healed
    /// network) does not cut its backoff short, which must grow.
    suspect: bool,
    /// Why the last attempt got no answer at all, for the answer to `-c`.
    last_error: Option<String>,
    /// A `join-failed` warning was logged for this target: its success
    /// is logged too (`join-reached`).
    warned: bool,
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
enum Source {
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
enum Loss {
    /// Closed, reset or silent.
    Closed,
    /// This node closed it for a protocol violation.
    Violation,
}

impl Node {
    /// A node alone at time 0: no peers, epoch 0, and no master unless
    /// its quorum is 1, when it is its own master at once (guarantee 1,
    /// docs/GUARANTEES.md, for a group of one), with the `start` change queued as an action.
    pub fn new(cfg: Config) -> Node {
        let rng = Rng(cfg.seed);
        let mut node = Node {
            cfg,
            links: BTreeMap::new(),
            peers: BTreeMap::new(),
            role: Role::None,
            epoch: 0,
            epoch_master: None,
            wants: BTreeMap::new(),
            journal: VecDeque::new(),
            actions: VecDeque::new(),
            rng,
            left: false,
            lost_master: None,
            next_heartbeat: None,
            heartbeat_seq: 0,
            claimed: false,
            claim_sent: Mono::ZERO,
            bound_until: None,
            pings: VecDeque::new(),
            departed: BTreeMap::new(),
            start_doubt_checked: None,
            joins: BTreeSet::new(),
            next_heal: Mono::ZERO,
            epoch_exhausted: false,
            meets_dropped: 0,
            violations: 0,
        };
        node.decide(Cause::Start, None, Mono::ZERO);
        node
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The next thing to do, until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        // A mesh repair to 100 peers queues 10,000 MEETs at once; the queue
        // must not keep that capacity for good (massif: it was most of a
        // node's heap; docs/BENCHMARKS.md, "Memory per node").
        if action.is_none() && self.actions.capacity() > ACTIONS_KEEP {
            self.actions.shrink_to(ACTIONS_KEEP);
        }
        action
    }

    /// When `handle_timeout` must be called next, if ever.
    pub fn next_deadline(&self) -> Option<Mono> {
        let silence = self
            .peers
            .values()
            .map(|p| p.last_heard.plus(self.cfg.timeout_ms))
            .min();
        // With --strict: the end of a binding that keeps this node waiting,
        // and the end of this master's lease.
        let strict = self.cfg.strict.then(|| {
            let waiting = self.bound_until.filter(|_| self.role != Role::Follower);
            let lease = (self.role == Role::Master)
                .then(|| self.lease_until(Mono::ZERO))
                .flatten()
                .filter(|t| *t != Mono::MAX);
            waiting.into_iter().chain(lease).min()
        });
        let handshake = self
            .links
            .values()
            .filter(|l| l.peer.is_none())
            .map(|l| l.opened.plus(self.cfg.timeout_ms))
            .min();
        // With every dial slot taken, no want can start before a dial
        // ends, and that comes with an event (or the handshake deadline).
        let (mut in_flight, mut dials) = (0, None::<Mono>);
        for w in self.wants.values() {
            match w.next_try {
                None => in_flight += 1,
                Some(t) => dials = Some(dials.map_or(t, |d| d.min(t))),
            }
        }
        let dials = dials.filter(|_| in_flight < MAX_DIALS_IN_FLIGHT);
        dials
            .into_iter()
            .chain(self.next_heartbeat)
            .chain(silence)
            .chain(handshake)
            .chain(strict.flatten())
            .min()
    }

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
        Ok(())
    }

    /// Sends operator text to every peer's console, its control
    /// characters replaced ([`crate::protocol::printable`]); returns how
    /// many peers.
    pub fn send_text(&mut self, text: &str) -> usize {
        let text = crate::protocol::printable(text);
        let links: Vec<LinkId> = self.peers.values().map(|p| p.link).collect();
        for link in &links {
            self.send(*link, Message::Msg(text.clone()));
        }
        links.len()
    }

    /// Tells every peer this node leaves, and closes every link.
    pub fn leave(&mut self, now: Mono) {
        if self.left {
            return;
        }
        for peer in self.peers.values() {
            self.actions
                .push_back(Action::Send(peer.link, Message::Leave));
        }
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            self.actions.push_back(Action::Close(id));
        }
        self.links.clear();
        self.peers.clear();
        self.wants.clear();
        self.left = true;
        self.claimed = false;
        self.set_state(Role::None, self.epoch, self.epoch_master, Cause::Leave, now);
    }

    /// The dial for `addr` opened as `link`; the handshake starts.
    pub fn handle_dialed(&mut self, link: LinkId, addr: SocketAddr, kind: LinkKind, now: Mono) {
        if self.left {
            self.actions.push_back(Action::Close(link));
            return;
        }
        self.links.insert(
            link,
            Link {
                origin: Origin::Outbound { addr, kind },
                peer: None,
                opened: now,
                group_at_dial: (kind == LinkKind::Join)
                    .then(|| self.peers.keys().copied().collect()),
            },
        );
        let hello = self.hello(kind);
        self.send(link, hello);
    }

    /// The dial for `addr` could not even start.
    pub fn handle_dial_failed(&mut self, addr: SocketAddr, reason: &str, now: Mono) {
        self.event(Event::DialFailed {
            peer: addr,
            reason: reason.to_owned(),
        });
        self.dial_failed(addr, Some(reason), now);
        self.dial_due(now);
    }

    /// The dial opened as `link` failed before any answer: the connection
    /// was refused or the network unreachable. The caller then closes the
    /// link; `handle_link_closed` has nothing left to do for it.
    pub fn handle_dial_error(&mut self, link: LinkId, reason: &str, now: Mono) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        if let (None, Origin::Outbound { addr, .. }) = (l.peer, l.origin) {
            self.links.remove(&link);
            self.handle_dial_failed(addr, reason, now);
        }
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

    /// A connection arrived whose first line was a peer message.
    pub fn handle_accepted(&mut self, link: LinkId, now: Mono) {
        if self.left {
            self.actions.push_back(Action::Close(link));
            return;
        }
        self.links.insert(
            link,
            Link {
                origin: Origin::Inbound,
                peer: None,
                opened: now,
                group_at_dial: None,
            },
        );
    }

    /// A line arrived on a peer link.
    pub fn handle_message(&mut self, link: LinkId, msg: Message, now: Mono) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        let (origin, peer) = (l.origin, l.peer);
        match peer {
            Some(addr) => self.on_peer_message(link, addr, msg, now),
            None => self.on_handshake_message(link, origin, msg, now),
        }
        self.dial_due(now);
    }

    /// A line on the link could not be decoded (`reason`): the loop's
    /// framer or decoder refused it. An established peer broke the protocol
    /// and is treated as for any other violation; a link still in its
    /// handshake is closed and, if dialed, counts as a failed dial.
    pub fn handle_protocol_violation(&mut self, link: LinkId, reason: &str, now: Mono) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        match (l.peer, l.origin) {
            (Some(addr), _) => self.violation(link, addr, None, reason, now),
            (None, origin) => {
                let reason = format!("{reason}, before the handshake");
                self.handshake_violation(link, origin, &reason, now);
            }
        }
        self.dial_due(now);
    }

    /// The link is gone: closed by either side, failed, or reset.
    pub fn handle_link_closed(&mut self, link: LinkId, now: Mono) {
        self.link_closed(link, now);
        self.dial_due(now);
    }

    fn link_closed(&mut self, link: LinkId, now: Mono) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        match (l.peer, l.origin) {
            (Some(addr), _) => {
                if self.peers.get(&addr).is_some_and(|p| p.link == link) {
                    let peer = self.peers.remove(&addr).expect("checked above");
                    self.event(Event::PeerLost { peer: addr });
                    // A peer lost without LEAVE may come back: keep trying.
                    self.lose(addr, &peer, Loss::Closed, now);
                    self.decide(Cause::PeerLost, Some(addr), now);
                }
            }
            (None, Origin::Outbound { addr, .. }) => {
                self.dial_failed(addr, Some("closed before the handshake"), now)
            }
            (None, Origin::Inbound) => {}
        }
    }

    /// Time passed; due reconnects start.
    pub fn handle_timeout(&mut self, now: Mono) {
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
        let stuck: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.peer.is_none() && now >= l.opened.plus(self.cfg.timeout_ms))
            .map(|(id, _)| *id)
            .collect();
        let unanswered = format!("no answer within {} ms", self.cfg.timeout_ms);
        for link in stuck {
            self.event(Event::HandshakeTimeout { link });
            self.close_failed(link, Some(&unanswered), now);
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            let links: Vec<LinkId> = self.peers.values().map(|p| p.link).collect();
            self.ping(&links, now);
            self.next_heartbeat = Some(now.plus(self.cfg.heartbeat_ms));
        }
        if self.peers.is_empty() {
            self.next_heartbeat = None;
        }
        self.departed.retain(|_, until| now < *until);
        if self.cfg.strict {
            let unbound = self.bound_until.is_some_and(|t| now >= t);
            if unbound {
                self.bound_until = None;
            }
            let lease_over =
                self.role == Role::Master && self.lease_until(now).is_none_or(|t| now >= t);
            if unbound || lease_over {
                self.decide(Cause::QuorumLost, None, now);
            }
        }
        self.dial_due(now);
    }

    /// Values for the `-s` line.
    pub fn status(&self) -> Status {
        Status {
            id: self.cfg.addr,
            role: self.role,
            master: self.master(),
            epoch: self.epoch,
            peers: self.peers.len(),
            quorum: self.cfg.quorum,
            started_unix_ms: self.cfg.started_unix_ms,
            rule: self.cfg.rule.clone(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The master this node follows or is, if any.
    pub fn master(&self) -> Option<SocketAddr> {
        match self.role {
            Role::None => None,
            Role::Master | Role::Follower => self.epoch_master,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Peers that finished the handshake, by address.
    pub fn peers(&self) -> impl Iterator<Item = PeerInfo<'_>> {
        self.peers.values().map(|p| PeerInfo {
            hello: &p.hello,
            state: p.state,
            last_heard: p.last_heard,
            skew: best_skew(&p.skew_samples),
        })
    }

    /// The clock of the member at `addr` against this node's: zero for
    /// this node, `None` for a peer not yet measured or not a peer.
    pub fn skew(&self, addr: SocketAddr) -> Option<Skew> {
        if addr == self.cfg.addr {
            return Some(Skew::ZERO);
        }
        best_skew(&self.peers.get(&addr)?.skew_samples)
    }

    /// Whether the order of `winner` before `loser` (adjacent in the
    /// ranking) rests on start times no further apart than the clock skew
    /// between the two nodes, counted in the direction that could reverse
    /// it. Only when `oldest` or `youngest` is the criterion that orders
    /// them, and only once both clocks are measured.
    pub fn start_doubt(&self, winner: &Candidate, loser: &Candidate) -> Option<StartDoubt> {
        let criterion = self.cfg.rule.deciding_criterion(winner, loser)?;
        let skew = Skew::between(self.skew(winner.addr)?, self.skew(loser.addr)?);
        let start_gap_ms = winner.started_unix_ms.abs_diff(loser.started_unix_ms);
        // On the winner's clock the loser started at its own reading minus
        // the offset. With `oldest` a positive offset (the loser's clock
        // ahead) eats into the gap, with `youngest` a negative one does.
        let toward = match criterion {
            Criterion::Oldest => i128::from(skew.offset_ms),
            Criterion::Youngest => -i128::from(skew.offset_ms),
            Criterion::Priority | Criterion::LowestAddr | Criterion::HighestAddr => return None,
        };
        (i128::from(start_gap_ms) <= toward + i128::from(skew.error_ms)).then_some(StartDoubt {
            criterion,
            winner: winner.addr,
            loser: loser.addr,
            start_gap_ms,
            skew,
        })
    }

    /// Every member of the view, best first under the rule.
    pub fn ranking(&self) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = std::iter::once(self.me())
            .chain(self.peers.values().map(|p| candidate(&p.hello)))
            .collect();
        v.sort_by(|a, b| self.cfg.rule.compare(a, b));
        v
    }

    /// The last role changes, oldest first.
    pub fn journal(&self) -> impl Iterator<Item = &JournalEntry> {
        self.journal.iter()
    }

    /// Whether this node has left the cluster.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// The most introductions from any one peer waiting to be dialled (at
    /// most [`MAX_INTRODUCED_PER_PEER`]).
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

    /// How much this node holds of what its peers can make it hold; linear
    /// in the reconnect set.
    pub fn counts(&self) -> Counts {
        let introduced = self
            .wants
            .values()
            .filter(|w| matches!(w.source, Source::Introduced { .. }))
            .count();
        Counts {
            links: self.links.len(),
            wanted: self.wants.len(),
            dials_in_flight: self.dials_in_flight(),
            introduced,
            actions: self.actions.len(),
            journal: self.journal.len(),
            departed: self.departed.len(),
            meets_dropped: self.meets_dropped,
            violations: self.violations,
        }
    }

    fn hello(&self, kind: LinkKind) -> Message {
        Message::Hello(Hello {
            kind,
            addr: self.cfg.addr,
            started_unix_ms: self.cfg.started_unix_ms,
            instance: self.cfg.instance,
            priority: self.cfg.priority,
            quorum: self.cfg.quorum,
            strict: self.cfg.strict,
            rule: self.cfg.rule.clone(),
        })
    }

    fn state_msg(&self) -> Message {
        Message::State(State {
            role: if self.claimed {
                Role::Master
            } else {
                self.role
            },
            epoch: self.epoch,
            epoch_master: self.epoch_master,
        })
    }

    fn me(&self) -> Candidate {
        Candidate {
            addr: self.cfg.addr,
            started_unix_ms: self.cfg.started_unix_ms,
            priority: self.cfg.priority,
            instance: self.cfg.instance,
        }
    }

    fn on_handshake_message(&mut self, link: LinkId, origin: Origin, msg: Message, now: Mono) {
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
    fn handshake_violation(&mut self, link: LinkId, origin: Origin, reason: &str, now: Mono) {
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

    fn on_inbound_hello(&mut self, link: LinkId, h: Hello, now: Mono) {
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

    fn on_outbound_hello(
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
    fn replaced(&mut self, addr: SocketAddr, now: Mono) {
        if let Some(old) = self.peers.remove(&addr) {
            self.lose(addr, &old, Loss::Closed, now);
        }
        self.decide(Cause::PeerLost, Some(addr), now);
    }

    /// Why a peer with these settings cannot join us, naming both values.
    fn mismatch(&self, h: &Hello) -> Option<String> {
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

    fn establish(&mut self, link: LinkId, kind: LinkKind, h: Hello, now: Mono) {
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

    fn on_peer_message(&mut self, link: LinkId, addr: SocketAddr, msg: Message, now: Mono) {
        if let Some(p) = self.peers.get_mut(&addr) {
            p.last_heard = now;
        }
        let from_my_master = self.epoch_master == Some(addr) && addr != self.cfg.addr;
        if from_my_master && self.role == Role::Follower {
            self.bound_until = Some(now.plus(self.cfg.timeout_ms));
        }
        match msg {
            Message::State(s) => {
                if let Some(reason) = self.epoch_refusal(s.epoch, now) {
                    // A peer sending it is broken or hostile: following it
                    // would use the range up (guarantee 9).
                    self.violation(link, addr, Some(("STATE", s.epoch)), &reason, now);
                    return;
                }
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.state = s;
                    p.state_known = true;
                    p.relay_to = None;
                }
                if from_my_master && s.role != Role::Master {
                    // The master gave up its claim: it releases us.
                    self.bound_until = None;
                }
                self.decide(Cause::Claim, None, now);
            }
            Message::Meet(other) => {
                let left_lately = self.departed.get(&other).is_some_and(|t| now < *t);
                // On a join link this node dialed, MEETs before the peer's
                // first STATE are the acceptor's members (`establish`):
                // they are passed on to the members we had when we dialed
                // (those who linked to us since came mostly from the
                // acceptor's group), and not dialed from here, since the
                // acceptor introduced us to each of them.
                let Some(p) = self.peers.get_mut(&addr) else {
                    return;
                };
                if p.relay_to.is_some() {
                    if other == self.cfg.addr || left_lately {
                        return;
                    }
                    if p.relayed >= MAX_INTRODUCED_PER_PEER {
                        self.meets_dropped(addr);
                        return;
                    }
                    p.relayed += 1;
                    let links: Vec<LinkId> = self.peers[&addr]
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
                } else if other != self.cfg.addr && !self.peers.contains_key(&other) && !left_lately
                {
                    self.introduce(other, addr, now);
                }
            }
            Message::Msg(text) => self.actions.push_back(Action::Deliver {
                from: addr,
                text: crate::protocol::printable(&text),
            }),
            Message::Ping { seq, view } => {
                let replied_unix_ms = self.wall(now).ms();
                self.send(
                    link,
                    Message::Pong {
                        seq,
                        replied_unix_ms,
                    },
                );
                self.sync_view(addr, view, now);
            }
            Message::Pong {
                seq,
                replied_unix_ms,
            } => {
                let wall_at_zero = self.cfg.wall_at_zero;
                if let Some(&(_, sent)) = self.pings.iter().find(|(n, _)| *n == seq)
                    && let Some(p) = self.peers.get_mut(&addr)
                {
                    p.acked_sent = p.acked_sent.max(sent);
                    if p.skew_samples.len() == SKEW_SAMPLES {
                        p.skew_samples.pop_front();
                    }
                    p.skew_samples.push_back(Skew::from_round_trip(
                        wall_at_zero.at(sent),
                        replied_unix_ms,
                        wall_at_zero.at(now),
                    ));
                    if self.cfg.strict {
                        self.check_lease_margin(addr, now.since(sent));
                    }
                    if self.cfg.strict && self.claimed {
                        self.decide(Cause::Claim, None, now);
                    }
                    self.check_start_doubt();
                }
            }
            Message::Leave => {
                self.event(Event::PeerLeft { peer: addr });
                if from_my_master {
                    self.bound_until = None;
                }
                self.departed
                    .insert(addr, now.plus(self.cfg.timeout_ms.saturating_mul(2)));
                self.links.remove(&link);
                self.peers.remove(&addr);
                self.wants.remove(&addr);
                self.actions.push_back(Action::Close(link));
                self.decide(Cause::PeerLeft, Some(addr), now);
            }
            other => {
                let reason = format!("{} after the handshake", other.name());
                self.violation(link, addr, None, &reason, now);
            }
        }
    }

    /// The established peer `addr` broke the protocol on `link` (`message`
    /// names the line and its epoch, when an epoch was the fault). The link
    /// closes and the peer counts as lost, but it is neither forgotten nor
    /// let straight back: it is dialled again after the next step of its
    /// backoff, and its own HELLOs are refused until then, so a peer that
    /// breaks every link costs one link and one log line per step.
    fn violation(
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
        self.links.remove(&link);
        self.actions.push_back(Action::Close(link));
        if self.peers.get(&addr).is_some_and(|p| p.link == link) {
            let peer = self.peers.remove(&addr).expect("checked above");
            self.lose(addr, &peer, Loss::Violation, now);
            self.decide(Cause::PeerLost, Some(addr), now);
        }
    }

    /// Why a peer's epoch breaks the protocol, if it does: above
    /// [`MAX_EPOCH`], or more than [`MAX_EPOCH_LEAD_MS`] ahead of this
    /// node's wall clock.
    fn epoch_refusal(&self, epoch: u64, now: Mono) -> Option<String> {
        if epoch > MAX_EPOCH {
            return Some(format!("epoch above {MAX_EPOCH}, the largest"));
        }
        let limit = self.epoch_limit(now);
        (epoch > limit)
            .then(|| format!("epoch more than a day ahead of this node's clock ({limit} at most)"))
    }

    /// The largest epoch a peer may announce now.
    fn epoch_limit(&self, now: Mono) -> u64 {
        self.wall(now).plus(MAX_EPOCH_LEAD_MS).ms().min(MAX_EPOCH)
    }

    /// `by` introduced `addr` (MEET): dial it, within the bounds on
    /// introductions.
    fn introduce(&mut self, addr: SocketAddr, by: SocketAddr, now: Mono) {
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
    fn meets_dropped(&mut self, by: SocketAddr) {
        self.meets_dropped = self.meets_dropped.saturating_add(1);
        let Some(p) = self.peers.get_mut(&by) else {
            return;
        };
        if !p.meets_dropped {
            p.meets_dropped = true;
            self.event(Event::MeetsDropped { peer: by });
        }
    }

    /// With `--strict`: warns once per peer while a heartbeat's round trip
    /// to it takes more than half the lease's margin, timeout - heartbeat,
    /// beyond which a master loses its lease between heartbeats. It counts
    /// as recovered below a quarter, so a round trip hovering at the
    /// bound does not warn at every heartbeat.
    fn check_lease_margin(&mut self, addr: SocketAddr, round_trip_ms: u64) {
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

    /// Sends a heartbeat on `links`, remembering when it left.
    fn ping(&mut self, links: &[LinkId], now: Mono) {
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

    /// This node's wall clock at `now`, in unix ms.
    fn wall(&self, now: Mono) -> Wall {
        self.cfg.wall_at_zero.at(now)
    }

    /// Warns once per decision when the master's place before the
    /// runner-up rests on start times within their clocks' skew.
    fn check_start_doubt(&mut self) {
        let ranking = self.ranking();
        let (Some(first), Some(second)) = (ranking.first(), ranking.get(1)) else {
            self.start_doubt_checked = None;
            return;
        };
        let pair = ((first.addr, first.instance), (second.addr, second.instance));
        let warned = match self.start_doubt_checked {
            Some((a, b, warned)) if (a, b) == pair => warned,
            _ => false,
        };
        self.start_doubt_checked = Some((pair.0, pair.1, warned));
        if warned {
            return;
        }
        if let Some(d) = self.start_doubt(first, second) {
            self.start_doubt_checked = Some((pair.0, pair.1, true));
            self.event(Event::StartWithinSkew(d));
        }
    }

    /// A digest of the view's addresses: equal on every member of a full mesh.
    fn view_digest(&self) -> u64 {
        std::iter::once(&self.cfg.addr)
            .chain(self.peers.keys())
            .map(|a| {
                let mut r = Rng(match a {
                    SocketAddr::V4(v4) => u64::from(v4.ip().to_bits()) << 16 | u64::from(v4.port()),
                    SocketAddr::V6(v6) => {
                        (v6.ip().to_bits() as u64) << 16
                            ^ u64::from(v6.port())
                            ^ (v6.ip().to_bits() >> 64) as u64
                    }
                });
                r.next()
            })
            .fold(0, u64::wrapping_add)
    }

    /// Repairs the mesh: a peer whose view differs from ours is sent our
    /// members (it ignores those it has), at most once per two timeouts.
    fn sync_view(&mut self, addr: SocketAddr, their_view: u64, now: Mono) {
        if their_view == self.view_digest() {
            return;
        }
        let interval = self.cfg.timeout_ms.saturating_mul(2);
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if now < p.next_sync {
            return;
        }
        p.next_sync = now.plus(interval);
        let link = p.link;
        let members: Vec<SocketAddr> = self.peers.keys().copied().filter(|a| *a != addr).collect();
        for m in members {
            self.send(link, Message::Meet(m));
        }
    }

    /// Recomputes this node's role from its view and its peers' last STATE.
    /// `departed` is the peer whose loss (or leave) triggered this, if any.
    fn decide(&mut self, event: Cause, departed: Option<SocketAddr>, now: Mono) {
        if self.left {
            return;
        }
        let me = self.cfg.addr;
        let view = 1 + self.peers.len();
        let old_master = self.master();
        let master_gone = departed.is_some() && departed == old_master && old_master != Some(me);
        let best = self.ranking()[0].addr;
        // With --strict a node bound to one master takes no other until the
        // binding runs out or that master releases it.
        let free_for = |who: SocketAddr| {
            !self.cfg.strict
                || self.epoch_master == Some(who)
                || self.bound_until.is_none_or(|t| now >= t)
        };
        let mut claimed = false;
        let (mut role, epoch, epoch_master) = if view < self.cfg.quorum as usize {
            (Role::None, self.epoch, self.epoch_master)
        } else if best == me {
            let contested = self.peers.values().any(|p| {
                p.state.epoch > self.epoch
                    || (p.state.epoch == self.epoch && p.state.epoch_master != Some(me))
            });
            let unknown = self.peers.values().any(|p| !p.state_known);
            if !free_for(me) || (!self.claimed && unknown) {
                (Role::None, self.epoch, self.epoch_master)
            } else if self.claimed && !contested {
                claimed = true;
                (Role::Master, self.epoch, self.epoch_master)
            } else {
                let highest = self
                    .peers
                    .values()
                    .map(|p| p.state.epoch)
                    .max()
                    .unwrap_or(0);
                let floor = if self.cfg.strict {
                    self.wall(now).ms()
                } else {
                    0
                };
                match self.epoch.max(highest).checked_add(1).map(|e| e.max(floor)) {
                    Some(epoch) if epoch <= MAX_EPOCH => {
                        claimed = true;
                        self.claim_sent = now;
                        (Role::Master, epoch, Some(me))
                    }
                    // No epoch is left to claim: rather no master than a
                    // fencing token that wraps or no client can hold.
                    _ => {
                        self.epoch_exhausted(highest);
                        (Role::None, self.epoch, self.epoch_master)
                    }
                }
            }
        } else {
            let s = self.peers[&best].state;
            let claims = s.role == Role::Master && s.epoch_master == Some(best);
            let acceptable =
                s.epoch > self.epoch || (s.epoch == self.epoch && self.epoch_master == Some(best));
            if claims && acceptable && free_for(best) {
                if self.epoch_master != Some(best) || self.role != Role::Follower {
                    self.bound_until = Some(now.plus(self.cfg.timeout_ms));
                }
                (Role::Follower, s.epoch, Some(best))
            } else {
                (Role::None, self.epoch, self.epoch_master)
            }
        };
        self.claimed = claimed;
        if claimed && self.cfg.strict && self.lease_until(now).is_none_or(|t| now >= t) {
            // A strict claimant is master only while a quorum is bound to it.
            role = Role::None;
        }
        let cause = if view < self.cfg.quorum as usize {
            Cause::QuorumLost
        } else if master_gone {
            match event {
                Cause::PeerLeft => Cause::MasterLeft,
                _ => Cause::MasterLost,
            }
        } else if self.role == Role::Master && role != Role::Master {
            if best == me {
                Cause::QuorumLost
            } else {
                Cause::Outranked
            }
        } else if role != Role::None
            && let Some(lost) = self.lost_master.take()
        {
            lost
        } else {
            event
        };
        if role == Role::None && matches!(cause, Cause::MasterLost | Cause::MasterLeft) {
            self.lost_master = Some(cause);
        }
        self.set_state(role, epoch, epoch_master, cause, now);
        self.check_start_doubt();
    }

    /// Until when a quorum is surely bound to this claimant (`--strict`):
    /// each follower is bound at least until the last heartbeat it
    /// acknowledged, or the claim, was sent, plus `timeout`; the lease
    /// ends a heartbeat before that, as a margin for clock rates.
    /// `None` when fewer than quorum - 1 peers follow.
    fn lease_until(&self, _now: Mono) -> Option<Mono> {
        let need = self.cfg.quorum.saturating_sub(1) as usize;
        if need == 0 {
            // A quorum of one is this node alone: it is never unbound.
            return Some(Mono::MAX);
        }
        let me = Some(self.cfg.addr);
        let lease = self.cfg.timeout_ms.saturating_sub(self.cfg.heartbeat_ms);
        let mut bound: Vec<Mono> = self
            .peers
            .values()
            // Only followers of this claim: a STATE from before it (this node
            // may have stopped and claimed again) proves no binding now.
            .filter(|p| {
                p.state.role == Role::Follower
                    && p.state.epoch_master == me
                    && p.state.epoch == self.epoch
            })
            .map(|p| p.acked_sent.max(self.claim_sent).plus(lease))
            .collect();
        if bound.len() < need {
            return None;
        }
        bound.sort_unstable_by(|a, b| b.cmp(a));
        Some(bound[need - 1])
    }

    fn set_state(
        &mut self,
        role: Role,
        epoch: u64,
        epoch_master: Option<SocketAddr>,
        cause: Cause,
        now: Mono,
    ) {
        assert!(epoch >= self.epoch, "epochs never go back");
        assert!(epoch <= MAX_EPOCH, "epochs stay within MAX_EPOCH");
        assert!(
            role != Role::Master || epoch_master == Some(self.cfg.addr),
            "a master's epoch names itself"
        );
        let old_master = self.master();
        let old_epoch = self.epoch;
        let changed_role = role != self.role;
        let changed = changed_role || epoch != self.epoch || epoch_master != self.epoch_master;
        let from = self.role;
        self.role = role;
        self.epoch = epoch;
        self.epoch_master = epoch_master;
        if !changed {
            return;
        }
        let master = self.master();
        // A new epoch under the same master is a new fencing token: the
        // journal and the hook hear of it too.
        if changed_role || master != old_master || (role != Role::None && epoch != old_epoch) {
            let entry = JournalEntry {
                at: now,
                epoch,
                from,
                to: role,
                master,
                cause,
            };
            self.event(Event::RoleChange {
                from,
                to: role,
                epoch,
                master,
                cause,
            });
            if self.journal.len() == JOURNAL_LEN {
                self.journal.pop_front();
            }
            self.journal.push_back(entry.clone());
            self.actions.push_back(Action::RoleChanged(entry));
        } else {
            self.event(Event::EpochChange { epoch, master });
        }
        if !self.left {
            let state = self.state_msg();
            let links: Vec<LinkId> = self.peers.values().map(|p| p.link).collect();
            for link in links {
                self.send(link, state.clone());
            }
        }
    }

    /// Logs once that no epoch above `highest` (or this node's own) can be
    /// claimed.
    fn epoch_exhausted(&mut self, highest: u64) {
        if self.epoch_exhausted {
            return;
        }
        self.epoch_exhausted = true;
        let epoch = self.epoch.max(highest);
        self.event(Event::EpochExhausted { epoch });
    }

    /// Starts (or keeps) trying to reach `addr`, for `source`; its first
    /// dial is due now. `false` when the reconnect set is full.
    fn want(&mut self, addr: SocketAddr, kind: LinkKind, source: Source, now: Mono) -> bool {
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
    fn make_room(&mut self, source: Source) -> bool {
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
    fn lose(&mut self, addr: SocketAddr, peer: &Peer, loss: Loss, now: Mono) {
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
    fn penalty_left(&self, addr: SocketAddr, now: Mono) -> Option<Option<u64>> {
        let w = self.wants.get(&addr).filter(|w| w.penalized)?;
        match w.next_try {
            None => Some(None),
            Some(next) => (now < next).then(|| Some(next.since(now))),
        }
    }

    /// Dials under way: wants whose dial started and did not end.
    fn dials_in_flight(&self) -> usize {
        self.wants.values().filter(|w| w.next_try.is_none()).count()
    }

    /// Starts the dials that are due, earliest first, as far as
    /// [`MAX_DIALS_IN_FLIGHT`] allows; the rest wait for a dial to end. A
    /// lost peer past `reconnect_timeout_ms` is forgotten instead.
    fn dial_due(&mut self, now: Mono) {
        if self.left {
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

    fn dial(&mut self, addr: SocketAddr) {
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
    fn reached(&mut self, dialed: SocketAddr) -> Option<Want> {
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
    fn dial_failed(&mut self, addr: SocketAddr, unanswered: Option<&str>, now: Mono) {
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

    /// The wait before the next dial after `failures` failures: a step
    /// from two heartbeats doubling up to [`MAX_BACKOFF_MS`], drawn between
    /// half and all of it, never under a heartbeat (guarantee 7,
    /// docs/GUARANTEES.md).
    fn backoff(&mut self, failures: u32) -> u64 {
        let heartbeat_ms = self.cfg.heartbeat_ms;
        let base = heartbeat_ms
            .max(1)
            .saturating_mul(1 << failures.min(16))
            .min(MAX_BACKOFF_MS);
        (base / 2 + self.rng.below(base / 2 + 1)).max(heartbeat_ms.min(base))
    }

    /// The link of a dial to `addr` still in its handshake, if any.
    fn dialing(&self, addr: SocketAddr) -> Option<LinkId> {
        self.links.iter().find_map(|(id, l)| match l.origin {
            Origin::Outbound { addr: a, .. } if a == addr && l.peer.is_none() => Some(*id),
            _ => None,
        })
    }

    fn refuse(&mut self, link: LinkId, reason: String, now: Mono) {
        self.send(link, Message::Refuse(reason));
        self.close(link, now);
    }

    /// Closes a link this node gave up on. A dial closed in its handshake
    /// counts as failed, so its want is retried (or was removed before).
    fn close(&mut self, link: LinkId, now: Mono) {
        self.close_failed(link, None, now);
    }

    /// [`Node::close`], for a dial that got no answer at all: why.
    fn close_failed(&mut self, link: LinkId, unanswered: Option<&str>, now: Mono) {
        if let Some(l) = self.links.remove(&link) {
            self.actions.push_back(Action::Close(link));
            if let (None, Origin::Outbound { addr, .. }) = (l.peer, l.origin) {
                self.dial_failed(addr, unanswered, now);
            }
        }
    }

    fn send(&mut self, link: LinkId, msg: Message) {
        self.actions.push_back(Action::Send(link, msg));
    }

    fn event(&mut self, event: Event) {
        self.actions.push_back(Action::Log(event));
    }
}

impl Skew {
    /// This node's own clock.
    pub const ZERO: Skew = Skew {
        offset_ms: 0,
        error_ms: 0,
    };

    /// The estimate from one round trip: a PING sent at `sent` and
    /// its PONG received at `received` on our clock, answered at
    /// `replied_unix_ms` on the peer's. Saturates rather than overflows on
    /// absurd times.
    pub fn from_round_trip(sent: Wall, replied_unix_ms: u64, received: Wall) -> Skew {
        let (t1, t2, t4) = (
            i128::from(sent.ms()),
            i128::from(replied_unix_ms),
            i128::from(received.ms()),
        );
        let offset = (2 * t2 - t1 - t4).div_euclid(2);
        let round_trip_ms = received.ms().saturating_sub(sent.ms());
        Skew {
            offset_ms: offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            // Half the round trip, rounded up for the halved millisecond the
            // offset drops, plus the millisecond timestamps truncate.
            error_ms: round_trip_ms.div_ceil(2).saturating_add(1),
        }
    }

    /// `to`'s clock against `from`'s, both measured against this node's:
    /// the offsets subtract and the errors add.
    pub fn between(from: Skew, to: Skew) -> Skew {
        Skew {
            offset_ms: to.offset_ms.saturating_sub(from.offset_ms),
            error_ms: to.error_ms.saturating_add(from.error_ms),
        }
    }
}

/// `+3+-1ms`: the offset with its sign, then `+-` and the error, in
/// ASCII so that every answer a client decodes is.
impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:+}+-{}ms", self.offset_ms, self.error_ms)
    }
}

/// The tightest of a peer's recent samples; the newest among equals.
fn best_skew(samples: &VecDeque<Skew>) -> Option<Skew> {
    samples.iter().rev().min_by_key(|s| s.error_ms).copied()
}

/// What the rule looks at in a peer's HELLO.
pub fn candidate(h: &Hello) -> Candidate {
    Candidate {
        addr: h.addr,
        started_unix_ms: h.started_unix_ms,
        priority: h.priority,
        instance: h.instance,
    }
}

/// splitmix64: tiny, seedable, and good enough for jitter.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`, or 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_brackets_the_offset() {
        // Sent at 1000, answered at 5010 on a clock 4000 ahead, back at 1020:
        // the answer could have been stamped anywhere in 1000..=1020 of ours.
        let s = Skew::from_round_trip(Wall(1000), 5010, Wall(1020));
        assert_eq!(
            s,
            Skew {
                offset_ms: 4000,
                error_ms: 11
            }
        );
        // An odd round trip: the middle, 4000.5, is kept as 4000, and the
        // error is half the 5 ms rounded up, plus 1 ms of truncation.
        assert_eq!(
            Skew::from_round_trip(Wall(1000), 5003, Wall(1005)),
            Skew {
                offset_ms: 4000,
                error_ms: 4
            }
        );
        assert_eq!(
            Skew::from_round_trip(Wall(1000), 1000, Wall(1000)),
            Skew {
                offset_ms: 0,
                error_ms: 1
            }
        );
        assert_eq!(
            Skew::from_round_trip(Wall(1000), 900, Wall(1000)).offset_ms,
            -100
        );
    }

    // docs/GUARANTEES.md, bad input: absurd times from a peer saturate, never panic.
    #[test]
    fn absurd_times_saturate() {
        assert_eq!(
            Skew::from_round_trip(Wall(0), u64::MAX, Wall(0)).offset_ms,
            i64::MAX
        );
        assert_eq!(
            Skew::from_round_trip(Wall(u64::MAX), 0, Wall(u64::MAX)).offset_ms,
            i64::MIN
        );
        assert_eq!(
            Skew::from_round_trip(Wall(5), 5, Wall(0)).error_ms,
            1,
            "a clock going back"
        );
        let far = Skew {
            offset_ms: i64::MAX,
            error_ms: u64::MAX,
        };
        let near = Skew {
            offset_ms: i64::MIN,
            error_ms: 1,
        };
        assert_eq!(Skew::between(near, far).offset_ms, i64::MAX);
        assert_eq!(Skew::between(near, far).error_ms, u64::MAX);
    }

    #[test]
    fn skews_compose_and_print_with_sign() {
        let a = Skew {
            offset_ms: 5,
            error_ms: 1,
        };
        let b = Skew {
            offset_ms: -7,
            error_ms: 2,
        };
        assert_eq!(
            Skew::between(a, b),
            Skew {
                offset_ms: -12,
                error_ms: 3
            }
        );
        assert_eq!(Skew::between(a, b).to_string(), "-12+-3ms");
        assert_eq!(a.to_string(), "+5+-1ms");
        assert_eq!(Skew::ZERO.to_string(), "+0+-0ms");
    }

    #[test]
    fn the_tightest_recent_sample_wins() {
        let s = |offset_ms, error_ms| Skew {
            offset_ms,
            error_ms,
        };
        let samples = VecDeque::from([s(10, 3), s(12, 1), s(9, 5), s(11, 1)]);
        assert_eq!(best_skew(&samples), Some(s(11, 1)), "the newest of equals");
        assert_eq!(best_skew(&VecDeque::new()), None);
    }
}
