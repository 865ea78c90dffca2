//! The operator console: parses command lines and renders their answers.
//!
//! The same commands arrive on stdin and over TCP (docs/GUARANTEES.md, console). This module
//! turns a line into a [`Command`] and runs it against the core, producing
//! the answer lines and whether it succeeded; the loop adds the `OK`/`ERR`
//! framing for TCP clients and carries out a requested exit. It owns no
//! sockets and reads no clock: the caller passes [`Clock`].

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use crate::core::{JoinProgress, JournalEntry, Node, Skew};
use crate::protocol::{self, OptAddr, Role};
use crate::time::{Mono, Wall};

/// One console command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Connect(SocketAddr),
    IsMaster,
    Time,
    Count,
    List,
    Status,
    Ranking,
    Journal,
    /// `-w`: the connection becomes a watcher (src/watch.rs); run by the
    /// endpoint, not by [`execute`].
    Watch,
    Msg(String),
    Forget(SocketAddr),
    Quit,
    /// `-standby on|off`.
    Standby(bool),
    /// `-handover [IP PORT]`: to that member, or the best other eligible one.
    Handover(Option<SocketAddr>),
    /// `-priority N`.
    Priority(i32),
}

impl Command {
    /// Whether the command changes the cluster (docs/GUARANTEES.md, console): with a secret,
    /// only an authenticated TCP client may run it.
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Command::Connect(_)
                | Command::Msg(_)
                | Command::Forget(_)
                | Command::Quit
                | Command::Standby(_)
                | Command::Handover(_)
                | Command::Priority(_)
        )
    }
}

/// The answer to a blank line over TCP: every line a client sends gets
/// one.
pub const EMPTY_COMMAND: &str = "empty command";

/// Longest `-msg` text: its MSG line, with an authentication tag in front,
/// must still fit the peers' line limit.
pub const MAX_MSG_TEXT: usize = protocol::MAX_LINE - 64;

/// What running a command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub lines: Vec<String>,
    /// `Err(reason)` becomes `ERR <reason>` over TCP.
    pub result: Result<(), String>,
    /// The node must leave the cluster and exit once this reply is written.
    pub quit: bool,
    /// `-c` started joining this address: the answer is
    /// [`join_answer`], which over TCP waits for the first attempt.
    pub join: Option<SocketAddr>,
}

/// Maps the core's monotonic time to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Monotonic time now, as the core counts it.
    pub now: Mono,
    /// The wall clock at monotonic time 0.
    pub wall_at_zero: Wall,
}

impl Clock {
    /// The wall clock at monotonic time `at`.
    pub fn wall(&self, at: Mono) -> Wall {
        self.wall_at_zero.at(at)
    }
}

/// The answer to `-h`: every command, one a line.
pub const HELP: &[&str] = &[
    "-h                  this list of commands",
    "-c IP PORT          join that node's cluster; says how the first attempt went, retries until reached",
    "-m                  true if this node is the master, else false",
    "-t                  start time: ISO-8601 UTC, then unix milliseconds",
    "-cn                 number of live peer connections",
    "-cl                 one line per peer: address, start time, master, ms since last heard, clock skew",
    "-s                  status line: id role master epoch peers quorum started rule health",
    "-r                  ranking of the view, eligible members first under the rule, with deciding values, health and clock skew",
    "-j                  journal of the last 100 role changes",
    "-w                  watch: the status line, then each new journal line as it happens (no OK)",
    "-msg TEXT           send TEXT to every peer's console (control characters become U+FFFD)",
    "-forget IP PORT     stop retrying that lost member; if it comes back it joins anew",
    "-standby on|off     maintenance: stay in the mesh but never be master; a master hands over at once",
    "-handover [IP PORT] on the master: hand the role to that member, or the best other eligible one (--no-preempt)",
    "-priority N         set this node's priority now and tell every peer",
    "-q                  leave the cluster gracefully and exit",
];

