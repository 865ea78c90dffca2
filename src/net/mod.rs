//! The event loop: one thread, one mio `Poll` over the listener, every
//! connection, stdin, the signals and the health check's output pipe. It
//! only does IO.
//!
//! It owns every socket, the clock and the processes of the hooks and the
//! health check (`check`), and decides nothing: bytes go to the
//! [`Endpoint`] (src/endpoint.rs), which owns the core and every link's
//! state, and what it asks for is carried out here.
//! One iteration has a fixed shape: poll with the earliest deadline as
//! timeout; read the clock once and pass that one `now` to everything
//! handled in this iteration, with how late it woke; read every ready
//! socket; then the timers (silence is judged only after the reads); then `settle`: drain the
//! endpoint, flush outboxes, remove finished connections last (deregister,
//! tell the endpoint), until nothing is left.

pub mod check;
mod sockets;
mod stdin;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::auth::{NONCE_LEN, Secret};
use crate::core::{Config, Node};
use crate::endpoint::{Endpoint, Output};
use crate::hooks::Hooks;
use crate::log::Level;
use crate::notify::Notifier;
use crate::state::StateDir;
use crate::time::Mono;
use check::{Check, CheckSpec};
use sockets::{LISTENER, Sockets};
use stdin::{STDIN, Stdin, StdinMode, print_console};

pub use crate::link::MAX_OUTBOX;
pub(crate) use stdin::poll_now;

/// Events taken per poll: enough to drain a busy moment in a few rounds
/// without an unbounded buffer.
const EVENTS_PER_POLL: usize = 1024;

/// Bytes read from a socket per call.
const READ_CHUNK: usize = 16 * 1024;

/// How long a graceful leave waits for LEAVE lines to drain: well inside
/// the one second guarantee 6 (docs/GUARANTEES.md) allows.
const LEAVE_FLUSH: Duration = Duration::from_millis(300);

const SIGNALS: Token = Token(usize::MAX - 3);

/// The running health check's output pipe (src/net/check.rs).
const CHECK_OUTPUT: Token = Token(usize::MAX - 4);

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
    /// `--state-dir`, opened at start: where each new epoch is written
    /// before the node claims, accepts or reports it.
    pub state: Option<StateDir>,
    /// `--check` and its options; none without `--check`.
    pub check: Option<CheckSpec>,
}

/// Runs a node until it leaves; `Ok` means a graceful leave (exit 0).
///
/// The listener is bound first. With port 0 the kernel picks a free port,
/// and the node is known by it from then on: its id in the core (and so
/// in HELLO, `-s` and the logs) and the hooks' BOSSD_ID.
pub fn run(mut cfg: Config, mut opts: Options, start: Instant) -> Result<()> {
    let asked = cfg.addr;
    let listener = TcpListener::bind(asked).with_context(|| format!("cannot listen on {asked}"))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {asked}"))?;
    cfg.addr = addr;
    opts.hooks.set_id(addr);
    if addr.ip().is_unspecified() {
        // Peers know a node by the address it listens on and pass it on
        // in introductions; 0.0.0.0 or :: names every host's own.
        crate::event!(
            Level::Warn,
            "unspecified-addr",
            addr = addr,
            reason = "peers dial a node at the address it is known by, and this one names whichever host dials it: give the address peers reach it at",
        );
    }
    if opts.secret.is_none() && !addr.ip().is_loopback() {
        crate::event!(
            Level::Warn,
            "no-secret",
            addr = addr,
            reason = "anyone who can reach it can join",
        );
    }
    let poll = Poll::new().context("cannot create the event poll")?;
    let mut io = Sockets::new(poll, listener);
    io.register_listener()
        .context("cannot register the listener")?;
    // SIGCHLD only wakes the loop: a hook ended and is reaped in `run`.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGCHLD]).context("cannot install signal handlers")?;
    io.poll
        .registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .context("cannot register the signal handlers")?;
    let stdin = if opts.console {
        Stdin::open(&io.poll)
    } else {
        Stdin::off()
    };
    let nonces = Box::new(nonce);
    let mut server = Server {
        io,
        signals,
        stdin,
        ep: Endpoint::new(Node::new(cfg), opts.secret, opts.max_conns, nonces),
        start,
        leaving_since: None,
        hooks: opts.hooks,
        notify: Notifier::from_env(start),
        state: opts.state,
        check: opts.check.map(|spec| Check::new(spec, addr, start)),
    };
    let listening = crate::event_text!("listening", addr = addr);
    if asked.port() == 0 {
        // The only place a caller learns the port the kernel picked: it is
        // written even when --log hides info lines.
        crate::log::write_unfiltered(Level::Info, &listening);
    } else {
        crate::log::write(Level::Info, &listening);
    }
    let now = server.now();
    for target in opts.join {
        if let Err(e) = server.ep.node_mut().join(target, now.mono) {
            crate::event!(Level::Warn, "join-skipped", peer = target, reason = e);
        }
    }
    server.run(now)
}

