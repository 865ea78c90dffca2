//! The event loop: one thread, one mio `Poll` over the listener, every peer
//! and console connection, stdin and the signals.
//!
//! It owns every socket and the clock, and nothing of the election: it
//! turns readiness into calls on the core and carries out the core's
//! actions. One iteration has a fixed shape: poll with the core's next
//! deadline as timeout; dispatch events; tell the core the time; then
//! `settle`: drain actions, flush outboxes, remove closed connections
//! (deregister, `slab.remove`, tell the core), until nothing is left.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::auth::{self, AuthError, Done, Handshake, NONCE_LEN, Secret, Session};
use crate::console::{self, Clock};
use crate::core::{Action, Config, JoinProgress, Millis, Node};
use crate::hooks::Hooks;
use crate::http::{self, Counters, Direction, Request};
use crate::log::Level;
use crate::notify::Notifier;
use crate::protocol::{self, FrameError, LineBuffer, Message, OptAddr};

/// Events taken per poll: enough to drain a busy moment in a few rounds
/// without an unbounded buffer.
const EVENTS_PER_POLL: usize = 1024;

/// Bytes queued for one connection before it counts as too slow and is
/// dropped: about 10,000 status lines, far more than a live reader lags.
pub const MAX_OUTBOX: usize = 1 << 20;

/// Outbox capacity a drained connection keeps; more is freed (massif,
/// docs/BENCHMARKS.md). A heartbeat line is about 30 bytes.
const OUTBOX_KEEP: usize = 1024;

/// Bytes read from a socket per call.
const READ_CHUNK: usize = 16 * 1024;

/// Bytes taken from one connection per loop iteration. A sender faster
/// than the node (a flood of lines that reads its answers, so the outbox
/// cap never stops it) would otherwise keep the loop reading one socket
/// while heartbeats and timeouts wait, and the cluster would take the node
/// for dead. The rest is read in the next iteration, after the others.
const READ_BUDGET: usize = 64 * 1024;

/// How long a graceful leave waits for LEAVE lines to drain: well inside
/// the one second guarantee 6 (docs/GUARANTEES.md) allows.
const LEAVE_FLUSH: Duration = Duration::from_millis(300);

/// A connection that neither finished a peer handshake nor sent a command
/// within this many timeouts is closed (docs/GUARANTEES.md, console): a silent socket holds a
/// descriptor and a slot of `--max-conns` for nothing.
const IDLE_TIMEOUTS: u64 = 10;

/// A connection told to close gets this long to take its last lines; one
/// that does not read them is dropped rather than held open forever.
const CLOSE_GRACE_MS: Millis = 1_000;

/// The longest a TCP client's `-c` answer waits for the first attempt's
/// outcome (otherwise timeout + heartbeat, by when an unanswered dial has
/// timed out): well inside the 5 s `bossd ctl` waits for an answer.
const JOIN_ANSWER_MAX_MS: Millis = 2_000;

const LISTENER: Token = Token(usize::MAX - 1);
const STDIN: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Everything a node needs at start, beyond its core configuration.
pub struct Options {
    pub join: Vec<SocketAddr>,
    pub max_conns: usize,
    pub console: bool,
    /// With a secret, every peer must prove it knows it, and only clients
    /// that did may run mutating commands.
    pub secret: Option<Secret>,
    /// The `--notify` hook; does nothing without a command.
    pub hooks: Hooks,
}

/// Runs a node until it leaves; `Ok` means a graceful leave (exit 0).
///
/// The listener is bound first. With port 0 the kernel picks a free port,
/// and the node is known by it from then on: its id in the core (and so
/// in HELLO, `-s` and the logs) and the hooks' BOSSD_ID.
pub fn run(mut cfg: Config, mut opts: Options, wall_at_zero_ms: u64, start: Instant) -> Result<()> {
    let asked = cfg.addr;
    let mut listener =
        TcpListener::bind(asked).with_context(|| format!("cannot listen on {asked}"))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {asked}"))?;
    cfg.addr = addr;
    opts.hooks.set_id(addr);
    if opts.secret.is_none() && !addr.ip().is_loopback() {
        crate::event!(
            Level::Warn,
            "no-secret",
            addr = addr,
            reason = "anyone who can reach it can join",
        );
    }
    widen_backlog(&listener);
    let poll = Poll::new().context("cannot create the event poll")?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .context("cannot register the listener")?;
    // SIGCHLD only wakes the loop: a hook ended and is reaped in `run`.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGCHLD]).context("cannot install signal handlers")?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .context("cannot register the signal handlers")?;
    let stdin = if opts.console {
        Stdin::open(&poll)
    } else {
        Stdin::off()
    };
    let mut server = Server {
        poll,
        listener,
        signals,
        stdin,
        conns: Slab::new(),
        node: Node::new(cfg),
        start,
        wall_at_zero_ms,
        max_conns: opts.max_conns,
        secret: opts.secret,
        refused_while_full: 0,
        counters: Counters::default(),
        accept_paused: false,
        leaving_since: None,
        scratch: String::new(),
        hooks: opts.hooks,
        notify: Notifier::from_env(Instant::now()),
    };
    crate::event!(Level::Info, "listening", addr = addr);
    for target in opts.join {
        let now = server.now_ms();
        if let Err(e) = server.node.join(target, now) {
            crate::event!(Level::Warn, "join-skipped", peer = target, reason = e);
        }
    }
    server.run()
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    stdin: Stdin,
    conns: Slab<Conn>,
    node: Node,
    start: Instant,
    wall_at_zero_ms: u64,
    max_conns: usize,
    secret: Option<Secret>,
    /// Connections refused since the limit was reached; 0 below it. One
    /// line is logged when a flood starts and one when it ends.
    refused_while_full: u64,
    /// What `/metrics` reports beyond the core's state.
    counters: Counters,
    /// Accepting stopped because descriptors ran out; retried when one frees.
    accept_paused: bool,
    /// Set once the node leaves; the loop ends when output drained and
    /// hooks ended, or time is up.
    leaving_since: Option<Instant>,
    scratch: String,
    hooks: Hooks,
    /// systemd's READY=1, STATUS=, WATCHDOG=1 and STOPPING=1.
    notify: Notifier,
}

