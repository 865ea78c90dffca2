//! A deterministic in-memory cluster: N nodes over a virtual network of
//! bytes, driven from one `u64` seed.
//!
//! Every node is the real endpoint (src/endpoint.rs: the core, its links,
//! the secret's handshake and sealing, framing, classification, close
//! handling), as the real loop drives it; only the sockets and the clock
//! are simulated. The network models TCP: a dial to a live node opens a
//! connection the far node accepts at once, bytes arrive in order per
//! direction after a random delay and cut into random chunks, a close
//! arrives after the bytes sent before it, and a crashed node's
//! connections close for its peers after what it already sent. Each node's
//! monotonic clock runs at its own rate ([`Wire::rate_ppm`]); time jumps
//! to the next event. After every step the harness checks that no node's
//! epoch goes back, and every log line a core hands over is logfmt
//! (`common/logfmt.rs`).

#![allow(dead_code)]

#[path = "../common/logfmt.rs"]
mod logfmt;

pub mod hostile;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use bossd::auth::{NONCE_LEN, Secret};
use bossd::core::{
    Action, Config, JOURNAL_LEN, JournalEntry, LinkId, MAX_DIALS_IN_FLIGHT,
    MAX_INTRODUCED_PER_PEER, MAX_WANTED, Node,
};
use bossd::endpoint::{Dialer, Endpoint, Output};
use bossd::event::Event;
use bossd::http::Counters;
use bossd::link::{Ctx, Inbound, Link};
use bossd::log::{Level, Record};
use bossd::protocol::{self, Message, Role};
use bossd::rule::Rule;
use bossd::time::{Mono, Wall};
use hostile::{Cover, Hostile, Mode, Out};

/// Virtual time, in ms: the simulator's own clock.
pub type Millis = u64;

/// A node's settings in the cluster under test.
#[derive(Clone, Debug)]
pub struct Spec {
    pub started_unix_ms: u64,
    pub priority: i32,
    pub quorum: u32,
    pub strict: bool,
    pub rule: Rule,
    /// The node's wall clock at virtual time 0, unix ms: nodes whose
    /// values differ have clocks that disagree by the difference.
    pub wall_at_zero_ms: u64,
    /// `--state-dir`: the node persists its epochs, and a restart starts
    /// from what it persisted ([`Cluster::persisted`]).
    pub state_dir: bool,
    /// `--no-preempt`.
    pub no_preempt: bool,
    /// `--preempt-delay`.
    pub preempt_delay_ms: u64,
    /// `--check`: the node is failing until [`Cluster::check`] passes it.
    pub checked: bool,
}

/// The wall clock of every node unless a test skews it.
pub const WALL_AT_ZERO_MS: u64 = 1_000_000;

impl Spec {
    /// A node started at `started`, default settings otherwise.
    pub fn started(started: u64) -> Spec {
        Spec {
            started_unix_ms: started,
            priority: 0,
            quorum: 2,
            strict: false,
            rule: Rule::default(),
            wall_at_zero_ms: WALL_AT_ZERO_MS,
            state_dir: false,
            no_preempt: false,
            preempt_delay_ms: 0,
            checked: false,
        }
    }
}

/// How the wire and the clocks of a cluster differ from plain ones.
#[derive(Clone, Debug, Default)]
pub struct Wire {
    /// Every node (and a hostile member) shares a secret: every link runs
    /// the handshake and seals every line.
    pub secret: bool,
    /// Node `i`'s monotonic clock runs `rate_ppm[i]` parts per million
    /// fast (negative: slow); missing entries run true.
    pub rate_ppm: Vec<i64>,
}

/// The secret of a cluster whose [`Wire`] has one.
const SECRET: &[u8] = b"the simulated cluster's shared secret";

/// Connections a simulated node accepts: more than any scenario opens.
const MAX_CONNS: usize = 1 << 16;

/// One flush in this many is cut into several chunks; the rest arrive
/// whole (a line may still be split across two flushes' worth of bytes).
const CHUNKED_ONE_IN: u64 = 4;

pub struct Cluster {
    pub now: Millis,
    slots: Vec<Slot>,
    /// Pending deliveries, ordered by (time, sequence number).
    queue: BTreeMap<(Millis, u64), Delivery>,
    seq: u64,
    /// Each open connection end: (node, link) -> the other end.
    ends: BTreeMap<(usize, LinkId), End>,
    /// Link ids of hostile members (honest ids are their endpoints').
    next_link: LinkId,
    /// Connections opened so far: each gets a serial, so that what was in
    /// flight on a closed one never reaches a new link with a reused id.
    next_conn: u64,
    rng: u64,
    /// Most delivery delay on a link, in ms.
    pub max_delay_ms: Millis,
    /// Deliver everything due at one instant before any node carries out
    /// what it queued, then drain each node that got something once, as
    /// one iteration of the real loop reads every ready socket before it
    /// flushes. Off (one drain per delivery) unless a bench turns it on:
    /// the sweep's seeds were explored that way. At 1,000 nodes a drain
    /// walks every link of the node three times (flush, finished links,
    /// next deadline), and one per delivery was most of the bench's time.
    pub batch: bool,
    /// While a batch is delivered: the nodes to drain after it.
    deferred: Option<BTreeSet<usize>>,
    /// Every role change, per node, in order.
    pub journals: Vec<Vec<JournalEntry>>,
    /// Text delivered by `-msg`, per node.
    pub delivered: Vec<Vec<(SocketAddr, String)>>,
    /// Every Connect action, per node, for checking who dials whom.
    pub dials: Vec<Vec<SocketAddr>>,
    /// Every warning a node logged, in order.
    pub warnings: Vec<Vec<Event>>,
    /// The highest epoch each node has reported, to check it never falls.
    reported: Vec<u64>,
    /// What each node with a state dir has on disk: the last epoch it
    /// persisted. Unlike everything else about a node it survives a crash
    /// and a restart.
    persisted: Vec<Option<u64>>,
    next_instance: u64,
    /// Events for frozen nodes, delivered in order when they thaw.
    held: Vec<Vec<Delivery>>,
    frozen: Vec<bool>,
    /// When each node was frozen, for how late it wakes.
    frozen_at: Vec<Millis>,
    /// Directed cuts (from, to): nothing gets through until healed.
    cuts: BTreeSet<(usize, usize)>,
    /// What waits behind a cut, in order.
    behind_cut: Vec<Delivery>,
    /// Which node reported master for each epoch, to check one per epoch.
    epoch_masters: BTreeMap<u64, SocketAddr>,
    /// Check guarantee 8 (strict, majority quorum) after every step.
    pub check_strict: bool,
    /// Lines sent so far, by message name (benches/core.rs counts them).
    pub sent: BTreeMap<&'static str, u64>,
    /// Every running node's next deadline, ordered, so that finding the
    /// next timer does not ask all N nodes at every step: with 1,000 nodes
    /// that scan was most of the simulator's time.
    deadlines: BTreeSet<(Millis, usize)>,
    /// Node `i`'s entry in `deadlines`, if any.
    deadline_of: Vec<Option<Millis>>,
    secret: bool,
    rate_ppm: Vec<i64>,
    /// Seeds every node's handshake nonces.
    seed: u64,
    /// Names of the messages one pump sent, reused.
    sent_scratch: Vec<&'static str>,
    /// Longest run of a simulated `--notify` hook, in ms: each role change
    /// runs one after the node's earlier ones, for a random time up to
    /// this (0: hooks end at once), and the node hears
    /// `handle_hook_ended` once its hooks are done.
    pub hook_max_ms: Millis,
    /// When node `i`'s last hook ends (true time).
    hook_until: Vec<Millis>,
    /// Every hook run: node, start, end (true time) and its change, in
    /// the order they started, for guarantee 11.
    pub hooks: Vec<HookRun>,
}

