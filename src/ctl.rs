//! `bossd ctl`: sends one console command to a node and prints the answer.
//!
//! A plain blocking client: connect, authenticate if given the secret, write
//! one line, read lines until `OK` or `ERR`. `bossd ctl IP PORT -w` instead
//! prints each line of the watch stream as it arrives (the first, the
//! status line, within the same timeout as any answer; after it without
//! one) until a signal ends it (exit 0), the node closes the connection or
//! stdout is closed (an error). It shares nothing with the loop but the
//! console's framing and the handshake of [`crate::auth`].

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::auth::{self, AuthError, Done, Handshake, Secret, Session};
use crate::config::CtlArgs;

/// How long ctl waits to connect and for each answer line: a live node
/// answers in microseconds; a wedged one should not hang a script.
const CTL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a quiet watch looks whether its stdout was closed
/// (`bossd ctl IP PORT -w | head -1`): a pipe's reader that went away is
/// otherwise noticed only at the next line, which may be hours away.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// The node's answer: its lines, and `Err(reason)` for an `ERR` line.
pub struct Answer {
    pub lines: Vec<String>,
    pub result: std::result::Result<(), String>,
}

/// An open console connection that asks one command after another, for
/// callers that poll a node (`bossd demo`) and should not pay a connect
/// per question. It does not authenticate: enough for read-only commands.
pub struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Set once authenticated: every command and answer line carries a tag.
    session: Option<Session>,
}

impl Client {
    /// Connects to the node's console; waits at most `CTL_TIMEOUT`.
    pub fn connect(addr: SocketAddr) -> Result<Client> {
        Client::connect_with(addr, None)
    }

    /// Connects and, given the secret, authenticates; then commands may
    /// mutate, and nobody on the path can change a command or an answer.
    pub fn connect_with(addr: SocketAddr, secret: Option<&Secret>) -> Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, CTL_TIMEOUT)
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_read_timeout(Some(CTL_TIMEOUT))?;
        // Questions are small and answered at once; Nagle must not hold one back.
        stream.set_nodelay(true)?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let session = match secret {
            Some(secret) => Some(authenticate(addr, secret, &mut reader, &mut writer)?),
            None => None,
        };
        Ok(Client {
            addr,
            reader,
            writer,
            session,
        })
    }

    /// The node this client talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one command line and reads its answer up to `OK` or `ERR`.
    pub fn ask(&mut self, command: &str) -> Result<Answer> {
        self.send(command)?;
        let mut lines = Vec::new();
        loop {
            let raw = read_line(self.addr, &mut self.reader)?;
            let line = self.open(raw)?;
            if line == "OK" {
                return Ok(Answer {
                    lines,
                    result: Ok(()),
                });
            }
            if let Some(reason) = line.strip_prefix("ERR") {
                return Ok(Answer {
                    lines,
                    result: Err(reason.trim_start().to_owned()),
                });
            }
            lines.push(line);
        }
    }
}

impl Client {
    /// Sends one command line, sealed on an authenticated connection.
    fn send(&mut self, command: &str) -> Result<()> {
        let mut out = String::new();
        match &mut self.session {
            Some(s) => s.seal(command, &mut out),
            None => {
                out.push_str(command);
                out.push('\n');
            }
        }
        self.writer
            .write_all(out.as_bytes())
            .with_context(|| format!("cannot send to {}", self.addr))
    }

    /// One received line, its tag checked on an authenticated connection.
    fn open(&mut self, raw: String) -> Result<String> {
        let addr = self.addr;
        match &mut self.session {
            Some(s) => match s.open(&raw) {
                Ok(line) => Ok(line.to_owned()),
                Err(_) if raw.starts_with("ERR ") || raw.starts_with("REFUSE ") => {
                    bail!("{addr} answered: {raw}")
                }
                Err(e) => bail!("{addr}: {e}; the answer cannot be trusted"),
            },
            None => Ok(raw),
        }
    }

    /// One line of the watch stream, its tag checked; an `ERR` line (the
    /// node refused the watcher) ends the watch.
    fn stream_line(&mut self, raw: String) -> Result<String> {
        let text = self.open(raw)?;
        if let Some(reason) = text.strip_prefix("ERR") {
            bail!("ERR {}", reason.trim_start());
        }
        Ok(text)
    }

    /// Sends `-w` and hands each line of the stream to `line` as it
    /// arrives. The first, the status line, must come within
    /// `CTL_TIMEOUT` like any answer (a frozen node, or a port that is not
    /// a bossd console, must not hang the caller); after it the stream
    /// may be quiet for as long as the cluster is. Returns only on an
    /// error: an `ERR` answer (too many watchers), a first line that is not
    /// a status line, a line whose tag does not match, the node closing
    /// the connection, stdout closed (`gone` says so while the stream is
    /// quiet), or `line` failing (its reader went away).
    pub fn watch(
        &mut self,
        gone: impl Fn() -> bool,
        mut line: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        self.send("-w")?;
        let addr = self.addr;
        let first = read_line(addr, &mut self.reader)?;
        let first = self.stream_line(first)?;
        if !first.starts_with("id=") {
            bail!("{addr} is not a bossd console: it answered {first:?}");
        }
        line(&first)?;
        self.reader.get_ref().set_read_timeout(Some(WATCH_POLL))?;
        loop {
            // Bytes, not a String: a read that times out keeps what it
            // read so far, a character cut in two included.
            let mut raw = Vec::new();
            loop {
                match self.reader.read_until(b'\n', &mut raw) {
                    // Quiet: nothing to print, but the reader may be gone.
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if gone() {
                            bail!("stdout was closed");
                        }
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("lost the connection to {addr}"));
                    }
                    // The end of the stream, in the middle of a line or not.
                    Ok(0) => bail!("{addr} closed the connection: the node went away"),
                    Ok(_) if raw.ends_with(b"\n") => break,
                    Ok(_) => {}
                }
            }
            let raw = String::from_utf8(raw)
                .with_context(|| format!("{addr} sent a line that is not UTF-8"))?;
            let text = self.stream_line(raw.trim_end_matches(['\n', '\r']).to_owned())?;
            line(&text)?;
        }
    }
}