/// The one reading of the clock an iteration works with.
#[derive(Clone, Copy)]
struct Now {
    at: Instant,
    mono: Mono,
}

struct Server {
    io: Sockets,
    signals: Signals,
    stdin: Stdin,
    ep: Endpoint,
    start: Instant,
    /// Set once the node leaves; the loop ends when output drained and
    /// hooks ended, or time is up.
    leaving_since: Option<Instant>,
    hooks: Hooks,
    /// systemd's READY=1, STATUS=, WATCHDOG=1 and STOPPING=1.
    notify: Notifier,
    state: Option<StateDir>,
    /// The health check, if `--check` was given.
    check: Option<Check>,
}

impl Server {
    fn run(&mut self, mut now: Now) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            // Before settle: a verdict that changes the election is acted
            // on in this iteration, not after the next poll.
            self.poll_check(now);
            self.settle(now)?;
            self.hooks.poll(now.at);
            // A master that stepped down releases its role once its hook
            // for leaving it has ended (guarantee 11, docs/GUARANTEES.md);
            // without --notify there is none, so at once.
            if self.ep.node().awaits_hook() && self.hooks.is_idle() {
                self.ep.handle_hook_ended(now.mono);
                self.settle(now)?;
            }
            self.notify.turn(self.ep.node(), now.at);
            if self.left(now) {
                self.hooks.abandon();
                if let Some(check) = &mut self.check {
                    check.abandon();
                }
                crate::event!(Level::Info, "left");
                return Ok(());
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.io.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("poll failed");
            }
            let slept_from = now.at;
            now = self.now();
            // How late the loop woke against the deadline it slept for: a
            // SIGSTOP, a paused VM or a starved CPU held it up (guarantee
            // 10, docs/GUARANTEES.md). An expired strict lease ends before
            // any command is answered; silence is judged only after every
            // readable socket was read, below.
            let late = timeout.map_or(Duration::ZERO, |t| {
                now.at.saturating_duration_since(slept_from + t)
            });
            self.ep.handle_resumed(late.as_millis() as u64, now.mono);
            // Connections whose read budget ran out last time go first.
            for id in self.io.to_resume(&self.ep) {
                self.io.read(id, &mut self.ep, now.mono, true);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.io.accept(&mut self.ep, now.mono),
                    STDIN => self.stdin.read(&self.io.poll, &mut self.ep, now.mono),
                    SIGNALS => self.on_signals(now),
                    CHECK_OUTPUT => {
                        if let Some(check) = &mut self.check {
                            check.read_output();
                        }
                    }
                    Token(id) => {
                        let (r, w) = (event.is_readable(), event.is_writable());
                        let closed = event.is_read_closed() || event.is_error();
                        self.io.on_event(id, r, w, closed, &mut self.ep, now.mono);
                    }
                }
            }
            if self.stdin.mode == StdinMode::File {
                self.stdin.read(&self.io.poll, &mut self.ep, now.mono);
            }
            self.ep.handle_timeout(now.mono);
            self.ep.tick(now.mono);
        }
    }

    /// Reads the clock: once per iteration.
    fn now(&self) -> Now {
        let at = Instant::now();
        Now {
            at,
            mono: Mono(at.duration_since(self.start).as_millis() as u64),
        }
    }

    /// Whether a leave is complete: output drained (or time up) and the
    /// hooks done.
    fn left(&self, now: Now) -> bool {
        let Some(since) = self.leaving_since else {
            return false;
        };
        let drained = self.ep.drained(|id| self.io.connecting(id));
        (drained || now.at.duration_since(since) >= LEAVE_FLUSH)
            && self.hooks.exit_ready(now.at)
            && self.check.as_ref().is_none_or(|c| c.exit_ready(now.at))
    }

    /// Reaps, times and starts the health check; a run that changed the
    /// verdict goes to the core, every run to the metrics.
    fn poll_check(&mut self, now: Now) {
        let Some(check) = &mut self.check else {
            return;
        };
        let started = check.poll(now.at, self.ep.node());
        // A new run's pipe (the last one's closed with it, which took it out
        // of the poll): readable wakes the loop to drain it, so a check
        // that writes much never blocks on a full pipe. If it cannot be
        // watched, it is still read once per iteration.
        if check.take_started()
            && let Some(pipe) = check.output_source()
            && let Err(e) = self
                .io
                .poll
                .registry()
                .register(pipe, CHECK_OUTPUT, Interest::READABLE)
        {
            crate::event!(Level::Debug, "check-output-unwatched", reason = e);
        }
        for ran in started {
            self.ep
                .counters_mut()
                .checks
                .record(ran.result, ran.elapsed);
            if let Some(passing) = ran.change {
                self.ep.node_mut().handle_check(passing, now.mono);
            }
        }
    }

    fn poll_timeout(&self, now: Now) -> Option<Duration> {
        if self.stdin.mode == StdinMode::File {
            return Some(Duration::ZERO);
        }
        if self.leaving_since.is_some() {
            return Some(Duration::from_millis(10));
        }
        if !self.io.to_resume(&self.ep).is_empty()
            || self.check.as_ref().is_some_and(Check::output_unread)
        {
            return Some(Duration::ZERO);
        }
        let due = self
            .ep
            .next_deadline(now.mono)
            .map(|d| Duration::from_millis(d.since(now.mono)));
        let check = self.check.as_ref().and_then(Check::next_deadline);
        let hook = self
            .hooks
            .next_deadline()
            .into_iter()
            .chain(self.notify.next_deadline())
            .chain(check)
            .min()
            .map(|t| t.saturating_duration_since(now.at));
        due.into_iter().chain(hook).min()
    }

    /// Drains the endpoint, flushes output and removes finished
    /// connections, until none of them produces more work. Outputs come
    /// before the flush: an epoch is on disk before a byte that carries it
    /// is written. `Err`: the state dir could not be written.
    fn settle(&mut self, now: Now) -> Result<()> {
        loop {
            self.ep.drain(now.mono, &mut self.io);
            self.outputs(now)?;
            for id in self.ep.take_touched() {
                self.io.flush(id, &mut self.ep);
            }
            let done = self.ep.finished(|id| self.io.connecting(id));
            if done.is_empty() {
                return Ok(());
            }
            for id in done {
                self.io.remove(id);
                self.ep.remove(id, now.mono);
            }
            if self.io.accept_paused() {
                // Still paused until an accept succeeds or none waits.
                self.io.accept(&mut self.ep, now.mono);
            }
        }
    }

    /// Carries out what the endpoint asks of the process: logs, console
    /// text, the hooks, the state dir, the leave.
    fn outputs(&mut self, now: Now) -> Result<()> {
        while let Some(out) = self.ep.poll_output() {
            match out {
                Output::Log(event) => crate::log::emit(&event),
                Output::Deliver { from, text } => {
                    print_console(&format!("message from {from}: {text}"))
                }
                Output::Print(line) => print_console(&line),
                Output::RoleChanged(entry) => self.hooks.push(entry),
                Output::Leave => {
                    self.hooks.leave(now.at);
                    if let Some(check) = &mut self.check {
                        check.leave(now.at);
                    }
                    self.notify.stopping();
                    self.leaving_since = Some(now.at);
                }
                Output::Persist(epoch) => self.persist(epoch)?,
            }
        }
        Ok(())
    }

    /// Writes `epoch` to the state dir. If that fails the node stops at
    /// once, before anything carrying the epoch is sent or run: an epoch
    /// that is not durable must not be used (guarantee 12,
    /// docs/GUARANTEES.md).
    fn persist(&mut self, epoch: u64) -> Result<()> {
        let Some(state) = &mut self.state else {
            return Ok(());
        };
        if let Err(e) = state.persist(epoch) {
            crate::event!(
                Level::Error,
                "state-write-failed",
                epoch = epoch,
                path = state.path().display(),
                reason = e,
            );
            return Err(e).with_context(|| {
                format!("cannot write epoch {epoch} to {}", state.path().display())
            });
        }
        crate::event!(Level::Debug, "state-written", epoch = epoch);
        Ok(())
    }

    fn on_signals(&mut self, now: Now) {
        let got: Vec<i32> = self.signals.pending().filter(|s| *s != SIGCHLD).collect();
        if let Some(&first) = got.first() {
            crate::event!(
                Level::Info,
                "leaving",
                cause = "signal",
                signal = signal_name(first),
            );
            self.ep.begin_leave(now.mono);
        }
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

/// A signal's name for the log: `SIGTERM`, `SIGINT`, else its number.
fn signal_name(signal: i32) -> String {
    match signal {
        SIGTERM => "SIGTERM".to_owned(),
        SIGINT => "SIGINT".to_owned(),
        other => other.to_string(),
    }
}

/// Unix milliseconds now, read once at start.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
