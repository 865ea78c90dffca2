//! One connection's state machine, sans IO: bytes in, classified and
//! authenticated lines out; lines to send in, bytes for the socket out.
//!
//! A [`Link`] owns what one connection is: its [`Kind`] (decided by its
//! first line), its authentication phase ([`Auth`]: plain, handshake,
//! sealed), the lines held back while a handshake runs, its [`Life`]
//! (open, draining since, dead), the [`LineBuffer`] framing its input and
//! the bounded outbox. It decides everything a connection may do on its
//! own: the secret's handshake, sealing and opening, refusing HELLO
//! without authentication, gating mutating console commands, HTTP headers.
//!
//! It never touches a socket, reads a clock or draws randomness: time and
//! nonces come from the caller ([`Ctx`]), and what the cluster does with a
//! line is the endpoint's (src/endpoint.rs) business.

use std::net::SocketAddr;

use crate::auth::{self, AuthError, Done, Handshake, NONCE_LEN, Secret, Session};
use crate::console::{self, Command};
use crate::http::{self, Counters, Request};
use crate::log::Level;
use crate::protocol::{self, FrameError, LineBuffer, Message, OptAddr};
use crate::time::Mono;

/// Bytes queued for one connection before it counts as too slow and is
/// dropped: about 10,000 status lines, far more than a live reader lags.
pub const MAX_OUTBOX: usize = 1 << 20;

/// Outbox capacity a drained connection keeps; more is freed (massif,
/// docs/BENCHMARKS.md). A heartbeat line is about 30 bytes.
const OUTBOX_KEEP: usize = 1024;

/// A connection told to close gets this long to take its last lines; one
/// that does not read them is dropped rather than held open forever.
pub const CLOSE_GRACE_MS: u64 = 1_000;

/// What a connection turned out to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Accepted; its first line tells whether it is a peer, a console
    /// client or an HTTP request. A console client or an HTTP request
    /// can then become a watcher ([`Link::watch`]).
    Undecided,
    Peer,
    Console,
    /// An HTTP request: its headers are read, then it is answered and closed.
    Http {
        req: Request,
        head: bool,
        headers: usize,
    },
}

/// Where a connection stands with the shared secret.
enum Auth {
    /// No handshake: there is no secret, or a client chose not to
    /// authenticate and may only read.
    Plain,
    /// A handshake is under way; nothing but its lines is exchanged.
    Handshake(Handshake),
    /// Authenticated: every line in both directions carries a tag.
    Sealed(Session),
}

/// Where a connection is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Life {
    Open,
    /// Write what is queued, then close; read nothing more.
    Draining {
        /// When the grace of [`CLOSE_GRACE_MS`] started: the first tick
        /// after it began draining, with no `-c` answer pending.
        since: Option<Mono>,
        /// A peer whose other side closed: nothing more arrives, and what
        /// is queued for it (a REFUSE) gets one write, then the link goes
        /// without the grace a console client gets, so a crashed peer is
        /// seen at once (guarantee 4, docs/GUARANTEES.md).
        peer_eof: bool,
    },
    /// Remove at the end of this iteration, queued output or not.
    Dead,
}

/// What a link hands up from its input.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// The HELLO that makes an accepted connection a peer.
    PeerOpened(Message),
    /// A line from a peer, with its text for the debug log.
    Peer { msg: Message, line: String },
    /// A peer line that does not decode; the link is dead.
    PeerViolation(String),
    /// A console command (`Ok(None)`: a blank line), and whether this
    /// client may run a mutating one.
    Console {
        cmd: Result<Option<Command>, String>,
        permitted: bool,
    },
    /// An HTTP request whose headers all arrived: answer with
    /// [`Link::answer_http`].
    Http { req: Request, head: bool },
}

/// What a link needs from its endpoint to take a line.
pub struct Ctx<'a> {
    pub secret: Option<&'a Secret>,
    /// The address this node listens on: a dialer's AUTH must name it.
    pub here: SocketAddr,
    pub counters: &'a mut Counters,
    /// Fresh nonces for handshakes.
    pub nonce: &'a mut dyn FnMut() -> [u8; NONCE_LEN],
}

