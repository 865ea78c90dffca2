//! The peer wire protocol: line framing, the nom decoder and the encoder.
//!
//! Every peer message is one line of space-separated ASCII words ending in
//! `\n`; `docs/PROTOCOL.md` gives the grammar. This module owns the mapping
//! between lines and [`Message`] values in both directions. It never touches
//! sockets: the loop hands it bytes and takes back lines.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till1, take_while};
use nom::character::complete::{char, i32 as dec_i32, u8 as dec_u8, u64 as dec_u64};
use nom::combinator::{all_consuming, map, map_res, opt, rest, value, verify};
use nom::sequence::preceded;
use nom::{IResult, Parser};

use crate::rule::Rule;

/// The protocol version this build speaks, sent in every HELLO.
pub const VERSION: &str = "bossd/4";

/// Longest line accepted from anyone, peer or console client, newline
/// excluded. A HELLO is under 200 bytes; 4096 leaves room for `-msg` text
/// while keeping a hostile sender from growing a buffer without bound.
pub const MAX_LINE: usize = 4096;

/// How a connection came to be, sent in HELLO so the receiver knows whether
/// it may redirect the caller to the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// An operator's `--join` or `-c`: a follower answers with the master.
    Join,
    /// An introduction inside a group (full mesh): always accepted.
    Mesh,
}

/// The role a node reports, on the wire and in the status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Master,
    Follower,
    None,
}

/// Whether a member may be master: `Standby` (the operator parked it)
/// wins over `Failing` (its health check fails); only `Ok` is eligible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    Ok,
    Failing,
    Standby,
}

impl Health {
    /// The health of a node in standby or not, whose check fails or not.
    pub fn of(standby: bool, failing: bool) -> Health {
        match (standby, failing) {
            (true, _) => Health::Standby,
            (false, true) => Health::Failing,
            (false, false) => Health::Ok,
        }
    }

    /// Only a healthy member outside standby may be master.
    pub fn eligible(self) -> bool {
        self == Health::Ok
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Ok => "ok",
            Health::Failing => "failing",
            Health::Standby => "standby",
        })
    }
}

/// Who a node is and the settings that must match across the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub kind: LinkKind,
    /// The address the sender listens on: its identity in the cluster.
    pub addr: SocketAddr,
    pub started_unix_ms: u64,
    /// Random per process, so a restart at the same address is a new node.
    pub instance: u64,
    pub priority: i32,
    pub quorum: u32,
    pub strict: bool,
    pub rule: Rule,
    /// `--no-preempt`: must match across the cluster.
    pub no_preempt: bool,
    /// `--preempt-delay`: must match across the cluster.
    pub preempt_delay_ms: u64,
    /// The sender's health when it sent this.
    pub health: Health,
}

/// What a node believes: its role and the last epoch it accepted together
/// with that epoch's master. The master's STATE is its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub role: Role,
    pub epoch: u64,
    /// The master of `epoch` as the sender knows it, if any.
    pub epoch_master: Option<SocketAddr>,
}

/// One peer protocol line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    /// The handshake is refused; the connection closes after it.
    Refuse(String),
    /// Join the master at this address instead; the connection closes.
    Redirect(SocketAddr),
    State(State),
    /// Connect to this member of the group (full mesh).
    Meet(SocketAddr),
    /// Operator text for every peer's console.
    Msg(String),
    /// The sender leaves the cluster for good.
    Leave,
    /// Heartbeat, sent once per heartbeat to the peers that need one,
    /// with a digest of the sender's view so members can notice a missing
    /// link, and `fresh_ms`: how long ago the sender last heard the peer
    /// of its view it heard least lately (0 with no peers), which lets a
    /// master vouch for its view to followers whose view is the same. It
    /// answers nothing and is answered by nothing: once the sender has
    /// heard a heartbeat of the peer's, it echoes the latest one (`echo`),
    /// as TCP timestamps echo TSval, which is the acknowledgement and the
    /// round trip for the clock skew.
    Ping {
        seq: u64,
        view: u64,
        fresh_ms: u64,
        echo: Option<Echo>,
    },
    /// What ranks the sender that can change while it runs: its health
    /// and its priority (`-standby`, a check, `-priority`). Sent to every
    /// peer when either changes.
    Rank {
        health: Health,
        priority: i32,
    },
    /// The sender, master of `epoch` until it stepped down, has run its
    /// hook for leaving the role: the role is free, and `next` is the
    /// member it hands it to (guarantee 11). Until this arrives (or
    /// `MAX_YIELD_MS` passes) its followers claim nothing.
    Release {
        epoch: u64,
        next: Option<SocketAddr>,
    },
}

