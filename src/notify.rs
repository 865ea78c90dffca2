//! systemd's readiness protocol (sd_notify(3)), for `Type=notify` units:
//! `READY=1` once the node answers its console, `STATUS=` with its role,
//! `WATCHDOG=1` while the loop turns, `STOPPING=1` when it leaves.
//!
//! Without `NOTIFY_SOCKET` in the environment (any start outside such a
//! unit) a [`Notifier`] does nothing and costs one branch per loop turn.
//! The [`Plan`] decides what to send, from the node's role and `now`, and
//! touches no socket or clock; the `sd-notify` crate sends it, one datagram
//! per turn at most.
//!
//! The watchdog is driven by the loop, not a thread: the loop takes
//! [`Notifier::next_deadline`] into its poll timeout and pings in
//! [`Notifier::turn`], so a loop that hangs stops pinging and systemd
//! kills the node, whose closed connections its peers see at once
//! (docs/OPERATIONS.md, "The watchdog").

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::core::Node;
use crate::log::Level;
use crate::protocol::{OptAddr, Role};

/// The shortest time between two pings. systemd asks for one within every
/// `WATCHDOG_USEC`, and the loop pings at half that; this floor keeps an
/// absurdly small `WatchdogSec=` from making the poll timeout zero, a busy
/// loop. The poll cannot wait less than a millisecond anyway.
const MIN_PING_EVERY: Duration = Duration::from_millis(1);

/// Sends what the [`Plan`] decides to the service manager.
pub struct Notifier {
    /// `None` without `NOTIFY_SOCKET`: nothing to tell anyone.
    plan: Option<Plan>,
    /// A send failed and was logged as a warning; later ones are logged
    /// at debug level, so a vanished socket does not flood the log.
    warned: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`: a
    /// watchdog meant for another process is not ours to feed).
    pub fn from_env(now: Instant) -> Notifier {
        let plan = std::env::var_os("NOTIFY_SOCKET")
            .filter(|path| !path.is_empty())
            .map(|_| Plan::new(sd_notify::watchdog_enabled(), now));
        Notifier {
            plan,
            warned: false,
        }
    }

    /// One loop turn: `READY=1` the first time, `STATUS=` when the role,
    /// master, epoch or peer count changed, `WATCHDOG=1` when due.
    pub fn turn(&mut self, node: &Node, now: Instant) {
        let Some(plan) = &mut self.plan else {
            return;
        };
        let message = plan.turn(View::of(node), now);
        self.send(&message);
    }

    /// The node leaves: `STOPPING=1`, once.
    pub fn stopping(&mut self) {
        let Some(plan) = &mut self.plan else {
            return;
        };
        let message = plan.stop();
        self.send(&message);
    }

    /// When the loop must turn next to ping the watchdog in time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.plan.as_ref()?.next_deadline()
    }

    fn send(&mut self, message: &Message) {
        let states = message.states();
        if states.is_empty() {
            return;
        }
        if let Err(e) = sd_notify::notify(&states) {
            let level = if self.warned {
                Level::Debug
            } else {
                Level::Warn
            };
            self.warned = true;
            crate::event!(level, "notify-failed", reason = e);
        }
    }
}

/// What the service manager is told, and when: sans-IO.
#[derive(Debug)]
pub struct Plan {
    ready_sent: bool,
    stopping: bool,
    /// What the last `STATUS=` said.
    shown: Option<View>,
    watchdog: Option<Watchdog>,
}

/// The watchdog's schedule: a ping every half of systemd's interval, the
/// margin sd_watchdog_enabled(3) recommends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watchdog {
    every: Duration,
    next: Instant,
}

impl Plan {
    /// `interval` is `WATCHDOG_USEC`, if systemd asked for pings; zero
    /// means no watchdog, as for sd_watchdog_enabled(3).
    pub fn new(interval: Option<Duration>, now: Instant) -> Plan {
        Plan {
            ready_sent: false,
            stopping: false,
            shown: None,
            watchdog: interval.filter(|i| !i.is_zero()).map(|i| Watchdog {
                every: (i / 2).max(MIN_PING_EVERY),
                next: now,
            }),
        }
    }

    /// What to send in a loop turn that sees `view` at `now`.
    pub fn turn(&mut self, view: View, now: Instant) -> Message {
        let mut m = Message {
            ready: !self.ready_sent,
            ..Message::default()
        };
        self.ready_sent = true;
        if !self.stopping && self.shown != Some(view) {
            m.status = Some(view.to_string());
            self.shown = Some(view);
        }
        if let Some(w) = &mut self.watchdog
            && now >= w.next
        {
            m.watchdog = true;
            w.next = now + w.every;
        }
        m
    }

    /// What to send when the node leaves; nothing the second time.
    pub fn stop(&mut self) -> Message {
        if self.stopping {
            return Message::default();
        }
        self.stopping = true;
        Message {
            stopping: true,
            status: Some("leaving".to_owned()),
            ..Message::default()
        }
    }

    /// The next ping's time, if systemd asked for pings.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.watchdog.map(|w| w.next)
    }
}

/// One datagram's worth of news; empty sends nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub status: Option<String>,
    pub watchdog: bool,
    pub stopping: bool,
}

impl Message {
    fn states(&self) -> Vec<NotifyState<'_>> {
        let mut v = Vec::new();
        if self.ready {
            v.push(NotifyState::Ready);
        }
        if self.stopping {
            v.push(NotifyState::Stopping);
        }
        if let Some(s) = &self.status {
            v.push(NotifyState::Status(s));
        }
        if self.watchdog {
            v.push(NotifyState::Watchdog);
        }
        v
    }
}

/// What `STATUS=` shows, as `systemctl status bossd` prints it:
/// `master epoch 3, 2 peers`, `follower epoch 3, 2 peers, master
/// 192.0.2.11:7000`, `none epoch 3, 0 peers, quorum 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub role: Role,
    pub master: Option<SocketAddr>,
    pub epoch: u64,
    pub peers: usize,
    pub quorum: u32,
}