/// What [`Cluster::in_flight`] found on the wire.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    pub deliveries: usize,
    pub bytes: usize,
    pub lines: BTreeMap<String, u64>,
}

/// One simulated hook run.
#[derive(Clone, Debug)]
pub struct HookRun {
    pub node: usize,
    pub start: Millis,
    pub end: Millis,
    pub entry: JournalEntry,
}

struct Slot {
    addr: SocketAddr,
    spec: Spec,
    /// Boxed: a pump moves it out of the slot and back.
    ep: Option<Box<Endpoint>>,
    /// A hostile member in this slot instead of a node.
    hostile: Option<HostileSlot>,
}

/// A hostile member with the links that frame and seal what it says.
struct HostileSlot {
    h: Hostile,
    links: BTreeMap<LinkId, Link>,
    counters: Counters,
    nonces: u64,
}

#[derive(Clone, Copy)]
struct End {
    node: usize,
    link: LinkId,
    conn: u64,
    /// When the last bytes in this direction are delivered, for FIFO order.
    last_delivery: Millis,
}

enum Delivery {
    Bytes {
        from: usize,
        to: usize,
        link: LinkId,
        conn: u64,
        bytes: Vec<u8>,
    },
    Closed {
        from: usize,
        to: usize,
        link: LinkId,
        conn: u64,
    },
}

/// The address of node `i`.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

/// A clock running `ppm` parts per million off: its reading at true time `t`.
fn local_at(t: Millis, ppm: i64) -> u64 {
    if ppm == 0 {
        return t;
    }
    // i64 holds any product a run reaches; i128 only past that.
    if let Some(p) = i64::try_from(t).ok().and_then(|t| t.checked_mul(ppm)) {
        return t.saturating_add_signed(p / 1_000_000);
    }
    let t = i128::from(t);
    u64::try_from(t + t * i128::from(ppm) / 1_000_000).unwrap_or(u64::MAX)
}

/// The first true time at which a clock running `ppm` off reads `d`.
fn true_at(d: u64, ppm: i64) -> Millis {
    if ppm == 0 {
        return d;
    }
    let scaled = i64::try_from(d).ok().and_then(|d| d.checked_mul(1_000_000));
    let guess = match scaled {
        Some(s) => u64::try_from(s / (1_000_000 + ppm)).unwrap_or(u64::MAX),
        None => {
            let g = i128::from(d) * 1_000_000 / (1_000_000 + i128::from(ppm));
            u64::try_from(g).unwrap_or(u64::MAX)
        }
    };
    let mut t = guess;
    while t < u64::MAX && local_at(t, ppm) < d {
        t += 1;
    }
    t
}

/// Handshake nonces from `state`, for a node or a hostile member.
fn next_nonce(state: &mut u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    for chunk in nonce.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix(state).to_le_bytes());
    }
    nonce
}

/// The simulated network's side of a node's dial.
struct SimDialer<'a> {
    c: &'a mut Cluster,
    from: usize,
}

impl Dialer for SimDialer<'_> {
    fn dial(&mut self, id: LinkId, to: SocketAddr) -> Result<(), String> {
        let c = &mut *self.c;
        c.dials[self.from].push(to);
        let target = c
            .slots
            .iter()
            .position(|s| s.addr == to && (s.ep.is_some() || s.hostile.is_some()));
        let Some(j) = target else {
            return Err("connection refused".to_owned());
        };
        let far = c.accept(j, self.from).ok_or("connection refused")?;
        c.join_ends((self.from, id), (j, far));
        Ok(())
    }
}

impl Cluster {
    /// A cluster of nodes from `specs`, all started and alone, over a
    /// plain wire with true clocks.
    pub fn new(seed: u64, specs: Vec<Spec>) -> Cluster {
        Cluster::with_wire(seed, specs, Wire::default())
    }

