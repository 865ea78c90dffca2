//! The election core: a pure, deterministic state machine (sans-IO).
//!
//! It is told what happened (`handle_*`, with `now` in monotonic
//! milliseconds), and the caller drains what to do ([`Node::poll_action`]:
//! sends, dials, closes, typed [`Event`]s, role changes) and when to call
//! again ([`Node::next_deadline`]). It never touches a socket, never reads
//! a clock, never formats a log line (`crate::log` does) and draws
//! randomness only from its own seeded generator, so a run replays
//! exactly from its inputs.
//!
//! This file holds [`Node`]: its state, the `handle_*` surface, the
//! queries, and `set_state`, the one place the role and epoch change; in
//! debug builds every `handle_*` ends with the invariant checks of
//! `invariants`. Each concern is a file of its own:
//!
//! - `admission`: what becomes of a HELLO (a typed `Admission`), and the
//!   making of a peer.
//! - `peer`: the lines of an established peer, and protocol violations.
//! - `election`: `elect`, a pure function from the view to a decision,
//!   and the strict lease. The election is level-triggered: after every
//!   event the node recomputes its role from its view (`decide`).
//! - `mesh`: introductions (MEET) and the view digest that repairs them.
//! - `reconnect`: the addresses it keeps dialling, backoff, forgetting.
//! - `heartbeat`: PINGs, silence, the lease margin; `skew`: clock offsets.
//! - `journal`: the last role changes and their causes.

mod admission;
pub mod check;
mod election;
mod eligibility;
mod heartbeat;
mod invariants;
mod journal;
mod mesh;
mod peer;
mod reconnect;
mod skew;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

pub use election::{MAX_EPOCH, MAX_EPOCH_LEAD_MS};
pub use journal::{Cause, JOURNAL_LEN, JournalEntry};
pub use mesh::MAX_INTRODUCED_PER_PEER;
pub use reconnect::{
    ConnectError, ForgetError, JoinProgress, MAX_BACKOFF_MS, MAX_DIALS_IN_FLIGHT, MAX_WANTED,
};
pub use skew::{Skew, StartDoubt};

use crate::event::Event;
use crate::protocol::{Health, Hello, LinkKind, Message, Role, State};
use crate::rule::{Candidate, Rule};
use crate::time::{Mono, Wall};
use reconnect::{Loss, Rng, Source, Want};
use skew::best_skew;

/// Identifies one connection; the caller chooses the numbers.
pub type LinkId = usize;

/// Capacity the action queue keeps once drained: a heartbeat round to
/// every peer of a large cluster, not the peak of a burst.
const ACTIONS_KEEP: usize = 256;

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
    /// between two elections); with a state dir as well.
    pub wall_at_zero: Wall,
    /// With `--state-dir`: the highest epoch on disk at start (0 on a
    /// first start). The node starts at this epoch, and every epoch above
    /// it is made durable ([`Action::Persist`]) before the node claims,
    /// accepts or reports it (guarantee 12, docs/GUARANTEES.md). `None`:
    /// no state dir, nothing is persisted.
    pub durable: Option<u64>,
    /// `--check` is set: the node is `failing` from start until its first check passes.
    pub checked: bool,
    /// `--no-preempt`: an eligible master keeps its role when a member
    /// that ranks before it joins, restarts or becomes eligible.
    pub no_preempt: bool,
    /// `--preempt-delay`: a member that ranks before an eligible master
    /// takes over only once it has been eligible and in the group this long.
    pub preempt_delay_ms: u64,
}

/// How long the followers of a master that stepped down wait for its
/// RELEASE (its hook for leaving the role has ended) before they claim
/// anyway (guarantee 11, docs/GUARANTEES.md): a hook that moves an address
/// takes well under a second; five cover a slow one without leaving the
/// group masterless for long when the old master's hook hangs.
pub const MAX_YIELD_MS: u64 = 5_000;

