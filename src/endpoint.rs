//! The node as its connections see it, sans IO: the election core, every
//! link by id, the secret and the `/metrics` counters.
//!
//! An [`Endpoint`] routes what links hand up ([`Inbound`]) to the core, the
//! console or the HTTP answers, carries the core's actions out onto links
//! (sends, closes) and tells the IO layer what only it can do: dial (through
//! [`Dialer`], at once, so actions keep their order), write a link's outbox,
//! drop finished links, and the [`Output`]s (log events, console text, role
//! changes for the hooks, the leave). The real loop (src/net/) and the
//! simulator (tests/sim) drive the same code.
//!
//! It never touches a socket, reads a clock or draws randomness: every
//! call takes `now`, and handshake nonces come from the function it was
//! built with.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;

use slab::Slab;

use crate::auth::{NONCE_LEN, Secret};
use crate::console::{self, Clock, Command};
use crate::core::{Action, JoinProgress, JournalEntry, LinkId, Node};
use crate::event::Event;
use crate::http::{self, Counters, Direction, Request};
use crate::link::{Ctx, Inbound, Kind, Link};
use crate::log::Level;
use crate::protocol::{self, LinkKind, Message, OptAddr};
use crate::time::Mono;
use crate::watch::{self, Item, Watchers};

/// The watcher id of the stdin console's `-w`: no link has it (a slab's
/// keys stay far below), and its lines go out as [`Output::Print`].
const STDIN_WATCHER: LinkId = LinkId::MAX;

/// A connection that neither finished a peer handshake nor sent a command
/// within this many timeouts is closed (docs/GUARANTEES.md, console): a
/// silent socket holds a descriptor and a slot of `--max-conns` for nothing.
const IDLE_TIMEOUTS: u64 = 10;

/// The longest a TCP client's `-c` answer waits for the first attempt's
/// outcome (otherwise timeout + heartbeat, by when an unanswered dial has
/// timed out): well inside the 5 s `bossd ctl` waits for an answer.
const JOIN_ANSWER_MAX_MS: u64 = 2_000;

/// Opens connections for the endpoint: the IO layer's side of a dial.
pub trait Dialer {
    /// Starts a connection to `addr`, known from now on as `id`; `Err`
    /// says why it could not start.
    fn dial(&mut self, id: LinkId, addr: SocketAddr) -> Result<(), String>;
}

/// What the IO layer must do besides moving bytes.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// An event to log.
    Log(Event),
    /// A peer's `-msg` text for the console.
    Deliver { from: SocketAddr, text: String },
    /// A line for the console on standard input.
    Print(String),
    /// The role changed: the hooks run.
    RoleChanged(JournalEntry),
    /// Write this epoch to the state dir before any byte queued since is
    /// sent and any later output is carried out; stop the node if that
    /// fails (guarantee 12, docs/GUARANTEES.md).
    Persist(u64),
    /// The node leaves: output drains, hooks end, the process exits.
    Leave,
}

/// A source of handshake nonces.
pub type Nonces = Box<dyn FnMut() -> [u8; NONCE_LEN]>;

pub struct Endpoint {
    node: Node,
    links: Slab<Link>,
    secret: Option<Secret>,
    counters: Counters,
    max_conns: usize,
    /// Connections refused since the limit was reached; 0 below it. One
    /// line is logged when a flood starts and one when it ends.
    refused_while_full: u64,
    leaving: bool,
    nonce: Nonces,
    outputs: VecDeque<Output>,
    scratch: String,
    /// `-w` and `/events` connections (and the stdin console's `-w`).
    watchers: Watchers,
    /// Links changed since the IO layer last took them
    /// ([`Endpoint::take_touched`]): the ones that may have output to
    /// write, or may have stopped being quiet. Every change to a link
    /// goes through [`Endpoint::link_mut`] or notes it here itself.
    touched: Vec<LinkId>,
    /// Every link taken from `touched` that was not quiet then
    /// ([`Link::is_quiet`]): with `touched`, the only links a tick, a
    /// deadline, a held `-c` answer or a finished link can concern. So an
    /// iteration of the loop costs what happened in it, not the number of
    /// links (docs/BENCHMARKS.md: with seven walks over every link an
    /// iteration, the loop's own two functions were a quarter of the
    /// nodes' CPU while 200 nodes formed).
    timed: BTreeSet<LinkId>,
}