/// The peer's latest heartbeat, echoed in ours: its number, how long we
/// held it before this heartbeat left (ms), and our wall clock (unix ms)
/// when it left. With its own send time of `seq` and our receive time, the
/// peer knows we heard it (the strict lease counts from that send), the
/// round trip (less `held_ms`), and the offset between the two clocks
/// (NTP-style; see `core::Skew`): our clock read `stamp_unix_ms -
/// held_ms` when its heartbeat arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    pub seq: u64,
    pub held_ms: u64,
    pub stamp_unix_ms: u64,
}

impl Message {
    /// The first word of the message's line.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "HELLO",
            Message::Refuse(_) => "REFUSE",
            Message::Redirect(_) => "REDIRECT",
            Message::State(_) => "STATE",
            Message::Meet(_) => "MEET",
            Message::Msg(_) => "MSG",
            Message::Leave => "LEAVE",
            Message::Ping { .. } => "PING",
            Message::Rank { .. } => "RANK",
            Message::Release { .. } => "RELEASE",
        }
    }
}

/// Why a line is not a valid peer message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The first word names no message this version knows.
    UnknownMessage(String),
    /// A HELLO from a different protocol version.
    Version(String),
    /// The words after the message name do not fit its grammar.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownMessage(w) => write!(f, "unknown message {w:?}"),
            DecodeError::Version(v) => {
                write!(f, "unsupported protocol version {v:?} (this is {VERSION})")
            }
            DecodeError::Malformed(m) => write!(f, "malformed {m} line"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one line, without its newline, into a message.
pub fn decode(line: &str) -> Result<Message, DecodeError> {
    let (name, args) = match line.split_once(' ') {
        Some((name, args)) => (name, Some(args)),
        None => (line, None),
    };
    let args = args.unwrap_or("");
    let parsed: Option<Message> = match name {
        "HELLO" => return decode_hello(args),
        "REFUSE" => Some(Message::Refuse(args.to_owned())),
        "REDIRECT" => all_consuming(addr)
            .parse(args)
            .ok()
            .map(|(_, a)| Message::Redirect(a)),
        "STATE" => all_consuming(state)
            .parse(args)
            .ok()
            .map(|(_, s)| Message::State(s)),
        "MEET" => all_consuming(addr)
            .parse(args)
            .ok()
            .map(|(_, a)| Message::Meet(a)),
        "MSG" => Some(Message::Msg(args.to_owned())),
        "LEAVE" if args.is_empty() => Some(Message::Leave),
        "LEAVE" => None,
        "PING" => all_consuming(ping)
            .parse(args)
            .ok()
            .map(|(_, (seq, view, fresh_ms, echo))| Message::Ping {
                seq,
                view,
                fresh_ms,
                echo,
            }),
        "RANK" => all_consuming(rank)
            .parse(args)
            .ok()
            .map(|(_, (health, priority))| Message::Rank { health, priority }),
        "RELEASE" => all_consuming(release)
            .parse(args)
            .ok()
            .map(|(_, (epoch, next))| Message::Release { epoch, next }),
        _ => return Err(DecodeError::UnknownMessage(truncate(name, 32).to_owned())),
    };
    parsed.ok_or(DecodeError::Malformed(message_name(name)))
}

/// Encodes a message as one line, newline included.
pub fn encode(msg: &Message, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = match msg {
        Message::Hello(h) => writeln!(
            out,
            "HELLO {VERSION} {} {} {} {:016x} {} {} {} {} {} {} {}",
            match h.kind {
                LinkKind::Join => "join",
                LinkKind::Mesh => "mesh",
            },
            h.addr,
            h.started_unix_ms,
            h.instance,
            h.priority,
            h.quorum,
            u8::from(h.strict),
            h.rule,
            u8::from(h.no_preempt),
            h.preempt_delay_ms,
            h.health,
        ),
        Message::Refuse(reason) => writeln!(out, "REFUSE {}", one_line(reason)),
        Message::Redirect(a) => writeln!(out, "REDIRECT {a}"),
        Message::State(s) => writeln!(
            out,
            "STATE {} {} {}",
            s.role,
            s.epoch,
            OptAddr(s.epoch_master)
        ),
        Message::Meet(a) => writeln!(out, "MEET {a}"),
        Message::Msg(text) => writeln!(out, "MSG {}", one_line(text)),
        Message::Leave => writeln!(out, "LEAVE"),
        Message::Ping {
            seq,
            view,
            fresh_ms,
            echo: None,
        } => writeln!(out, "PING {seq} {view:016x} {fresh_ms}"),
        Message::Ping {
            seq,
            view,
            fresh_ms,
            echo: Some(e),
        } => writeln!(
            out,
            "PING {seq} {view:016x} {fresh_ms} {} {} {}",
            e.seq, e.held_ms, e.stamp_unix_ms
        ),
        Message::Rank { health, priority } => writeln!(out, "RANK {health} {priority}"),
        Message::Release { epoch, next } => {
            writeln!(out, "RELEASE {epoch} {}", OptAddr(*next))
        }
    };
}

/// Encodes a message into a fresh line.
pub fn encode_line(msg: &Message) -> String {
    let mut s = String::new();
    encode(msg, &mut s);
    s
}

/// An address or `-` for none, as written in STATE and the status line.
pub struct OptAddr(pub Option<SocketAddr>);

impl fmt::Display for OptAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Follower => "follower",
            Role::None => "none",
        })
    }
}