/// How long a leaving master waits for its hook before it sends LEAVE
/// anyway: the node must be gone within the second of guarantee 6, and
/// the loop needs the rest to write LEAVE out.
pub const LEAVE_YIELD_MS: u64 = 500;

/// Why an operator's `-handover` cannot be done; each says why in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoverError {
    NotMaster,
    NeedsNoPreempt,
    NotInView(SocketAddr),
    NotEligible(SocketAddr, Health),
    ToItself,
    NoneEligible,
}

impl std::fmt::Display for HandoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandoverError::NotMaster => f.write_str("not the master"),
            HandoverError::NeedsNoPreempt => {
                f.write_str("handover needs --no-preempt; use -standby on")
            }
            HandoverError::NotInView(a) => write!(f, "{a} is not in the view"),
            HandoverError::NotEligible(a, h) => write!(f, "{a} is not eligible (health {h})"),
            HandoverError::ToItself => f.write_str("this node is already the master"),
            HandoverError::NoneEligible => f.write_str("no other member is eligible"),
        }
    }
}

/// A master that stepped down while it had peers: once its hook for
/// leaving the role has ended it sends RELEASE (or LEAVE, when leaving).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Release {
    epoch: u64,
    /// The member the role is handed to, for `-handover`.
    to: Option<SocketAddr>,
    since: Mono,
    /// The RELEASE goes out by this time even if the hook has not ended.
    until: Mono,
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
    /// Make this epoch durable now, before any later action is carried out
    /// (only with [`Config::durable`]): the core queues it ahead of every
    /// message, log line and role change that carries the epoch, once per
    /// new epoch. If it cannot be written the node must stop.
    Persist(u64),
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
    /// Times this node stepped down as master and released the role
    /// (RELEASE, or LEAVE after its hook).
    pub handovers: u64,
}

/// A peer that finished the handshake, as `-cl` and `-r` show it.
#[derive(Clone, Debug)]
pub struct PeerInfo<'a> {
    pub hello: &'a Hello,
    pub state: State,
    pub last_heard: Mono,
    /// The peer's clock against ours; `None` until its first echo.
    pub skew: Option<Skew>,
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
    pub health: Health,
}

