//! What the sans-IO parts of bossd have to say: every event the core, a
//! link or the endpoint reports, as a typed value with its level.
//!
//! It owns the events' names, levels and fields, in the order the log
//! lines show them (`docs/OPERATIONS.md`, "Reading the logs", lists
//! them). It never formats a line: [`crate::log`] makes the logfmt text,
//! and only when the level is enabled. Tests and the simulator match the
//! variants instead of parsing text back.

use std::fmt;
use std::net::SocketAddr;

use crate::auth::AuthError;
use crate::core::LinkId;
use crate::core::{Cause, MAX_EPOCH, MAX_INTRODUCED_PER_PEER, MAX_WANTED, StartDoubt};
use crate::log::{Level, Record};
use crate::protocol::{FrameError, Health, OptAddr, Role};

/// One event. Peers are named by their listening address where the event
/// is about a member, by the socket's address where it is about a
/// connection (`Option`: `-` when not known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    // The election.
    RoleChange {
        from: Role,
        to: Role,
        epoch: u64,
        master: Option<SocketAddr>,
        cause: Cause,
    },
    /// The epoch changed while the node has no role.
    EpochChange {
        epoch: u64,
        master: Option<SocketAddr>,
    },
    /// No epoch above `epoch` is left to claim.
    EpochExhausted {
        epoch: u64,
    },
    StartWithinSkew(StartDoubt),
    LeaseMarginLow {
        peer: SocketAddr,
        round_trip_ms: u64,
        heartbeat_ms: u64,
        timeout_ms: u64,
    },
    LeaseMarginRecovered {
        peer: SocketAddr,
        round_trip_ms: u64,
    },
    /// This node's health changed (a check, `-standby`).
    HealthChanged {
        health: Health,
        cause: Cause,
    },
    /// A peer's health or priority changed (its RANK).
    PeerRanked {
        peer: SocketAddr,
        health: Health,
        priority: i32,
    },
    /// This node, master of `epoch` until it stepped down, told its peers
    /// the role is free (RELEASE), naming `next`, `waited_ms` after.
    Released {
        epoch: u64,
        next: Option<SocketAddr>,
        waited_ms: u64,
    },
    /// The master `peer` stepped down; no claim is followed until its
    /// RELEASE or `MAX_YIELD_MS`.
    AwaitingRelease {
        peer: SocketAddr,
    },
    /// The operator set this node's priority.
    PriorityChanged {
        priority: i32,
    },

    // Peers.
    PeerJoined {
        peer: SocketAddr,
    },
    PeerLeft {
        peer: SocketAddr,
    },
    PeerLost {
        peer: SocketAddr,
    },
    PeerSilent {
        peer: SocketAddr,
        timeout_ms: u64,
    },
    /// This node's own loop woke `late_ms` after its deadline (SIGSTOP, a
    /// paused VM, CPU starvation): its peers get a fresh `timeout_ms`.
    Stalled {
        late_ms: u64,
        timeout_ms: u64,
    },
    PeerRestarted {
        peer: SocketAddr,
    },
    PeerRefused {
        peer: Option<SocketAddr>,
        reason: String,
    },
    PeerRenamed {
        dialed: SocketAddr,
        peer: SocketAddr,
    },
    PeerForgotten {
        peer: SocketAddr,
        why: Forgotten,
    },
    JoinDeclined {
        peer: SocketAddr,
        reason: String,
    },
    JoinFailed {
        peer: SocketAddr,
        attempts: u32,
        reason: String,
    },
    JoinReached {
        peer: SocketAddr,
        attempts: u32,
    },
    RefusedByPeer {
        peer: SocketAddr,
        reason: String,
    },
    DuplicateRefused {
        peer: SocketAddr,
    },
    DuplicateClosed {
        peer: SocketAddr,
    },
    RedirectSent {
        peer: SocketAddr,
        master: SocketAddr,
    },
    RedirectFollowed {
        peer: SocketAddr,
        master: SocketAddr,
    },
    DialFailed {
        peer: SocketAddr,
        reason: String,
    },
    GaveUp {
        peer: SocketAddr,
        attempts: u32,
    },
    MeetsDropped {
        peer: SocketAddr,
    },
    ViolatorRefused {
        peer: SocketAddr,
        reason: String,
    },
    HandshakeTimeout {
        link: LinkId,
    },
    ProtocolViolation {
        peer: Option<SocketAddr>,
        /// The message and its epoch, when an epoch was the fault.
        message: Option<(&'static str, u64)>,
        reason: String,
    },
    /// A peer line sent or received (`--log debug`), unsealed.
    Send {
        link: LinkId,
        line: String,
    },
    Recv {
        link: LinkId,
        line: String,
    },

    // Authentication.
    AuthFailed {
        peer: Option<SocketAddr>,
        reason: String,
    },
    AuthRefusedByPeer {
        peer: Option<SocketAddr>,
        reason: String,
    },
    LineAuthFailed {
        peer: Option<SocketAddr>,
        reason: AuthError,
    },
    Authenticated {
        peer: Option<SocketAddr>,
    },

    // Connections.
    BadLine {
        peer: Option<SocketAddr>,
        reason: FrameError,
    },
    SlowReader {
        peer: Option<SocketAddr>,
    },
    HandshakeStalled {
        peer: Option<SocketAddr>,
    },
    CloseTimeout {
        peer: Option<SocketAddr>,
    },
    ConnIdle {
        peer: Option<SocketAddr>,
        idle_ms: u64,
    },
    /// A graceful leave begins.
    Leaving(Leaver),
}