    /// [`Cluster::new`] over `wire`.
    pub fn with_wire(seed: u64, specs: Vec<Spec>, wire: Wire) -> Cluster {
        bossd::log::set_level(if std::env::var_os("SIM_TRACE").is_some() {
            Level::Debug
        } else {
            Level::Error
        });
        let n = specs.len();
        let mut rate_ppm = wire.rate_ppm;
        rate_ppm.resize(n + 1, 0);
        let mut c = Cluster {
            now: 0,
            slots: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            ends: BTreeMap::new(),
            next_link: 1 << 32,
            next_conn: 0,
            rng: seed ^ 0x5eed,
            max_delay_ms: 2,
            batch: false,
            deferred: None,
            journals: vec![Vec::new(); n],
            delivered: vec![Vec::new(); n],
            dials: vec![Vec::new(); n],
            warnings: vec![Vec::new(); n],
            reported: vec![0; n],
            persisted: vec![None; n],
            next_instance: 1,
            held: (0..n).map(|_| Vec::new()).collect(),
            frozen: vec![false; n],
            frozen_at: vec![0; n],
            cuts: BTreeSet::new(),
            behind_cut: Vec::new(),
            epoch_masters: BTreeMap::new(),
            check_strict: false,
            sent: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            deadline_of: vec![None; n],
            secret: wire.secret,
            rate_ppm,
            seed,
            sent_scratch: Vec::new(),
            hook_max_ms: 0,
            hook_until: vec![0; n],
            hooks: Vec::new(),
        };
        for (i, spec) in specs.into_iter().enumerate() {
            c.slots.push(Slot {
                addr: addr(i),
                spec,
                ep: None,
                hostile: None,
            });
            c.start(i);
        }
        c
    }

    fn secret(&self) -> Option<Secret> {
        self.secret
            .then(|| Secret::new(SECRET).expect("long enough"))
    }

    /// Node `i`'s monotonic clock now.
    pub fn local(&self, i: usize) -> Mono {
        Mono(local_at(self.now, self.rate_ppm[i]))
    }

    /// Node `i`'s wall clock now, unix ms, as the node itself reads it.
    pub fn wall(&self, i: usize) -> i64 {
        let wall_at_zero = self.slots[i].spec.wall_at_zero_ms as i64;
        wall_at_zero + self.local(i).ms() as i64
    }

    /// How far apart the rates of nodes `i` and `j` are, ppm.
    pub fn rate_gap_ppm(&self, i: usize, j: usize) -> i64 {
        (self.rate_ppm[i] - self.rate_ppm[j]).abs()
    }

    /// Adds a hostile member at the next address (issue 10), which knows
    /// every node's address (and the secret) and copies node 0's settings
    /// to get in. Returns its slot; it is never `up`.
    pub fn add_hostile(&mut self, seed: u64, mode: Mode) -> usize {
        let i = self.slots.len();
        let spec = self.slots[0].spec.clone();
        let cover = Cover {
            addr: addr(i),
            quorum: spec.quorum,
            strict: spec.strict,
            rule: spec.rule.clone(),
            no_preempt: spec.no_preempt,
            preempt_delay_ms: spec.preempt_delay_ms,
            wall_at_zero_ms: spec.wall_at_zero_ms,
        };
        let members = self.slots.iter().map(|s| s.addr).collect();
        self.slots.push(Slot {
            addr: addr(i),
            spec,
            ep: None,
            hostile: Some(HostileSlot {
                h: Hostile::new(seed, mode, cover, members),
                links: BTreeMap::new(),
                counters: Counters::default(),
                nonces: seed ^ 0x0bad,
            }),
        });
        self.journals.push(Vec::new());
        self.delivered.push(Vec::new());
        self.dials.push(Vec::new());
        self.warnings.push(Vec::new());
        self.reported.push(0);
        self.persisted.push(None);
        self.held.push(Vec::new());
        self.frozen.push(false);
        self.frozen_at.push(0);
        self.deadline_of.push(None);
        self.hook_until.push(0);
        self.rate_ppm.resize(self.slots.len(), 0);
        self.refresh_deadline(i);
        i
    }

    /// The hostile member in slot `i`, if it is still there.
    pub fn hostile(&self, i: usize) -> Option<&Hostile> {
        self.slots[i].hostile.as_ref().map(|s| &s.h)
    }

    /// The hostile member in slot `i` goes away: its links close.
    pub fn remove_hostile(&mut self, i: usize) {
        self.slots[i].hostile = None;
        self.refresh_deadline(i);
        self.close_all(i);
    }

    /// `n` nodes with default settings, node 0 the oldest.
    pub fn oldest_first(seed: u64, n: usize) -> Cluster {
        Cluster::new(
            seed,
            (0..n).map(|i| Spec::started(1000 + i as u64)).collect(),
        )
    }

    /// (Re)starts node `i` as a fresh process: new instance, alone.
    pub fn start(&mut self, i: usize) {
        let slot = &self.slots[i];
        let cfg = Config {
            addr: slot.addr,
            started_unix_ms: slot.spec.started_unix_ms,
            instance: self.next_instance,
            priority: slot.spec.priority,
            quorum: slot.spec.quorum,
            strict: slot.spec.strict,
            rule: slot.spec.rule.clone(),
            heartbeat_ms: 100,
            timeout_ms: 500,
            reconnect_timeout_ms: bossd::config::DEFAULT_RECONNECT_TIMEOUT_MS,
            seed: self.next_instance,
            wall_at_zero: Wall(slot.spec.wall_at_zero_ms),
            durable: slot.spec.state_dir.then(|| self.persisted[i].unwrap_or(0)),
            checked: slot.spec.checked,
            no_preempt: slot.spec.no_preempt,
            preempt_delay_ms: slot.spec.preempt_delay_ms,
        };
        if slot.spec.state_dir {
            self.persisted[i] = Some(self.persisted[i].unwrap_or(0));
        }
        let mut nonces = self.seed ^ self.next_instance.wrapping_mul(0x9e37_79b9);
        let nonce = Box::new(move || next_nonce(&mut nonces));
        self.next_instance += 1;
        // A new process starts from epoch 0: the guarantee is per process.
        self.reported[i] = 0;
        // And with no hook of the old process running.
        self.hook_until[i] = self.now;
        let node = Node::new(cfg);
        self.slots[i].ep = Some(Box::new(Endpoint::new(
            node,
            self.secret(),
            MAX_CONNS,
            nonce,
        )));
        self.pump(i);
    }