/// Parses one console line. `Ok(None)` for a blank line: over TCP it is
/// answered [`EMPTY_COMMAND`], on stdin (where Enter alone is common) it
/// is ignored.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let no_args = |cmd: Command| {
        if rest.is_empty() {
            Ok(Some(cmd))
        } else {
            Err(format!("{word} takes no arguments"))
        }
    };
    match word {
        "-h" => no_args(Command::Help),
        "-m" => no_args(Command::IsMaster),
        "-t" => no_args(Command::Time),
        "-cn" => no_args(Command::Count),
        "-cl" => no_args(Command::List),
        "-s" => no_args(Command::Status),
        "-r" => no_args(Command::Ranking),
        "-j" => no_args(Command::Journal),
        "-w" => no_args(Command::Watch),
        "-q" => no_args(Command::Quit),
        "-msg" if rest.is_empty() => Err("usage: -msg TEXT".into()),
        "-msg" => {
            // What is sent, so the limit holds for the line on the wire.
            let text = protocol::printable(rest);
            if text.len() > MAX_MSG_TEXT {
                return Err(format!(
                    "message too long ({} bytes, at most {MAX_MSG_TEXT})",
                    text.len()
                ));
            }
            Ok(Some(Command::Msg(text)))
        }
        "-c" => parse_target(rest, "-c").map(|a| Some(Command::Connect(a))),
        "-forget" => parse_target(rest, "-forget").map(|a| Some(Command::Forget(a))),
        "-standby" => match rest {
            "on" => Ok(Some(Command::Standby(true))),
            "off" => Ok(Some(Command::Standby(false))),
            _ => Err("usage: -standby on|off".into()),
        },
        "-handover" if rest.is_empty() => Ok(Some(Command::Handover(None))),
        "-handover" => parse_target(rest, "-handover")
            .map(|a| Some(Command::Handover(Some(a))))
            .map_err(|e| {
                if e.starts_with("usage") {
                    "usage: -handover [IP PORT]".to_owned()
                } else {
                    e
                }
            }),
        "-priority" if rest.is_empty() => Err("usage: -priority N".into()),
        "-priority" => rest
            .parse::<i32>()
            .map(|n| Some(Command::Priority(n)))
            .map_err(|_| {
                format!(
                    "not a priority: {} (a whole number from {} to {})",
                    protocol::printable(rest),
                    i32::MIN,
                    i32::MAX
                )
            }),
        _ => Err("unknown command".into()),
    }
}

/// Runs a command against the node.
pub fn execute(cmd: Command, node: &mut Node, clock: Clock) -> Reply {
    let mut lines = Vec::new();
    let mut result = Ok(());
    let mut quit = false;
    let mut join = None;
    match cmd {
        Command::Help => lines.extend(HELP.iter().map(|s| s.to_string())),
        Command::Connect(addr) => match node.connect(addr, clock.now) {
            Ok(()) => join = Some(addr),
            Err(e) => result = Err(e.to_string()),
        },
        Command::IsMaster => lines.push((node.role() == Role::Master).to_string()),
        Command::Time => {
            let ms = node.config().started_unix_ms;
            lines.push(format!("{} {ms}", iso_ms(ms)));
        }
        Command::Count => lines.push(node.peers().count().to_string()),
        Command::List => {
            let master = node.master();
            for p in node.peers() {
                lines.push(format!(
                    "{} started={} master={} last_heard_ms={} skew={}",
                    p.hello.addr,
                    iso_ms(p.hello.started_unix_ms),
                    master == Some(p.hello.addr),
                    clock.now.since(p.last_heard),
                    OptSkew(p.skew)
                ));
            }
        }
        Command::Status => lines.push(status_line(node)),
        Command::Ranking => {
            let me = node.config().addr;
            let master = node.master();
            let rule = node.config().rule.clone();
            let ranking = node.ranking();
            for (i, c) in ranking.iter().enumerate() {
                let mut line = format!(
                    "{} {} {} skew={}",
                    i + 1,
                    c.addr,
                    rule.deciding_values(c),
                    OptSkew(node.skew(c.addr))
                );
                // Its place below the member above rests on start times
                // within the two clocks' skew.
                if i > 0 && node.start_doubt(&ranking[i - 1], c).is_some() {
                    line.push_str(" within-skew");
                }
                if master == Some(c.addr) {
                    line.push_str(" master");
                }
                if let Some(h) = node.health_of(c.addr) {
                    let _ = write!(line, " health={h}");
                }
                if c.addr == me {
                    line.push_str(" self");
                }
                lines.push(line);
            }
        }
        Command::Journal => lines.extend(node.journal().map(|e| journal_line(e, clock))),
        // The endpoint makes the connection a watcher; alone, the status
        // line is what a watcher is shown first.
        Command::Watch => lines.push(status_line(node)),
        Command::Msg(text) => {
            let n = node.send_text(&text);
            lines.push(format!("sent to {n} peer{}", if n == 1 { "" } else { "s" }));
        }
        Command::Forget(addr) => match node.forget(addr, clock.now) {
            Ok(()) => lines.push(format!("forgot {addr}")),
            Err(e) => result = Err(e.to_string()),
        },
        Command::Quit => {
            lines.push("leaving".into());
            quit = true;
        }
        Command::Standby(on) => {
            node.set_standby(on, clock.now);
            lines.push(format!("standby {}", if on { "on" } else { "off" }));
        }
        Command::Handover(to) => match node.handover(to, clock.now) {
            Ok(next) => lines.push(format!("handing over to {next}")),
            Err(e) => result = Err(e.to_string()),
        },
        Command::Priority(n) => {
            node.set_priority(n, clock.now);
            lines.push(format!("priority {n}"));
        }
    }
    Reply {
        lines,
        result,
        quit,
        join,
    }
}