struct Conn {
    stream: TcpStream,
    /// When the connection opened, for the idle limit.
    opened_ms: Millis,
    lines: LineBuffer,
    out: Vec<u8>,
    kind: ConnKind,
    /// An outbound connect that has not completed yet.
    connecting: bool,
    /// Its read budget ran out with input left: read again next iteration
    /// (mio is edge-triggered, so no new event would say so).
    more_input: bool,
    writable_registered: bool,
    /// Write what is queued, then close; read nothing more.
    closing: bool,
    /// When the loop first saw `closing`, for [`CLOSE_GRACE_MS`].
    closing_seen_ms: Option<Millis>,
    /// Remove at the end of this iteration, queued output or not.
    dead: bool,
    /// A peer link whose other side closed: nothing more arrives, and
    /// what is queued for it (a REFUSE) gets one write, then the link goes
    /// without the grace a console client gets, so a crashed peer is
    /// seen at once (guarantee 4).
    peer_eof: bool,
    peer_addr: Option<SocketAddr>,
    auth: LinkAuth,
    /// Lines the core sent on a dialed link before its handshake finished,
    /// without line ends: sealed and sent once it does.
    held: Vec<String>,
    /// A `-c` this client sent, whose answer waits for the first attempt
    /// to the address, until the time given. Its later lines wait too, so
    /// answers keep their order.
    awaiting_join: Option<(SocketAddr, Millis)>,
}

impl Conn {
    /// Whether the idle limit applies: nothing useful was said yet.
    fn awaits_request(&self) -> bool {
        matches!(self.kind, ConnKind::Unknown | ConnKind::Http { .. })
    }
}