/// Why a lost member is no longer retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgotten {
    /// `-forget`.
    Operator,
    /// Not reached within `--reconnect-timeout`.
    ReconnectTimeout { timeout_ms: u64 },
    /// The reconnect set holds [`MAX_WANTED`] addresses already.
    Full,
}

/// Who made the node leave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leaver {
    /// SIGTERM or SIGINT, by name.
    Signal(String),
    /// `-q` from a TCP client.
    Client(Option<SocketAddr>),
    /// `-q` on standard input.
    Stdin,
}

impl Record for Event {
    fn level(&self) -> Level {
        use Event::*;
        match self {
            EpochExhausted { .. } => Level::Error,
            StartWithinSkew(_)
            | LeaseMarginLow { .. }
            | PeerSilent { .. }
            | Stalled { .. }
            | PeerRefused { .. }
            | JoinDeclined { .. }
            | JoinFailed { .. }
            | JoinReached { .. }
            | RefusedByPeer { .. }
            | MeetsDropped { .. }
            | ProtocolViolation { .. }
            | AuthFailed { .. }
            | AuthRefusedByPeer { .. }
            | LineAuthFailed { .. }
            | BadLine { .. }
            | SlowReader { .. }
            | HandshakeStalled { .. } => Level::Warn,
            PeerForgotten { why, .. } => match why {
                Forgotten::Full => Level::Warn,
                Forgotten::Operator | Forgotten::ReconnectTimeout { .. } => Level::Info,
            },
            RoleChange { .. }
            | HealthChanged { .. }
            | Released { .. }
            | PriorityChanged { .. }
            | LeaseMarginRecovered { .. }
            | PeerJoined { .. }
            | PeerLeft { .. }
            | PeerLost { .. }
            | PeerRestarted { .. }
            | DuplicateRefused { .. }
            | RedirectSent { .. }
            | RedirectFollowed { .. }
            | GaveUp { .. }
            | ConnIdle { .. }
            | Leaving(_) => Level::Info,
            EpochChange { .. }
            | PeerRanked { .. }
            | AwaitingRelease { .. }
            | PeerRenamed { .. }
            | DuplicateClosed { .. }
            | DialFailed { .. }
            | ViolatorRefused { .. }
            | HandshakeTimeout { .. }
            | Send { .. }
            | Recv { .. }
            | Authenticated { .. }
            | CloseTimeout { .. } => Level::Debug,
        }
    }

