//! A deterministic in-memory cluster: N election cores over a virtual
//! network, driven from one `u64` seed.
//!
//! The network models TCP as the core sees it: a dial to a live node opens
//! a link, lines arrive in order per link after a random delay, a close
//! arrives after the lines sent before it, and a crashed node's links close
//! for its peers after what it already sent. Time jumps to the next event.
//! After every step the harness checks that no node's epoch goes back,
//! and every log line a core hands over is logfmt (`common/logfmt.rs`).

#![allow(dead_code)]

#[path = "../common/logfmt.rs"]
mod logfmt;

pub mod hostile;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use bossd::core::{
    Action, Config, JOURNAL_LEN, JournalEntry, LinkId, MAX_DIALS_IN_FLIGHT,
    MAX_INTRODUCED_PER_PEER, MAX_WANTED, Node,
};
use bossd::event::Event;
use bossd::log::{Level, Record};
use bossd::protocol::{Message, Role};
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
        }
    }
}

pub struct Cluster {
    pub now: Millis,
    slots: Vec<Slot>,
    /// Pending deliveries, ordered by (time, sequence number).
    queue: BTreeMap<(Millis, u64), Delivery>,
    seq: u64,
    /// Each link end: (node, link) -> the other end.
    ends: BTreeMap<(usize, LinkId), End>,
    next_link: LinkId,
    rng: u64,
    /// Most delivery delay on a link, in ms.
    pub max_delay_ms: Millis,
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
    next_instance: u64,
    /// Events for frozen nodes, delivered in order when they thaw.
    held: Vec<Vec<Delivery>>,
    frozen: Vec<bool>,
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
}

struct Slot {
    addr: SocketAddr,
    spec: Spec,
    node: Option<Node>,
    /// A hostile member in this slot instead of a core.
    hostile: Option<Hostile>,
}

#[derive(Clone, Copy)]
struct End {
    node: usize,
    link: LinkId,
    /// The far side has been told about this link (its first line arrived).
    accepted: bool,
    /// When the last line on this direction is delivered, for FIFO order.
    last_delivery: Millis,
}

enum Delivery {
    Line {
        from: usize,
        to: usize,
        link: LinkId,
        msg: Message,
    },
    Closed {
        from: usize,
        to: usize,
        link: LinkId,
    },
}

/// The address of node `i`.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

impl Cluster {
    /// A cluster of nodes from `specs`, all started and alone.
    pub fn new(seed: u64, specs: Vec<Spec>) -> Cluster {
        let n = specs.len();
        let mut c = Cluster {
            now: 0,
            slots: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            ends: BTreeMap::new(),
            next_link: 1,
            rng: seed ^ 0x5eed,
            max_delay_ms: 2,
            journals: vec![Vec::new(); n],
            delivered: vec![Vec::new(); n],
            dials: vec![Vec::new(); n],
            warnings: vec![Vec::new(); n],
            reported: vec![0; n],
            next_instance: 1,
            held: (0..n).map(|_| Vec::new()).collect(),
            frozen: vec![false; n],
            cuts: BTreeSet::new(),
            behind_cut: Vec::new(),
            epoch_masters: BTreeMap::new(),
            check_strict: false,
            sent: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            deadline_of: vec![None; n],
        };
        for (i, spec) in specs.into_iter().enumerate() {
            c.slots.push(Slot {
                addr: addr(i),
                spec,
                node: None,
                hostile: None,
            });
            c.start(i);
        }
        c
    }