/// One connection.
pub struct Link {
    peer_addr: Option<SocketAddr>,
    /// When the connection opened, for the idle limit.
    opened: Mono,
    kind: Kind,
    auth: Auth,
    life: Life,
    lines: LineBuffer,
    out: Vec<u8>,
    /// Lines sent before the handshake finished, without line ends:
    /// sealed and sent once it does.
    held: Vec<String>,
    held_bytes: usize,
    /// A `-c` this client sent, whose answer waits for the first attempt
    /// to the address, until the time given. Its later lines wait too, so
    /// answers keep their order.
    awaiting_join: Option<(SocketAddr, Mono)>,
    /// A watcher (`-w`, `GET /events`): it takes the stream the endpoint
    /// queues, answers nothing more, and the idle limit and HTTP's one
    /// answer do not close it.
    watching: bool,
}

impl Link {
    /// A connection accepted from `peer`.
    pub fn accepted(peer: SocketAddr, now: Mono) -> Link {
        Link::new(Some(peer), now, Kind::Undecided, Auth::Plain)
    }

    /// A peer link this node dials to `target`; with a secret, it opens
    /// with the handshake's first line (from `nonce`).
    pub fn dialed(
        target: SocketAddr,
        now: Mono,
        secret: Option<&Secret>,
        nonce: [u8; NONCE_LEN],
    ) -> Link {
        let Some(_) = secret else {
            return Link::new(Some(target), now, Kind::Peer, Auth::Plain);
        };
        let (hs, line) = Handshake::dial(nonce, target);
        let mut link = Link::new(Some(target), now, Kind::Peer, Auth::Handshake(hs));
        link.queue_line_plain(&line);
        link
    }