/// One node's election state machine.
pub struct Node {
    cfg: Config,
    links: BTreeMap<LinkId, Link>,
    /// Established peers. Changed only through `insert_peer`,
    /// `remove_peer` and `clear_peers`, which keep `view_sum` and
    /// `ranked_two` up to date.
    peers: BTreeMap<SocketAddr, Peer>,
    /// The wrapping sum of the peers' shares of the view digest
    /// ([`mesh::addr_hash`]): the digest without a walk of the view.
    view_sum: u64,
    /// The first two members of [`Node::ranking`] (`None`: not known, to be
    /// found again): kept until the view or a member's priority changes.
    ranked_two: Option<(Option<Candidate>, Option<Candidate>)>,
    /// Every peer by when it was last heard from (`Peer::last_heard`),
    /// earliest first: the next silence is the first, without a walk of
    /// the view at every deadline.
    heard: BTreeSet<(Mono, SocketAddr)>,
    /// Links in their handshake by when they opened (`Link::opened`),
    /// earliest first: the next handshake to time out is the first. Links
    /// change only through `open_link`, `link_established`, `remove_link`
    /// and `clear_links`.
    handshakes: BTreeSet<(Mono, LinkId)>,
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
    /// When the loop wakes for a round of heartbeats next; `None` while
    /// there are no peers. A follower at rest skips the rounds in which
    /// it would send nothing (its master's PINGs it echoes as they come).
    next_heartbeat: Option<Mono>,
    /// The end of this node's last stall: silence before it is not
    /// counted (guarantee 10 in docs/GUARANTEES.md).
    heard_from: Mono,
    /// Until when this node claims nothing after a stall long enough for
    /// its peers to have timed it out (guarantee 10): the links they
    /// closed meanwhile are its own doing, not their crash.
    settling_until: Option<Mono>,
    /// The master vouched that it had heard every member of this node's
    /// view since this time (a PING of its master's with the same view
    /// digest, less its `fresh_ms`): silence before it is not counted
    /// either, so followers need not heartbeat each other.
    vouched: Mono,
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
    /// Our view digest as the last PING found it, and since when: the
    /// mesh is repaired only from a settled view (`sync_view`).
    view_seen: (u64, Mono),
    /// When this node may next repair a peer's view (sends it its whole
    /// view): once per two timeouts for the node, not per peer.
    next_repair: Mono,
    violations: u64,
    handovers: u64,
    /// The epoch and master the last invariant check saw (debug builds).
    audited: (u64, Option<SocketAddr>),
    /// With a state dir: the highest epoch handed out as
    /// [`Action::Persist`] (or on disk at start).
    persisted: Option<u64>,
    /// `-standby on`.
    standby: bool,
    /// The health check fails (from start with `--check`).
    failing: bool,
    /// When this node last became eligible (`--preempt-delay`).
    eligible_since: Mono,
    /// `-handover`: this node steps down for that member, and is out of
    /// the running until its RELEASE is sent.
    handing_over: Option<SocketAddr>,
    /// This node stepped down as master and owes its peers a RELEASE.
    releasing: Option<Release>,
    /// The master this node followed stepped down: no claim is followed
    /// or made until its RELEASE, its loss, or this time.
    awaiting: Option<(SocketAddr, Mono)>,
    /// A RELEASE named this member as the next master (`--no-preempt`),
    /// until it claims or this time.
    designated: Option<(SocketAddr, Mono)>,
    /// `--preempt-delay`: when a member that ranks before the master has
    /// been eligible and in the group long enough to take over.
    preempt_at: Option<Mono>,
    /// A master's graceful leave waits for its RELEASE: LEAVE goes out
    /// then, and the node has left.
    leaving: bool,
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
    /// The health and priority our HELLO on this link said.
    announced: (Health, i32),
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
    /// The view digest of its latest PING.
    their_view: u64,
    /// Send time of the latest heartbeat this peer acknowledged.
    acked_sent: Mono,
    /// Its health, from its HELLO and RANKs.
    health: Health,
    /// When it last became eligible, or joined (`--preempt-delay`).
    eligible_since: Mono,
    /// The peer's latest heartbeat and when it arrived: echoed in ours.
    heard_ping: Option<(u64, Mono)>,
    /// When this node last sent it a heartbeat, in a round or out of one.
    pinged_at: Option<Mono>,
    /// When the newest of `skew_samples` was taken.
    sampled_at: Mono,
    /// When one of its heartbeats was last echoed at once, out of round:
    /// at most one such echo per half heartbeat, so a peer that answers
    /// every PING at once cannot make the two ping each other at wire
    /// speed.
    echoed_at: Option<Mono>,
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

impl Node {
    /// A node alone at time 0: no peers, epoch 0, and no master unless
    /// its quorum is 1, when it is its own master at once (guarantee 1,
    /// docs/GUARANTEES.md, for a group of one), with the `start` change queued as an action.
    pub fn new(cfg: Config) -> Node {
        let rng = Rng(cfg.seed);
        // With a state dir the node starts at the epoch on disk: its STATE
        // says so, so no peer's lower epoch is followed and the next claim
        // is above it.
        let epoch = cfg.durable.unwrap_or(0).min(MAX_EPOCH);
        let persisted = cfg.durable;
        let cfg_checked = cfg.checked;
        let mut node = Node {
            cfg,
            links: BTreeMap::new(),
            peers: BTreeMap::new(),
            view_sum: 0,
            ranked_two: None,
            heard: BTreeSet::new(),
            handshakes: BTreeSet::new(),
            role: Role::None,
            epoch,
            epoch_master: None,
            wants: BTreeMap::new(),
            journal: VecDeque::new(),
            actions: VecDeque::new(),
            rng,
            left: false,
            lost_master: None,
            next_heartbeat: None,
            heard_from: Mono::ZERO,
            settling_until: None,
            vouched: Mono::ZERO,
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
            view_seen: (0, Mono::ZERO),
            next_repair: Mono::ZERO,
            violations: 0,
            handovers: 0,
            audited: (epoch, None),
            persisted,
            failing: cfg_checked,
            standby: false,
            eligible_since: Mono::ZERO,
            handing_over: None,
            releasing: None,
            awaiting: None,
            designated: None,
            preempt_at: None,
            leaving: false,
        };
        node.decide(Cause::Start, None, Mono::ZERO);
        node.audit();
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
        let silence = self.heard.first().map(|(t, _)| self.peer_silent_at(*t));
        // With --strict: the end of a binding that keeps this node waiting,
        // and the end of this master's lease.
        let strict = self.cfg.strict.then(|| {
            let waiting = self.bound_until.filter(|_| self.role != Role::Follower);
            let lease = (self.role == Role::Master)
                .then(|| self.lease_until())
                .flatten()
                .filter(|t| *t != Mono::MAX);
            waiting.into_iter().chain(lease).min()
        });
        let handshake = self.handshakes.first().map(|(t, _)| self.silent_at(*t));
        self.next_dial()
            .into_iter()
            .chain(self.next_heartbeat)
            .chain(silence)
            .chain(handshake)
            .chain(strict.flatten())
            .chain(self.eligibility_deadline())
            .chain(self.settling_until)
            .min()
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

    /// Tells every peer this node leaves, and closes every link. A master
    /// with peers first steps down and waits for its hook for leaving the
    /// role ([`Node::handle_hook_ended`], at most [`LEAVE_YIELD_MS`]):
    /// LEAVE is then its release (guarantee 11, docs/GUARANTEES.md). A
    /// second call leaves at once.
    pub fn leave(&mut self, now: Mono) {
        if self.left {
            return;
        }
        if !self.leaving && self.claimed && !self.peers.is_empty() {
            self.leaving = true;
            self.decide(Cause::Leave, None, now);
            if let Some(r) = &mut self.releasing {
                r.until = r.until.min(now.plus(LEAVE_YIELD_MS));
                self.audit();
                return;
            }
        }
        self.finish_leave(now);
    }

    /// Sends LEAVE to every peer and closes every link: the node has left.
    fn finish_leave(&mut self, now: Mono) {
        self.leaving = true;
        self.releasing = None;
        for peer in self.peers.values() {
            self.actions
                .push_back(Action::Send(peer.link, Message::Leave));
        }
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            self.actions.push_back(Action::Close(id));
        }
        self.clear_links();
        self.clear_peers();
        self.wants.clear();
        self.left = true;
        self.claimed = false;
        self.set_state(Role::None, self.epoch, self.epoch_master, Cause::Leave, now);
        self.audit();
    }

