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
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::console::{self, Clock};
use crate::core::{Action, Config, Millis, Node};
use crate::log::Level;
use crate::protocol::{self, FrameError, LineBuffer, Message, OptAddr};

/// Events taken per poll: enough to drain a busy moment in a few rounds
/// without an unbounded buffer.
const EVENTS_PER_POLL: usize = 1024;

/// Bytes queued for one connection before it counts as too slow and is
/// dropped: about 10,000 status lines, far more than a live reader lags.
pub const MAX_OUTBOX: usize = 1 << 20;

/// Bytes read from a socket per call.
const READ_CHUNK: usize = 16 * 1024;

/// How long a graceful leave waits for LEAVE lines to drain: well inside
/// the one second SPEC guarantee 6 allows.
const LEAVE_FLUSH: Duration = Duration::from_millis(300);

/// A connection that neither finished a peer handshake nor sent a command
/// within this many timeouts is closed (SPEC §2): a silent socket holds a
/// descriptor and a slot of `--max-conns` for nothing.
const IDLE_TIMEOUTS: u64 = 10;

const LISTENER: Token = Token(usize::MAX - 1);
const STDIN: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Everything a node needs at start, beyond its core configuration.
pub struct Options {
    pub join: Vec<SocketAddr>,
    pub max_conns: usize,
    pub console: bool,
}