    fn new(peer_addr: Option<SocketAddr>, now: Mono, kind: Kind, auth: Auth) -> Link {
        Link {
            peer_addr,
            opened: now,
            kind,
            auth,
            life: Life::Open,
            lines: LineBuffer::default(),
            out: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            awaiting_join: None,
            watching: false,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn life(&self) -> Life {
        self.life
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    pub fn is_dead(&self) -> bool {
        self.life == Life::Dead
    }

    /// Whether input is taken: open, and no `-c` answer is pending.
    pub fn reading(&self) -> bool {
        self.life == Life::Open && self.awaiting_join.is_none()
    }

    /// Whether the idle limit applies: nothing useful was said yet.
    pub fn awaits_request(&self) -> bool {
        !self.watching && matches!(self.kind, Kind::Undecided | Kind::Http { .. })
    }

    /// Makes this connection a watcher: from now on the lines it sends
    /// are read and ignored (a watcher is read-only), and it stays open
    /// until its client closes or the endpoint closes it.
    pub fn watch(&mut self) {
        self.watching = true;
    }

    pub fn is_watching(&self) -> bool {
        self.watching
    }

    /// Bytes received from the socket. The caller stops reading while
    /// [`Link::reading`] is false; bytes already here wait in the buffer.
    pub fn on_bytes(&mut self, bytes: &[u8]) {
        if self.life == Life::Open {
            self.lines.extend(bytes);
        }
    }

    /// The other side closed its end: what its lines produced is still
    /// written before the connection goes.
    pub fn on_eof(&mut self) {
        if self.life != Life::Dead {
            self.life = Life::Draining {
                since: None,
                peer_eof: self.kind == Kind::Peer,
            };
        }
    }

    /// Starts draining: write what is queued, then close.
    pub fn close(&mut self) {
        if self.life == Life::Open {
            self.life = Life::Draining {
                since: None,
                peer_eof: false,
            };
        }
    }

    /// Drops the connection at once, queued output or not.
    pub fn kill(&mut self) {
        self.life = Life::Dead;
    }

    /// Takes the next complete line and says what it is, handling on the
    /// way whatever the link answers itself (handshake lines, refusals,
    /// framing errors, HTTP headers). `None`: nothing more to take now.
    pub fn poll_inbound(&mut self, ctx: &mut Ctx) -> Option<Inbound> {
        while self.reading() {
            let raw = match self.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => {
                    self.frame_error(e);
                    return None;
                }
            };
            // A watcher answers nothing; what it sends is dropped unread.
            if self.watching {
                continue;
            }
            if let Some(inbound) = self.on_line(raw, ctx) {
                return Some(inbound);
            }
        }
        None
    }

    /// One framed line: the secret's layer first, then by kind.
    fn on_line(&mut self, raw: String, ctx: &mut Ctx) -> Option<Inbound> {
        let line = match &mut self.auth {
            Auth::Handshake(_) => {
                self.handshake_line(&raw, ctx);
                return None;
            }
            Auth::Sealed(session) => match session.open(&raw) {
                Ok(line) => line.to_owned(),
                Err(e) => {
                    self.line_auth_failed(e, ctx);
                    return None;
                }
            },
            Auth::Plain => raw,
        };
        let plain = matches!(self.auth, Auth::Plain);
        match self.kind {
            Kind::Peer => Some(self.peer_line(line)),
            Kind::Http { req, head, headers } => self.http_header(req, head, headers, &line),
            Kind::Console => Some(self.console_line(&line, ctx)),
            Kind::Undecided => self.first_line(line, plain, ctx),
        }
    }

    /// A line of a connection whose kind is not known yet.
    fn first_line(&mut self, line: String, plain: bool, ctx: &mut Ctx) -> Option<Inbound> {
        if plain && auth::is_auth_line(&line) {
            self.accept_handshake(&line, ctx);
            return None;
        }
        // Only a plain connection's first line can open an HTTP request.
        if plain && let Some((req, head)) = http::request_line(&line) {
            self.kind = Kind::Http {
                req,
                head,
                headers: 0,
            };
            return None;
        }
        if line == "HELLO" || line.starts_with("HELLO ") {
            return self.hello(&line, plain, ctx);
        }
        // A blank line is no command: it is answered, and the idle limit
        // still runs.
        if !line.trim().is_empty() {
            self.kind = Kind::Console;
        }
        Some(self.console_line(&line, ctx))
    }

    /// The HELLO that opens an accepted peer link.
    fn hello(&mut self, line: &str, plain: bool, ctx: &mut Ctx) -> Option<Inbound> {
        if plain && ctx.secret.is_some() {
            ctx.counters.auth_failures += 1;
            self.refuse_auth(
                "HELLO without authentication (does it lack the secret?)",
                "authentication required",
                ctx,
            );
            return None;
        }
        self.kind = Kind::Peer;
        match protocol::decode(line) {
            Ok(msg) => Some(Inbound::PeerOpened(msg)),
            Err(e) => {
                crate::event!(
                    Level::Warn,
                    "peer-refused",
                    peer = OptAddr(self.peer_addr),
                    reason = e,
                );
                self.refuse(&e.to_string());
                None
            }
        }
    }

    fn peer_line(&mut self, line: String) -> Inbound {
        match protocol::decode(&line) {
            Ok(msg) => Inbound::Peer { msg, line },
            Err(e) => {
                // The core logs it and decides when to call back.
                self.life = Life::Dead;
                Inbound::PeerViolation(e.to_string())
            }
        }
    }

    fn console_line(&self, line: &str, ctx: &Ctx) -> Inbound {
        Inbound::Console {
            cmd: console::parse(line),
            permitted: ctx.secret.is_none() || matches!(self.auth, Auth::Sealed(_)),
        }
    }

    /// Takes one header line of an HTTP request; the blank line ends them.
    fn http_header(
        &mut self,
        req: Request,
        head: bool,
        headers: usize,
        line: &str,
    ) -> Option<Inbound> {
        if line.is_empty() {
            return Some(Inbound::Http { req, head });
        }
        if headers >= http::MAX_HEADERS {
            let answer = http::response(431, "text/plain", "too many header lines\n", false);
            self.answer_http(&answer);
            return None;
        }
        self.kind = Kind::Http {
            req,
            head,
            headers: headers + 1,
        };
        None
    }

    /// Sends an HTTP answer and closes once it is written.
    pub fn answer_http(&mut self, answer: &str) {
        self.queue(answer.as_bytes());
        self.close();
    }

    /// An accepted connection opened with `AUTH`: answer the challenge.
    fn accept_handshake(&mut self, line: &str, ctx: &mut Ctx) {
        let Some(secret) = ctx.secret else {
            self.refuse_auth(
                "it authenticates, but this node has no secret",
                "this node has no secret",
                ctx,
            );
            return;
        };
        match Handshake::accept(secret, line, (ctx.nonce)(), ctx.here) {
            Ok((hs, reply)) => {
                self.auth = Auth::Handshake(hs);
                self.queue_line_plain(&reply);
            }
            Err(e) => self.auth_failed(e, ctx),
        }
    }

    /// Takes one line of a handshake under way.
    fn handshake_line(&mut self, line: &str, ctx: &mut Ctx) {
        let (Auth::Handshake(hs), Some(secret)) = (&mut self.auth, ctx.secret) else {
            return;
        };
        match hs.step(secret, line) {
            Ok(Done { reply, session }) => {
                crate::event!(
                    Level::Debug,
                    "authenticated",
                    peer = OptAddr(self.peer_addr)
                );
                self.auth = Auth::Sealed(session);
                if let Some(reply) = reply {
                    self.queue_line_plain(&reply);
                }
                self.held_bytes = 0;
                for line in std::mem::take(&mut self.held) {
                    self.send_line(&line);
                }
            }
            Err(e) => self.auth_failed(e, ctx),
        }
    }

    /// Logs why a handshake failed, tells the other side unless it was the
    /// one refusing, and closes the connection.
    fn auth_failed(&mut self, e: AuthError, ctx: &mut Ctx) {
        let who = OptAddr(self.peer_addr);
        ctx.counters.auth_failures += 1;
        ctx.counters.refused_auth += 1;
        match e {
            AuthError::Refused(why) => {
                crate::event!(
                    Level::Warn,
                    "auth-refused-by-peer",
                    peer = who,
                    reason = why
                );
                self.life = Life::Dead;
            }
            e => {
                crate::event!(Level::Warn, "auth-failed", peer = who, reason = e);
                self.auth = Auth::Plain;
                self.refuse(&e.to_string());
            }
        }
    }

    /// A sealed line whose tag does not match.
    fn line_auth_failed(&mut self, e: AuthError, ctx: &mut Ctx) {
        crate::event!(
            Level::Warn,
            "line-auth-failed",
            peer = OptAddr(self.peer_addr),
            reason = format_args!("{e} (injected, replayed or altered)"),
        );
        ctx.counters.auth_failures += 1;
        // Answers to the lines that were genuine still go out.
        self.end_on_error();
    }

    /// Refuses a connection whose authentication does not match this
    /// node's: logs `why`, answers `REFUSE <answer>`, closes.
    fn refuse_auth(&mut self, why: &str, answer: &str, ctx: &mut Ctx) {
        crate::event!(
            Level::Warn,
            "auth-failed",
            peer = OptAddr(self.peer_addr),
            reason = why,
        );
        ctx.counters.refused_auth += 1;
        self.refuse(answer);
    }

    /// Sends `REFUSE <reason>` and closes once it is written.
    fn refuse(&mut self, reason: &str) {
        let refusal = protocol::encode_line(&Message::Refuse(reason.to_owned()));
        self.send_line(refusal.trim_end_matches('\n'));
        self.close();
    }

    fn frame_error(&mut self, e: FrameError) {
        // A handshake under way is over: the ERR goes out plain, not held.
        if matches!(self.auth, Auth::Handshake(_)) {
            self.auth = Auth::Plain;
        }
        crate::event!(
            Level::Warn,
            "bad-line",
            peer = OptAddr(self.peer_addr),
            reason = e
        );
        if self.kind != Kind::Peer {
            self.send_line(&format!("ERR {e}"));
        }
        self.end_on_error();
    }

    /// A peer goes at once (the core must see it gone); anyone else gets
    /// what was queued for it first.
    fn end_on_error(&mut self) {
        if self.kind == Kind::Peer {
            self.life = Life::Dead;
        } else {
            self.close();
        }
    }

    /// Queues one line (without its line end): sealed if the connection is
    /// authenticated, held back if its handshake is still under way.
    pub fn send_line(&mut self, line: &str) {
        match &mut self.auth {
            Auth::Plain => self.queue_line_plain(line),
            Auth::Handshake(_) => {
                if self.held_bytes + line.len() > MAX_OUTBOX {
                    crate::event!(
                        Level::Warn,
                        "handshake-stalled",
                        peer = OptAddr(self.peer_addr),
                    );
                    self.life = Life::Dead;
                } else {
                    self.held_bytes += line.len();
                    self.held.push(line.to_owned());
                }
            }
            Auth::Sealed(session) => {
                let mut sealed = String::with_capacity(line.len() + auth::SEAL_OVERHEAD + 1);
                session.seal(line, &mut sealed);
                self.queue(sealed.as_bytes());
            }
        }
    }

    /// Queues bytes as they are (a watcher's Server-Sent Events).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.queue(bytes);
    }

    fn queue_line_plain(&mut self, line: &str) {
        self.queue(line.as_bytes());
        self.queue(b"\n");
    }

    /// Appends bytes to the outbox; past [`MAX_OUTBOX`] the reader is too
    /// slow and the link dies.
    fn queue(&mut self, bytes: &[u8]) {
        if self.life == Life::Dead {
            return;
        }
        if self.out.len() + bytes.len() > MAX_OUTBOX {
            crate::event!(Level::Warn, "slow-reader", peer = OptAddr(self.peer_addr));
            self.life = Life::Dead;
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// The bytes waiting for the socket.
    pub fn outbox(&self) -> &[u8] {
        &self.out
    }

    /// Takes the whole outbox.
    pub fn take_outbox(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The socket took the first `n` bytes of the outbox.
    pub fn wrote(&mut self, n: usize) {
        self.out.drain(..n);
        // A burst's buffer (a mesh repair's MEETs) is not kept for good.
        if self.out.is_empty() && self.out.capacity() > OUTBOX_KEEP {
            self.out = Vec::new();
        }
    }

    /// Holds this client's input until its `-c` is answered, at the
    /// latest by `by`.
    pub fn await_join(&mut self, addr: SocketAddr, by: Mono) {
        self.awaiting_join = Some((addr, by));
    }

    pub fn awaiting_join(&self) -> Option<(SocketAddr, Mono)> {
        self.awaiting_join
    }

    pub fn join_answered(&mut self) {
        self.awaiting_join = None;
    }

    /// Whether the link can go: dead, or drained (a peer whose other side
    /// closed needs no drain) with no dial under way (`connecting`) and no
    /// `-c` answer pending.
    pub fn is_finished(&self, connecting: bool) -> bool {
        match self.life {
            Life::Dead => true,
            Life::Open => false,
            Life::Draining { peer_eof, .. } => {
                (self.out.is_empty() || peer_eof) && !connecting && self.awaiting_join.is_none()
            }
        }
    }

    /// Applies the close grace and the idle limit at `now`.
    pub fn tick(&mut self, now: Mono, idle_limit_ms: u64) {
        if let Life::Draining { since, peer_eof } = self.life
            && self.awaiting_join.is_none()
        {
            let since = since.unwrap_or(now);
            self.life = Life::Draining {
                since: Some(since),
                peer_eof,
            };
            if now >= since.plus(CLOSE_GRACE_MS) {
                crate::event!(
                    Level::Debug,
                    "close-timeout",
                    peer = OptAddr(self.peer_addr)
                );
                self.life = Life::Dead;
            }
        }
        if self.awaits_request() && !self.is_dead() && now >= self.opened.plus(idle_limit_ms) {
            crate::event!(
                Level::Info,
                "conn-idle",
                peer = OptAddr(self.peer_addr),
                idle_ms = idle_limit_ms,
            );
            self.life = Life::Dead;
        }
    }

    /// Whether only what it is sent or told can change the link: open,
    /// with no `-c` answer held and no idle limit running (a peer, a
    /// console that asked something, a watcher). A tick leaves it alone,
    /// it has no deadline, and it is not finished.
    pub fn is_quiet(&self) -> bool {
        self.life == Life::Open && self.awaiting_join.is_none() && !self.awaits_request()
    }

    /// When [`Link::tick`] next has something to do (`now`: at once).
    pub fn deadline(&self, now: Mono, idle_limit_ms: u64) -> Option<Mono> {
        if self.life == Life::Dead {
            return None;
        }
        if let Some((_, by)) = self.awaiting_join {
            return Some(by);
        }
        match self.life {
            Life::Dead => None,
            Life::Draining {
                since: Some(seen), ..
            } => Some(seen.plus(CLOSE_GRACE_MS)),
            Life::Draining { since: None, .. } => Some(now),
            Life::Open => self
                .awaits_request()
                .then(|| self.opened.plus(idle_limit_ms)),
        }
    }
}

#[cfg(test)]
mod tests;