    pub fn node(&self, i: usize) -> &Node {
        self.slots[i].ep.as_ref().expect("node is running").node()
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        self.slots[i]
            .ep
            .as_mut()
            .expect("node is running")
            .node_mut()
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].ep.is_some()
    }

    /// Operator `-c`: node `i` joins the node at `addr(j)`.
    pub fn connect(&mut self, i: usize, j: usize) -> Result<(), bossd::core::ConnectError> {
        let now = self.local(i);
        let r = self.node_mut(i).connect(addr(j), now);
        self.pump(i);
        r
    }

    /// `-msg` from node `i`.
    pub fn send_text(&mut self, i: usize, text: &str) -> usize {
        let n = self.node_mut(i).send_text(text);
        self.pump(i);
        n
    }

    /// The health check of node `i` passes or fails (debounced).
    pub fn check(&mut self, i: usize, passing: bool) {
        let now = self.local(i);
        self.node_mut(i).handle_check(passing, now);
        self.pump(i);
    }

    /// Graceful leave (`-q`, SIGTERM): node `i` says LEAVE and exits. A
    /// master steps down first and says LEAVE once its hook has ended,
    /// within the time the loop gives a leave (`LEAVE_YIELD_MS`).
    pub fn leave(&mut self, i: usize) {
        let now = self.local(i);
        self.slots[i].ep.as_mut().expect("up").begin_leave(now);
        self.pump(i);
        if self.node(i).leave_pending() {
            let wait = self.hook_until[i]
                .saturating_sub(self.now)
                .min(bossd::core::LEAVE_YIELD_MS);
            // The leaving node handles nothing else meanwhile; its hook
            // runs, the others go on.
            self.freeze(i);
            self.run_for(wait);
            self.frozen[i] = false;
            let now = self.local(i);
            let ep = self.slots[i].ep.as_mut().expect("up");
            ep.handle_hook_ended(now);
            self.pump(i);
        }
        self.slots[i].ep = None;
        self.refresh_deadline(i);
        // The process exits: links it never saw (dials in flight) reset.
        self.close_all(i);
    }

    /// SIGKILL: node `i` is gone; its peers see its links close after what
    /// it already sent.
    pub fn crash(&mut self, i: usize) {
        self.slots[i].ep = None;
        self.refresh_deadline(i);
        self.close_all(i);
    }

    /// Closes every link end of node `i`, as a process exit does.
    fn close_all(&mut self, i: usize) {
        let mine: Vec<LinkId> = self
            .ends
            .range((i, 0)..(i + 1, 0))
            .map(|((_, l), _)| *l)
            .collect();
        for link in mine {
            self.close_end(i, link);
        }
    }

    /// Node `i` closes its end of `link`: the far end hears of it after
    /// what was sent before.
    fn close_end(&mut self, i: usize, link: LinkId) {
        if let Some(end) = self.ends.remove(&(i, link)) {
            let t = end.last_delivery.max(self.now);
            self.push(
                t,
                Delivery::Closed {
                    from: i,
                    to: end.node,
                    link: end.link,
                    conn: end.conn,
                },
            );
        }
    }

    /// Whether `(node, link)` is still the open end of connection `conn`.
    fn is_open(&self, node: usize, link: LinkId, conn: u64) -> bool {
        self.ends.get(&(node, link)).is_some_and(|e| e.conn == conn)
    }

    /// Node or hostile member `j` accepts a connection from slot `from`;
    /// returns its end's link id.
    fn accept(&mut self, j: usize, from: usize) -> Option<LinkId> {
        let peer = addr(from);
        let link = if let Some(hs) = self.slots[j].hostile.as_mut() {
            let link = self.next_link;
            self.next_link += 1;
            hs.links.insert(link, Link::accepted(peer, Mono(self.now)));
            link
        } else {
            let now = self.local(j);
            let ep = self.slots[j].ep.as_mut()?;
            if !ep.admit(peer) {
                return None;
            }
            ep.accepted(peer, now)
        };
        self.refresh_deadline(j);
        Some(link)
    }

    /// Records a new connection between two ends.
    fn join_ends(&mut self, a: (usize, LinkId), b: (usize, LinkId)) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let now = self.now;
        let end = |(node, link)| End {
            node,
            link,
            conn,
            last_delivery: now,
        };
        self.ends.insert(a, end(b));
        self.ends.insert(b, end(a));
    }

    /// SIGSTOP: node `i` handles nothing (no lines, no timers) until thawed;
    /// its links stay open, so only silence can tell.
    pub fn freeze(&mut self, i: usize) {
        if !self.frozen[i] {
            self.frozen[i] = true;
            self.frozen_at[i] = self.now;
        }
    }

    /// SIGCONT: node `i` gets everything that arrived meanwhile at once, as
    /// src/net/mod.rs handles one iteration: first how late it woke against
    /// the deadline it slept for, then every line waiting in its sockets,
    /// then its timers.
    pub fn thaw(&mut self, i: usize) {
        self.frozen[i] = false;
        let now = self.local(i);
        let woke = self.deadline_of[i]
            .unwrap_or(self.now)
            .max(self.frozen_at[i]);
        let late = self.now.saturating_sub(woke);
        if let Some(ep) = self.slots[i].ep.as_mut() {
            ep.handle_resumed(late, now);
            self.pump(i);
        }
        for ev in std::mem::take(&mut self.held[i]) {
            self.deliver(ev);
        }
        if let Some(ep) = self.slots[i].ep.as_mut() {
            ep.handle_timeout(now);
            ep.tick(now);
            self.pump(i);
        }
    }

    /// Cuts the network from every node of `a` to every node of `b`
    /// (one way); call twice for a two-way cut.
    pub fn cut(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                if x != y {
                    self.cuts.insert((x, y));
                }
            }
        }
    }

    /// Heals every cut; what waited behind them arrives, in order.
    pub fn heal(&mut self) {
        self.cuts.clear();
        for ev in std::mem::take(&mut self.behind_cut) {
            let t = self.now;
            self.push(t, ev);
        }
    }

    /// Thaws every frozen node.
    pub fn thaw_all(&mut self) {
        for i in 0..self.frozen.len() {
            if self.frozen[i] {
                self.thaw(i);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// What is in flight on the wire now: deliveries queued (and held
    /// behind cuts or for frozen nodes), their bytes, and the lines they
    /// hold by message name (the first word of each line start; a chunk
    /// that begins mid-line counts as `-`). For benches/core.rs's trace.
    pub fn in_flight(&self) -> InFlight {
        let mut f = InFlight::default();
        let held = self.held.iter().flatten().chain(&self.behind_cut);
        for d in self.queue.values().chain(held) {
            f.deliveries += 1;
            let Delivery::Bytes { bytes, .. } = d else {
                continue;
            };
            f.bytes += bytes.len();
            for (k, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                let word = if k == 0 && !line[0].is_ascii_uppercase() {
                    "-"
                } else {
                    let end = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
                    std::str::from_utf8(&line[..end]).unwrap_or("?")
                };
                *f.lines.entry(word.to_owned()).or_insert(0) += 1;
            }
        }
        f
    }

    /// Bytes waiting in running nodes' outboxes (the simulator flushes
    /// after every call, so normally none).
    pub fn outboxes(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.ep.as_ref())
            .map(|ep| ep.links().map(|(_, l)| l.outbox().len()).sum::<usize>())
            .sum()
    }

    pub fn is_frozen(&self, i: usize) -> bool {
        self.frozen[i]
    }

    /// Delivers everything due up to `now + ms`, firing timers on the way.
    pub fn run_for(&mut self, ms: Millis) {
        let end = self.now + ms;
        loop {
            let next_event = self.queue.keys().next().map(|(t, _)| *t);
            let next_timer = self.next_timer();
            let next = match (next_event, next_timer) {
                (Some(a), Some((b, _))) => a.min(b),
                (Some(a), None) => a,
                (None, Some((b, _))) => b,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = next;
            if next_event == Some(next) && self.batch {
                self.deliver_batch(next);
            } else if next_event == Some(next) {
                let key = *self.queue.keys().next().expect("non-empty");
                let ev = self.queue.remove(&key).expect("present");
                self.deliver(ev);
            } else if let Some((_, i)) = next_timer {
                self.fire(i);
            }
        }
        self.now = end;
    }

    /// [`Cluster::batch`]: delivers everything due at `t` queued so far,
    /// then drains each node that got something, in slot order.
    fn deliver_batch(&mut self, t: Millis) {
        self.deferred = Some(BTreeSet::new());
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 != t {
                break;
            }
            let ev = entry.remove();
            self.deliver(ev);
        }
        for i in self.deferred.take().unwrap_or_default() {
            self.pump(i);
        }
    }

    /// Drains node `i` now, or after the batch being delivered.
    fn pump_or_defer(&mut self, i: usize) {
        match self.deferred.as_mut() {
            Some(d) => {
                d.insert(i);
            }
            None => self.pump(i),
        }
    }

    /// Slot `i`'s timer is due.
    fn fire(&mut self, i: usize) {
        let now = self.now;
        if let Some(hs) = self.slots[i].hostile.as_mut() {
            let out = hs.h.on_tick(now);
            self.carry_out_hostile(i, out);
            return;
        }
        let now = self.local(i);
        let ep = self.slots[i].ep.as_mut().expect("up");
        ep.handle_timeout(now);
        ep.tick(now);
        self.pump(i);
    }

    /// Guarantee 11 (docs/GUARANTEES.md) for a planned move of the role
    /// from node `old`: the hook of the first node to become master after
    /// `old`'s change from master (at or after `since`) starts only once
    /// `old`'s hook for that change has ended. Returns the new master.
    pub fn assert_ordered_handover(&self, old: usize, since: Millis) -> usize {
        let step_down = self
            .hooks
            .iter()
            .find(|h| h.node == old && h.start >= since && h.entry.from == Role::Master)
            .unwrap_or_else(|| panic!("node {old} never stepped down{}", self.dump()));
        let next = self
            .hooks
            .iter()
            .find(|h| h.node != old && h.start >= since && h.entry.to == Role::Master)
            .unwrap_or_else(|| panic!("no new master after node {old}{}", self.dump()));
        assert!(
            next.start >= step_down.end,
            "node {}'s hook to become master started at {} ms, before node {old}'s hook \
             for leaving the role ended at {} ms{}",
            next.node,
            next.start,
            step_down.end,
            self.dump()
        );
        next.node
    }

    /// Runs until no line is in flight (timers may still be pending).
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            let Some((&(t, _), _)) = self.queue.iter().next() else {
                return;
            };
            self.run_for(t.saturating_sub(self.now));
        }
        panic!("the network never went quiet");
    }

    /// Runs a console command on node `i`, as an operator would, and
    /// returns its answer lines.
    pub fn console(&mut self, i: usize, line: &str) -> Vec<String> {
        let cmd = bossd::console::parse(line)
            .expect("a valid command")
            .expect("not blank");
        let now = self.local(i);
        let node = self.node_mut(i);
        let clock = bossd::console::Clock {
            now,
            wall_at_zero: node.config().wall_at_zero,
        };
        let reply = bossd::console::execute(cmd, node, clock);
        self.pump(i);
        reply.lines
    }

    /// Turns the checks of guarantee 8 on or off, forgetting which node
    /// was master of which epoch: a hostile member can break guarantee 8
    /// while it is there (a Byzantine peer is out of its scope), so a sweep
    /// checks it again only from when the hostile member has gone.
    pub fn check_strict_from_now(&mut self, on: bool) {
        self.check_strict = on;
        self.epoch_masters.clear();
    }

    /// Role, master and epoch of node `i`.
    pub fn view(&self, i: usize) -> (Role, Option<SocketAddr>, u64) {
        let n = self.node(i);
        (n.role(), n.master(), n.epoch())
    }

    pub fn peer_count(&self, i: usize) -> usize {
        self.node(i).peers().count()
    }

    /// Running nodes.
    pub fn up(&self) -> Vec<usize> {
        (0..self.slots.len()).filter(|&i| self.is_up(i)).collect()
    }

    /// Asserts guarantees 1 and 3 (docs/GUARANTEES.md) over the running nodes `members`:
    /// full mesh, one master agreed by all, at one epoch. Returns the master.
    pub fn assert_agreement(&self, members: &[usize]) -> SocketAddr {
        let first = self.view(members[0]);
        let master = first
            .1
            .unwrap_or_else(|| panic!("node {} has no master: {}", members[0], self.dump()));
        for &i in members {
            assert_eq!(
                self.view(i).1,
                Some(master),
                "master differs on node {i}: {}",
                self.dump()
            );
            assert_eq!(
                self.view(i).2,
                first.2,
                "epoch differs on node {i}: {}",
                self.dump()
            );
            assert_eq!(
                self.peer_count(i),
                members.len() - 1,
                "not a full mesh at {i}: {}",
                self.dump()
            );
            let expected = if addr(i) == master {
                Role::Master
            } else {
                Role::Follower
            };
            assert_eq!(
                self.view(i).0,
                expected,
                "role of node {i}: {}",
                self.dump()
            );
        }
        master
    }

    /// Every running node's status line, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = format!("\nt={}ms\n", self.now);
        for i in self.up() {
            s.push_str(&bossd::console::status_line(self.node(i)));
            s.push('\n');
        }
        s
    }

    /// The earliest timer of a running, unfrozen node: the least
    /// (deadline, node), where a deadline already past counts as now.
    fn next_timer(&self) -> Option<(Millis, usize)> {
        let mut overdue: Option<usize> = None;
        for &(d, i) in &self.deadlines {
            if self.frozen[i] {
                continue;
            }
            if d > self.now {
                return Some(match overdue {
                    Some(j) => (self.now, j),
                    None => (d, i),
                });
            }
            overdue = Some(overdue.map_or(i, |j| j.min(i)));
        }
        overdue.map(|j| (self.now, j))
    }

    /// Records node `i`'s next deadline, in true time, after anything
    /// touched it.
    fn refresh_deadline(&mut self, i: usize) {
        let slot = &self.slots[i];
        let d = match &slot.hostile {
            Some(hs) => Some(hs.h.next_deadline()),
            None => {
                let ep = slot.ep.as_ref();
                let hook = ep
                    .filter(|ep| ep.node().awaits_hook())
                    .map(|_| self.hook_until[i].max(self.now));
                ep.and_then(|ep| ep.next_deadline(self.local(i)))
                    .map(|d| true_at(d.ms(), self.rate_ppm[i]))
                    .into_iter()
                    .chain(hook)
                    .min()
            }
        };
        if d == self.deadline_of[i] {
            return;
        }
        if let Some(old) = self.deadline_of[i] {
            self.deadlines.remove(&(old, i));
        }
        if let Some(new) = d {
            self.deadlines.insert((new, i));
        }
        self.deadline_of[i] = d;
    }

    fn deliver(&mut self, ev: Delivery) {
        let (from, to) = match &ev {
            Delivery::Bytes { from, to, .. } | Delivery::Closed { from, to, .. } => (*from, *to),
        };
        if self.cuts.contains(&(from, to)) {
            self.behind_cut.push(ev);
            return;
        }
        if self.frozen[to] {
            self.held[to].push(ev);
            return;
        }
        match ev {
            Delivery::Bytes {
                to,
                link,
                conn,
                bytes,
                ..
            } => {
                if !self.is_open(to, link, conn) {
                    return;
                }
                if self.slots[to].hostile.is_some() {
                    return self.hostile_bytes(to, link, &bytes);
                }
                let now = self.local(to);
                if let Some(ep) = self.slots[to].ep.as_mut() {
                    ep.on_bytes(link, &bytes, now);
                    self.pump_or_defer(to);
                }
            }
            Delivery::Closed { to, link, conn, .. } => {
                if !self.is_open(to, link, conn) {
                    return;
                }
                // Both ends are closed now: nothing more goes either way.
                self.ends.remove(&(to, link));
                if let Some(hs) = self.slots[to].hostile.as_mut() {
                    hs.links.remove(&link);
                    hs.h.on_closed(link, self.now);
                    self.refresh_deadline(to);
                } else if let Some(ep) = self.slots[to].ep.as_mut() {
                    ep.on_eof(link);
                    self.pump_or_defer(to);
                }
            }
        }
    }

    /// Bytes for the hostile member in slot `i` on `link`: its link
    /// opens and frames them, and it answers what it was told.
    fn hostile_bytes(&mut self, i: usize, link: LinkId, bytes: &[u8]) {
        let secret = self.secret();
        let Some(hs) = self.slots[i].hostile.as_mut() else {
            return;
        };
        let Some(l) = hs.links.get_mut(&link) else {
            return;
        };
        l.on_bytes(bytes);
        let nonces = &mut hs.nonces;
        let mut nonce = || next_nonce(nonces);
        let mut ctx = Ctx {
            secret: secret.as_ref(),
            here: hs.h.addr(),
            counters: &mut hs.counters,
            nonce: &mut nonce,
        };
        let mut heard = Vec::new();
        while let Some(inbound) = l.poll_inbound(&mut ctx) {
            if let Inbound::PeerOpened(msg) | Inbound::Peer { msg, .. } = inbound {
                heard.push(msg);
            }
        }
        let now = self.now;
        for msg in heard {
            let Some(hs) = self.slots[i].hostile.as_mut() else {
                return;
            };
            let out = hs.h.on_line(link, msg, now);
            self.carry_out_hostile(i, out);
        }
        self.flush_hostile(i);
    }

    /// Carries out what the hostile member in slot `i` asked for.
    fn carry_out_hostile(&mut self, i: usize, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send(link, msg) => self.hostile_send(i, link, &msg),
                Out::Close(link) => {
                    if let Some(hs) = self.slots[i].hostile.as_mut() {
                        hs.links.remove(&link);
                    }
                    self.close_end(i, link);
                }
                Out::Dial(to, hello) => self.hostile_dial(i, to, &hello),
            }
        }
        self.flush_hostile(i);
        self.refresh_deadline(i);
    }

    fn hostile_send(&mut self, i: usize, link: LinkId, msg: &Message) {
        *self.sent.entry(msg.name()).or_insert(0) += 1;
        let line = protocol::encode_line(msg);
        if let Some(l) = self.slots[i]
            .hostile
            .as_mut()
            .and_then(|hs| hs.links.get_mut(&link))
        {
            l.send_line(line.trim_end_matches('\n'));
        }
    }

    fn hostile_dial(&mut self, i: usize, to: SocketAddr, hello: &Message) {
        let Some(j) = self
            .slots
            .iter()
            .position(|s| s.addr == to && s.ep.is_some())
        else {
            return;
        };
        let Some(far) = self.accept(j, i) else {
            return;
        };
        let secret = self.secret();
        let (now, link) = (self.now, self.next_link);
        self.next_link += 1;
        let Some(hs) = self.slots[i].hostile.as_mut() else {
            return;
        };
        let nonce = next_nonce(&mut hs.nonces);
        hs.links
            .insert(link, Link::dialed(to, Mono(now), secret.as_ref(), nonce));
        hs.h.on_dialed(link);
        self.join_ends((i, link), (j, far));
        self.hostile_send(i, link, hello);
    }

    /// Sends what the hostile member's links queued; drops the links
    /// that are done.
    fn flush_hostile(&mut self, i: usize) {
        let Some(hs) = self.slots[i].hostile.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        let mut done = Vec::new();
        for (&link, l) in hs.links.iter_mut() {
            if !l.outbox().is_empty() && !l.is_dead() {
                out.push((link, l.outbox().to_vec()));
                let n = l.outbox().len();
                l.wrote(n);
            }
            if l.is_finished(false) {
                done.push(link);
            }
        }
        for link in &done {
            hs.links.remove(link);
        }
        for (link, bytes) in out {
            self.transmit(i, link, bytes);
        }
        for link in done {
            self.close_end(i, link);
        }
    }

    /// Checks that node `i` holds no more than its limits allow (issue
    /// 10): the actions one event queued (`actions`, of which the
    /// simulator just drained the last), its reconnect set, dials,
    /// introductions and journal.
    fn check_limits(&self, i: usize, actions: usize) {
        let Some(ep) = self.slots[i].ep.as_ref() else {
            return;
        };
        let node = ep.node();
        self.check_actions(i, actions);
        let n = node.counts();
        assert!(n.wanted <= MAX_WANTED, "node {i}: {n:?}");
        assert!(n.dials_in_flight <= MAX_DIALS_IN_FLIGHT, "node {i}: {n:?}");
        // Sorting the reconnect set at every event would slow a sweep full
        // of MEET floods; one event in 16 is enough, since only a dial's
        // end or a drop lowers the count again.
        if self.seq.is_multiple_of(16) {
            let most = node.introduced_by_one_peer();
            assert!(
                most <= MAX_INTRODUCED_PER_PEER,
                "node {i} waits to dial {most} introductions from one peer"
            );
        }
        assert!(n.journal <= JOURNAL_LEN, "node {i}: {n:?}");
    }

    /// One event (a call into node `i`) queued at most a few lines per
    /// link (and, losing many links at once, a STATE per remaining link
    /// for each), plus the dials it allows.
    fn check_actions(&self, i: usize, actions: usize) {
        let bound = |links: usize| 8 * (links + 2) * (links + 2) + MAX_DIALS_IN_FLIGHT + 64;
        if actions <= bound(0) {
            return;
        }
        let Some(ep) = self.slots[i].ep.as_ref() else {
            return;
        };
        let links = ep.node().counts().links;
        assert!(
            actions <= bound(links),
            "node {i} queued {actions} actions for one event (links {links}){}",
            self.dump()
        );
    }

    /// Carries out node `i`'s actions through its endpoint, sends what
    /// its links queued and closes the links that are done, until nothing
    /// is left; then checks the node.
    fn pump(&mut self, i: usize) {
        loop {
            let Some(mut ep) = self.slots[i].ep.take() else {
                self.refresh_deadline(i);
                return;
            };
            let now = self.local(i);
            // Actions per event: Connect and Close call back into the
            // core, so what it queues then belongs to that call.
            let mut events = vec![0usize];
            let mut sent = std::mem::take(&mut self.sent_scratch);
            let mut persisted = self.persisted[i];
            let mut dialer = SimDialer { c: self, from: i };
            ep.drain_observed(now, &mut dialer, &mut |a| {
                *events.last_mut().expect("one") += 1;
                match a {
                    Action::Send(_, msg) => sent.push(msg.name()),
                    Action::Connect { .. } | Action::Close(_) => events.push(0),
                    _ => {}
                }
                check_durable(i, a, &mut persisted);
            });
            self.persisted[i] = persisted;
            self.slots[i].ep = Some(ep);
            for name in sent.drain(..) {
                *self.sent.entry(name).or_insert(0) += 1;
            }
            self.sent_scratch = sent;
            let last = events.pop().expect("one");
            for actions in events {
                self.check_actions(i, actions);
            }
            self.outputs(i);
            self.flush(i);
            if !self.remove_finished(i, now) {
                self.check_node(i, last);
                if self.hook_ended(i) {
                    continue;
                }
                return;
            }
            // Closing links told the core: drain again.
            self.check_actions(i, last);
        }
    }

    /// Tells node `i` its hooks have ended if it waits for that and they
    /// have; returns whether it did.
    fn hook_ended(&mut self, i: usize) -> bool {
        if self.frozen[i] || self.now < self.hook_until[i] {
            return false;
        }
        let now = self.local(i);
        match self.slots[i].ep.as_mut() {
            Some(ep) if ep.node().awaits_hook() => {
                ep.handle_hook_ended(now);
                true
            }
            _ => false,
        }
    }

    /// After node `i` handled something: its epoch never goes back, it
    /// keeps its limits, and guarantee 8 holds.
    fn check_node(&mut self, i: usize, actions: usize) {
        let epoch = self.node(i).epoch();
        assert!(
            epoch >= self.reported[i],
            "node {i}'s epoch went back from {} to {epoch}",
            self.reported[i]
        );
        self.reported[i] = epoch;
        if let Some(persisted) = self.persisted[i] {
            assert!(
                epoch <= persisted,
                "node {i} holds epoch {epoch}, above the {persisted} it persisted"
            );
        }
        self.check_limits(i, actions);
        self.refresh_deadline(i);
        self.check_masters();
    }

    /// What node `i`'s endpoint asks of the process.
    fn outputs(&mut self, i: usize) {
        while let Some(out) = self.slots[i].ep.as_mut().and_then(|ep| ep.poll_output()) {
            match out {
                Output::Log(event) => {
                    let text = bossd::log::format(&event);
                    if let Err(e) = logfmt::parse_event(&text) {
                        panic!("node {i} logged a line that is not logfmt: {e}");
                    }
                    if std::env::var_os("SIM_TRACE").is_some() {
                        eprintln!("t={} n{i}: {text}", self.now);
                    }
                    if event.level() == Level::Warn {
                        self.warnings[i].push(event);
                    }
                }
                Output::Deliver { from, text } => self.delivered[i].push((from, text)),
                Output::RoleChanged(e) => {
                    let start = self.now.max(self.hook_until[i]);
                    let end = start + self.below(self.hook_max_ms + 1);
                    self.hook_until[i] = end;
                    self.hooks.push(HookRun {
                        node: i,
                        start,
                        end,
                        entry: e.clone(),
                    });
                    self.journals[i].push(e);
                }
                Output::Print(_) | Output::Leave | Output::Persist(_) => {}
            }
        }
    }

    /// Sends what node `i`'s links queued, as a socket would take it all.
    fn flush(&mut self, i: usize) {
        // Only the links the endpoint says it touched, as the real loop
        // flushes: a change it failed to note would lose the bytes here.
        let ep = self.slots[i].ep.as_mut().expect("up");
        let touched = ep.take_touched();
        let ready: Vec<LinkId> = touched
            .into_iter()
            .filter(|id| {
                ep.link(*id)
                    .is_some_and(|l| !l.outbox().is_empty() && !l.is_dead())
            })
            .collect();
        for id in ready {
            let bytes = self.slots[i].ep.as_mut().expect("up").take_outbox(id);
            self.transmit(i, id, bytes);
        }
    }

    /// Closes node `i`'s finished links; returns whether there were any.
    fn remove_finished(&mut self, i: usize, now: Mono) -> bool {
        let done = self.slots[i].ep.as_ref().expect("up").finished(|_| false);
        for &id in &done {
            self.close_end(i, id);
            self.slots[i].ep.as_mut().expect("up").remove(id, now);
        }
        !done.is_empty()
    }

    /// The highest epoch node `i` has persisted, if it has a state dir.
    pub fn persisted(&self, i: usize) -> Option<u64> {
        self.persisted[i]
    }

    /// Guarantee 8 (docs/GUARANTEES.md) at this instant: one master per epoch and, when
    /// strict checking is on, never two masters at once.
    fn check_masters(&mut self) {
        if !self.check_strict {
            return;
        }
        // A frozen process answers nothing, so it reports nothing.
        let masters: Vec<(usize, u64)> = (0..self.slots.len())
            .filter(|&i| !self.frozen[i])
            .filter(|&i| {
                self.slots[i]
                    .ep
                    .as_ref()
                    .is_some_and(|ep| ep.node().role() == Role::Master)
            })
            .map(|i| (i, self.node(i).epoch()))
            .collect();
        assert!(
            masters.len() <= 1,
            "two masters at once: {masters:?}{}",
            self.dump()
        );
        for (i, epoch) in masters {
            let a = addr(i);
            let known = *self.epoch_masters.entry(epoch).or_insert(a);
            assert_eq!(known, a, "epoch {epoch} had two masters{}", self.dump());
        }
    }

    /// Puts `bytes` from slot `from`'s end of `link` on the wire: cut into
    /// chunks (from the seed), each after a random delay, in order.
    fn transmit(&mut self, from: usize, link: LinkId, bytes: Vec<u8>) {
        let Some(end) = self.ends.get(&(from, link)).copied() else {
            return;
        };
        let mut t = end.last_delivery;
        for chunk in self.chunks(bytes) {
            let delay = self.below(self.max_delay_ms + 1);
            t = (self.now + delay).max(t);
            self.push(
                t,
                Delivery::Bytes {
                    from,
                    to: end.node,
                    link: end.link,
                    conn: end.conn,
                    bytes: chunk,
                },
            );
        }
        if let Some(e) = self.ends.get_mut(&(from, link)) {
            e.last_delivery = t;
        }
    }

    /// Cuts one flush into the pieces the far end reads.
    fn chunks(&mut self, mut bytes: Vec<u8>) -> Vec<Vec<u8>> {
        if bytes.len() < 2 || self.below(CHUNKED_ONE_IN) != 0 {
            return vec![bytes];
        }
        let mut cuts: Vec<usize> = (0..1 + self.below(3))
            .map(|_| 1 + self.below(bytes.len() as u64 - 1) as usize)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        for &cut in cuts.iter().rev() {
            pieces.push(bytes.split_off(cut));
        }
        pieces.push(bytes);
        pieces.reverse();
        pieces
    }

    fn push(&mut self, t: Millis, ev: Delivery) {
        self.seq += 1;
        self.queue.insert((t, self.seq), ev);
    }

    fn below(&mut self, n: u64) -> u64 {
        splitmix(&mut self.rng) % n.max(1)
    }
}

/// Guarantee 12 (docs/GUARANTEES.md) for node `i`'s next action `a`,
/// given what it has `persisted` (`None`: no state dir): an epoch is
/// persisted once, above the last, and before any STATE or role change
/// carries it.
fn check_durable(i: usize, a: &Action, persisted: &mut Option<u64>) {
    let Some(on_disk) = persisted else {
        assert!(
            !matches!(a, Action::Persist(_)),
            "node {i} persists without a state dir"
        );
        return;
    };
    let carried = match a {
        Action::Persist(epoch) => {
            assert!(
                *epoch > *on_disk,
                "node {i} persisted {epoch}, not above {on_disk}"
            );
            *on_disk = *epoch;
            return;
        }
        Action::Send(_, Message::State(s)) => s.epoch,
        Action::RoleChanged(e) => e.epoch,
        _ => return,
    };
    assert!(
        carried <= *on_disk,
        "node {i} used epoch {carried} before persisting it ({on_disk} on disk)"
    );
}

/// splitmix64: the next number from `state`.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The set of running nodes' addresses.
pub fn addrs(ids: &[usize]) -> BTreeSet<SocketAddr> {
    ids.iter().map(|&i| addr(i)).collect()
}