/// Buffer capacity a [`LineBuffer`] keeps between bursts.
const KEEP_CAPACITY: usize = 1024;

/// Splits a byte stream into lines no longer than [`MAX_LINE`].
///
/// An incomplete line is an expected state: bytes wait here until their
/// newline arrives. The buffer never holds more than one line's worth.
#[derive(Default, Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Where the bytes not yet returned as lines begin. Lines are taken by
    /// moving this offset; the consumed front is dropped on the next
    /// `extend`, so a read full of short lines costs one pass, not one
    /// copy of the rest per line.
    start: usize,
    /// How much of `buf[start..]` is already known to hold no newline.
    scanned: usize,
}

/// Why the byte stream cannot be split into lines any further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    TooLong,
    NotUtf8,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::TooLong => "line too long",
            FrameError::NotUtf8 => "line is not UTF-8",
        })
    }
}

impl LineBuffer {
    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // One full read grows the buffer to 16 KiB; an idle link needs room
        // for a few heartbeat lines, so a burst's capacity is not kept.
        let needed = self.buf.len() + bytes.len();
        if self.buf.capacity() > KEEP_CAPACITY && needed <= KEEP_CAPACITY {
            self.buf.shrink_to(KEEP_CAPACITY);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned as lines.
    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Drops the bytes up to and including the next `\n`, for a reader
    /// that goes on after a line too long whose end has not come yet
    /// (stdin): true once that newline was found; false if it has not
    /// arrived, and then what is pending, all of that line, is dropped.
    pub fn skip_line(&mut self) -> bool {
        let pending = &self.buf[self.start..];
        let found = pending.iter().position(|&b| b == b'\n');
        match found {
            Some(pos) => self.start += pos + 1,
            None => self.start = self.buf.len(),
        }
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        found.is_some()
    }

    /// Takes the next complete line, without `\n` or a trailing `\r`.
    /// `Ok(None)` means more bytes are needed.
    pub fn next_line(&mut self) -> Result<Option<String>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(pos) = pending[self.scanned..].iter().position(|&b| b == b'\n') else {
            self.scanned = pending.len();
            // A line at the limit may still be waiting for the `\n` after
            // its `\r`: the answer must not depend on where TCP split it.
            let longest = match pending.last() {
                Some(b'\r') => MAX_LINE + 1,
                _ => MAX_LINE,
            };
            return if pending.len() > longest {
                Err(FrameError::TooLong)
            } else {
                Ok(None)
            };
        };
        let end = self.scanned + pos;
        let mut line = &pending[..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let result = if line.len() > MAX_LINE {
            Err(FrameError::TooLong)
        } else {
            std::str::from_utf8(line)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| FrameError::NotUtf8)
        };
        self.start += end + 1;
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        result
    }

