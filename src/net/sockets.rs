//! Every TCP socket of the node: the listener (accept, backlog, the
//! `--max-conns` answer, the pause when descriptors run out) and one
//! connection per link id (dial, read with a budget, write the link's
//! outbox, deregister). Bytes go to and from the endpoint; this file never
//! looks inside them.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};

use crate::core::LinkId;
use crate::endpoint::{Dialer, Endpoint};
use crate::log::Level;
use crate::protocol::OptAddr;
use crate::time::Mono;

use super::READ_CHUNK;

pub(super) const LISTENER: Token = Token(usize::MAX - 1);

/// Bytes taken from one connection per loop iteration. A sender faster
/// than the node (a flood of lines that reads its answers, so the outbox
/// cap never stops it) would otherwise keep the loop reading one socket
/// while heartbeats and timeouts wait, and the cluster would take the node
/// for dead. The rest is read in the next iteration, after the others.
const READ_BUDGET: usize = 64 * 1024;

/// Connections the kernel completes before the loop accepts them. mio (like
/// std) listens with 128; a burst of 100 joining nodes, or a flood, would
/// overflow that and each dropped SYN costs its sender a 1 s retransmit.
/// The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: libc::c_int = 4096;

/// One connection's socket and what only IO knows about it.
struct Conn {
    stream: TcpStream,
    /// An outbound connect that has not completed yet.
    connecting: bool,
    /// Its read budget ran out with input left: read again next iteration
    /// (mio is edge-triggered, so no new event would say so).
    more_input: bool,
    /// Reading stopped because the link took no input (a `-c` answer
    /// pending); read again once it does.
    paused: bool,
    writable_registered: bool,
}

pub(super) struct Sockets {
    pub(super) poll: Poll,
    listener: TcpListener,
    /// By link id; the endpoint's ids are a slab's, so this stays dense.
    conns: Vec<Option<Conn>>,
    /// Accepting stopped because descriptors ran out; retried when one frees.
    accept_paused: bool,
    /// The connections whose `more_input` or `paused` is set: the only
    /// ones [`Sockets::to_resume`] looks at, twice an iteration (a walk
    /// over every connection each time was part of what an iteration
    /// cost at 200 peers).
    held: Vec<LinkId>,
    /// Every read's buffer: one, rather than 16 KiB zeroed on the stack
    /// per read (2.6 % of an idle node's time in `memset`, issue 14).
    buf: Box<[u8; READ_CHUNK]>,
}

impl Sockets {
    pub(super) fn new(poll: Poll, listener: TcpListener) -> Sockets {
        widen_backlog(&listener);
        Sockets {
            poll,
            listener,
            conns: Vec::new(),
            accept_paused: false,
            held: Vec::new(),
            buf: Box::new([0; READ_CHUNK]),
        }
    }