/// Where a connection stands with the shared secret.
enum LinkAuth {
    /// No handshake: there is no secret, or a client chose not to
    /// authenticate and may only read.
    Plain,
    /// A handshake is under way; nothing but its lines is exchanged.
    Handshake(Handshake),
    /// Authenticated: every line in both directions carries a tag.
    Sealed(Session),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConnKind {
    /// Accepted; its first line tells whether it is a peer or a console client.
    Unknown,
    Peer,
    Client,
    /// An HTTP request: its headers are read, then it is answered and closed.
    Http {
        req: Request,
        head: bool,
        headers: usize,
    },
}

impl Server {
    fn run(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            self.settle();
            self.hooks.poll(Instant::now());
            self.notify.turn(&self.node, Instant::now());
            if let Some(since) = self.leaving_since {
                let drained = self
                    .conns
                    .iter()
                    .all(|(_, c)| c.out.is_empty() || c.connecting);
                if (drained || since.elapsed() >= LEAVE_FLUSH)
                    && self.hooks.exit_ready(Instant::now())
                {
                    self.hooks.abandon();
                    crate::event!(Level::Info, "left");
                    return Ok(());
                }
            }
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("poll failed");
            }
            // Time first: after a stall (SIGSTOP, a loaded machine) a lease
            // or a silent peer must be seen to before any command is answered.
            let now = self.now_ms();
            self.node.handle_timeout(now);
            // Connections whose read budget ran out last time go first.
            let more: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.more_input)
                .map(|(k, _)| k)
                .collect();
            for key in more {
                self.read_conn(key);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    STDIN => self.read_stdin(),
                    SIGNALS => self.on_signals(),
                    Token(key) => self.on_conn_event(key, event.is_readable(), event.is_writable()),
                }
            }
            if self.stdin.mode == StdinMode::File {
                self.read_stdin();
            }
            let now = self.now_ms();
            self.node.handle_timeout(now);
            self.close_idle();
        }
    }

    fn now_ms(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    fn clock(&self) -> Clock {
        Clock {
            now_ms: self.now_ms(),
            wall_at_zero_ms: self.wall_at_zero_ms,
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.stdin.mode == StdinMode::File {
            return Some(Duration::ZERO);
        }
        if self.leaving_since.is_some() {
            return Some(Duration::from_millis(10));
        }
        if self.conns.iter().any(|(_, c)| c.more_input) {
            return Some(Duration::ZERO);
        }
        let now = self.now_ms();
        let idle = self
            .conns
            .iter()
            .filter(|(_, c)| !c.dead)
            .filter_map(|(_, c)| match c.closing_seen_ms {
                _ if c.awaiting_join.is_some() => c.awaiting_join.map(|(_, by)| by),
                Some(seen) => Some(seen.saturating_add(CLOSE_GRACE_MS)),
                // Seen by close_idle at the end of this iteration.
                None if c.closing => Some(now),
                None => c
                    .awaits_request()
                    .then(|| c.opened_ms.saturating_add(self.idle_limit_ms())),
            })
            .min();
        let hook = self
            .hooks
            .next_deadline()
            .into_iter()
            .chain(self.notify.next_deadline())
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()));
        self.node
            .next_deadline()
            .into_iter()
            .chain(idle)
            .min()
            .map(|d| Duration::from_millis(d.saturating_sub(now)))
            .into_iter()
            .chain(hook)
            .min()
    }

    fn idle_limit_ms(&self) -> Millis {
        IDLE_TIMEOUTS.saturating_mul(self.node.config().timeout_ms)
    }

    /// Closes connections that said nothing useful within the idle limit.
    fn close_idle(&mut self) {
        let now = self.now_ms();
        let limit = self.idle_limit_ms();
        for (_, c) in self.conns.iter_mut() {
            if c.closing && !c.dead && c.awaiting_join.is_none() {
                let seen = *c.closing_seen_ms.get_or_insert(now);
                if now >= seen.saturating_add(CLOSE_GRACE_MS) {
                    crate::event!(Level::Debug, "close-timeout", peer = OptAddr(c.peer_addr));
                    c.dead = true;
                }
            }
            if c.awaits_request() && !c.dead && now >= c.opened_ms.saturating_add(limit) {
                crate::event!(
                    Level::Info,
                    "conn-idle",
                    peer = OptAddr(c.peer_addr),
                    idle_ms = limit,
                );
                c.dead = true;
            }
        }
    }

    /// Drains the core's actions, flushes output and removes closed
    /// connections, until none of them produces more work.
    fn settle(&mut self) {
        loop {
            while let Some(action) = self.node.poll_action() {
                self.carry_out(action);
            }
            self.answer_joins();
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in &keys {
                self.flush(*key);
            }
            let done: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.dead
                        || (c.closing
                            && (c.out.is_empty() || c.peer_eof)
                            && !c.connecting
                            && c.awaiting_join.is_none())
                })
                .map(|(k, _)| k)
                .collect();
            if done.is_empty() {
                return;
            }
            for key in done {
                self.remove(key);
            }
            if self.refused_while_full > 0 && self.conns.len() < self.max_conns {
                crate::event!(
                    Level::Info,
                    "conn-limit-cleared",
                    refused = self.refused_while_full,
                );
                self.refused_while_full = 0;
            }
            if self.accept_paused {
                // Still paused until an accept succeeds or none waits.
                self.accept();
            }
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Send(link, msg) => {
                self.scratch.clear();
                protocol::encode(&msg, &mut self.scratch);
                crate::event!(
                    Level::Debug,
                    "send",
                    link = link,
                    line = self.scratch.trim_end()
                );
                self.counters.message(msg.name(), Direction::Out);
                let line = std::mem::take(&mut self.scratch);
                self.send_line(link, line.trim_end_matches('\n'));
                self.scratch = line;
            }
            Action::Connect { addr, kind } => self.dial(addr, kind),
            Action::Close(link) => {
                if let Some(c) = self.conns.get_mut(link) {
                    c.closing = true;
                }
            }
            Action::Log(level, text) => crate::log::write(level, &text),
            Action::Deliver { from, text } => {
                print_console(&format!("message from {from}: {text}"))
            }
            Action::RoleChanged(entry) => {
                self.counters.role_changes += 1;
                self.hooks.push(entry);
            }
        }
    }

    fn dial(&mut self, addr: SocketAddr, kind: protocol::LinkKind) {
        let now = self.now_ms();
        if self.conns.len() >= self.max_conns {
            self.node
                .handle_dial_failed(addr, "too many connections", now);
            return;
        }
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                self.node.handle_dial_failed(addr, &e.to_string(), now);
                return;
            }
        };
        no_delay(&stream);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.node.handle_dial_failed(addr, &e.to_string(), now);
            return;
        }
        let (auth, first) = match &self.secret {
            Some(_) => {
                let (hs, line) = Handshake::dial(nonce(), addr);
                (LinkAuth::Handshake(hs), Some(line))
            }
            None => (LinkAuth::Plain, None),
        };
        entry.insert(Conn {
            stream,
            lines: LineBuffer::default(),
            out: Vec::new(),
            opened_ms: now,
            kind: ConnKind::Peer,
            connecting: true,
            more_input: false,
            writable_registered: true,
            closing: false,
            closing_seen_ms: None,
            dead: false,
            peer_eof: false,
            peer_addr: Some(addr),
            auth,
            held: Vec::new(),
            awaiting_join: None,
        });
        if let Some(line) = first {
            self.queue(key, format!("{line}\n").as_bytes());
        }
        self.node.handle_dialed(key, addr, kind, now);
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                // The backlog is drained: whatever descriptors ran out for
                // has been accepted.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.accept_paused {
                        self.accept_paused = false;
                        crate::event!(Level::Info, "accept-resumed");
                    }
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Once per episode: every freed descriptor retries.
                    if !self.accept_paused {
                        crate::event!(
                            Level::Warn,
                            "accept-paused",
                            reason = "out of file descriptors",
                        );
                    }
                    self.accept_paused = true;
                    return;
                }
                Err(e) => {
                    crate::event!(Level::Debug, "accept-failed", reason = e);
                    continue;
                }
            };
            if self.conns.len() >= self.max_conns {
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
                // Best effort: the socket is new and its buffer empty.
                let _ = stream.write(b"ERR busy\n");
                continue;
            }
            self.counters.accepted += 1;
            no_delay(&stream);
            let now = self.now_ms();
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE)
            {
                crate::event!(Level::Warn, "register-failed", peer = peer, reason = e);
                continue;
            }
            entry.insert(Conn {
                stream,
                lines: LineBuffer::default(),
                out: Vec::new(),
                opened_ms: now,
                kind: ConnKind::Unknown,
                connecting: false,
                more_input: false,
                writable_registered: false,
                closing: false,
                closing_seen_ms: None,
                dead: false,
                peer_eof: false,
                peer_addr: Some(peer),
                auth: LinkAuth::Plain,
                held: Vec::new(),
                awaiting_join: None,
            });
        }
    }

    fn on_signals(&mut self) {
        let got: Vec<i32> = self.signals.pending().filter(|s| *s != SIGCHLD).collect();
        if !got.is_empty() {
            crate::event!(
                Level::Info,
                "leaving",
                cause = "signal",
                signal = signal_name(got[0]),
            );
            self.begin_leave();
        }
    }

    /// Tells the core and the hooks the node leaves, and closes every
    /// connection once its output is written. The caller logs why.
    fn begin_leave(&mut self) {
        if self.leaving_since.is_some() {
            return;
        }
        let now = self.now_ms();
        self.node.leave(now);
        self.hooks.leave(Instant::now());
        self.notify.stopping();
        for (_, c) in self.conns.iter_mut() {
            c.closing = true;
        }
        self.leaving_since = Some(Instant::now());
    }

    fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.connecting && (writable || readable) {
            match connect_result(&c.stream) {
                Ok(true) => c.connecting = false,
                Ok(false) => return,
                Err(e) => {
                    c.dead = true;
                    let now = self.now_ms();
                    self.node.handle_dial_error(key, &e.to_string(), now);
                    return;
                }
            }
        }
        if readable {
            self.read_conn(key);
        }
    }

    fn read_conn(&mut self, key: usize) {
        let mut buf = [0u8; READ_CHUNK];
        let mut taken = 0;
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            c.more_input = false;
            if c.dead || c.closing || c.awaiting_join.is_some() {
                return;
            }
            if taken >= READ_BUDGET {
                c.more_input = true;
                return;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    // The other side may only have half-closed: what the
                    // lines it sent produced (answers, and a REFUSE the
                    // core queues only when its actions are drained) is
                    // still written before the connection goes.
                    c.closing = true;
                    c.peer_eof = c.kind == ConnKind::Peer;
                    return;
                }
                Ok(n) => {
                    taken += n;
                    c.lines.extend(&buf[..n]);
                    self.take_lines(key);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::event!(
                        Level::Debug,
                        "read-failed",
                        peer = OptAddr(c.peer_addr),
                        reason = e,
                    );
                    c.dead = true;
                    return;
                }
            }
        }
    }

    /// Handles every complete line buffered on the connection.
    fn take_lines(&mut self, key: usize) {
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.dead || c.closing || c.awaiting_join.is_some() {
                return;
            }
            let raw = match c.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(e) => {
                    self.frame_error(key, e);
                    return;
                }
            };
            // The secret's layer first: a handshake line goes to the
            // handshake, a sealed line must carry its tag.
            let line = match &mut c.auth {
                LinkAuth::Handshake(_) => {
                    self.handshake_line(key, &raw);
                    continue;
                }
                LinkAuth::Sealed(session) => match session.open(&raw) {
                    Ok(line) => line.to_owned(),
                    Err(e) => {
                        crate::event!(
                            Level::Warn,
                            "line-auth-failed",
                            peer = OptAddr(c.peer_addr),
                            reason = format_args!("{e} (injected, replayed or altered)"),
                        );
                        self.counters.auth_failures += 1;
                        // Answers to the lines that were genuine still go out.
                        if c.kind == ConnKind::Peer {
                            c.dead = true;
                        } else {
                            c.closing = true;
                        }
                        return;
                    }
                },
                LinkAuth::Plain => raw,
            };
            let plain = matches!(c.auth, LinkAuth::Plain);
            // Only a plain connection's first line can open an HTTP request.
            let http_request = (plain && c.kind == ConnKind::Unknown)
                .then(|| http::request_line(&line))
                .flatten();
            match c.kind {
                ConnKind::Unknown if plain && auth::is_auth_line(&line) => {
                    self.accept_handshake(key, &line);
                }
                ConnKind::Unknown if http_request.is_some() => {
                    if let Some((req, head)) = http_request {
                        c.kind = ConnKind::Http {
                            req,
                            head,
                            headers: 0,
                        };
                    }
                }
                ConnKind::Http { req, head, headers } => {
                    self.http_header(key, req, head, headers, &line);
                }
                ConnKind::Unknown if line == "HELLO" || line.starts_with("HELLO ") => {
                    if plain && self.secret.is_some() {
                        self.counters.auth_failures += 1;
                        self.refuse_auth(
                            key,
                            "HELLO without authentication (does it lack the secret?)",
                            "authentication required",
                        );
                        continue;
                    }
                    c.kind = ConnKind::Peer;
                    match protocol::decode(&line) {
                        Ok(msg) => {
                            self.counters.message(msg.name(), Direction::In);
                            let now = self.now_ms();
                            self.node.handle_accepted(key, now);
                            self.node.handle_message(key, msg, now);
                        }
                        Err(e) => {
                            crate::event!(
                                Level::Warn,
                                "peer-refused",
                                peer = OptAddr(c.peer_addr),
                                reason = e,
                            );
                            self.refuse(key, &e.to_string());
                        }
                    }
                }
                // A blank line is no command: it is answered, and the idle
                // limit still runs.
                ConnKind::Unknown if line.trim().is_empty() => self.console_line(key, &line),
                ConnKind::Unknown | ConnKind::Client => {
                    c.kind = ConnKind::Client;
                    self.console_line(key, &line);
                }
                ConnKind::Peer => match protocol::decode(&line) {
                    Ok(msg) => {
                        self.counters.message(msg.name(), Direction::In);
                        crate::event!(Level::Debug, "recv", link = key, line = line);
                        let now = self.now_ms();
                        self.node.handle_message(key, msg, now);
                    }
                    Err(e) => {
                        // The core logs it and decides when to call back.
                        c.dead = true;
                        let now = self.now_ms();
                        self.node
                            .handle_protocol_violation(key, &e.to_string(), now);
                    }
                },
            }
        }
    }

    /// Sends `REFUSE <reason>` and closes once it is written.
    fn refuse(&mut self, key: usize, reason: &str) {
        let refusal = protocol::encode_line(&Message::Refuse(reason.to_owned()));
        self.send_line(key, refusal.trim_end_matches('\n'));
        if let Some(c) = self.conns.get_mut(key) {
            c.closing = true;
        }
    }

    /// Refuses a connection whose authentication does not match this
    /// node's: logs `why`, answers `REFUSE <answer>`, closes.
    fn refuse_auth(&mut self, key: usize, why: &str, answer: &str) {
        if let Some(c) = self.conns.get(key) {
            crate::event!(
                Level::Warn,
                "auth-failed",
                peer = OptAddr(c.peer_addr),
                reason = why,
            );
        }
        self.counters.refused_auth += 1;
        self.refuse(key, answer);
    }

    /// An accepted connection opened with `AUTH`: answer the challenge.
    fn accept_handshake(&mut self, key: usize, line: &str) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Some(secret) = &self.secret else {
            self.refuse_auth(
                key,
                "it authenticates, but this node has no secret",
                "this node has no secret",
            );
            return;
        };
        let here = self.node.config().addr;
        match Handshake::accept(secret, line, nonce(), here) {
            Ok((hs, reply)) => {
                c.auth = LinkAuth::Handshake(hs);
                self.queue(key, format!("{reply}\n").as_bytes());
            }
            Err(e) => self.auth_failed(key, e),
        }
    }

    /// Takes one line of a handshake under way.
    fn handshake_line(&mut self, key: usize, line: &str) {
        let (Some(c), Some(secret)) = (self.conns.get_mut(key), &self.secret) else {
            return;
        };
        let LinkAuth::Handshake(hs) = &mut c.auth else {
            return;
        };
        match hs.step(secret, line) {
            Ok(Done { reply, session }) => {
                crate::event!(Level::Debug, "authenticated", peer = OptAddr(c.peer_addr));
                c.auth = LinkAuth::Sealed(session);
                let held = std::mem::take(&mut c.held);
                if let Some(reply) = reply {
                    self.queue(key, format!("{reply}\n").as_bytes());
                }
                for line in held {
                    self.send_line(key, &line);
                }
            }
            Err(e) => self.auth_failed(key, e),
        }
    }

    /// Logs why a handshake failed, tells the other side unless it was the
    /// one refusing, and closes the connection.
    fn auth_failed(&mut self, key: usize, e: AuthError) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let who = OptAddr(c.peer_addr);
        self.counters.auth_failures += 1;
        self.counters.refused_auth += 1;
        match e {
            AuthError::Refused(why) => {
                crate::event!(
                    Level::Warn,
                    "auth-refused-by-peer",
                    peer = who,
                    reason = why
                );
                c.dead = true;
            }
            e => {
                crate::event!(Level::Warn, "auth-failed", peer = who, reason = e);
                c.auth = LinkAuth::Plain;
                self.refuse(key, &e.to_string());
            }
        }
    }

    /// Takes one header line of an HTTP request; the blank line ends them
    /// and the answer goes out.
    fn http_header(&mut self, key: usize, req: Request, head: bool, headers: usize, line: &str) {
        let answer = if line.is_empty() {
            let open = self.open_connections();
            http::answer(req, head, &self.node, &self.counters, open, self.clock())
        } else if headers >= http::MAX_HEADERS {
            http::response(431, "text/plain", "too many header lines\n", false)
        } else {
            if let Some(c) = self.conns.get_mut(key) {
                c.kind = ConnKind::Http {
                    req,
                    head,
                    headers: headers + 1,
                };
            }
            return;
        };
        self.queue(key, answer.as_bytes());
        if let Some(c) = self.conns.get_mut(key) {
            c.closing = true;
        }
    }

    fn open_connections(&self) -> http::Open {
        let mut open = http::Open::default();
        for (_, c) in &self.conns {
            match c.kind {
                ConnKind::Peer => open.peers += 1,
                ConnKind::Client => open.clients += 1,
                ConnKind::Http { .. } => open.http += 1,
                ConnKind::Unknown => open.unknown += 1,
            }
        }
        open
    }

    fn frame_error(&mut self, key: usize, e: FrameError) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        // A handshake under way is over: the ERR goes out plain, not held.
        if matches!(c.auth, LinkAuth::Handshake(_)) {
            c.auth = LinkAuth::Plain;
        }
        crate::event!(
            Level::Warn,
            "bad-line",
            peer = OptAddr(c.peer_addr),
            reason = e
        );
        if c.kind == ConnKind::Peer {
            c.dead = true;
        } else {
            self.send_line(key, &format!("ERR {e}"));
            if let Some(c) = self.conns.get_mut(key) {
                c.closing = true;
            }
        }
    }

    /// Answers each held `-c` whose first attempt had an outcome (a link,
    /// a failure, a redirect, a refusal), whose wait is over, or whose
    /// node leaves; then takes the lines its client sent meanwhile.
    fn answer_joins(&mut self) {
        let now = self.now_ms();
        let leaving = self.leaving_since.is_some();
        let due: Vec<(usize, SocketAddr)> = self
            .conns
            .iter()
            .filter_map(|(key, c)| {
                let (addr, by) = c.awaiting_join?;
                let settled = !matches!(
                    self.node.join_progress(addr),
                    JoinProgress::Trying { failures: 0, .. }
                );
                (settled || now >= by || leaving || c.dead).then_some((key, addr))
            })
            .collect();
        for (key, addr) in due {
            let mut lines = console::join_answer(addr, self.node.join_progress(addr));
            lines.push("OK".to_owned());
            for l in &lines {
                self.send_line(key, l);
            }
            if let Some(c) = self.conns.get_mut(key) {
                c.awaiting_join = None;
                // Reading stopped while the answer was held: go on.
                c.more_input = true;
            }
            self.take_lines(key);
        }
    }

    /// Runs one command from a TCP client and queues the framed answer.
    fn console_line(&mut self, key: usize, line: &str) {
        let permitted = self.secret.is_none()
            || self
                .conns
                .get(key)
                .is_some_and(|c| matches!(c.auth, LinkAuth::Sealed(_)));
        let (lines, quit) = match console::parse(line) {
            Ok(None) => (vec![format!("ERR {}", console::EMPTY_COMMAND)], false),
            Ok(Some(cmd)) if cmd.is_mutating() && !permitted => {
                (vec!["ERR not permitted".to_owned()], false)
            }
            Ok(Some(cmd)) => {
                let clock = self.clock();
                let mut reply = console::execute(cmd, &mut self.node, clock);
                if let Some(addr) = reply.join {
                    // Answered by `answer_joins` once the first attempt
                    // had an outcome.
                    let cfg = self.node.config();
                    let wait = (cfg.timeout_ms + cfg.heartbeat_ms).min(JOIN_ANSWER_MAX_MS);
                    if let Some(c) = self.conns.get_mut(key) {
                        c.awaiting_join = Some((addr, clock.now_ms + wait));
                    }
                    return;
                }
                reply.lines.push(match reply.result {
                    Ok(()) => "OK".to_owned(),
                    Err(reason) => format!("ERR {reason}"),
                });
                (reply.lines, reply.quit)
            }
            Err(reason) => (vec![format!("ERR {reason}")], false),
        };
        for l in &lines {
            self.send_line(key, l);
        }
        if quit {
            let peer = OptAddr(self.conns.get(key).and_then(|c| c.peer_addr));
            crate::event!(Level::Info, "leaving", cause = "console", peer = peer);
            self.begin_leave();
        }
    }

    fn read_stdin(&mut self) {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            if self.stdin.mode == StdinMode::Off {
                return;
            }
            let n = match read_fd0(&mut buf) {
                Ok(0) => {
                    crate::event!(Level::Debug, "stdin-closed");
                    self.stdin.close(&self.poll);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::event!(Level::Warn, "stdin-failed", op = "read", reason = e);
                    self.stdin.close(&self.poll);
                    return;
                }
            };
            self.stdin.lines.extend(&buf[..n]);
            loop {
                match self.stdin.lines.next_line() {
                    Ok(Some(line)) => self.stdin_command(&line),
                    Ok(None) => break,
                    Err(e) => {
                        print_console(&format!("ERR {e}"));
                        self.stdin.lines = LineBuffer::default();
                        break;
                    }
                }
            }
            // A regular file is read a chunk per iteration, so a huge file
            // never stalls the loop; a pipe or terminal until it is empty.
            if self.stdin.mode == StdinMode::File || !fd0_readable() {
                return;
            }
        }
    }

    fn stdin_command(&mut self, line: &str) {
        match console::parse(line) {
            Ok(None) => {}
            Ok(Some(cmd)) => {
                let clock = self.clock();
                let reply = console::execute(cmd, &mut self.node, clock);
                for l in &reply.lines {
                    print_console(l);
                }
                // Not held as over TCP: a failed attempt is logged
                // (`join-failed`) on the same terminal.
                if let Some(addr) = reply.join {
                    for l in console::join_answer(addr, self.node.join_progress(addr)) {
                        print_console(&l);
                    }
                }
                if let Err(reason) = reply.result {
                    print_console(&format!("ERR {reason}"));
                }
                if reply.quit {
                    crate::event!(Level::Info, "leaving", cause = "console", peer = "stdin");
                    self.begin_leave();
                }
            }
            Err(reason) => print_console(&format!("ERR {reason}")),
        }
    }

    /// Queues one line (without its line end), sealed if the connection is
    /// authenticated, held back if its handshake is still under way.
    fn send_line(&mut self, key: usize, line: &str) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match &mut c.auth {
            LinkAuth::Plain => {
                self.queue(key, line.as_bytes());
                self.queue(key, b"\n");
            }
            LinkAuth::Handshake(_) => {
                let held: usize = c.held.iter().map(String::len).sum();
                if held + line.len() > MAX_OUTBOX {
                    crate::event!(
                        Level::Warn,
                        "handshake-stalled",
                        peer = OptAddr(c.peer_addr),
                    );
                    c.dead = true;
                } else {
                    c.held.push(line.to_owned());
                }
            }
            LinkAuth::Sealed(session) => {
                let mut sealed = String::with_capacity(line.len() + auth::SEAL_OVERHEAD + 1);
                session.seal(line, &mut sealed);
                self.queue(key, sealed.as_bytes());
            }
        }
    }

    fn queue(&mut self, key: usize, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.dead {
            return;
        }
        if c.out.len() + bytes.len() > MAX_OUTBOX {
            crate::event!(Level::Warn, "slow-reader", peer = OptAddr(c.peer_addr));
            c.dead = true;
            return;
        }
        c.out.extend_from_slice(bytes);
    }

    /// Writes what is queued until the socket would block, and asks for
    /// WRITABLE only while output remains.
    fn flush(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.dead || c.connecting {
            return;
        }
        let mut written = 0;
        while written < c.out.len() {
            match c.stream.write(&c.out[written..]) {
                Ok(0) => {
                    c.dead = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::event!(
                        Level::Debug,
                        "write-failed",
                        peer = OptAddr(c.peer_addr),
                        reason = e,
                    );
                    c.dead = true;
                    break;
                }
            }
        }
        c.out.drain(..written);
        // A burst's buffer (a mesh repair's MEETs) is not kept for good.
        if c.out.is_empty() && c.out.capacity() > OUTBOX_KEEP {
            c.out = Vec::new();
        }
        let want_writable = !c.out.is_empty() && !c.dead;
        if want_writable != c.writable_registered {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(key), interest)
                .is_ok()
            {
                c.writable_registered = want_writable;
            } else {
                c.dead = true;
            }
        }
    }

    fn remove(&mut self, key: usize) {
        let mut c = self.conns.remove(key);
        // Deregistering a socket we are about to drop cannot matter if it fails.
        let _ = self.poll.registry().deregister(&mut c.stream);
        drop(c);
        let now = self.now_ms();
        self.node.handle_link_closed(key, now);
    }
}