/// Whether the command is `-w`, which [`watch`] runs.
pub fn is_watch(args: &CtlArgs) -> bool {
    args.command.len() == 1 && args.command[0] == "-w"
}

/// `bossd ctl IP PORT -w`: prints each line of the watch stream as it
/// arrives. SIGINT and SIGTERM end it with exit 0 (the lines printed are
/// complete: each is written and flushed whole); an `Err` says why it
/// ended otherwise, the node's going away included, and so does a stdout
/// that was closed (`bossd ctl IP PORT -w | head -1`, noticed within
/// [`WATCH_POLL`] even while the cluster is quiet): a watcher nobody
/// reads would otherwise hold its connection, one of the node's 64
/// watchers, for ever.
pub fn watch(args: &CtlArgs) -> Result<()> {
    let secret = load_secret(args)?;
    let addr = SocketAddr::new(args.ip, args.port);
    // Installed before connecting: a node slow to answer the handshake
    // (frozen, or far away) must not turn SIGINT or SIGTERM into a death
    // by signal. Reading blocks for as long as the cluster is quiet; a
    // thread of its own takes the signal and ends the process.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install signal handlers")?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            std::process::exit(0);
        }
    });
    let mut client = Client::connect_with(addr, secret.as_ref())?;
    client.watch(stdout_gone, print_line)
}

/// Whether stdout is a pipe or socket whose reader went away: poll(2)
/// reports `POLLERR` (a pipe) or `POLLHUP` (a socket) for it unasked.
fn stdout_gone() -> bool {
    crate::net::poll_now(1, 0) & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Writes one line of the stream to stdout and flushes it, so that each
/// line is seen as it arrives; a closed stdout is an error.
fn print_line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

fn load_secret(args: &CtlArgs) -> Result<Option<Secret>> {
    match &args.secret_file {
        Some(path) => {
            let loaded = Secret::load(path)?;
            if let Some(warning) = loaded.warning {
                crate::log::stderr_line(&format!("bossd ctl: warning: {warning}"));
            }
            Ok(Some(loaded.secret))
        }
        None => Ok(None),
    }
}

/// Runs the command; `Ok` carries the node's answer, `Err` a failure to ask.
pub fn run(args: &CtlArgs) -> Result<Answer> {
    let secret = load_secret(args)?;
    let addr = SocketAddr::new(args.ip, args.port);
    let line = args.command.join(" ");
    ask_with(addr, &line, secret.as_ref())
}

/// Sends one command line to the node at `addr` and reads its framed answer,
/// without authenticating: enough for read-only commands, and for every
/// command on a node without a secret.
pub fn ask(addr: SocketAddr, command: &str) -> Result<Answer> {
    ask_with(addr, command, None)
}

/// Sends one command line, first authenticating with `secret` if given; then
/// the command and every line of the answer carry tags, so nobody on the
/// path can change either.
pub fn ask_with(addr: SocketAddr, command: &str, secret: Option<&Secret>) -> Result<Answer> {
    Client::connect_with(addr, secret)?.ask(command)
}

/// Runs the handshake as the dialer; see [`crate::auth`].
fn authenticate(
    addr: SocketAddr,
    secret: &Secret,
    reader: &mut impl BufRead,
    writer: &mut impl Write,
) -> Result<Session> {
    let mut nonce = [0u8; auth::NONCE_LEN];
    getrandom::fill(&mut nonce).context("cannot draw a random nonce")?;
    let (mut hs, first) = Handshake::dial(nonce, addr);
    writer
        .write_all(format!("{first}\n").as_bytes())
        .with_context(|| format!("cannot send to {addr}"))?;
    let line = read_line(addr, reader)?;
    match hs.step(secret, &line) {
        Ok(Done { reply, session }) => {
            if let Some(reply) = reply {
                writer
                    .write_all(format!("{reply}\n").as_bytes())
                    .with_context(|| format!("cannot send to {addr}"))?;
            }
            Ok(session)
        }
        Err(AuthError::Refused(why)) => bail!("{addr} refused to authenticate us: {why}"),
        Err(AuthError::WrongSecret) => {
            // Tell the node why we hang up; best effort.
            let _ = writer.write_all(b"REFUSE wrong secret\n");
            bail!("{addr} has another secret: authentication failed")
        }
        Err(e) => bail!("cannot authenticate with {addr}: {e}"),
    }
}

/// One line without its line end; end of stream is an error.
fn read_line(addr: SocketAddr, reader: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    let n = match reader.read_line(&mut line) {
        Ok(n) => n,
        // The read timeout: a frozen node, a cut network.
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            bail!("no answer from {addr} within {} s", CTL_TIMEOUT.as_secs())
        }
        Err(e) => return Err(e).with_context(|| format!("no answer from {addr}")),
    };
    if n == 0 {
        bail!("{addr} closed the connection without an answer");
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
