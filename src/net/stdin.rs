//! The console on standard input, and console output on standard output:
//! bytes in, lines to the endpoint; its answers printed without ever
//! blocking the loop. Never decides anything about a command.

use std::io::{self, ErrorKind, Write};

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use crate::endpoint::Endpoint;
use crate::log::Level;
use crate::protocol::LineBuffer;
use crate::time::Mono;

use super::READ_CHUNK;

pub(super) const STDIN: Token = Token(usize::MAX - 2);

/// The console on standard input.
pub(super) struct Stdin {
    pub(super) mode: StdinMode,
    lines: LineBuffer,
    /// The rest of a line too long is still to come, and is dropped.
    skipping: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum StdinMode {
    /// A pipe, terminal or socket, registered with the poll.
    Poll,
    /// A regular file or /dev/null, which epoll refuses: read a chunk per
    /// iteration until end of file.
    File,
    /// Closed, at end of file, in the background, or `--no-console`.
    Off,
}

impl Stdin {
    pub(super) fn off() -> Stdin {
        Stdin {
            mode: StdinMode::Off,
            lines: LineBuffer::default(),
            skipping: false,
        }
    }

    pub(super) fn open(poll: &Poll) -> Stdin {
        Stdin {
            mode: Self::mode(poll),
            lines: LineBuffer::default(),
            skipping: false,
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

    /// Reads what is there and hands every complete line to `ep`.
    pub(super) fn read(&mut self, poll: &Poll, ep: &mut Endpoint, now: Mono) {
        let mut buf = [0u8; READ_CHUNK];
        while self.mode != StdinMode::Off {
            let n = match read_fd0(&mut buf) {
                Ok(0) => {
                    crate::event!(Level::Debug, "stdin-closed");
                    self.close(poll);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::event!(Level::Warn, "stdin-failed", op = "read", reason = e);
                    self.close(poll);
                    return;
                }
            };
            self.lines.extend(&buf[..n]);
            self.take_lines(ep, now);
            // A regular file is read a chunk per iteration, so a huge file
            // never stalls the loop; a pipe or terminal until it is empty.
            if self.mode == StdinMode::File || !fd_ready(0, libc::POLLIN) {
                return;
            }
        }
    }

    /// Hands every complete line to `ep`. Stdin is trusted and is not
    /// closed for a bad line, unlike a TCP client: a line too long or not
    /// UTF-8 gets its `ERR` and is dropped, and the lines after it are read
    /// as usual (docs/GUARANTEES.md, console), also those that came in
    /// the same read.
    fn take_lines(&mut self, ep: &mut Endpoint, now: Mono) {
        loop {
            if self.skipping {
                if !self.lines.skip_line() {
                    return;
                }
                self.skipping = false;
            }
            let pending = self.lines.pending_len();
            match self.lines.next_line() {
                Ok(Some(line)) => ep.stdin_line(&line, now),
                Ok(None) => return,
                Err(e) => {
                    ep.print(format!("ERR {e}"));
                    // A complete line was taken; a line too long that has
                    // no newline yet was not: drop it up to its end.
                    self.skipping = self.lines.pending_len() == pending;
                }
            }
        }
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

fn fd_ready(fd: i32, events: libc::c_short) -> bool {
    poll_now(fd, events) != 0
}

/// What poll(2) reports for `fd` right now, without waiting: the asked
/// `events` that are ready, and `POLLERR`, `POLLHUP` or `POLLNVAL`, which
/// it reports unasked; 0 for nothing.
pub(crate) fn poll_now(fd: i32, events: libc::c_short) -> libc::c_short {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n == 1 { p.revents } else { 0 }
}

/// Prints a console line on stdout without ever blocking the loop: when
/// nobody drains stdout (a full pipe), the line is dropped.
pub(super) fn print_console(line: &str) {
    if !fd_ready(1, libc::POLLOUT) {
        return;
    }
    let mut out = io::stdout().lock();
    // A closed stdout must not stop the node.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