    /// Adds a hostile member at the next address (issue 10), which knows
    /// every node's address and copies node 0's settings to get in.
    /// Returns its slot; it is never `up`.
    pub fn add_hostile(&mut self, seed: u64, mode: Mode) -> usize {
        let i = self.slots.len();
        let spec = self.slots[0].spec.clone();
        let cover = Cover {
            addr: addr(i),
            quorum: spec.quorum,
            strict: spec.strict,
            rule: spec.rule.clone(),
            wall_at_zero_ms: spec.wall_at_zero_ms,
        };
        let members = self.slots.iter().map(|s| s.addr).collect();
        self.slots.push(Slot {
            addr: addr(i),
            spec,
            node: None,
            hostile: Some(Hostile::new(seed, mode, cover, members)),
        });
        self.journals.push(Vec::new());
        self.delivered.push(Vec::new());
        self.dials.push(Vec::new());
        self.warnings.push(Vec::new());
        self.reported.push(0);
        self.held.push(Vec::new());
        self.frozen.push(false);
        self.deadline_of.push(None);
        self.refresh_deadline(i);
        i
    }

    /// The hostile member in slot `i`, if it is still there.
    pub fn hostile(&self, i: usize) -> Option<&Hostile> {
        self.slots[i].hostile.as_ref()
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
        };
        self.next_instance += 1;
        // A new process starts from epoch 0: the guarantee is per process.
        self.reported[i] = 0;
        self.slots[i].node = Some(Node::new(cfg));
        self.pump(i);
    }

    pub fn node(&self, i: usize) -> &Node {
        self.slots[i].node.as_ref().expect("node is running")
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].node.is_some()
    }

    /// Operator `-c`: node `i` joins the node at `addr(j)`.
    pub fn connect(&mut self, i: usize, j: usize) -> Result<(), bossd::core::ConnectError> {
        let now = self.now;
        let r = self.slots[i]
            .node
            .as_mut()
            .expect("up")
            .connect(addr(j), Mono(now));
        self.pump(i);
        r
    }

    /// `-msg` from node `i`.
    pub fn send_text(&mut self, i: usize, text: &str) -> usize {
        let n = self.slots[i].node.as_mut().expect("up").send_text(text);
        self.pump(i);
        n
    }

    /// Graceful leave (`-q`, SIGTERM): node `i` says LEAVE and exits.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        self.slots[i].node.as_mut().expect("up").leave(Mono(now));
        self.pump(i);
        self.slots[i].node = None;
        self.refresh_deadline(i);
        // The process exits: links it never saw (dials in flight) reset.
        self.close_all(i);
    }

    /// SIGKILL: node `i` is gone; its peers see its links close after what
    /// it already sent.
    pub fn crash(&mut self, i: usize) {
        self.slots[i].node = None;
        self.refresh_deadline(i);
        self.close_all(i);
    }

    /// Closes every link end of node `i`, as a process exit does.
    fn close_all(&mut self, i: usize) {
        let mine: Vec<LinkId> = self
            .ends
            .keys()
            .filter(|(n, _)| *n == i)
            .map(|(_, l)| *l)
            .collect();
        for link in mine {
            self.close_end(i, link);
        }
    }

    /// Node `i` closes its end of `link`: the far end hears of it after
    /// what was sent before.
    fn close_end(&mut self, i: usize, link: LinkId) {
        if let Some(end) = self.ends.remove(&(i, link)) {
            self.ends.remove(&(end.node, end.link));
            let t = end.last_delivery.max(self.now);
            self.push(
                t,
                Delivery::Closed {
                    from: i,
                    to: end.node,
                    link: end.link,
                },
            );
        }
    }

    /// SIGSTOP: node `i` handles nothing (no lines, no timers) until thawed;
    /// its links stay open, so only silence can tell.
    pub fn freeze(&mut self, i: usize) {
        self.frozen[i] = true;
    }

    /// SIGCONT: node `i` gets what arrived meanwhile, in order.
    pub fn thaw(&mut self, i: usize) {
        self.frozen[i] = false;
        // The loop asks the core for the time before any event, as
        // src/net.rs does after every poll.
        let now = self.now;
        if let Some(node) = self.slots[i].node.as_mut() {
            node.handle_timeout(Mono(now));
            self.pump(i);
        }
        for ev in std::mem::take(&mut self.held[i]) {
            let t = self.now;
            self.push(t, ev);
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
            if next_event == Some(next) {
                let key = *self.queue.keys().next().expect("non-empty");
                let ev = self.queue.remove(&key).expect("present");
                self.deliver(ev);
            } else if let Some((_, i)) = next_timer {
                let now = self.now;
                if let Some(h) = self.slots[i].hostile.as_mut() {
                    let out = h.on_tick(now);
                    self.carry_out_hostile(i, out);
                    continue;
                }
                self.slots[i]
                    .node
                    .as_mut()
                    .expect("up")
                    .handle_timeout(Mono(now));
                self.pump(i);
            }
        }
        self.now = end;
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
        let now = self.now;
        let node = self.slots[i].node.as_mut().expect("up");
        let clock = bossd::console::Clock {
            now: Mono(now),
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

    /// Records node `i`'s next deadline after anything touched it.
    fn refresh_deadline(&mut self, i: usize) {
        let slot = &self.slots[i];
        let d = match &slot.hostile {
            Some(h) => Some(h.next_deadline()),
            None => slot
                .node
                .as_ref()
                .and_then(Node::next_deadline)
                .map(Mono::ms),
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
            Delivery::Line { from, to, .. } | Delivery::Closed { from, to, .. } => (*from, *to),
        };
        if self.cuts.contains(&(from, to)) {
            self.behind_cut.push(ev);
            return;
        }
        if self.frozen[to] {
            self.held[to].push(ev);
            return;
        }
        if let Some(h) = self.slots[to].hostile.as_mut() {
            let now = self.now;
            match ev {
                Delivery::Line { link, msg, .. } => {
                    if !self.ends.contains_key(&(to, link)) {
                        return;
                    }
                    let out = h.on_line(link, msg, now);
                    self.carry_out_hostile(to, out);
                }
                Delivery::Closed { link, .. } => {
                    h.on_closed(link, now);
                    self.refresh_deadline(to);
                }
            }
            return;
        }
        match ev {
            Delivery::Line { to, link, msg, .. } => {
                let now = self.now;
                let Some(node) = self.slots[to].node.as_mut() else {
                    return;
                };
                let key = (to, link);
                // The far end's first line makes the link known to it, as
                // the loop does on accepting a connection.
                if let Some(end) = self.ends.get(&key).copied()
                    && !end.accepted
                {
                    node.handle_accepted(link, Mono(now));
                    if let Some(e) = self.ends.get_mut(&key) {
                        e.accepted = true;
                    }
                }
                node.handle_message(link, msg, Mono(now));
                self.pump(to);
            }
            Delivery::Closed { to, link, .. } => {
                let now = self.now;
                if let Some(node) = self.slots[to].node.as_mut() {
                    node.handle_link_closed(link, Mono(now));
                    self.pump(to);
                }
            }
        }
    }

    /// A connection from slot `i` to slot `j`: returns `i`'s end; `j`
    /// hears of its end with the first line.
    fn open_link(&mut self, i: usize, j: usize) -> LinkId {
        let (la, lb) = (self.next_link, self.next_link + 1);
        self.next_link += 2;
        let now = self.now;
        self.ends.insert(
            (i, la),
            End {
                node: j,
                link: lb,
                accepted: true,
                last_delivery: now,
            },
        );
        self.ends.insert(
            (j, lb),
            End {
                node: i,
                link: la,
                accepted: false,
                last_delivery: now,
            },
        );
        la
    }

    /// Carries out what the hostile member in slot `i` asked for.
    fn carry_out_hostile(&mut self, i: usize, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send(link, msg) => self.send(i, link, msg),
                Out::Close(link) => self.close_end(i, link),
                Out::Dial(to, hello) => {
                    let Some(j) = self
                        .slots
                        .iter()
                        .position(|s| s.addr == to && s.node.is_some())
                    else {
                        continue;
                    };
                    let la = self.open_link(i, j);
                    if let Some(h) = self.slots[i].hostile.as_mut() {
                        h.on_dialed(la);
                    }
                    self.send(i, la, hello);
                }
            }
        }
        self.refresh_deadline(i);
    }

    /// Checks that node `i` holds no more than its limits allow (issue
    /// 10): the actions one event queued (`actions`, of which the
    /// simulator just drained the last), its reconnect set, dials,
    /// introductions and journal.
    fn check_limits(&self, i: usize, actions: usize) {
        let Some(node) = self.slots[i].node.as_ref() else {
            return;
        };
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
        let Some(node) = self.slots[i].node.as_ref() else {
            return;
        };
        let links = node.counts().links;
        assert!(
            actions <= bound(links),
            "node {i} queued {actions} actions for one event (links {links}){}",
            self.dump()
        );
    }

    /// Carries out node `i`'s actions.
    fn pump(&mut self, i: usize) {
        let mut actions = 0;
        loop {
            let Some(node) = self.slots[i].node.as_mut() else {
                self.refresh_deadline(i);
                return;
            };
            let Some(action) = node.poll_action() else {
                break;
            };
            actions += 1;
            // Connect and Close call back into the core: what it queues
            // then belongs to that call, not to the event before.
            if matches!(action, Action::Connect { .. } | Action::Close(_)) {
                self.check_actions(i, actions);
                actions = 0;
            }
            match action {
                Action::Send(link, msg) => self.send(i, link, msg),
                Action::Connect { addr: to, kind } => {
                    self.dials[i].push(to);
                    let target = self
                        .slots
                        .iter()
                        .position(|s| s.addr == to && (s.node.is_some() || s.hostile.is_some()));
                    let now = self.now;
                    match target {
                        Some(j) => {
                            let la = self.open_link(i, j);
                            self.slots[i].node.as_mut().expect("up").handle_dialed(
                                la,
                                to,
                                kind,
                                Mono(now),
                            );
                        }
                        None => self.slots[i].node.as_mut().expect("up").handle_dial_failed(
                            to,
                            "connection refused",
                            Mono(now),
                        ),
                    }
                }
                Action::Close(link) => {
                    self.close_end(i, link);
                    let now = self.now;
                    self.slots[i]
                        .node
                        .as_mut()
                        .expect("up")
                        .handle_link_closed(link, Mono(now));
                }
                Action::Log(event) => {
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
                Action::Deliver { from, text } => self.delivered[i].push((from, text)),
                Action::RoleChanged(e) => self.journals[i].push(e),
            }
        }
        let epoch = self.node(i).epoch();
        assert!(
            epoch >= self.reported[i],
            "node {i}'s epoch went back from {} to {epoch}",
            self.reported[i]
        );
        self.reported[i] = epoch;
        self.check_limits(i, actions);
        self.refresh_deadline(i);
        self.check_masters();
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
                    .node
                    .as_ref()
                    .is_some_and(|n| n.role() == Role::Master)
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

    fn send(&mut self, from: usize, link: LinkId, msg: Message) {
        let Some(end) = self.ends.get(&(from, link)).copied() else {
            return;
        };
        *self.sent.entry(msg.name()).or_insert(0) += 1;
        let delay = self.below(self.max_delay_ms + 1);
        let t = (self.now + delay).max(end.last_delivery);
        if let Some(e) = self.ends.get_mut(&(from, link)) {
            e.last_delivery = t;
        }
        self.push(
            t,
            Delivery::Line {
                from,
                to: end.node,
                link: end.link,
                msg,
            },
        );
    }

    fn push(&mut self, t: Millis, ev: Delivery) {
        self.seq += 1;
        self.queue.insert((t, self.seq), ev);
    }

    fn below(&mut self, n: u64) -> u64 {
        splitmix(&mut self.rng) % n.max(1)
    }
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
