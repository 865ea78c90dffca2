//! The journal: the last role changes, as `-j` lists them, `/status`
//! shows them and the hooks receive them.
//!
//! It owns the entry and the causes; the core records an entry in
//! `Node::set_state`, the one place role and epoch change. It never
//! decides anything and never grows past [`JOURNAL_LEN`].

use std::fmt;
use std::net::SocketAddr;

use crate::protocol::Role;
use crate::time::Mono;

/// Journal entries kept for `-j`: enough to read a bad afternoon, small
/// enough to answer in one screen.
pub const JOURNAL_LEN: usize = 100;

/// One role change, as `-j` lists it and the notify hook receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub at: Mono,
    pub epoch: u64,
    pub from: Role,
    pub to: Role,
    pub master: Option<SocketAddr>,
    pub cause: Cause,
}

/// Why the role changed; one word so it can travel in an environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Start,
    PeerJoined,
    PeerLost,
    PeerLeft,
    MasterLost,
    MasterLeft,
    QuorumLost,
    Outranked,
    Claim,
    Leave,
    /// This node's (or the master's) health check failed.
    CheckFailed,
    /// A failing member's check passes again.
    CheckPassed,
    /// A member went into or out of standby.
    Standby,
    /// The master handed its role over on purpose.
    Handover,
    /// A member's priority changed at run time.
    Priority,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Start => "start",
            Cause::PeerJoined => "peer-joined",
            Cause::PeerLost => "peer-lost",
            Cause::PeerLeft => "peer-left",
            Cause::MasterLost => "master-lost",
            Cause::MasterLeft => "master-left",
            Cause::QuorumLost => "quorum-lost",
            Cause::Outranked => "outranked",
            Cause::Claim => "claim",
            Cause::Leave => "leave",
            Cause::CheckFailed => "check-failed",
            Cause::CheckPassed => "check-passed",
            Cause::Standby => "standby",
            Cause::Handover => "handover",
            Cause::Priority => "priority",
        })
    }
}