/// Connections the kernel completes before the loop accepts them. mio (like
/// std) listens with 128; a burst of 100 joining nodes, or a flood, would
/// overflow that and each dropped SYN costs its sender a 1 s retransmit.
/// The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: libc::c_int = 4096;

/// Raises the listen backlog from mio's 128 to [`LISTEN_BACKLOG`]: Linux
/// takes a second `listen(2)` on a listening socket as a new backlog.
fn widen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket we own; it only changes the backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    if rc != 0 {
        crate::event!(
            Level::Debug,
            "backlog-failed",
            reason = io::Error::last_os_error(),
        );
    }
}

/// Fresh random bytes for a handshake, from the operating system.
fn nonce() -> [u8; NONCE_LEN] {
    let mut bytes = [0u8; NONCE_LEN];
    // Without the OS generator there is no safe nonce; Linux's getrandom
    // does not fail once the pool is initialised at boot.
    getrandom::fill(&mut bytes).expect("the OS random generator failed");
    bytes
}

/// Turns off Nagle's algorithm. Every write is whole lines, and the loop
/// writes each outbox once per iteration, so holding back a small write
/// until the last one is acknowledged only adds delay: up to the peer's
/// delayed-ACK timer (40 ms on Linux), which is how long a claim could
/// wait behind an unacknowledged PONG (benches/cluster.rs measured crash
/// failovers of 30-50 ms in about one run of a hundred).
fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        crate::event!(Level::Debug, "nodelay-failed", reason = e);
    }
}