impl Endpoint {
    pub fn new(node: Node, secret: Option<Secret>, max_conns: usize, nonce: Nonces) -> Endpoint {
        Endpoint {
            node,
            links: Slab::new(),
            secret,
            counters: Counters::default(),
            max_conns,
            refused_while_full: 0,
            leaving: false,
            nonce,
            outputs: VecDeque::new(),
            scratch: String::new(),
            watchers: Watchers::new(),
            touched: Vec::new(),
            timed: BTreeSet::new(),
        }
    }

    /// The watchers now, `-w` and `/events` (and the stdin console's).
    pub fn watchers(&self) -> &Watchers {
        &self.watchers
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    pub fn link(&self, id: LinkId) -> Option<&Link> {
        self.links.get(id)
    }

    pub fn links(&self) -> impl Iterator<Item = (LinkId, &Link)> {
        self.links.iter()
    }

    /// Link `id`, to change: noted as touched.
    fn link_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        self.touched.push(id);
        self.links.get_mut(id)
    }

    /// The IO layer has news of link `id` (its socket became writable):
    /// it is among the next [`Endpoint::take_touched`].
    pub fn touch(&mut self, id: LinkId) {
        self.touched.push(id);
    }

    /// The links changed since the last call, each once, in id order:
    /// the only ones whose outbox can have gained bytes. Each is filed as
    /// quiet or not on the way.
    pub fn take_touched(&mut self) -> Vec<LinkId> {
        let mut ids = std::mem::take(&mut self.touched);
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            match self.links.get(id) {
                Some(link) if !link.is_quiet() => self.timed.insert(id),
                _ => self.timed.remove(&id),
            };
        }
        ids
    }

    /// The links that may not be quiet, each once, in id order: no other
    /// has a deadline, holds a `-c` answer or is finished.
    fn unquiet(&self) -> Vec<LinkId> {
        let mut ids: Vec<LinkId> = self.timed.iter().chain(&self.touched).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| self.links.contains(*id));
        ids
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters the loop keeps itself, such as the health check's runs.
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// The next thing the IO layer must do besides moving bytes.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn clock(&self, now: Mono) -> Clock {
        Clock {
            now,
            wall_at_zero: self.node.config().wall_at_zero,
        }
    }

    fn idle_limit_ms(&self) -> u64 {
        IDLE_TIMEOUTS.saturating_mul(self.node.config().timeout_ms)
    }

    /// Whether a connection from `peer` may be accepted under
    /// `--max-conns`; counts it either way.
    pub fn admit(&mut self, peer: SocketAddr) -> bool {
        if self.links.len() < self.max_conns {
            self.counters.accepted += 1;
            return true;
        }
        if self.refused_while_full == 0 {
            crate::event!(
                Level::Warn,
                "conn-limit-reached",
                limit = self.max_conns,
                peer = peer,
            );
        } else {
            crate::event!(
                Level::Debug,
                "conn-refused",
                peer = peer,
                reason = "too many connections",
            );
        }
        self.refused_while_full += 1;
        self.counters.refused_busy += 1;
        false
    }

    /// The id the next accepted or dialed link gets.
    pub fn next_id(&self) -> LinkId {
        self.links.vacant_key()
    }

    /// A connection from `peer` was accepted (after [`Endpoint::admit`]);
    /// returns its id, which is [`Endpoint::next_id`].
    pub fn accepted(&mut self, peer: SocketAddr, now: Mono) -> LinkId {
        let id = self.links.insert(Link::accepted(peer, now));
        self.touched.push(id);
        id
    }

    /// Bytes arrived on link `id`.
    pub fn on_bytes(&mut self, id: LinkId, bytes: &[u8], now: Mono) {
        if let Some(link) = self.link_mut(id) {
            link.on_bytes(bytes);
            self.take_lines(id, now);
        }
    }

    /// The other side of link `id` closed.
    pub fn on_eof(&mut self, id: LinkId) {
        if let Some(link) = self.link_mut(id) {
            link.on_eof();
        }
    }

    /// Link `id` broke (a read or write failed): it goes at once.
    pub fn kill(&mut self, id: LinkId) {
        if let Some(link) = self.link_mut(id) {
            link.kill();
        }
    }

    /// A dial of link `id` failed after it started.
    pub fn on_dial_error(&mut self, id: LinkId, reason: &str, now: Mono) {
        self.kill(id);
        self.node.handle_dial_error(id, reason, now);
    }

    /// The bytes waiting for link `id`'s socket.
    pub fn outbox(&self, id: LinkId) -> &[u8] {
        self.links.get(id).map_or(&[], Link::outbox)
    }

    /// Takes link `id`'s whole outbox, for a transport that always
    /// takes everything (the simulator's).
    pub fn take_outbox(&mut self, id: LinkId) -> Vec<u8> {
        // Not a touch: an emptied outbox has nothing more to write, and a
        // link it finishes is draining, which is never quiet.
        self.links
            .get_mut(id)
            .map_or_else(Vec::new, Link::take_outbox)
    }

    /// Link `id`'s socket took `n` bytes of its outbox.
    pub fn wrote(&mut self, id: LinkId, n: usize) {
        // Not a touch, as for `take_outbox`.
        if let Some(link) = self.links.get_mut(id) {
            link.wrote(n);
        }
    }

    /// The loop woke `late_ms` after its deadline; before any read
    /// ([`Node::handle_resumed`]).
    pub fn handle_resumed(&mut self, late_ms: u64, now: Mono) {
        self.node.handle_resumed(late_ms, now);
    }

    /// Time passed: the core's timers and the watchers' keep-alives.
    pub fn handle_timeout(&mut self, now: Mono) {
        self.node.handle_timeout(now);
        if self.watchers.next_deadline().is_some_and(|t| now.0 >= t) {
            let links = &self.links;
            let out = self
                .watchers
                .handle_timeout(now.0, |id| outbox_len(links, id));
            self.watch_outputs(out);
        }
    }

    /// Applies every link's close grace and idle limit.
    pub fn tick(&mut self, now: Mono) {
        let limit = self.idle_limit_ms();
        for id in self.unquiet() {
            self.links[id].tick(now, limit);
        }
    }

    /// The earliest time something is due: a core timer, a link's grace,
    /// idle limit or `-c` answer.
    pub fn next_deadline(&self, now: Mono) -> Option<Mono> {
        let limit = self.idle_limit_ms();
        let unquiet = self.unquiet();
        let links = unquiet
            .iter()
            .filter_map(|id| self.links[*id].deadline(now, limit));
        let keepalive = self.watchers.next_deadline().map(Mono);
        self.node
            .next_deadline()
            .into_iter()
            .chain(links)
            .chain(keepalive)
            .min()
    }

    /// Carries out the core's actions and answers `-c`s that are due.
    pub fn drain(&mut self, now: Mono, dialer: &mut dyn Dialer) {
        self.drain_observed(now, dialer, &mut |_| {});
    }

    /// [`Endpoint::drain`], showing each action to `observe` before it is
    /// carried out (the simulator counts and checks them).
    pub fn drain_observed(
        &mut self,
        now: Mono,
        dialer: &mut dyn Dialer,
        observe: &mut dyn FnMut(&Action),
    ) {
        self.carry_out_all(now, dialer, observe);
        if self.answer_joins(now) {
            self.carry_out_all(now, dialer, observe);
        }
    }

    fn carry_out_all(
        &mut self,
        now: Mono,
        dialer: &mut dyn Dialer,
        observe: &mut dyn FnMut(&Action),
    ) {
        while let Some(action) = self.node.poll_action() {
            observe(&action);
            self.carry_out(action, now, dialer);
        }
    }

    /// Links that can go, given which are still connecting.
    pub fn finished(&self, connecting: impl Fn(LinkId) -> bool) -> Vec<LinkId> {
        let mut ids = self.unquiet();
        ids.retain(|id| self.links[*id].is_finished(connecting(*id)));
        ids
    }

    /// Whether every link's output was written (dials under way aside).
    pub fn drained(&self, connecting: impl Fn(LinkId) -> bool) -> bool {
        self.links
            .iter()
            .all(|(id, l)| l.outbox().is_empty() || connecting(id))
    }

    /// Link `id` is gone (its socket closed): the core hears of it.
    pub fn remove(&mut self, id: LinkId, now: Mono) {
        if self.links.try_remove(id).is_none() {
            return;
        }
        self.timed.remove(&id);
        self.watchers.close(id);
        self.node.handle_link_closed(id, now);
        if self.refused_while_full > 0 && self.links.len() < self.max_conns {
            crate::event!(
                Level::Info,
                "conn-limit-cleared",
                refused = self.refused_while_full,
            );
            self.refused_while_full = 0;
        }
    }

    /// The node leaves: the core says LEAVE and every link closes once
    /// its output is written. The caller logs why.
    pub fn begin_leave(&mut self, now: Mono) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.node.leave(now);
        // A master stepping down keeps its peer links until its LEAVE,
        // after its hook (guarantee 11); the core closes them then.
        let pending = self.node.leave_pending();
        for (id, link) in self.links.iter_mut() {
            self.touched.push(id);
            if !(pending && self.node.has_link(id)) {
                link.close();
            }
        }
        self.outputs.push_back(Output::Leave);
    }

    /// Every hook for the role changes so far has ended: a master that
    /// stepped down releases its role now ([`Node::handle_hook_ended`]).
    pub fn handle_hook_ended(&mut self, now: Mono) {
        self.node.handle_hook_ended(now);
    }

    fn carry_out(&mut self, action: Action, now: Mono, dialer: &mut dyn Dialer) {
        match action {
            Action::Send(id, msg) => self.send(id, &msg),
            Action::Connect { addr, kind } => self.dial(addr, kind, now, dialer),
            Action::Close(id) => {
                if let Some(link) = self.link_mut(id) {
                    link.close();
                }
            }
            Action::Log(event) => self.outputs.push_back(Output::Log(event)),
            Action::Deliver { from, text } => {
                self.outputs.push_back(Output::Deliver { from, text });
            }
            Action::RoleChanged(entry) => {
                self.counters.role_changes += 1;
                self.publish(&entry, now);
                self.outputs.push_back(Output::RoleChanged(entry));
            }
            Action::Persist(epoch) => self.outputs.push_back(Output::Persist(epoch)),
        }
    }

    fn send(&mut self, id: LinkId, msg: &Message) {
        self.scratch.clear();
        protocol::encode(msg, &mut self.scratch);
        let line = self.scratch.trim_end_matches('\n');
        crate::event!(Level::Debug, "send", link = id, line = line);
        self.counters.message(msg.name(), Direction::Out);
        self.touched.push(id);
        if let Some(link) = self.links.get_mut(id) {
            link.send_line(line);
        }
    }

    fn dial(&mut self, addr: SocketAddr, kind: LinkKind, now: Mono, dialer: &mut dyn Dialer) {
        if self.links.len() >= self.max_conns {
            self.node
                .handle_dial_failed(addr, "too many connections", now);
            return;
        }
        let id = self.links.vacant_key();
        if let Err(reason) = dialer.dial(id, addr) {
            self.node.handle_dial_failed(addr, &reason, now);
            return;
        }
        let nonce = match self.secret {
            Some(_) => (self.nonce)(),
            None => [0; NONCE_LEN],
        };
        let link = Link::dialed(addr, now, self.secret.as_ref(), nonce);
        let got = self.links.insert(link);
        debug_assert_eq!(got, id);
        self.touched.push(id);
        self.node.handle_dialed(id, addr, kind, now);
    }

    /// Handles every complete line buffered on link `id`.
    fn take_lines(&mut self, id: LinkId, now: Mono) {
        loop {
            let here = self.node.config().addr;
            self.touched.push(id);
            let Some(link) = self.links.get_mut(id) else {
                return;
            };
            let mut ctx = Ctx {
                secret: self.secret.as_ref(),
                here,
                counters: &mut self.counters,
                nonce: &mut *self.nonce,
            };
            let Some(inbound) = link.poll_inbound(&mut ctx) else {
                return;
            };
            self.on_inbound(id, inbound, now);
        }
    }

    fn on_inbound(&mut self, id: LinkId, inbound: Inbound, now: Mono) {
        match inbound {
            Inbound::PeerOpened(msg) => {
                self.counters.message(msg.name(), Direction::In);
                self.node.handle_accepted(id, now);
                self.node.handle_message(id, msg, now);
            }
            Inbound::Peer { msg, line } => {
                self.counters.message(msg.name(), Direction::In);
                crate::event!(Level::Debug, "recv", link = id, line = line);
                self.node.handle_message(id, msg, now);
            }
            Inbound::PeerViolation(reason) => {
                self.node.handle_protocol_violation(id, &reason, now);
            }
            Inbound::Console { cmd, permitted } => self.console_line(id, cmd, permitted, now),
            Inbound::Http { req, head } => self.answer_http(id, req, head, now),
        }
    }

    /// Runs one command from a TCP client and queues the framed answer.
    fn console_line(
        &mut self,
        id: LinkId,
        cmd: Result<Option<Command>, String>,
        permitted: bool,
        now: Mono,
    ) {
        let (lines, quit) = match cmd {
            Ok(None) => (vec![format!("ERR {}", console::EMPTY_COMMAND)], false),
            Ok(Some(cmd)) if cmd.is_mutating() && !permitted => {
                (vec!["ERR not permitted".to_owned()], false)
            }
            Ok(Some(Command::Watch)) => return self.open_watcher(id, watch::Kind::Console, now),
            Ok(Some(cmd)) => match self.execute(id, cmd, now) {
                Some(answer) => answer,
                None => return,
            },
            Err(reason) => (vec![format!("ERR {reason}")], false),
        };
        let Some(link) = self.link_mut(id) else {
            return;
        };
        for l in &lines {
            link.send_line(l);
        }
        if quit {
            let peer = OptAddr(link.peer_addr());
            crate::event!(Level::Info, "leaving", cause = "console", peer = peer);
            self.begin_leave(now);
        }
    }

    /// Runs a permitted command: its answer lines and whether to leave,
    /// or `None` when a `-c`'s answer waits for the first attempt.
    fn execute(&mut self, id: LinkId, cmd: Command, now: Mono) -> Option<(Vec<String>, bool)> {
        let clock = self.clock(now);
        let mut reply = console::execute(cmd, &mut self.node, clock);
        if let Some(addr) = reply.join {
            // Answered by `answer_joins` once the first attempt had an outcome.
            let cfg = self.node.config();
            let wait = (cfg.timeout_ms + cfg.heartbeat_ms).min(JOIN_ANSWER_MAX_MS);
            if let Some(link) = self.link_mut(id) {
                link.await_join(addr, now.plus(wait));
            }
            return None;
        }
        reply.lines.push(match reply.result {
            Ok(()) => "OK".to_owned(),
            Err(reason) => format!("ERR {reason}"),
        });
        Some((reply.lines, reply.quit))
    }

    /// Answers each held `-c` whose first attempt had an outcome (a link,
    /// a failure, a redirect, a refusal), whose wait is over, or whose
    /// node leaves; then takes the lines its client sent meanwhile.
    /// Returns whether any was answered.
    fn answer_joins(&mut self, now: Mono) -> bool {
        let due: Vec<(LinkId, SocketAddr)> = self
            .unquiet()
            .into_iter()
            .filter_map(|id| {
                let link = &self.links[id];
                let (addr, by) = link.awaiting_join()?;
                let settled = !matches!(
                    self.node.join_progress(addr),
                    JoinProgress::Trying { failures: 0, .. }
                );
                (settled || now >= by || self.leaving || link.is_dead()).then_some((id, addr))
            })
            .collect();
        for &(id, addr) in &due {
            let mut lines = console::join_answer(addr, self.node.join_progress(addr));
            lines.push("OK".to_owned());
            if let Some(link) = self.link_mut(id) {
                for l in &lines {
                    link.send_line(l);
                }
                link.join_answered();
            }
            self.take_lines(id, now);
        }
        !due.is_empty()
    }

    fn answer_http(&mut self, id: LinkId, req: Request, head: bool, now: Mono) {
        if req == Request::Events && !head {
            return self.open_watcher(id, watch::Kind::Sse, now);
        }
        let open = self.open_connections();
        let answer = http::answer(req, head, &self.node, &self.counters, open, self.clock(now));
        if let Some(link) = self.link_mut(id) {
            link.answer_http(&answer);
        }
    }

    fn open_connections(&self) -> http::Open {
        let mut open = http::Open::default();
        for (_, link) in &self.links {
            if link.is_watching() {
                open.watchers += 1;
                continue;
            }
            match link.kind() {
                Kind::Peer => open.peers += 1,
                Kind::Console => open.clients += 1,
                Kind::Http { .. } => open.http += 1,
                Kind::Undecided => open.unknown += 1,
            }
        }
        open
    }

    /// One console line from standard input: its answer goes out as
    /// [`Output::Print`].
    pub fn stdin_line(&mut self, line: &str, now: Mono) {
        let cmd = match console::parse(line) {
            Ok(None) => return,
            Ok(Some(Command::Watch)) => {
                return self.open_watcher(STDIN_WATCHER, watch::Kind::Console, now);
            }
            Ok(Some(cmd)) => cmd,
            Err(reason) => return self.print(format!("ERR {reason}")),
        };
        let clock = self.clock(now);
        let reply = console::execute(cmd, &mut self.node, clock);
        for l in reply.lines {
            self.print(l);
        }
        // Not held as over TCP: a failed attempt is logged (`join-failed`)
        // on the same terminal.
        if let Some(addr) = reply.join {
            for l in console::join_answer(addr, self.node.join_progress(addr)) {
                self.print(l);
            }
        }
        if let Err(reason) = reply.result {
            self.print(format!("ERR {reason}"));
        }
        if reply.quit {
            crate::event!(Level::Info, "leaving", cause = "console", peer = "stdin");
            self.begin_leave(now);
        }
    }

    /// A line for the stdin console.
    pub fn print(&mut self, line: String) {
        self.outputs.push_back(Output::Print(line));
    }

    /// Makes link `id` (or [`STDIN_WATCHER`]) a watcher of `kind`: it is
    /// sent the status first, or refused when [`watch::MAX_WATCHERS`]
    /// watch already.
    fn open_watcher(&mut self, id: LinkId, kind: watch::Kind, now: Mono) {
        let line = console::status_line(&self.node);
        let json = http::status_json(&self.node, self.clock(now));
        let out = self.watchers.open(
            id,
            kind,
            Item {
                line: &line,
                json: &json,
            },
            now.0,
        );
        if self.watchers.kind(id).is_some()
            && let Some(link) = self.link_mut(id)
        {
            link.watch();
        }
        self.watch_outputs(out);
    }

    /// A role change for every watcher; nothing is rendered when none
    /// watches.
    fn publish(&mut self, entry: &JournalEntry, now: Mono) {
        if self.watchers.is_empty() {
            return;
        }
        let clock = self.clock(now);
        let line = console::journal_line(entry, clock);
        let json = http::journal_json(entry, clock);
        let links = &self.links;
        let out = self.watchers.publish(
            Item {
                line: &line,
                json: &json,
            },
            |id| outbox_len(links, id),
        );
        self.watch_outputs(out);
    }

    /// Carries what the watchers ask out onto their links.
    fn watch_outputs(&mut self, out: Vec<watch::Output>) {
        for o in out {
            match o {
                watch::Output::Line(STDIN_WATCHER, text) => self.print(text.to_string()),
                watch::Output::Line(id, text) => {
                    if let Some(link) = self.link_mut(id) {
                        link.send_line(&text);
                    }
                }
                watch::Output::Bytes(id, text) => {
                    if let Some(link) = self.link_mut(id) {
                        link.send_bytes(text.as_bytes());
                    }
                }
                watch::Output::Close(id, why) => {
                    let peer = match self.link_mut(id) {
                        Some(link) => {
                            link.close();
                            OptAddr(link.peer_addr())
                        }
                        None => OptAddr(None),
                    };
                    let level = match why {
                        watch::Closed::TooMany => Level::Info,
                        watch::Closed::OutboxFull => Level::Warn,
                    };
                    crate::event!(level, "watcher-closed", reason = why.as_str(), peer = peer);
                }
            }
        }
    }
}