/// One journal entry as `-j` and `-w` write it: time, epoch, old and new
/// role, master, cause.
pub fn journal_line(e: &JournalEntry, clock: Clock) -> String {
    format!(
        "{} epoch={} {}->{} master={} cause={}",
        iso_ms(clock.wall(e.at).ms()),
        e.epoch,
        e.from,
        e.to,
        OptAddr(e.master),
        e.cause
    )
}

/// The answer to `-c` for `addr` as its join stands: `connected to` once
/// it is a peer; `connecting to`, with why the first attempt got no
/// answer if it did not, while it is tried.
pub fn join_answer(addr: SocketAddr, progress: JoinProgress) -> Vec<String> {
    match progress {
        JoinProgress::Joined => vec![format!("connected to {addr}")],
        JoinProgress::Trying {
            failures: 1..,
            last_error: Some(reason),
        } => vec![
            format!("connecting to {addr}"),
            format!("first attempt failed: {reason}; retrying with backoff"),
        ],
        JoinProgress::Trying { .. } | JoinProgress::Ended => vec![format!("connecting to {addr}")],
    }
}

/// The fields of a `-s` line a program polling nodes looks at, read back
/// from the text: the other half of [`status_line`], for `bossd demo` and
/// the benches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine {
    /// The whole line, as the node wrote it.
    pub line: String,
    pub id: String,
    pub role: String,
    /// `None` for `master=-`.
    pub master: Option<String>,
    pub epoch: u64,
    pub peers: usize,
}

impl StatusLine {
    /// Reads a `-s` line; `Err` says which field is missing or wrong.
    pub fn parse(line: &str) -> Result<StatusLine, String> {
        let field = |key: &str| {
            line.split(' ')
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("no {key}= in the status line {line:?}"))
        };
        let number = |key: &str| -> Result<u64, String> {
            field(key)?
                .parse()
                .map_err(|_| format!("{key} is not a number in {line:?}"))
        };
        Ok(StatusLine {
            line: line.to_owned(),
            id: field("id")?.to_owned(),
            role: field("role")?.to_owned(),
            master: Some(field("master")?)
                .filter(|m| *m != "-")
                .map(str::to_owned),
            epoch: number("epoch")?,
            peers: number("peers")? as usize,
        })
    }
}