    fn name(&self) -> &'static str {
        use Event::*;
        match self {
            RoleChange { .. } => "role-change",
            EpochChange { .. } => "epoch-change",
            EpochExhausted { .. } => "epoch-exhausted",
            StartWithinSkew(_) => "start-within-skew",
            LeaseMarginLow { .. } => "lease-margin-low",
            LeaseMarginRecovered { .. } => "lease-margin-recovered",
            HealthChanged { .. } => "health-changed",
            PeerRanked { .. } => "peer-ranked",
            Released { .. } => "released",
            AwaitingRelease { .. } => "awaiting-release",
            PriorityChanged { .. } => "priority-changed",
            PeerJoined { .. } => "peer-joined",
            PeerLeft { .. } => "peer-left",
            PeerLost { .. } => "peer-lost",
            PeerSilent { .. } => "peer-silent",
            Stalled { .. } => "stalled",
            PeerRestarted { .. } => "peer-restarted",
            PeerRefused { .. } => "peer-refused",
            PeerRenamed { .. } => "peer-renamed",
            PeerForgotten { .. } => "peer-forgotten",
            JoinDeclined { .. } => "join-declined",
            JoinFailed { .. } => "join-failed",
            JoinReached { .. } => "join-reached",
            RefusedByPeer { .. } => "refused-by-peer",
            DuplicateRefused { .. } => "duplicate-refused",
            DuplicateClosed { .. } => "duplicate-closed",
            RedirectSent { .. } => "redirect-sent",
            RedirectFollowed { .. } => "redirect-followed",
            DialFailed { .. } => "dial-failed",
            GaveUp { .. } => "gave-up",
            MeetsDropped { .. } => "meets-dropped",
            ViolatorRefused { .. } => "violator-refused",
            HandshakeTimeout { .. } => "handshake-timeout",
            ProtocolViolation { .. } => "protocol-violation",
            Send { .. } => "send",
            Recv { .. } => "recv",
            AuthFailed { .. } => "auth-failed",
            AuthRefusedByPeer { .. } => "auth-refused-by-peer",
            LineAuthFailed { .. } => "line-auth-failed",
            Authenticated { .. } => "authenticated",
            BadLine { .. } => "bad-line",
            SlowReader { .. } => "slow-reader",
            HandshakeStalled { .. } => "handshake-stalled",
            CloseTimeout { .. } => "close-timeout",
            ConnIdle { .. } => "conn-idle",
            Leaving(_) => "leaving",
        }
    }

    fn fields(&self, field: &mut dyn FnMut(&'static str, &dyn fmt::Display)) {
        use Event::*;
        match self {
            RoleChange {
                from,
                to,
                epoch,
                master,
                cause,
            } => {
                field("from", from);
                field("to", to);
                field("epoch", epoch);
                field("master", &OptAddr(*master));
                field("cause", cause);
            }
            EpochChange { epoch, master } => {
                field("epoch", epoch);
                field("master", &OptAddr(*master));
            }
            HealthChanged { health, cause } => {
                field("health", health);
                field("cause", cause);
            }
            PeerRanked {
                peer,
                health,
                priority,
            } => {
                field("peer", peer);
                field("health", health);
                field("priority", priority);
            }
            Released {
                epoch,
                next,
                waited_ms,
            } => {
                field("epoch", epoch);
                field("next", &OptAddr(*next));
                field("waited_ms", waited_ms);
            }
            AwaitingRelease { peer } => field("peer", peer),
            PriorityChanged { priority } => field("priority", priority),
            EpochExhausted { epoch } => {
                field("epoch", epoch);
                field(
                    "reason",
                    &format_args!(
                        "no epoch above {epoch} can be claimed (the largest is {MAX_EPOCH}): this node stays without a role"
                    ),
                );
            }
            StartWithinSkew(d) => {
                field("criterion", &d.criterion);
                field("winner", &d.winner);
                field("loser", &d.loser);
                field("start_gap_ms", &d.start_gap_ms);
                field("skew", &d.skew);
                field(
                    "reason",
                    &format_args!(
                        "{} may not be the {} of the two: their start times differ by no more than their clocks",
                        d.winner, d.criterion
                    ),
                );
            }
            LeaseMarginLow {
                peer,
                round_trip_ms,
                heartbeat_ms,
                timeout_ms,
            } => {
                let margin_ms = timeout_ms.saturating_sub(*heartbeat_ms);
                let suggested_ms = heartbeat_ms.saturating_add(round_trip_ms.saturating_mul(2));
                field("peer", peer);
                field("round_trip_ms", round_trip_ms);
                field("heartbeat_ms", heartbeat_ms);
                field("timeout_ms", timeout_ms);
                field(
                    "reason",
                    &format_args!(
                        "the round trip takes more than half of the lease margin (timeout - heartbeat = {margin_ms} ms): a master may lose its lease between heartbeats; raise --timeout above {suggested_ms} ms (heartbeat + 2 x round trip) on every node"
                    ),
                );
            }
            LeaseMarginRecovered {
                peer,
                round_trip_ms,
            } => {
                field("peer", peer);
                field("round_trip_ms", round_trip_ms);
            }
            PeerJoined { peer }
            | PeerLeft { peer }
            | PeerLost { peer }
            | PeerRestarted { peer }
            | DuplicateRefused { peer }
            | DuplicateClosed { peer } => field("peer", peer),
            PeerSilent { peer, timeout_ms } => {
                field("peer", peer);
                field("timeout_ms", timeout_ms);
            }
            Stalled {
                late_ms,
                timeout_ms,
            } => {
                field("late_ms", late_ms);
                field("timeout_ms", timeout_ms);
                field(
                    "reason",
                    &"this node was held up; every peer gets a fresh timeout",
                );
            }
            PeerRenamed { dialed, peer } => {
                field("dialed", dialed);
                field("peer", peer);
            }
            PeerForgotten { peer, why } => {
                field("peer", peer);
                match why {
                    Forgotten::Operator => field("reason", &"forgotten by the operator (-forget)"),
                    Forgotten::ReconnectTimeout { timeout_ms } => field(
                        "reason",
                        &format_args!("not reached within --reconnect-timeout ({timeout_ms} ms)"),
                    ),
                    Forgotten::Full => field(
                        "reason",
                        &format_args!("this node already tries to reach {MAX_WANTED} addresses"),
                    ),
                }
            }
            JoinDeclined { peer, reason }
            | RefusedByPeer { peer, reason }
            | DialFailed { peer, reason }
            | ViolatorRefused { peer, reason } => {
                field("peer", peer);
                field("reason", reason);
            }
            JoinFailed {
                peer,
                attempts,
                reason,
            } => {
                field("peer", peer);
                field("attempts", attempts);
                field("reason", reason);
            }
            JoinReached { peer, attempts } | GaveUp { peer, attempts } => {
                field("peer", peer);
                field("attempts", attempts);
            }
            RedirectSent { peer, master } | RedirectFollowed { peer, master } => {
                field("peer", peer);
                field("master", master);
            }
            MeetsDropped { peer } => {
                field("peer", peer);
                field(
                    "reason",
                    &format_args!(
                        "more introductions than this node dials at once ({MAX_INTRODUCED_PER_PEER} from one peer, {MAX_WANTED} addresses in all); the rest are dropped"
                    ),
                );
            }
            HandshakeTimeout { link } => field("link", link),
            ProtocolViolation {
                peer,
                message,
                reason,
            } => {
                field("peer", &OptAddr(*peer));
                if let Some((name, epoch)) = message {
                    field("message", name);
                    field("epoch", epoch);
                }
                field("reason", reason);
            }
            Send { link, line } | Recv { link, line } => {
                field("link", link);
                field("line", line);
            }
            PeerRefused { peer, reason }
            | AuthFailed { peer, reason }
            | AuthRefusedByPeer { peer, reason } => {
                field("peer", &OptAddr(*peer));
                field("reason", reason);
            }
            LineAuthFailed { peer, reason } => {
                field("peer", &OptAddr(*peer));
                field(
                    "reason",
                    &format_args!("{reason} (injected, replayed or altered)"),
                );
            }
            BadLine { peer, reason } => {
                field("peer", &OptAddr(*peer));
                field("reason", reason);
            }
            Authenticated { peer }
            | SlowReader { peer }
            | HandshakeStalled { peer }
            | CloseTimeout { peer } => field("peer", &OptAddr(*peer)),
            ConnIdle { peer, idle_ms } => {
                field("peer", &OptAddr(*peer));
                field("idle_ms", idle_ms);
            }
            Leaving(by) => match by {
                Leaver::Signal(name) => {
                    field("cause", &"signal");
                    field("signal", name);
                }
                Leaver::Client(peer) => {
                    field("cause", &"console");
                    field("peer", &OptAddr(*peer));
                }
                Leaver::Stdin => {
                    field("cause", &"console");
                    field("peer", &"stdin");
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // docs/OPERATIONS.md: the fields of an event keep their order.
    #[test]
    fn events_format_as_their_log_lines() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let text = crate::log::format(&Event::RoleChange {
            from: Role::None,
            to: Role::Follower,
            epoch: 1,
            master: Some(a),
            cause: Cause::Claim,
        });
        assert_eq!(
            text,
            "event=role-change from=none to=follower epoch=1 master=127.0.0.1:7001 cause=claim"
        );
        let v = crate::log::format(&Event::ProtocolViolation {
            peer: None,
            message: Some(("STATE", 9)),
            reason: "a b".into(),
        });
        assert_eq!(
            v,
            r#"event=protocol-violation peer=- message=STATE epoch=9 reason="a b""#
        );
        assert_eq!(
            crate::log::format(&Event::Leaving(Leaver::Stdin)),
            "event=leaving cause=console peer=stdin"
        );
    }
}