/// Bytes waiting in link `id`'s outbox (none for the stdin watcher, whose
/// lines are printed at once).
fn outbox_len(links: &Slab<Link>, id: LinkId) -> usize {
    links.get(id).map_or(0, |l| l.outbox().len())
}

#[cfg(test)]
mod tests {
    //! Which links an iteration looks at: the ones it touched, and the
    //! ones that are not quiet.

    use super::*;

    const CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(127, 0, 0, 9),
        40_000,
    ));

    fn endpoint() -> Endpoint {
        let node = crate::core::test_node(1);
        Endpoint::new(node, None, 16, Box::new(|| [0; NONCE_LEN]))
    }

    #[test]
    fn an_answered_console_is_touched_once_then_left_alone_until_it_closes() {
        let mut ep = endpoint();
        let id = ep.accepted(CLIENT, Mono(0));
        assert_eq!(ep.take_touched(), vec![id]);
        ep.on_bytes(id, b"-s\n", Mono(1));
        assert_eq!(ep.take_touched(), vec![id], "the answer is to be written");
        assert!(ep.outbox(id).ends_with(b"OK\n"));
        ep.wrote(id, ep.outbox(id).len());
        assert_eq!(
            ep.take_touched(),
            Vec::<LinkId>::new(),
            "a write is no news"
        );
        assert!(ep.unquiet().is_empty(), "no deadline, nothing held");
        assert_eq!(ep.next_deadline(Mono(2)), None);
        ep.on_eof(id);
        assert_eq!(ep.finished(|_| false), vec![id], "before it is taken");
        ep.take_touched();
        assert_eq!(ep.finished(|_| false), vec![id], "and after");
        ep.remove(id, Mono(3));
        assert!(ep.unquiet().is_empty());
    }

    #[test]
    fn a_silent_connection_meets_its_idle_limit_however_many_iterations_pass() {
        let mut ep = endpoint();
        let id = ep.accepted(CLIENT, Mono(0));
        let limit = Mono(IDLE_TIMEOUTS * 1_000);
        for t in 1..100 {
            ep.take_touched();
            ep.tick(Mono(t));
            assert_eq!(ep.next_deadline(Mono(t)), Some(limit));
        }
        ep.tick(limit);
        assert_eq!(ep.finished(|_| false), vec![id]);
    }
}