    /// The dial for `addr` opened as `link`; the handshake starts.
    pub fn handle_dialed(&mut self, link: LinkId, addr: SocketAddr, kind: LinkKind, now: Mono) {
        if self.left || self.leaving {
            self.actions.push_back(Action::Close(link));
        } else {
            let group_at_dial =
                (kind == LinkKind::Join).then(|| self.peers.keys().copied().collect());
            self.open_link(link, Origin::Outbound { addr, kind }, group_at_dial, now);
            let hello = self.hello_on(link, kind);
            self.send(link, hello);
        }
        self.audit();
    }

    /// The dial for `addr` could not even start.
    pub fn handle_dial_failed(&mut self, addr: SocketAddr, reason: &str, now: Mono) {
        self.event(Event::DialFailed {
            peer: addr,
            reason: reason.to_owned(),
        });
        self.dial_failed(addr, Some(reason), now);
        self.dial_due(now);
        self.audit();
    }

    /// The dial opened as `link` failed before any answer: the connection
    /// was refused or the network unreachable. The caller then closes the
    /// link; `handle_link_closed` has nothing left to do for it.
    pub fn handle_dial_error(&mut self, link: LinkId, reason: &str, now: Mono) {
        if let Some(l) = self.links.get(&link)
            && let (None, Origin::Outbound { addr, .. }) = (l.peer, l.origin)
        {
            self.remove_link(link);
            self.handle_dial_failed(addr, reason, now);
        }
        self.audit();
    }