impl View {
    pub fn of(node: &Node) -> View {
        View {
            role: node.role(),
            master: node.master(),
            epoch: node.epoch(),
            peers: node.peer_count(),
            quorum: node.config().quorum,
        }
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.peers == 1 { "" } else { "s" };
        write!(
            f,
            "{} epoch {}, {} peer{s}",
            self.role, self.epoch, self.peers
        )?;
        match self.role {
            Role::Master => Ok(()),
            Role::Follower => write!(f, ", master {}", OptAddr(self.master)),
            Role::None => write!(f, ", quorum {}", self.quorum),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn view(role: Role, epoch: u64, peers: usize) -> View {
        View {
            role,
            master: (role != Role::None).then(|| "192.0.2.11:7000".parse().unwrap()),
            epoch,
            peers,
            quorum: 2,
        }
    }

    #[test]
    fn status_texts() {
        assert_eq!(
            view(Role::Master, 3, 2).to_string(),
            "master epoch 3, 2 peers"
        );
        assert_eq!(
            view(Role::Follower, 3, 1).to_string(),
            "follower epoch 3, 1 peer, master 192.0.2.11:7000"
        );
        assert_eq!(
            view(Role::None, 0, 0).to_string(),
            "none epoch 0, 0 peers, quorum 2"
        );
    }

    #[test]
    fn ready_once_then_status_only_on_change() {
        let t0 = Instant::now();
        let mut p = Plan::new(None, t0);
        let first = p.turn(view(Role::None, 0, 0), t0);
        assert!(first.ready && !first.watchdog && !first.stopping);
        assert_eq!(
            first.status.as_deref(),
            Some("none epoch 0, 0 peers, quorum 2")
        );
        assert_eq!(p.turn(view(Role::None, 0, 0), t0), Message::default());
        let m = p.turn(view(Role::Follower, 1, 1), t0);
        assert!(!m.ready);
        assert_eq!(
            m.status.as_deref(),
            Some("follower epoch 1, 1 peer, master 192.0.2.11:7000")
        );
        // A peer more is news; the same again is not.
        assert!(p.turn(view(Role::Follower, 1, 2), t0).status.is_some());
        assert!(p.turn(view(Role::Follower, 1, 2), t0).status.is_none());
        assert_eq!(p.next_deadline(), None, "no watchdog asked for");
    }

    #[test]
    fn watchdog_pings_at_half_the_interval_when_the_loop_turns() {
        let t0 = Instant::now();
        let v = view(Role::Master, 1, 1);
        let mut p = Plan::new(Some(200 * MS), t0);
        assert!(p.turn(v, t0).watchdog, "the first turn pings");
        assert_eq!(p.next_deadline(), Some(t0 + 100 * MS));
        assert!(!p.turn(v, t0 + 99 * MS).watchdog);
        assert!(p.turn(v, t0 + 100 * MS).watchdog);
        assert_eq!(p.next_deadline(), Some(t0 + 200 * MS));
        // A loop that stalled pings once when it turns again, and the next
        // ping counts from then: no burst of missed pings.
        assert!(p.turn(v, t0 + 900 * MS).watchdog);
        assert!(!p.turn(v, t0 + 901 * MS).watchdog);
        assert_eq!(p.next_deadline(), Some(t0 + 1000 * MS));
    }

    #[test]
    fn watchdog_zero_is_off_and_tiny_has_a_floor() {
        let t0 = Instant::now();
        assert_eq!(Plan::new(Some(Duration::ZERO), t0).next_deadline(), None);
        let mut p = Plan::new(Some(Duration::from_micros(1)), t0);
        p.turn(view(Role::None, 0, 0), t0);
        assert_eq!(p.next_deadline(), Some(t0 + MIN_PING_EVERY));
    }

    #[test]
    fn stopping_once_and_no_status_after_it() {
        let t0 = Instant::now();
        let mut p = Plan::new(Some(200 * MS), t0);
        p.turn(view(Role::Master, 1, 1), t0);
        let m = p.stop();
        assert!(m.stopping);
        assert_eq!(m.status.as_deref(), Some("leaving"));
        assert_eq!(p.stop(), Message::default());
        // The leave turns the node to none; "leaving" stays shown, and the
        // watchdog is still fed while the leave drains.
        let m = p.turn(view(Role::None, 1, 0), t0 + 100 * MS);
        assert!(m.status.is_none() && m.watchdog && !m.ready);
    }

    #[test]
    fn states_in_one_datagram() {
        let m = Message {
            ready: true,
            status: Some("master epoch 1, 1 peer".to_owned()),
            watchdog: true,
            stopping: false,
        };
        let text: Vec<String> = m.states().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["READY=1", "STATUS=master epoch 1, 1 peer", "WATCHDOG=1"]
        );
        assert!(Message::default().states().is_empty());
    }
}