    pub(super) fn register_listener(&mut self) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)
    }

    fn insert(&mut self, id: LinkId, conn: Conn) {
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, || None);
        }
        self.conns[id] = Some(conn);
    }

    pub(super) fn connecting(&self, id: LinkId) -> bool {
        self.conns
            .get(id)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.connecting)
    }

    /// Links to read again now: their budget ran out, or their link takes
    /// input again.
    pub(super) fn to_resume(&self, ep: &Endpoint) -> Vec<LinkId> {
        let resumes = |id: LinkId, c: &Conn| {
            c.more_input || (c.paused && ep.link(id).is_some_and(|l| l.reading()))
        };
        self.held
            .iter()
            .copied()
            .filter(|&id| self.conns[id].as_ref().is_some_and(|c| resumes(id, c)))
            .collect()
    }

    pub(super) fn accept_paused(&self) -> bool {
        self.accept_paused
    }

    /// Accepts every waiting connection the endpoint admits.
    pub(super) fn accept(&mut self, ep: &mut Endpoint, now: Mono) {
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
            if !ep.admit(peer) {
                // Best effort: the socket is new and its buffer empty.
                let _ = stream.write(b"ERR busy\n");
                continue;
            }
            no_delay(&stream);
            let id = ep.next_id();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(id), Interest::READABLE)
            {
                crate::event!(Level::Warn, "register-failed", peer = peer, reason = e);
                continue;
            }
            let got = ep.accepted(peer, now);
            debug_assert_eq!(got, id);
            self.insert(id, Conn::new(stream, false));
        }
    }

    /// A connection's readiness.
    pub(super) fn on_event(
        &mut self,
        id: LinkId,
        readable: bool,
        writable: bool,
        closed: bool,
        ep: &mut Endpoint,
        now: Mono,
    ) {
        let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if c.connecting && (writable || readable) {
            match connect_result(&c.stream) {
                Ok(true) => c.connecting = false,
                Ok(false) => return,
                Err(e) => return ep.on_dial_error(id, &e.to_string(), now),
            }
        }
        if writable {
            // The outbox gets its next write in this iteration's flush.
            ep.touch(id);
        }
        if readable || closed {
            self.read(id, ep, now, closed);
        }
    }

    /// Reads link `id` until the socket would block, its link takes no
    /// more, or the read budget is spent. A read shorter than the buffer
    /// took everything the kernel had, and any later byte brings a new
    /// (edge-triggered) event, so the read that would only say
    /// `EAGAIN` is skipped (issue 14: it was half of an idle node's
    /// `recvfrom` calls). Unless `to_the_end`: when the event said the
    /// peer closed, or the budget ran out last time, it reads on until
    /// the socket says so.
    pub(super) fn read(&mut self, id: LinkId, ep: &mut Endpoint, now: Mono, to_the_end: bool) {
        self.read_until_held(id, ep, now, to_the_end);
        let held = self
            .conns
            .get(id)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.more_input || c.paused);
        match (held, self.held.contains(&id)) {
            (true, false) => self.held.push(id),
            (false, true) => self.held.retain(|h| *h != id),
            _ => {}
        }
    }

    /// [`Sockets::read`], but for the bookkeeping of `held`.
    fn read_until_held(&mut self, id: LinkId, ep: &mut Endpoint, now: Mono, to_the_end: bool) {
        let mut taken = 0;
        loop {
            let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                return;
            };
            c.more_input = false;
            c.paused = false;
            let Some(link) = ep.link(id) else {
                return;
            };
            if !link.reading() {
                c.paused = !link.is_dead();
                return;
            }
            if taken >= READ_BUDGET {
                c.more_input = true;
                return;
            }
            match c.stream.read(&mut self.buf[..]) {
                // The other side may only have half-closed: what its lines
                // produced is still written before the connection goes.
                Ok(0) => return ep.on_eof(id),
                Ok(n) => {
                    taken += n;
                    ep.on_bytes(id, &self.buf[..n], now);
                    if n < READ_CHUNK && !to_the_end {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let peer = OptAddr(link.peer_addr());
                    crate::event!(Level::Debug, "read-failed", peer = peer, reason = e);
                    return ep.kill(id);
                }
            }
        }
    }

    /// Writes link `id`'s outbox until the socket would block, and asks
    /// for WRITABLE only while output remains.
    pub(super) fn flush(&mut self, id: LinkId, ep: &mut Endpoint) {
        let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(link) = ep.link(id) else {
            return;
        };
        if link.is_dead() || c.connecting {
            return;
        }
        let peer = link.peer_addr();
        let out = link.outbox();
        let mut written = 0;
        let mut broken = false;
        while written < out.len() {
            match c.stream.write(&out[written..]) {
                Ok(0) => {
                    broken = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let peer = OptAddr(peer);
                    crate::event!(Level::Debug, "write-failed", peer = peer, reason = e);
                    broken = true;
                    break;
                }
            }
        }
        ep.wrote(id, written);
        if broken {
            ep.kill(id);
        }
        let want_writable = !ep.outbox(id).is_empty() && !broken;
        if want_writable != c.writable_registered {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(id), interest)
            {
                Ok(()) => c.writable_registered = want_writable,
                Err(_) => ep.kill(id),
            }
        }
    }

    /// Closes link `id`'s socket.
    pub(super) fn remove(&mut self, id: LinkId) {
        self.held.retain(|h| *h != id);
        if let Some(mut c) = self.conns.get_mut(id).and_then(Option::take) {
            // Deregistering a socket we are about to drop cannot matter if it fails.
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }
}

impl Dialer for Sockets {
    fn dial(&mut self, id: LinkId, addr: SocketAddr) -> Result<(), String> {
        let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        no_delay(&stream);
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(id),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        self.insert(id, Conn::new(stream, true));
        Ok(())
    }
}

impl Conn {
    fn new(stream: TcpStream, dialed: bool) -> Conn {
        Conn {
            stream,
            connecting: dialed,
            more_input: false,
            paused: false,
            writable_registered: dialed,
        }
    }
}

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