    /// A connection arrived whose first line was a peer message.
    pub fn handle_accepted(&mut self, link: LinkId, now: Mono) {
        if self.left || self.leaving {
            self.actions.push_back(Action::Close(link));
        } else {
            self.open_link(link, Origin::Inbound, None, now);
        }
        self.audit();
    }

    fn open_link(
        &mut self,
        link: LinkId,
        origin: Origin,
        group_at_dial: Option<Vec<SocketAddr>>,
        now: Mono,
    ) {
        let opened = Link {
            origin,
            peer: None,
            opened: now,
            group_at_dial,
            announced: (self.health(), self.cfg.priority),
        };
        if let Some(old) = self.links.insert(link, opened)
            && old.peer.is_none()
        {
            self.handshakes.remove(&(old.opened, link));
        }
        self.handshakes.insert((now, link));
    }

    /// A line arrived on a peer link.
    pub fn handle_message(&mut self, link: LinkId, msg: Message, now: Mono) {
        if let Some(l) = self.links.get(&link) {
            match (l.peer, l.origin) {
                (Some(addr), _) => self.on_peer_message(link, addr, msg, now),
                (None, origin) => self.on_handshake_message(link, origin, msg, now),
            }
            self.dial_due(now);
        }
        self.audit();
    }

    /// A line on the link could not be decoded (`reason`): the loop's
    /// framer or decoder refused it. An established peer broke the protocol
    /// and is treated as for any other violation; a link still in its
    /// handshake is closed and, if dialed, counts as a failed dial.
    pub fn handle_protocol_violation(&mut self, link: LinkId, reason: &str, now: Mono) {
        if let Some(l) = self.links.get(&link) {
            match (l.peer, l.origin) {
                (Some(addr), _) => self.violation(link, addr, None, reason, now),
                (None, origin) => {
                    let reason = format!("{reason}, before the handshake");
                    self.handshake_violation(link, origin, &reason, now);
                }
            }
            self.dial_due(now);
        }
        self.audit();
    }

    /// The link is gone: closed by either side, failed, or reset.
    pub fn handle_link_closed(&mut self, link: LinkId, now: Mono) {
        self.link_closed(link, now);
        self.dial_due(now);
        self.audit();
    }