    /// Bytes received but not yet returned as a line.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

fn decode_hello(args: &str) -> Result<Message, DecodeError> {
    let (version, fields) = args.split_once(' ').unwrap_or((args, ""));
    if version != VERSION {
        return Err(DecodeError::Version(truncate(version, 32).to_owned()));
    }
    all_consuming(hello_fields)
        .parse(fields)
        .map(|(_, h)| Message::Hello(h))
        .map_err(|_| DecodeError::Malformed("HELLO"))
}

fn hello_fields(i: &str) -> IResult<&str, Hello> {
    let kind = alt((
        value(LinkKind::Join, tag("join")),
        value(LinkKind::Mesh, tag("mesh")),
    ));
    let strict = map(verify(dec_u8, |&b| b <= 1), |b| b == 1);
    let no_preempt = map(verify(dec_u8, |&b| b <= 1), |b| b == 1);
    let rule = map_res(take_till1(|c| c == ' '), |s: &str| s.parse::<Rule>());
    map(
        (
            kind,
            preceded(sp, addr),
            preceded(sp, dec_u64),
            preceded(sp, hex16),
            preceded(sp, dec_i32),
            preceded(sp, map_res(dec_u64, u32::try_from)),
            preceded(sp, strict),
            preceded(sp, rule),
            preceded(sp, no_preempt),
            preceded(sp, dec_u64),
            preceded(sp, health),
        ),
        |(
            kind,
            addr,
            started_unix_ms,
            instance,
            priority,
            quorum,
            strict,
            rule,
            no_preempt,
            preempt_delay_ms,
            health,
        )| Hello {
            kind,
            addr,
            started_unix_ms,
            instance,
            priority,
            quorum,
            strict,
            rule,
            no_preempt,
            preempt_delay_ms,
            health,
        },
    )
    .parse(i)
}

fn health(i: &str) -> IResult<&str, Health> {
    alt((
        value(Health::Ok, tag("ok")),
        value(Health::Failing, tag("failing")),
        value(Health::Standby, tag("standby")),
    ))
    .parse(i)
}

/// `health priority`.
fn rank(i: &str) -> IResult<&str, (Health, i32)> {
    (health, preceded(sp, dec_i32)).parse(i)
}

/// `epoch next-or-dash`.
fn release(i: &str) -> IResult<&str, (u64, Option<SocketAddr>)> {
    (dec_u64, preceded(sp, opt_addr)).parse(i)
}

fn state(i: &str) -> IResult<&str, State> {
    let role = alt((
        value(Role::Master, tag("master")),
        value(Role::Follower, tag("follower")),
        value(Role::None, tag("none")),
    ));
    map(
        (role, preceded(sp, dec_u64), preceded(sp, opt_addr)),
        |(role, epoch, epoch_master)| State {
            role,
            epoch,
            epoch_master,
        },
    )
    .parse(i)
}

/// `seq view fresh` and, once the sender heard the peer, `echo held stamp`.
fn ping(i: &str) -> IResult<&str, (u64, u64, u64, Option<Echo>)> {
    let echo = map(
        (
            preceded(sp, dec_u64),
            preceded(sp, dec_u64),
            preceded(sp, dec_u64),
        ),
        |(seq, held_ms, stamp_unix_ms)| Echo {
            seq,
            held_ms,
            stamp_unix_ms,
        },
    );
    (
        dec_u64,
        preceded(sp, hex16),
        preceded(sp, dec_u64),
        opt(echo),
    )
        .parse(i)
}

/// Exactly 16 hex digits: instance ids and view digests. Written by hand:
/// nom's `take_while_m_n` made a PING's decode twice as slow (profiled in
/// docs/BENCHMARKS.md).
fn hex16(i: &str) -> IResult<&str, u64> {
    let fail = || nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::HexDigit));
    let digits = i.bytes().take(16).take_while(u8::is_ascii_hexdigit).count();
    if digits < 16 {
        return Err(fail());
    }
    // Sixteen ASCII hex digits: a char boundary, and at most u64::MAX.
    let (hex, rest) = i.split_at(16);
    u64::from_str_radix(hex, 16)
        .map(|v| (rest, v))
        .map_err(|_| fail())
}

