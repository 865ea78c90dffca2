//! The loop's alarm clock: a `timerfd` in the poll, so that the loop wakes
//! at its next deadline to the microsecond.
//!
//! `epoll_wait` counts its timeout in whole milliseconds from the moment
//! it is called, so a loop that sleeps on it alone wakes anywhere in the
//! millisecond after its deadline. Heartbeat rounds start on the same
//! wall-clock instant on every node (src/core/heartbeat.rs); woken at
//! random points of a millisecond, a node's peers sent their PINGs over
//! that millisecond, and each PING that came after the node went back to
//! sleep woke it again (issue 14: 2.35 wakeups per round). Woken to the
//! microsecond, the nodes of a host send within microseconds of each other
//! and a node finds most of its peers' PINGs already waiting.
//!
//! It owns the descriptor and the instant it is set for; the loop still
//! passes `epoll_wait` a timeout a millisecond past the deadline, so a
//! timer that cannot be made only costs that precision.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use crate::log::Level;

pub(super) const TIMER: Token = Token(usize::MAX - 4);

pub(super) struct Timer {
    /// `None` when the kernel gave no timerfd: the poll's timeout alone.
    fd: Option<OwnedFd>,
    /// What it is set for; `None` once it went off or was never set.
    set_for: Option<Instant>,
}

impl Timer {
    /// A timer registered with `poll`, or one that does nothing if the
    /// kernel refuses (logged once).
    pub(super) fn new(poll: &Poll) -> Timer {
        let fd = match create(poll) {
            Ok(fd) => Some(fd),
            Err(e) => {
                crate::event!(Level::Debug, "timer-unavailable", reason = e);
                None
            }
        };
        Timer { fd, set_for: None }
    }

    /// Sets the timer to go off at `at` (unless it already is), and says
    /// whether it will: not if `at` is not after `now` or there is no timer.
    /// Setting it again for the same instant costs nothing, so a deadline
    /// that stays put (the next heartbeat, while lines come and go) costs
    /// one system call per deadline, not one per wakeup.
    pub(super) fn set(&mut self, at: Instant, now: Instant) -> bool {
        let Some(fd) = &self.fd else {
            return false;
        };
        if self.set_for == Some(at) {
            return true;
        }
        let left = at.saturating_duration_since(now);
        if left.is_zero() {
            return false;
        }
        let spec = libc::itimerspec {
            it_interval: timespec(Duration::ZERO),
            it_value: timespec(left),
        };
        // SAFETY: timerfd_settime(2) on our own descriptor, with a valid
        // itimerspec and no old value asked for.
        let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            self.set_for = None;
            return false;
        }
        self.set_for = Some(at);
        true
    }

    /// It went off (its event came). It is not read: setting it again
    /// resets its count, and mio's edge-triggered poll reports each expiry.
    pub(super) fn went_off(&mut self) {
        self.set_for = None;
    }
}

fn create(poll: &Poll) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create(2) takes no pointers; a non-negative result is
    // a new descriptor that we own from here on.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    poll.registry()
        .register(&mut SourceFd(&fd.as_raw_fd()), TIMER, Interest::READABLE)?;
    Ok(fd)
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    }
}