/// Runs a node until it leaves; `Ok` means a graceful leave (exit 0).
pub fn run(cfg: Config, opts: Options, wall_at_zero_ms: u64, start: Instant) -> Result<()> {
    let addr = cfg.addr;
    let mut listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let poll = Poll::new().context("cannot create the event poll")?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .context("cannot register the listener")?;
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
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
        accept_paused: false,
        leaving_since: None,
        scratch: String::new(),
    };
    crate::log!(Level::Info, "listening on {addr}");
    for target in opts.join {
        let now = server.now_ms();
        if let Err(e) = server.node.connect(target, now) {
            crate::log!(Level::Warn, "--join {target}: {e}");
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
    /// Accepting stopped because descriptors ran out; retried when one frees.
    accept_paused: bool,
    /// Set once the node leaves; the loop ends when output drained or time is up.
    leaving_since: Option<Instant>,
    scratch: String,
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
    writable_registered: bool,
    /// Write what is queued, then close; read nothing more.
    closing: bool,
    /// Remove at the end of this iteration, queued output or not.
    dead: bool,
    peer_addr: Option<SocketAddr>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConnKind {
    /// Accepted; its first line tells whether it is a peer or a console client.
    Unknown,
    Peer,
    Client,
}

impl Server {
    fn run(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            self.settle();
            if let Some(since) = self.leaving_since {
                let drained = self
                    .conns
                    .iter()
                    .all(|(_, c)| c.out.is_empty() || c.connecting);
                if drained || since.elapsed() >= LEAVE_FLUSH {
                    crate::log!(Level::Info, "left the cluster");
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
        let now = self.now_ms();
        let idle = self
            .conns
            .iter()
            .filter(|(_, c)| c.kind == ConnKind::Unknown && !c.dead && !c.closing)
            .map(|(_, c)| c.opened_ms + self.idle_limit_ms())
            .min();
        self.node
            .next_deadline()
            .into_iter()
            .chain(idle)
            .min()
            .map(|d| Duration::from_millis(d.saturating_sub(now)))
    }

    fn idle_limit_ms(&self) -> Millis {
        IDLE_TIMEOUTS * self.node.config().timeout_ms
    }

    /// Closes connections that said nothing useful within the idle limit.
    fn close_idle(&mut self) {
        let now = self.now_ms();
        let limit = self.idle_limit_ms();
        for (_, c) in self.conns.iter_mut() {
            if c.kind == ConnKind::Unknown && !c.dead && now >= c.opened_ms + limit {
                crate::log!(
                    Level::Info,
                    "closing {}: idle for {limit} ms",
                    OptAddr(c.peer_addr)
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
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in &keys {
                self.flush(*key);
            }
            let done: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.dead || (c.closing && c.out.is_empty() && !c.connecting))
                .map(|(k, _)| k)
                .collect();
            if done.is_empty() {
                return;
            }
            for key in done {
                self.remove(key);
            }
            if self.accept_paused {
                self.accept_paused = false;
                self.accept();
            }
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Send(link, msg) => {
                self.scratch.clear();
                protocol::encode(&msg, &mut self.scratch);
                crate::log!(Level::Debug, "send {link}: {}", self.scratch.trim_end());
                let line = std::mem::take(&mut self.scratch);
                self.queue(link, line.as_bytes());
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
            Action::RoleChanged(_) => {}
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
        entry.insert(Conn {
            stream,
            lines: LineBuffer::default(),
            out: Vec::new(),
            opened_ms: now,
            kind: ConnKind::Peer,
            connecting: true,
            writable_registered: true,
            closing: false,
            dead: false,
            peer_addr: Some(addr),
        });
        self.node.handle_dialed(key, addr, kind, now);
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    crate::log!(Level::Warn, "out of file descriptors; accepting paused");
                    self.accept_paused = true;
                    return;
                }
                Err(e) => {
                    crate::log!(Level::Debug, "accept failed: {e}");
                    continue;
                }
            };
            if self.conns.len() >= self.max_conns {
                crate::log!(Level::Warn, "refused {peer}: too many connections");
                // Best effort: the socket is new and its buffer empty.
                let _ = stream.write(b"ERR busy\n");
                continue;
            }
            no_delay(&stream);
            let now = self.now_ms();
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE)
            {
                crate::log!(Level::Warn, "cannot register {peer}: {e}");
                continue;
            }
            entry.insert(Conn {
                stream,
                lines: LineBuffer::default(),
                out: Vec::new(),
                opened_ms: now,
                kind: ConnKind::Unknown,
                connecting: false,
                writable_registered: false,
                closing: false,
                dead: false,
                peer_addr: Some(peer),
            });
        }
    }

    fn on_signals(&mut self) {
        let got: Vec<i32> = self.signals.pending().collect();
        if !got.is_empty() {
            crate::log!(Level::Info, "signal {}; leaving", got[0]);
            self.begin_leave();
        }
    }

    fn begin_leave(&mut self) {
        if self.leaving_since.is_some() {
            return;
        }
        let now = self.now_ms();
        self.node.leave(now);
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
                    crate::log!(
                        Level::Debug,
                        "connect to {} failed: {e}",
                        OptAddr(c.peer_addr)
                    );
                    c.dead = true;
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
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.dead || c.closing {
                return;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.dead = true;
                    return;
                }
                Ok(n) => {
                    c.lines.extend(&buf[..n]);
                    self.take_lines(key);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::log!(Level::Debug, "read from {}: {e}", OptAddr(c.peer_addr));
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
            if c.dead || c.closing {
                return;
            }
            let line = match c.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(e) => {
                    self.frame_error(key, e);
                    return;
                }
            };
            match c.kind {
                ConnKind::Unknown if line == "HELLO" || line.starts_with("HELLO ") => {
                    c.kind = ConnKind::Peer;
                    match protocol::decode(&line) {
                        Ok(msg) => {
                            let now = self.now_ms();
                            self.node.handle_accepted(key, now);
                            self.node.handle_message(key, msg, now);
                        }
                        Err(e) => {
                            crate::log!(Level::Warn, "refused {}: {e}", OptAddr(c.peer_addr));
                            let refusal = protocol::encode_line(&Message::Refuse(e.to_string()));
                            self.queue(key, refusal.as_bytes());
                            if let Some(c) = self.conns.get_mut(key) {
                                c.closing = true;
                            }
                        }
                    }
                }
                ConnKind::Unknown | ConnKind::Client => {
                    c.kind = ConnKind::Client;
                    self.console_line(key, &line);
                }
                ConnKind::Peer => match protocol::decode(&line) {
                    Ok(msg) => {
                        crate::log!(Level::Debug, "recv {key}: {line}");
                        let now = self.now_ms();
                        self.node.handle_message(key, msg, now);
                    }
                    Err(e) => {
                        crate::log!(
                            Level::Warn,
                            "protocol violation from {}: {e}; closing",
                            OptAddr(c.peer_addr)
                        );
                        c.dead = true;
                    }
                },
            }
        }
    }

    fn frame_error(&mut self, key: usize, e: FrameError) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        crate::log!(Level::Warn, "{}: {e}; closing", OptAddr(c.peer_addr));
        if c.kind == ConnKind::Peer {
            c.dead = true;
        } else {
            self.queue(key, format!("ERR {e}\n").as_bytes());
            if let Some(c) = self.conns.get_mut(key) {
                c.closing = true;
            }
        }
    }

    /// Runs one command from a TCP client and queues the framed answer.
    fn console_line(&mut self, key: usize, line: &str) {
        let mut out = String::new();
        let quit = match console::parse(line) {
            Ok(None) => return,
            Ok(Some(cmd)) => {
                let clock = self.clock();
                let reply = console::execute(cmd, &mut self.node, clock);
                for l in &reply.lines {
                    out.push_str(l);
                    out.push('\n');
                }
                match &reply.result {
                    Ok(()) => out.push_str("OK\n"),
                    Err(reason) => {
                        out.push_str("ERR ");
                        out.push_str(reason);
                        out.push('\n');
                    }
                }
                reply.quit
            }
            Err(reason) => {
                out.push_str("ERR ");
                out.push_str(&reason);
                out.push('\n');
                false
            }
        };
        self.queue(key, out.as_bytes());
        if quit {
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
                    crate::log!(
                        Level::Debug,
                        "stdin closed; the console stays open over TCP"
                    );
                    self.stdin.close(&self.poll);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::log!(Level::Warn, "cannot read stdin: {e}; console over TCP only");
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
                if let Err(reason) = reply.result {
                    print_console(&format!("ERR {reason}"));
                }
                if reply.quit {
                    self.begin_leave();
                }
            }
            Err(reason) => print_console(&format!("ERR {reason}")),
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
            crate::log!(
                Level::Warn,
                "{} reads too slowly; dropping it",
                OptAddr(c.peer_addr)
            );
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
                    crate::log!(Level::Debug, "write to {}: {e}", OptAddr(c.peer_addr));
                    c.dead = true;
                    break;
                }
            }
        }
        c.out.drain(..written);
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

/// Turns off Nagle's algorithm. Every write is whole lines, and the loop
/// writes each outbox once per iteration, so holding back a small write
/// until the last one is acknowledged only adds delay: up to the peer's
/// delayed-ACK timer (40 ms on Linux), which is how long a claim could
/// wait behind an unacknowledged PONG (benches/cluster.rs measured crash
/// failovers of 30-50 ms in about one run of a hundred).
fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        crate::log!(Level::Debug, "cannot set TCP_NODELAY: {e}");
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
            crate::log!(
                Level::Info,
                "running in the background; console over TCP only"
            );
            return StdinMode::Off;
        }
        match poll
            .registry()
            .register(&mut SourceFd(&0), STDIN, Interest::READABLE)
        {
            Ok(()) => StdinMode::Poll,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => StdinMode::File,
            Err(e) => {
                crate::log!(
                    Level::Warn,
                    "cannot watch stdin: {e}; console over TCP only"
                );
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