/// Exactly one space separates words.
fn sp(i: &str) -> IResult<&str, char> {
    char(' ').parse(i)
}

fn opt_addr(i: &str) -> IResult<&str, Option<SocketAddr>> {
    alt((value(None, (char('-'), rest_is_empty)), map(addr, Some))).parse(i)
}

fn rest_is_empty(i: &str) -> IResult<&str, ()> {
    map(verify(rest, |s: &str| s.is_empty()), |_| ()).parse(i)
}

/// `ip:port` or `[v6]:port`, as `SocketAddr` writes them.
fn addr(i: &str) -> IResult<&str, SocketAddr> {
    map_res(take_while(|c: char| c != ' '), str::parse).parse(i)
}

fn message_name(name: &str) -> &'static str {
    match name {
        "REDIRECT" => "REDIRECT",
        "STATE" => "STATE",
        "MEET" => "MEET",
        "LEAVE" => "LEAVE",
        "PING" => "PING",
        "RANK" => "RANK",
        "RELEASE" => "RELEASE",
        _ => "message",
    }
}

/// What stands in `-msg` text for a character that could act on a
/// terminal: U+FFFD, the Unicode replacement character.
pub const REPLACEMENT: char = '\u{FFFD}';

/// `text` with every character that could act on a terminal replaced by
/// [`REPLACEMENT`]: the C0 controls (NUL, BEL, TAB, LF, CR, ESC, ...), DEL,
/// the C1 controls (U+0080 to U+009F, 8-bit CSI and OSC among them), the
/// line and paragraph separators and the bidirectional controls that
/// reorder how a line is shown. So a peer's `-msg` text cannot clear or
/// recolour an operator's screen, move its cursor, ring its bell or forge
/// the `message from ...` prefix of another line. Applied to MSG text both
/// when it is sent and when it is received (a raw peer sends what it likes).
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(
                c,
                '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            );
            if c.is_control() || bidi || matches!(c, '\u{2028}' | '\u{2029}') {
                REPLACEMENT
            } else {
                c
            }
        })
        .collect()
}