/// The console on standard input.
struct Stdin {
    mode: StdinMode,
    lines: LineBuffer,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StdinMode {
    /// A pipe, terminal or socket, registered with the poll.
    Poll,
    /// A regular file or /dev/null, which epoll refuses: read a chunk per
    /// iteration until end of file.
    File,
    /// Closed, at end of file, in the background, or `--no-console`.
    Off,
}

impl Stdin {
    fn off() -> Stdin {
        Stdin {
            mode: StdinMode::Off,
            lines: LineBuffer::default(),
        }
    }

    fn open(poll: &Poll) -> Stdin {
        let mode = Self::mode(poll);
        Stdin {
            mode,
            lines: LineBuffer::default(),
        }
    }

    fn mode(poll: &Poll) -> StdinMode {
        // SAFETY: fcntl with F_GETFD only asks whether fd 0 is open.
        if unsafe { libc::fcntl(0, libc::F_GETFD) } == -1 {
            return StdinMode::Off;
        }
        // SAFETY: isatty, tcgetpgrp and getpgrp only query process state.
        let background = unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) != libc::getpgrp() };
        if background {
            // Reading the terminal from the background would stop us (SIGTTIN).
            crate::event!(Level::Info, "stdin-background");
            return StdinMode::Off;
        }
        match poll
            .registry()
            .register(&mut SourceFd(&0), STDIN, Interest::READABLE)
        {
            Ok(()) => StdinMode::Poll,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => StdinMode::File,
            Err(e) => {
                crate::event!(Level::Warn, "stdin-failed", op = "watch", reason = e);
                StdinMode::Off
            }
        }
    }

    fn close(&mut self, poll: &Poll) {
        if self.mode == StdinMode::Poll {
            // Failing to deregister a descriptor we stop reading is harmless.
            let _ = poll.registry().deregister(&mut SourceFd(&0));
        }
        self.mode = StdinMode::Off;
    }
}

/// Whether an outbound connect finished: `Ok(false)` while still under way.
fn connect_result(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// One read(2) on fd 0. Stdin stays blocking (it may be shared with a
/// shell), so this is called only when it is known to be readable or is a
/// regular file.
fn read_fd0(buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether fd 0 has input (or end of file) waiting, without blocking.
fn fd0_readable() -> bool {
    fd_ready(0, libc::POLLIN)
}

fn fd_ready(fd: i32, events: libc::c_short) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents != 0
}

/// A signal's name for the log: `SIGTERM`, `SIGINT`, else its number.
fn signal_name(signal: i32) -> String {
    match signal {
        SIGTERM => "SIGTERM".to_owned(),
        SIGINT => "SIGINT".to_owned(),
        other => other.to_string(),
    }
}

/// Prints a console line on stdout without ever blocking the loop: when
/// nobody drains stdout (a full pipe), the line is dropped.
fn print_console(line: &str) {
    if !fd_ready(1, libc::POLLOUT) {
        return;
    }
    let mut out = io::stdout().lock();
    // A closed stdout must not stop the node.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Unix milliseconds now, read once at start.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