/// The `-s` line, exactly as docs/GUARANTEES.md, "The status line", gives it.
pub fn status_line(node: &Node) -> String {
    let s = node.status();
    let mut line = String::with_capacity(160);
    // Writing to a String cannot fail.
    let _ = write!(
        line,
        "id={} role={} master={} epoch={} peers={} quorum={} started={} rule={} health={}",
        s.id,
        s.role,
        OptAddr(s.master),
        s.epoch,
        s.peers,
        s.quorum,
        s.started_unix_ms,
        s.rule,
        s.health
    );
    line
}

/// A measured clock skew, or `-` before the first round trip.
struct OptSkew(Option<Skew>);

impl fmt::Display for OptSkew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => s.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The last millisecond RFC 3339 can write, 9999-12-31T23:59:59.999Z.
const LAST_ISO_MS: u64 = 253_402_300_800_000 - 1;

/// Unix milliseconds as ISO-8601 UTC with milliseconds. A time past the
/// year 9999 (a peer may announce any start time) shows as the last
/// millisecond of that year: the formatter has no later years, and must
/// not fail.
pub fn iso_ms(unix_ms: u64) -> String {
    let ms = unix_ms.min(LAST_ISO_MS);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `IP PORT` as typed after `-c` or `-forget` (`command`); IPv6 may come
/// with or without brackets.
fn parse_target(args: &str, command: &str) -> Result<SocketAddr, String> {
    let usage = || format!("usage: {command} IP PORT");
    let mut words = args.split_whitespace();
    let (Some(ip), Some(port), None) = (words.next(), words.next(), words.next()) else {
        return Err(usage());
    };
    let ip = crate::config::parse_ip(ip)?;
    let port: u16 = match port.parse() {
        Ok(0) => return Err("not a port: 0 (a node listens on 1 to 65535)".to_owned()),
        Ok(p) => p,
        Err(_) => return Err(format!("not a port: {port}")),
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines_read_back() {
        let s = StatusLine::parse(
            "id=127.0.0.1:7001 role=follower master=127.0.0.1:7000 epoch=3 peers=2 quorum=2 started=1 rule=oldest",
        )
        .unwrap();
        assert_eq!(
            (s.id.as_str(), s.role.as_str()),
            ("127.0.0.1:7001", "follower")
        );
        assert_eq!(s.master.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!((s.epoch, s.peers), (3, 2));
        let none = StatusLine::parse(
            "id=127.0.0.1:7001 role=none master=- epoch=0 peers=0 quorum=2 started=1 rule=oldest",
        )
        .unwrap();
        assert_eq!(none.master, None);
        assert!(StatusLine::parse("id=127.0.0.1:7001 role=none").is_err());
        assert!(StatusLine::parse("id=a role=b master=- epoch=x peers=0").is_err());
    }

    use super::*;

    // docs/GUARANTEES.md, console: the command table.
    #[test]
    fn parses_every_command() {
        assert_eq!(parse("-s"), Ok(Some(Command::Status)));
        assert_eq!(parse("  -m \r"), Ok(Some(Command::IsMaster)));
        assert_eq!(
            parse("-c 127.0.0.1 7000"),
            Ok(Some(Command::Connect("127.0.0.1:7000".parse().unwrap())))
        );
        assert_eq!(
            parse("-c ::1 7000"),
            Ok(Some(Command::Connect("[::1]:7000".parse().unwrap())))
        );
        assert_eq!(
            parse("-c [::1] 7000"),
            Ok(Some(Command::Connect("[::1]:7000".parse().unwrap())))
        );
        assert_eq!(
            parse("-msg hello  world"),
            Ok(Some(Command::Msg("hello  world".into())))
        );
        assert_eq!(parse(""), Ok(None));
    }

    // Issue 10: -forget takes an address as -c does, and is mutating.
    #[test]
    fn forget_parses_like_connect() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(
            parse("-forget 127.0.0.1 7001"),
            Ok(Some(Command::Forget(a)))
        );
        assert_eq!(
            parse("-forget [::1] 7001"),
            Ok(Some(Command::Forget("[::1]:7001".parse().unwrap())))
        );
        assert_eq!(
            parse("-forget 127.0.0.1"),
            Err("usage: -forget IP PORT".into())
        );
        assert_eq!(parse("-c 127.0.0.1"), Err("usage: -c IP PORT".into()));
        assert!(Command::Forget(a).is_mutating());
        assert!(HELP.iter().any(|l| l.starts_with("-forget IP PORT ")));
    }

    // docs/GUARANTEES.md, console: -h lists every command, its meaning in
    // one column, and each name it shows is one the console takes.
    #[test]
    fn help_lists_every_command_in_one_column() {
        const COLUMN: usize = 20;
        for line in HELP {
            let (name, meaning) = line.split_at(COLUMN);
            assert!(
                name.ends_with(' ') && !meaning.starts_with(' '),
                "{line:?}: the meaning starts at column {COLUMN}"
            );
            let word = name.split_whitespace().next().expect("a name");
            assert_ne!(parse(word), Err("unknown command".into()), "{word}");
        }
        for word in [
            "-h",
            "-c",
            "-m",
            "-t",
            "-cn",
            "-cl",
            "-s",
            "-r",
            "-j",
            "-w",
            "-msg",
            "-forget",
            "-standby",
            "-handover",
            "-priority",
            "-q",
        ] {
            assert!(
                HELP.iter().any(|l| l.starts_with(&format!("{word} "))),
                "-h lists {word}"
            );
        }
    }

    // Issue 10, defect 4: -msg sends its text with control characters
    // replaced, and the length limit holds for what is sent.
    #[test]
    fn msg_text_loses_its_control_characters() {
        assert_eq!(
            parse("-msg \u{1b}[31mred\u{7}\u{0}"),
            Ok(Some(Command::Msg("\u{fffd}[31mred\u{fffd}\u{fffd}".into())))
        );
        // Each ESC becomes three bytes: a text that fits raw may not.
        let escapes = "\u{1b}".repeat(MAX_MSG_TEXT / 2);
        assert!(parse(&format!("-msg {escapes}")).is_err());
        let fits = "\u{1b}".repeat(MAX_MSG_TEXT / 3);
        assert!(parse(&format!("-msg {fits}")).is_ok());
    }

    #[test]
    fn refuses_unknown_and_malformed() {
        assert_eq!(parse("-x"), Err("unknown command".into()));
        assert_eq!(parse("hello"), Err("unknown command".into()));
        assert!(parse("-c 127.0.0.1").is_err());
        assert!(parse("-c 127.0.0.1 99999").is_err());
        assert!(parse("-c nothost 7000").is_err());
        assert!(parse("-s extra").is_err());
        assert!(parse("-msg").is_err());
    }

    // Issue 11: `-c` says how the first attempt went.
    #[test]
    fn join_answers_follow_the_progress() {
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(
            join_answer(a, JoinProgress::Joined),
            ["connected to 127.0.0.1:7001"]
        );
        let refused = JoinProgress::Trying {
            failures: 1,
            last_error: Some("Connection refused (os error 111)"),
        };
        assert_eq!(
            join_answer(a, refused),
            [
                "connecting to 127.0.0.1:7001",
                "first attempt failed: Connection refused (os error 111); retrying with backoff"
            ]
        );
        for quiet in [
            JoinProgress::Trying {
                failures: 0,
                last_error: None,
            },
            JoinProgress::Trying {
                failures: 1,
                last_error: None,
            },
            JoinProgress::Ended,
        ] {
            assert_eq!(join_answer(a, quiet), ["connecting to 127.0.0.1:7001"]);
        }
    }

    #[test]
    fn iso_time_has_milliseconds() {
        assert_eq!(iso_ms(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
    }

    // Issue 10: a peer may announce any start time in its HELLO; one past
    // the year 9999 made the formatter fail, and `-cl` and `/status` panic.
    #[test]
    fn times_past_the_year_9999_do_not_panic() {
        assert_eq!(iso_ms(LAST_ISO_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso_ms(LAST_ISO_MS + 1), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