/// Replaces line breaks so free text can never end a line early.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 10, defect 4: what could act on a terminal becomes U+FFFD;
    // everything else, other scripts and emoji included, stays.
    #[test]
    fn printable_replaces_what_commands_a_terminal() {
        for c in [
            '\0', '\u{7}', '\u{8}', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{80}', '\u{9b}',
            '\u{9f}', '\u{202e}', '\u{2066}', '\u{200f}', '\u{2028}', '\u{61c}',
        ] {
            assert_eq!(printable(&format!("a{c}b")), "a\u{fffd}b", "{:?}", c);
        }
        let kept = "grüße, 東京, 🙂, a ~ b";
        assert_eq!(printable(kept), kept);
        assert_eq!(printable(""), "");
    }

    fn hello() -> Hello {
        Hello {
            kind: LinkKind::Join,
            addr: "127.0.0.1:7000".parse().unwrap(),
            started_unix_ms: 1_764_000_000_123,
            instance: 0xdead_beef_0000_0001,
            priority: -5,
            quorum: 2,
            strict: false,
            rule: "priority,oldest".parse().unwrap(),
            no_preempt: true,
            preempt_delay_ms: 250,
            health: Health::Failing,
        }
    }

    #[test]
    fn hello_round_trips_and_reads_like_the_docs() {
        let line = encode_line(&Message::Hello(hello()));
        assert_eq!(
            line,
            "HELLO bossd/4 join 127.0.0.1:7000 1764000000123 deadbeef00000001 -5 2 0 priority,oldest 1 250 failing\n"
        );
        assert_eq!(decode(line.trim_end()), Ok(Message::Hello(hello())));
    }

    // docs/PROTOCOL.md: health, priority and the release of the role.
    #[test]
    fn rank_and_release_read_like_the_docs() {
        for s in [
            "RANK ok 0",
            "RANK standby -7",
            "RANK failing 2147483647",
            "RELEASE 7 127.0.0.1:7001",
            "RELEASE 12 -",
            "RELEASE 3 [::1]:7001",
        ] {
            let m = decode(s).unwrap();
            assert_eq!(encode_line(&m).trim_end(), s);
        }
        assert_eq!(
            decode("RANK standby 3"),
            Ok(Message::Rank {
                health: Health::Standby,
                priority: 3
            })
        );
        for bad in [
            "RANK",
            "RANK ok",
            "RANK sick 1",
            "RANK ok 2147483648",
            "RANK ok 1 2",
            "RELEASE",
            "RELEASE 7",
            "RELEASE -1 -",
            "RELEASE 7 nowhere",
            "RELEASE 7 - -",
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    // docs/PROTOCOL.md: a first heartbeat, and one echoing the peer's.
    #[test]
    fn pings_read_like_the_docs() {
        for s in [
            "PING 2 73d88d856a78f3de 0",
            "PING 3 73d88d856a78f3de 104 41 37 1795551169301",
        ] {
            let m = decode(s).unwrap();
            assert_eq!(encode_line(&m).trim_end(), s);
        }
        assert_eq!(
            decode("PING 3 73d88d856a78f3de 104 41 37 1795551169301"),
            Ok(Message::Ping {
                seq: 3,
                view: 0x73d8_8d85_6a78_f3de,
                fresh_ms: 104,
                echo: Some(Echo {
                    seq: 41,
                    held_ms: 37,
                    stamp_unix_ms: 1_795_551_169_301
                })
            })
        );
        for bad in [
            "PING 3 73d88d856a78f3de",
            "PING 3 73d88d856a78f3de -1",
            "PING 3 73d88d856a78f3de 104 41",
            "PING 3 73d88d856a78f3de 104 41 37",
            "PING 3 73d88d856a78f3de 104 41 37 -1",
            "PING 3 73d88d856a78f3de 104 41 37 1 2",
            "PING 3 73d88d856a78f3de 18446744073709551616",
            "PONG 2 1795551169301",
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_with_and_without_master() {
        for s in [
            "STATE master 3 127.0.0.1:7000",
            "STATE none 0 -",
            "STATE follower 12 [::1]:7001",
        ] {
            let m = decode(s).unwrap();
            assert_eq!(encode_line(&m).trim_end(), s);
        }
    }

    #[test]
    fn digests_are_exactly_sixteen_hex_digits() {
        assert_eq!(
            decode("PING 7 0123456789ABCdef 0"),
            Ok(Message::Ping {
                seq: 7,
                view: 0x0123_4567_89ab_cdef,
                fresh_ms: 0,
                echo: None,
            })
        );
        for bad in [
            "PING 7 0123456789abcde 0",
            "PING 7 0123456789abcdef0 0",
            "PING 7 +123456789abcdef 0",
            "PING 7 0123456789abcdeg 0",
            "PING 7 0123456789abcdé 0",
            "PING 7  0",
            "PING 7 ",
        ] {
            assert_eq!(decode(bad), Err(DecodeError::Malformed("PING")), "{bad}");
        }
    }

    #[test]
    fn framing_handles_partial_and_crlf_lines() {
        let mut b = LineBuffer::default();
        b.extend(b"LEA");
        assert_eq!(b.next_line(), Ok(None));
        b.extend(b"VE\r\nMEET 1.2.3.4:5\nST");
        assert_eq!(b.next_line(), Ok(Some("LEAVE".into())));
        assert_eq!(b.next_line(), Ok(Some("MEET 1.2.3.4:5".into())));
        assert_eq!(b.next_line(), Ok(None));
        assert_eq!(b.pending(), 2);
    }

    #[test]
    fn framing_takes_many_lines_from_one_read() {
        let mut b = LineBuffer::default();
        b.extend(b"PONG 1\nPONG 2\r\nPONG 3\nPO");
        assert_eq!(b.next_line(), Ok(Some("PONG 1".into())));
        assert_eq!(b.pending(), 17);
        assert_eq!(b.next_line(), Ok(Some("PONG 2".into())));
        assert_eq!(b.next_line(), Ok(Some("PONG 3".into())));
        assert_eq!(b.next_line(), Ok(None));
        assert_eq!(b.pending(), 2);
        b.extend(b"NG 4\n");
        assert_eq!(b.next_line(), Ok(Some("PONG 4".into())));
        assert_eq!(b.pending(), 0);
        // Lines already taken do not count towards the next one's length.
        b.extend(&vec![b'a'; MAX_LINE]);
        assert_eq!(b.next_line(), Ok(None));
        b.extend(b"\n");
        assert_eq!(b.next_line().unwrap().unwrap().len(), MAX_LINE);
    }

    #[test]
    fn framing_rejects_long_lines_and_bad_utf8() {
        let mut b = LineBuffer::default();
        b.extend(&vec![b'a'; MAX_LINE + 1]);
        assert_eq!(b.next_line(), Err(FrameError::TooLong));
        let mut b = LineBuffer::default();
        b.extend(b"\xff\xfe\n");
        assert_eq!(b.next_line(), Err(FrameError::NotUtf8));
        let mut b = LineBuffer::default();
        b.extend(&vec![b'a'; MAX_LINE]);
        b.extend(b"\n");
        assert_eq!(b.next_line().unwrap().unwrap().len(), MAX_LINE);
    }

    // Stdin reads on after a bad line: a complete one is taken by the
    // error, and skip_line drops the rest of one too long, however split.
    #[test]
    fn framing_goes_on_after_a_bad_line() {
        let mut b = LineBuffer::default();
        b.extend(b"\xff\n-m\n");
        assert_eq!(b.next_line(), Err(FrameError::NotUtf8));
        assert_eq!(b.next_line(), Ok(Some("-m".to_owned())));
        let mut b = LineBuffer::default();
        b.extend(&vec![b'a'; MAX_LINE + 1]);
        assert_eq!(b.next_line(), Err(FrameError::TooLong));
        assert_eq!(b.pending_len(), MAX_LINE + 1, "an open line is not taken");
        assert!(!b.skip_line());
        assert_eq!(b.pending_len(), 0);
        b.extend(b"aaa");
        assert!(!b.skip_line());
        b.extend(b"a\n-s");
        assert!(b.skip_line());
        assert_eq!(b.next_line(), Ok(None));
        b.extend(b"\n");
        assert_eq!(b.next_line(), Ok(Some("-s".to_owned())));
    }

    // Found by tests/codec.rs framing_ignores_chunk_boundaries: a line of
    // MAX_LINE bytes ending in CR LF was refused when the LF came in a later
    // read than the CR, and accepted when both came together.
    #[test]
    fn framing_at_the_limit_ignores_where_crlf_is_split() {
        for body in [
            vec![b'a'; MAX_LINE],
            [vec![b'a'; MAX_LINE - 1], vec![b'\r']].concat(),
        ] {
            let mut b = LineBuffer::default();
            b.extend(&body);
            b.extend(b"\r");
            assert_eq!(b.next_line(), Ok(None));
            b.extend(b"\n");
            assert_eq!(b.next_line().unwrap().unwrap().len(), MAX_LINE);
        }
        let mut b = LineBuffer::default();
        b.extend(&vec![b'a'; MAX_LINE]);
        b.extend(b"\r\r");
        assert_eq!(b.next_line(), Err(FrameError::TooLong));
    }
}