    pub(super) fn link_closed(&mut self, link: LinkId, now: Mono) {
        let Some(l) = self.remove_link(link) else {
            return;
        };
        match (l.peer, l.origin) {
            (Some(addr), _) => {
                if self.peers.get(&addr).is_some_and(|p| p.link == link) {
                    let peer = self.remove_peer(&addr).expect("checked above");
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

    /// The loop woke `late_ms` after the deadline it slept for (0 when on
    /// time or woken early by input). Called before the sockets are read
    /// in each iteration: with `--strict` an expired lease ends first;
    /// after a stall every peer gets a fresh timeout (guarantee 10,
    /// docs/GUARANTEES.md). Silence itself is judged in `handle_timeout`,
    /// after the reads.
    pub fn handle_resumed(&mut self, late_ms: u64, now: Mono) {
        self.resumed(late_ms, now);
        self.audit();
    }

    /// Time passed; due reconnects start.
    pub fn handle_timeout(&mut self, now: Mono) {
        if self.settling_until.is_some_and(|t| now >= t) {
            self.settling_until = None;
            self.decide(Cause::Claim, None, now);
        }
        self.expire_silent(now);
        self.expire_handshakes(now);
        self.heartbeat_due(now);
        self.departed.retain(|_, until| now < *until);
        if self.cfg.strict {
            self.strict_due(now);
        }
        self.eligibility_due(now);
        self.dial_due(now);
        self.audit();
    }

    /// Links whose handshake got no answer within the timeout (a cut
    /// network answers nothing) close, and a dial among them failed.
    fn expire_handshakes(&mut self, now: Mono) {
        // The earliest opened first (`handshakes`), taken in link order.
        let mut stuck: Vec<LinkId> = self
            .handshakes
            .iter()
            .take_while(|(t, _)| now >= self.silent_at(*t))
            .map(|(_, id)| *id)
            .collect();
        stuck.sort_unstable();
        if stuck.is_empty() {
            return;
        }
        let unanswered = format!("no answer within {} ms", self.cfg.timeout_ms);
        for link in stuck {
            self.event(Event::HandshakeTimeout { link });
            self.close_failed(link, Some(&unanswered), now);
        }
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
            health: self.health(),
        }
    }

    /// This node's health: standby wins over a failing check.
    pub fn health(&self) -> Health {
        Health::of(self.standby, self.failing)
    }

    /// The health of a member of the view (this node included), if it is one.
    pub fn health_of(&self, addr: SocketAddr) -> Option<Health> {
        if addr == self.cfg.addr {
            return Some(self.health());
        }
        self.peers.get(&addr).map(|p| p.health)
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

    /// How many peers finished the handshake: [`Node::peers`]`.count()`
    /// without walking them, for what asks every loop turn.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Every member of the view, best first: the eligible ones under
    /// the rule, then the others under the rule.
    pub fn ranking(&self) -> Vec<Candidate> {
        let mut v: Vec<(bool, Candidate)> = std::iter::once((self.eligible(), self.me()))
            .chain(
                self.peers
                    .values()
                    .map(|p| (p.health.eligible(), candidate(&p.hello))),
            )
            .collect();
        v.sort_by(|(ea, a), (eb, b)| eb.cmp(ea).then_with(|| self.cfg.rule.compare(a, b)));
        v.into_iter().map(|(_, c)| c).collect()
    }

    /// Whether this node may be master: healthy, not in standby, not
    /// handing over and not leaving.
    fn eligible(&self) -> bool {
        self.health().eligible() && self.handing_over.is_none() && !self.leaving
    }

    /// The last role changes, oldest first.
    pub fn journal(&self) -> impl Iterator<Item = &JournalEntry> {
        self.journal.iter()
    }

    /// Whether this node has left the cluster.
    pub fn has_left(&self) -> bool {
        self.left
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
            handovers: self.handovers,
        }
    }

    /// Our HELLO for `link`, noting what it says of our health and priority.
    fn hello_on(&mut self, link: LinkId, kind: LinkKind) -> Message {
        let announced = (self.health(), self.cfg.priority);
        if let Some(l) = self.links.get_mut(&link) {
            l.announced = announced;
        }
        self.hello(kind)
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
            no_preempt: self.cfg.no_preempt,
            preempt_delay_ms: self.cfg.preempt_delay_ms,
            health: self.health(),
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

    /// This node's wall clock at `now`, in unix ms.
    fn wall(&self, now: Mono) -> Wall {
        self.cfg.wall_at_zero.at(now)
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
        // Durable before anything below (a STATE, the journal, the hook)
        // carries it.
        if let Some(persisted) = self.persisted
            && epoch > persisted
        {
            self.persisted = Some(epoch);
            self.actions.push_back(Action::Persist(epoch));
        }
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
        if self.next_heartbeat.is_some() {
            self.heartbeats_soon(now);
        }
        let master = self.master();
        // A new epoch under the same master is a new fencing token: the
        // journal and the hook hear of it too.
        if changed_role || master != old_master || (role != Role::None && epoch != old_epoch) {
            self.record(JournalEntry {
                at: now,
                epoch,
                from,
                to: role,
                master,
                cause,
            });
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

    /// A role change: logged, kept in the journal, and handed to the hook.
    fn record(&mut self, entry: JournalEntry) {
        self.event(Event::RoleChange {
            from: entry.from,
            to: entry.to,
            epoch: entry.epoch,
            master: entry.master,
            cause: entry.cause,
        });
        if self.journal.len() == JOURNAL_LEN {
            self.journal.pop_front();
        }
        self.journal.push_back(entry.clone());
        self.actions.push_back(Action::RoleChanged(entry));
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
        if let Some(l) = self.remove_link(link) {
            self.actions.push_back(Action::Close(link));
            if let (None, Origin::Outbound { addr, .. }) = (l.peer, l.origin) {
                self.dial_failed(addr, unanswered, now);
            }
        }
    }

    /// Adds `peer` to the view (or replaces the one at `addr`).
    fn insert_peer(&mut self, addr: SocketAddr, peer: Peer) -> Option<Peer> {
        let heard = peer.last_heard;
        let old = self.peers.insert(addr, peer);
        match &old {
            Some(o) => {
                self.heard.remove(&(o.last_heard, addr));
            }
            None => self.view_sum = self.view_sum.wrapping_add(mesh::addr_hash(&addr)),
        }
        self.heard.insert((heard, addr));
        self.ranked_two = None;
        old
    }

    /// Takes the peer at `addr` out of the view.
    fn remove_peer(&mut self, addr: &SocketAddr) -> Option<Peer> {
        let old = self.peers.remove(addr)?;
        self.heard.remove(&(old.last_heard, *addr));
        self.view_sum = self.view_sum.wrapping_sub(mesh::addr_hash(addr));
        self.ranked_two = None;
        Some(old)
    }

    /// A line from the peer `addr` arrived `now`.
    fn heard_now(&mut self, addr: SocketAddr, now: Mono) {
        if let Some(p) = self.peers.get_mut(&addr)
            && p.last_heard != now
        {
            self.heard.remove(&(p.last_heard, addr));
            self.heard.insert((now, addr));
            p.last_heard = now;
        }
    }

    /// Takes the link out, and out of the handshakes if it was in one.
    fn remove_link(&mut self, link: LinkId) -> Option<Link> {
        let l = self.links.remove(&link)?;
        if l.peer.is_none() {
            self.handshakes.remove(&(l.opened, link));
        }
        Some(l)
    }

    /// The handshake on `link` finished with the peer at `addr`.
    fn link_established(&mut self, link: LinkId, addr: SocketAddr) {
        if let Some(l) = self.links.get_mut(&link) {
            if l.peer.is_none() {
                self.handshakes.remove(&(l.opened, link));
            }
            l.peer = Some(addr);
        }
    }

    /// Closes no link: forgets them all.
    fn clear_links(&mut self) {
        self.links.clear();
        self.handshakes.clear();
    }

    /// Empties the view.
    fn clear_peers(&mut self) {
        self.peers.clear();
        self.heard.clear();
        self.view_sum = 0;
        self.ranked_two = None;
    }

    fn send(&mut self, link: LinkId, msg: Message) {
        self.actions.push_back(Action::Send(link, msg));
    }

    fn event(&mut self, event: Event) {
        self.actions.push_back(Action::Log(event));
    }
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

/// A node at 127.0.0.`n`:7400, alone (quorum 1), with short timers: for
/// the unit tests of the core's files.
#[cfg(test)]
pub(crate) fn test_node(n: u8) -> Node {
    Node::new(Config {
        addr: SocketAddr::from(([127, 0, 0, n], 7400)),
        started_unix_ms: 1_000 + u64::from(n),
        instance: u64::from(n),
        priority: 0,
        quorum: 1,
        strict: false,
        rule: Rule::default(),
        heartbeat_ms: 100,
        timeout_ms: 1_000,
        reconnect_timeout_ms: 60_000,
        seed: 1,
        wall_at_zero: Wall(1_700_000_000_000),
        durable: None,
        checked: false,
        no_preempt: false,
        preempt_delay_ms: 0,
    })
}
