//! The command line: `bossd IP PORT [OPTIONS]`, `bossd ctl IP PORT COMMAND...`
//! and `bossd demo [N]`.
//!
//! Parsing and checking live here; nothing here opens a socket. Every
//! usage mistake becomes one clear line and exit code 2 (docs/GUARANTEES.md, running bossd), which
//! `main` applies.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser};

use crate::core::check::MAX_STREAK;
use crate::log::Level;
use crate::rule::Rule;

/// `--reconnect-timeout`'s default: one day, in ms.
pub const DEFAULT_RECONNECT_TIMEOUT_MS: u64 = 86_400_000;

/// `--check-interval`'s default: once a second, as keepalived's
/// `vrrp_script` and Consul's checks are commonly run.
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 1_000;

/// The shortest `--check-interval`: a process started more often than
/// every 10 ms costs a core for the forks alone.
pub const MIN_CHECK_INTERVAL_MS: u64 = 10;

/// The longest `--check-interval` and `--check-timeout`: one day.
pub const MAX_CHECK_MS: u64 = 86_400_000;
/// The longest `--preempt-delay`: one day, as for the check's times; a
/// longer one is `--no-preempt` in effect, and that flag says so.
pub const MAX_PREEMPT_DELAY_MS: u64 = 86_400_000;

/// The options that only tune `--check`, by clap id and by flag: given
/// without it they are a usage error naming both, not a silent no-op.
const CHECK_ONLY: [(&str, &str); 4] = [
    ("check_interval", "--check-interval"),
    ("check_timeout", "--check-timeout"),
    ("check_fall", "--check-fall"),
    ("check_rise", "--check-rise"),
];

/// What `main` should run.
#[derive(Debug)]
pub enum Invocation {
    Node(NodeArgs),
    Ctl(CtlArgs),
    Demo(DemoArgs),
}

/// bossd: who is the boss? Joins equal servers into a full TCP mesh that
/// elects one master by a rule and elects a new one the moment it fails.
///
/// `bossd IP PORT` runs a node, with the options below. `bossd ctl` sends
/// one console command to a node and prints its answer (bossd help ctl).
/// `bossd demo` starts N local nodes, kills their master and times the
/// failover (bossd help demo).
///
/// Type console commands on stdin (-h lists them) or send them over TCP:
/// `nc IP PORT`, or `bossd ctl IP PORT -s`. The same port answers HTTP:
/// GET /metrics (Prometheus text), GET /status (JSON) and GET /events
/// (Server-Sent Events).
#[derive(Parser, Debug)]
#[command(
    name = "bossd",
    version,
    override_usage = USAGE,
    after_help = NODE_EXAMPLES
)]
pub struct NodeArgs {
    /// Address to listen on and to be known by: IPv4, or IPv6 with or
    /// without brackets (::1 or [::1]). Peers dial it, so give the one they
    /// reach this host at, not 0.0.0.0 or :: (warned about).
    #[arg(value_parser = parse_ip)]
    pub ip: IpAddr,
    /// TCP port to listen on; 0 picks a free one, which the node then uses
    /// everywhere and logs (event=listening addr=IP:PORT).
    pub port: u16,
    #[command(flatten)]
    pub opts: NodeOptions,
}

/// The three forms, for `bossd --help` and `bossd help`.
const USAGE: &str = "\
bossd <IP> <PORT> [OPTIONS]
       bossd ctl [--secret-file PATH] <IP> <PORT> <COMMAND>...
       bossd demo [N]
       bossd help [ctl|demo]";

const NODE_EXAMPLES: &str = "\
Examples:
  bossd 127.0.0.1 7000                          first node
  bossd 127.0.0.1 7001 --join 127.0.0.1:7000    second node joins the first
  bossd ctl 127.0.0.1 7000 -s                   ask a node for its status line
  bossd demo [N]                                start N (3) local nodes, kill the master, time the failover

Exit codes: 0 after a graceful leave, 1 on a start-up or runtime error, 2 on a usage error.";

/// The options of a node (docs/GUARANTEES.md, running bossd).
#[derive(Args, Debug, Clone)]
pub struct NodeOptions {
    /// Peer to join at start, IP:PORT or [IPv6]:PORT; repeatable. Retried
    /// with backoff until reached; a target that does not answer is
    /// logged once as a warning (event=join-failed), and again when it
    /// does (event=join-reached). Default: none (wait to be joined).
    #[arg(long = "join", value_name = "IP:PORT", value_parser = parse_join)]
    pub join: Vec<SocketAddr>,
    /// Election rule: a comma list of oldest, youngest, priority (higher
    /// wins), lowest-addr, highest-addr, applied in order, each at most
    /// once; ties go to the lowest address, then the instance id. Must
    /// match across the cluster.
    #[arg(long, value_name = "LIST", default_value = "oldest")]
    pub rule: Rule,
    /// This node's priority, for the `priority` rule (signed 32-bit).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub priority: i32,
    /// Fewest members, this node included, a group needs to hold a master.
    /// Must match across the cluster.
    #[arg(long, value_name = "N", default_value_t = 2, allow_negative_numbers = true, value_parser = at_least_one::<u32>)]
    pub quorum: u32,
    /// Never two masters at once (with a quorum above half the cluster): a
    /// new master waits out the old one's lease, so a crash fails over in
    /// about --timeout. Must match across the cluster. Default: off.
    #[arg(long)]
    pub strict: bool,
    /// An eligible master keeps its role when a member that ranks before it
    /// joins, restarts or becomes eligible: the role moves only when the
    /// master fails, leaves, becomes ineligible or hands over (-handover).
    /// Must match across the cluster. Default: off.
    #[arg(long)]
    pub no_preempt: bool,
    /// A member that ranks before the master takes over only after it has
    /// been eligible and in the group this long, in milliseconds (a flapping
    /// service does not drag the role along), up to one day. Must match
    /// across the cluster.
    #[arg(long, value_name = "MS", default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(0..=MAX_PREEMPT_DELAY_MS))]
    pub preempt_delay: u64,
    /// Interval between heartbeats, in milliseconds: master and followers
    /// each round; followers among themselves every round only while the
    /// master cannot vouch for them, else once in 50 rounds.
    #[arg(long, value_name = "MS", default_value_t = 100, allow_negative_numbers = true, value_parser = at_least_one::<u64>)]
    pub heartbeat: u64,
    /// A peer not heard from for this long is dead, in milliseconds; must
    /// exceed 2 x heartbeat.
    #[arg(long, value_name = "MS", default_value_t = 500, allow_negative_numbers = true, value_parser = at_least_one::<u64>)]
    pub timeout: u64,
    /// How long a peer lost without leaving is retried, in milliseconds,
    /// counted from when it was last connected; then it is forgotten with
    /// one log line (and joins as a newcomer if it comes back). --join
    /// targets are retried for ever. Must be at least --timeout. The
    /// default, one day (as Serf's reconnect_timeout; Consul uses 72 h),
    /// outlasts a reboot, a maintenance window or a night's outage, and
    /// keeps no more than a day of replaced hosts (autoscaling, containers)
    /// being redialled; -forget drops one at once.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_RECONNECT_TIMEOUT_MS, allow_negative_numbers = true, value_parser = at_least_one::<u64>)]
    pub reconnect_timeout: u64,
    /// File holding the shared cluster secret (trailing newlines ignored;
    /// keep it mode 600). Peers must prove they know it before they join,
    /// every peer line is then authenticated, and only console clients that
    /// authenticated (`bossd ctl --secret-file`) may run mutating commands.
    /// Use at least 16 random bytes (head -c 32 /dev/urandom | base64): one
    /// recorded handshake lets anyone test guesses offline, and a shorter
    /// secret warns at start. Default: none (anyone who reaches the port
    /// may join).
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// Keep the highest epoch this node has seen in DIR, so that epochs
    /// never go back, even when every node restarts at once. Default: none.
    ///
    /// Without it, a cluster restarted as a whole counts epochs from 1
    /// again, and a storage system fencing on BOSSD_EPOCH would accept a
    /// token it has already seen; --strict floors epochs at the wall clock
    /// instead, which trusts clocks.
    /// The node writes DIR/bossd.state (temp file, fsync, rename, fsync of
    /// DIR) before it claims a new epoch or reports one it adopted, once
    /// per new epoch and never per heartbeat, and reads it at start.
    /// A missing DIR is created (mode 700). An unreadable, corrupt or
    /// foreign file (another node's, another format) stops the node at
    /// start with one line and exit 1; it is never silently reset. It does
    /// not survive the loss of the disk: a node whose disk is replaced
    /// starts with no floor, safe only while another member remembers the
    /// epoch. Needs a fixed PORT (the file belongs to IP:PORT); one
    /// directory per node.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub state_dir: Option<PathBuf>,
    /// Shell command run with `sh -c` on every role change, one at a time
    /// and in order; killed after 30 s. Default: none.
    ///
    /// It gets BOSSD_ROLE and BOSSD_PREV_ROLE (master, follower or none),
    /// BOSSD_MASTER (IP:PORT or -), BOSSD_EPOCH, BOSSD_ID (this node's
    /// IP:PORT) and BOSSD_CAUSE (as -j writes it). Its stdin is /dev/null,
    /// its output goes to stderr, and the node never waits for it: later
    /// changes queue behind it. On a graceful leave the final change to
    /// none runs its hook before the node exits, if it ends within the
    /// second the exit may take.
    #[arg(long, value_name = "CMD", value_hint = clap::ValueHint::CommandString)]
    pub notify: Option<String>,
    /// Health check: shell command run with `sh -c` at start and then every
    /// --check-interval; exit status 0 passes. Default: none (always
    /// healthy).
    ///
    /// A node whose check fails is `failing`: it ranks after every healthy
    /// member and is never master, and a master whose check fails hands
    /// over at once. It is failing from start until its first check
    /// passes, after --check-fall failures in a row, and healthy again
    /// after --check-rise passes in a row. One check runs at a time and
    /// the node never waits for it; it gets BOSSD_ROLE, BOSSD_MASTER,
    /// BOSSD_EPOCH and BOSSD_ID as a hook does and stdin /dev/null, and a
    /// check past --check-timeout is killed with its process group and
    /// counts as a failure. Changes of the health are logged
    /// (event=check-failed, event=check-passed), not every run; the
    /// output of a check is kept out of the log, but for the last 256
    /// bytes of a failing run in its check-failed line.
    /// Example: --check 'curl -fsS -m 1 http://127.0.0.1/health'.
    #[arg(long, value_name = "CMD", value_hint = clap::ValueHint::CommandString)]
    pub check: Option<String>,
    /// Time between the starts of two checks, in milliseconds (10 to one
    /// day). A check that runs longer delays the next one: checks never
    /// overlap. Needs --check, as do the three below.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_CHECK_INTERVAL_MS, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(MIN_CHECK_INTERVAL_MS..=MAX_CHECK_MS))]
    pub check_interval: u64,
    /// A check still running after this many milliseconds is killed with
    /// its process group and counts as a failure (1 to one day). Default:
    /// --check-interval.
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=MAX_CHECK_MS))]
    pub check_timeout: Option<u64>,
    /// Consecutive failed checks that make a healthy node failing (1 to
    /// 100). A failure is seen after about fall x interval.
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_STREAK)))]
    pub check_fall: u32,
    /// Consecutive passed checks that make a failing node healthy again (1
    /// to 100); the first pass after start is enough, whatever N.
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_STREAK)))]
    pub check_rise: u32,
    /// The --notify time limit in milliseconds instead of 30 s; for tests.
    #[arg(long, value_name = "MS", hide = true, allow_negative_numbers = true, value_parser = at_least_one::<u64>)]
    pub notify_time_limit: Option<u64>,
    /// Most open connections, peers and console clients together.
    #[arg(long, value_name = "N", default_value_t = 1024, allow_negative_numbers = true, value_parser = at_least_one::<u32>)]
    pub max_conns: u32,
    /// Log level on stderr: error, warn, info or debug.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log: Level,
    /// Do not read console commands from stdin. Default: off (stdin is a
    /// console).
    #[arg(long)]
    pub no_console: bool,
}

/// Send one console command to a node and print its answer.
#[derive(Parser, Debug)]
#[command(
    name = "bossd ctl",
    version,
    override_usage = CTL_USAGE,
    after_help = CTL_AFTER
)]
pub struct CtlArgs {
    /// The node's address: IPv4, or IPv6 with or without brackets.
    #[arg(value_parser = parse_ip)]
    pub ip: IpAddr,
    /// The node's port.
    pub port: u16,
    /// File holding the shared cluster secret, to run mutating commands.
    /// Before IP, or right after PORT.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// The console command and its arguments, e.g. `-s` or `-c 127.0.0.1
    /// 7001`: every word after IP PORT (and a --secret-file PATH right
    /// after PORT), also words that begin with `-`.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

const CTL_USAGE: &str = "\
bossd ctl [--secret-file PATH] <IP> <PORT> <COMMAND>...
       bossd ctl <IP> <PORT> --secret-file PATH <COMMAND>...";

const CTL_AFTER: &str = "\
Every word after IP PORT is the console command, sent as one line, also
words that look like options: bossd ctl 127.0.0.1 7000 -h sends -h to the
node and prints its list of commands. ctl's own options (--secret-file,
--help, --version) go before IP; --secret-file PATH may also come right
after PORT.

It prints the answer without its final OK and exits 0; an ERR answer goes
to stderr as 'bossd ctl: ERR <reason>', with exit 1. It waits at most 5 s
to connect and 5 s for each line of the answer, so a node that does not
answer (a frozen process, a cut network) ends it with exit 1 and 'no
answer from IP:PORT within 5 s'. To wait as long as it takes, use nc:
echo -s | nc -N 127.0.0.1 7000.

With the command -w it watches instead: it prints the status line (waited
for 5 s, as any answer), then each role change as the node journals it, as
it happens, with no time limit (with --secret-file every line's tag is
checked). SIGINT or SIGTERM ends it with exit 0; the node closing the
connection (it left, crashed or refused the watcher) ends it with exit 1
and a line saying so, and so does a closed stdout (bossd ctl 127.0.0.1 7000
-w | head -1), within half a second. A node frozen after the status line
keeps the stream open and silent, as a quiet cluster does.

Examples:
  bossd ctl 127.0.0.1 7000 -s
  bossd ctl 127.0.0.1 7000 -w
  bossd ctl 127.0.0.1 7000 -c 127.0.0.1 7001
  bossd ctl --secret-file /etc/bossd/secret 10.0.0.1 7000 -msg hello

Exit codes: 0 OK, 1 ERR or no answer, 2 on a usage error.";

/// Start a cluster on this machine, kill its master, and time the failover.
#[derive(Parser, Debug)]
#[command(name = "bossd demo", version, after_help = DEMO_AFTER)]
pub struct DemoArgs {
    /// How many nodes to start, 3 to 20: with the default --quorum 2, the
    /// master's crash must leave two nodes to elect the next one.
    #[arg(value_name = "N", default_value_t = 3, value_parser = demo_nodes)]
    pub nodes: u8,
}

fn demo_nodes(s: &str) -> Result<u8, String> {
    match s.parse() {
        Ok(n @ 3..=20) => Ok(n),
        _ => Err("the demo runs 3 to 20 nodes".to_owned()),
    }
}

const DEMO_AFTER: &str = "\
Starts N nodes of this binary on consecutive free ports of 127.0.0.1 from 7000
up (bossd 127.0.0.1 PORT --no-console, the others with --join to the first),
waits until they agree on a master and prints each node's -s status line.
Then it kills the master with SIGKILL, as a crash would, and prints how long
the survivors took to agree on the next master: from the kill until every
survivor's -s names the same new master, asked back to back over console
connections opened before the kill. Last it stops every node, also on an
error or Ctrl-C.

Exit codes: 0 after a failover was shown and every node stopped, 1 when the
nodes did not agree within 10 s or something else failed, such as stdout
closed early (`bossd demo | head -2`; said in one line, the nodes stopped
all the same), 2 on a usage error.";

/// Parses the whole command line, `args[0]` being the program name.
pub fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("ctl") => return parse_ctl(&args[2..]),
        Some("demo") => {
            let rest =
                std::iter::once(OsString::from("bossd demo")).chain(args[2..].iter().cloned());
            return DemoArgs::try_parse_from(rest).map(Invocation::Demo);
        }
        Some("help") => return Err(help(&args[2..])),
        _ => {}
    }
    let matches = NodeArgs::command().try_get_matches_from(args)?;
    let node = NodeArgs::from_arg_matches(&matches)?;
    if node.opts.check.is_none()
        && let Some((_, flag)) = CHECK_ONLY
            .iter()
            .find(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine))
    {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::MissingRequiredArgument,
            format!("{flag} needs --check CMD: it tunes the health check, and there is none\n"),
        ));
    }
    if node.opts.timeout <= 2 * node.opts.heartbeat {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!(
                "--timeout ({} ms) must exceed 2 x --heartbeat ({} ms)\n",
                node.opts.timeout, node.opts.heartbeat
            ),
        ));
    }
    if node.opts.reconnect_timeout < node.opts.timeout {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!(
                "--reconnect-timeout ({} ms) must be at least --timeout ({} ms)\n",
                node.opts.reconnect_timeout, node.opts.timeout
            ),
        ));
    }
    // An empty command would run `sh -c ''` and do nothing: almost
    // surely an unset shell variable in a unit file, not a wish.
    for (flag, command, example) in [
        (
            "--check",
            &node.opts.check,
            "'systemctl is-active --quiet nginx'",
        ),
        ("--notify", &node.opts.notify, "/etc/bossd/vip"),
    ] {
        if command.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{flag} needs a command, e.g. {flag} {example}\n"),
            ));
        }
    }
    if node.opts.state_dir.is_some() && node.port == 0 {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            "--state-dir needs a fixed PORT, not 0: the state file belongs to this node's IP:PORT, \
             which port 0 would change at every start\n",
        ));
    }
    Ok(Invocation::Node(node))
}

/// A usage error as the one line an operator reads on stderr (exit 2):
/// clap's message with any list it gives folded into the line, a "similar
/// argument exists" tip kept, and which help to read; clap's usage block
/// and its other tips are left out. `args` is the whole command line, as
/// given to [`parse`], for the help of the form that was meant.
pub fn usage_line(e: &clap::Error, args: &[OsString]) -> String {
    let text = e.to_string();
    let mut paragraphs = text.split("\n\n");
    let mut line = paragraphs
        .next()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for tip in paragraphs.filter_map(|p| p.trim().strip_prefix("tip: ")) {
        if tip.contains("similar") {
            line.push_str("; ");
            line.push_str(tip);
        }
    }
    let help = match args.get(1).and_then(|a| a.to_str()) {
        Some("ctl") => "bossd ctl --help",
        Some("demo") => "bossd demo --help",
        _ => "bossd --help",
    };
    format!("{line}; try '{help}'")
}

/// The whole command line as one clap tree: the node form at the top and
/// `ctl` and `demo` as its subcommands, for the man pages and shell
/// completions in contrib/ (tests/generated.rs writes them from it, so
/// they list exactly the options the parsers take). It parses nothing:
/// [`parse`] dispatches the three forms itself, since ctl's console
/// command may hold words such as `-h` that clap would take for flags.
pub fn command() -> clap::Command {
    let node = NodeArgs::command();
    // Built anew rather than from `node` itself because clap_complete
    // offers hidden options too, and test-only ones such as
    // --notify-time-limit must not reach a user's completions.
    let mut tree = clap::Command::new("bossd")
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .override_usage(USAGE)
        .after_help(NODE_EXAMPLES)
        .args(node.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommand(CtlArgs::command().name("ctl"))
        .subcommand(DemoArgs::command().name("demo"))
        .args_conflicts_with_subcommands(true)
        .subcommand_negates_reqs(true);
    if let Some(long) = node.get_long_about() {
        tree = tree.long_about(long.clone());
    }
    tree
}

/// An IP address as a user writes it: `127.0.0.1`, `::1`, or `[::1]`, the
/// form every output of bossd uses for IPv6.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    match s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(inner) => inner
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| format!("not an IPv6 address in brackets: {s}")),
        None => s
            .parse()
            .map_err(|_| format!("not an IP address: {s} (IPv4, IPv6 or [IPv6])")),
    }
}

/// A count or a time in ms that must be at least 1: clap's own range check
/// would answer `0 is not in 1..18446744073709551615`, and its parse error
/// `invalid digit found in string` for `-5`.
fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
{
    match s.parse::<T>() {
        Ok(v) if v >= T::from(1) => Ok(v),
        Ok(_) => Err("must be at least 1".to_owned()),
        Err(_) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {
            Err("too large".to_owned())
        }
        Err(_) => Err("expected a whole number, at least 1".to_owned()),
    }
}

/// A `--join` target, `IP:PORT` or `[IPv6]:PORT`. Port 0 names no node
/// (only a listener may ask for it), so a target with it is refused at
/// once rather than redialled for ever.
fn parse_join(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| "not IP:PORT or [IPv6]:PORT".to_owned())?;
    if addr.port() == 0 {
        return Err("port 0 names no node; give the port it listens on".to_owned());
    }
    Ok(addr)
}

/// `bossd ctl ARGS`: clap reads ctl's options, IP and PORT; every word
/// after them is the console command, so that `-h` or `-s` reach the
/// node instead of being taken for ctl's flags.
fn parse_ctl(rest: &[OsString]) -> Result<Invocation, clap::Error> {
    let start = ctl_command_start(rest);
    let head = std::iter::once(OsString::from("bossd ctl")).chain(rest[..start].iter().cloned());
    let mut ctl = CtlArgs::try_parse_from(head)?;
    let command: Option<Vec<String>> = rest[start..]
        .iter()
        .map(|w| w.to_str().map(str::to_owned))
        .collect();
    ctl.command = command.ok_or_else(|| {
        CtlArgs::command().error(
            clap::error::ErrorKind::InvalidUtf8,
            "the console command is not UTF-8",
        )
    })?;
    if ctl.command.is_empty() {
        return Err(CtlArgs::command().error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "a console command must follow IP PORT, e.g. bossd ctl 127.0.0.1 7000 -s",
        ));
    }
    Ok(Invocation::Ctl(ctl))
}

/// Where the console command begins among ctl's arguments: after IP and
/// PORT, and after one `--secret-file PATH` right after PORT. Before IP,
/// words that begin with `-` are ctl's own options, `--secret-file`
/// taking the next word with it.
fn ctl_command_start(rest: &[OsString]) -> usize {
    let is = |i: usize, word: &str| rest.get(i).is_some_and(|a| a == word);
    let starts = |i: usize, prefix: &str| {
        rest.get(i)
            .and_then(|a| a.to_str())
            .is_some_and(|a| a.starts_with(prefix))
    };
    let (mut i, mut positional) = (0, 0);
    while i < rest.len() && positional < 2 {
        if is(i, "--secret-file") {
            i += 2;
        } else if positional == 0 && starts(i, "-") {
            i += 1;
        } else {
            positional += 1;
            i += 1;
        }
    }
    if is(i, "--secret-file") {
        i += 2;
    } else if starts(i, "--secret-file=") {
        i += 1;
    }
    i.min(rest.len())
}

/// `bossd help [ctl|demo]`: the help of that form, as clap's `--help`
/// shows it, or a usage error for another topic.
fn help(topic: &[OsString]) -> clap::Error {
    let shown = |mut cmd: clap::Command| {
        let name = cmd.get_name().to_owned();
        cmd.try_get_matches_from_mut([name.as_str(), "--help"])
            .err()
            .unwrap_or_else(|| cmd.error(clap::error::ErrorKind::DisplayHelp, "no help"))
    };
    match topic {
        [] => shown(NodeArgs::command()),
        [t] if t == "ctl" => shown(CtlArgs::command()),
        [t] if t == "demo" => shown(DemoArgs::command()),
        _ => NodeArgs::command().error(
            clap::error::ErrorKind::InvalidSubcommand,
            "bossd help takes nothing, ctl or demo",
        ),
    }
}

impl NodeArgs {
    /// The address this node listens on and is known by.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl NodeOptions {
    /// `--check-timeout`, which defaults to `--check-interval`.
    pub fn check_timeout_ms(&self) -> u64 {
        self.check_timeout.unwrap_or(self.check_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(args: &[&str]) -> Result<NodeArgs, clap::Error> {
        match parse(std::iter::once("bossd").chain(args.iter().copied()))? {
            Invocation::Node(n) => Ok(n),
            _ => panic!("expected a node"),
        }
    }

    // docs/GUARANTEES.md, running bossd: the option table and its defaults.
    #[test]
    fn defaults_match_the_spec() {
        let n = node(&["127.0.0.1", "7000"]).unwrap();
        assert_eq!(n.addr(), "127.0.0.1:7000".parse().unwrap());
        let o = n.opts;
        assert_eq!(o.rule.to_string(), "oldest");
        assert_eq!(
            (o.priority, o.quorum, o.heartbeat, o.timeout, o.max_conns),
            (0, 2, 100, 500, 1024)
        );
        assert_eq!(o.reconnect_timeout, 86_400_000);
        assert!(!o.strict && !o.no_console && o.join.is_empty());
        assert_eq!(o.state_dir, None);
        assert_eq!(o.log, Level::Info);
    }

    // docs/GUARANTEES.md, options of a node: the health check's defaults,
    // and the timeout following the interval unless given.
    #[test]
    fn check_options_default_and_parse() {
        let o = node(&["127.0.0.1", "7000"]).unwrap().opts;
        assert_eq!(o.check, None);
        assert_eq!(
            (
                o.check_interval,
                o.check_timeout_ms(),
                o.check_fall,
                o.check_rise
            ),
            (1000, 1000, 1, 1)
        );
        let o = node(&[
            "127.0.0.1",
            "7000",
            "--check",
            "true",
            "--check-interval",
            "250",
        ])
        .unwrap()
        .opts;
        assert_eq!(o.check.as_deref(), Some("true"));
        assert_eq!((o.check_interval, o.check_timeout_ms()), (250, 250));
        let o = node(&[
            "127.0.0.1",
            "7000",
            "--check",
            "test -e /run/up",
            "--check-timeout",
            "5000",
            "--check-fall",
            "3",
            "--check-rise",
            "100",
        ])
        .unwrap()
        .opts;
        assert_eq!(
            (
                o.check_interval,
                o.check_timeout_ms(),
                o.check_fall,
                o.check_rise
            ),
            (1000, 5000, 3, 100)
        );
    }

    #[test]
    fn a_negative_number_is_an_invalid_value_not_an_unknown_flag() {
        for flag in ["--quorum", "--heartbeat", "--timeout", "--max-conns"] {
            let err = node(&["127.0.0.1", "7000", flag, "-1"]).expect_err("refused");
            let msg = err.to_string();
            assert!(
                msg.contains("invalid value '-1'") && msg.contains(flag),
                "{flag}: {msg}"
            );
        }
    }

    #[test]
    fn counts_and_times_say_what_is_wrong_with_them() {
        for (flag, value, why) in [
            ("--heartbeat", "0", "must be at least 1"),
            ("--timeout", "-5", "expected a whole number, at least 1"),
            ("--quorum", "x", "expected a whole number, at least 1"),
            ("--max-conns", "99999999999", "too large"),
            ("--reconnect-timeout", "99999999999999999999", "too large"),
        ] {
            let err = node(&["127.0.0.1", "7000", flag, value]).expect_err("refused");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("invalid value '{value}' for '{flag} ")) && msg.contains(why),
                "{flag} {value}: {msg}"
            );
        }
        let n = node(&["127.0.0.1", "7000", "--quorum", "1", "--max-conns", "1"]).expect("parses");
        assert_eq!((n.opts.quorum, n.opts.max_conns), (1, 1));
    }

    #[test]
    fn check_options_refuse_misuse() {
        for args in [
            &["--check-interval", "1000"][..],
            &["--check-rise", "2"],
            &["--check", ""],
            &["--check", "true", "--check-interval", "9"],
            &["--check", "true", "--check-interval", "86400001"],
            &["--check", "true", "--check-timeout", "0"],
            &["--check", "true", "--check-fall", "101"],
            &["--check", "true", "--check-rise", "0"],
        ] {
            let full: Vec<&str> = ["127.0.0.1", "7000"].iter().chain(args).copied().collect();
            let err = node(&full).expect_err(&format!("{args:?} is refused"));
            assert!(err.use_stderr(), "{args:?}: a usage error, exit 2");
        }
    }

    #[test]
    fn options_parse() {
        let n = node(&[
            "::1",
            "7000",
            "--join",
            "[::1]:7001",
            "--join",
            "127.0.0.1:7002",
            "--rule",
            "priority,youngest",
            "--priority",
            "-3",
            "--quorum",
            "3",
            "--strict",
        ])
        .unwrap();
        assert_eq!(n.opts.join.len(), 2);
        assert_eq!(n.opts.priority, -3);
        assert_eq!(n.opts.rule.to_string(), "priority,youngest");
    }

    // docs/GUARANTEES.md, hook: --notify takes one shell command; the time limit is a
    // hidden option for tests, absent from --help.
    #[test]
    fn notify_parses_and_its_time_limit_is_hidden() {
        let n = node(&["127.0.0.1", "7000", "--notify", "logger \"$BOSSD_ROLE\""]).unwrap();
        assert_eq!(n.opts.notify.as_deref(), Some("logger \"$BOSSD_ROLE\""));
        assert_eq!(n.opts.notify_time_limit, None);
        let n = node(&["127.0.0.1", "7000", "--notify-time-limit", "250"]).unwrap();
        assert_eq!(n.opts.notify_time_limit, Some(250));
        assert!(node(&["127.0.0.1", "7000", "--notify-time-limit", "0"]).is_err());
        for empty in ["", "  "] {
            let err = node(&["127.0.0.1", "7000", "--notify", empty]).expect_err("empty hook");
            assert!(err.use_stderr() && err.to_string().contains("--notify needs a command"));
        }
        let help = node(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("--notify <CMD>") && !help.contains("notify-time-limit"));
    }

    // Issue 11: IPv6 with or without brackets, as every output writes it.
    #[test]
    fn ips_take_brackets_around_ipv6() {
        assert_eq!(
            node(&["[::1]", "7000"]).unwrap().addr().to_string(),
            "[::1]:7000"
        );
        assert_eq!(
            node(&["::1", "7000"]).unwrap().addr().to_string(),
            "[::1]:7000"
        );
        for bad in ["[127.0.0.1]", "[::1", "::1]", "[]", "[[::1]]"] {
            assert!(node(&[bad, "7000"]).is_err(), "{bad}");
        }
        let Invocation::Ctl(c) = parse(["bossd", "ctl", "[::1]", "7000", "-s"]).unwrap() else {
            panic!("expected ctl")
        };
        assert_eq!(c.ip.to_string(), "::1");
    }

    #[test]
    fn usage_errors_are_refused() {
        assert!(node(&["127.0.0.1"]).is_err());
        assert!(node(&["nohost", "7000"]).is_err());
        assert!(node(&["127.0.0.1", "7000", "--rule", "tallest"]).is_err());
        assert!(node(&["127.0.0.1", "7000", "--quorum", "0"]).is_err());
        assert!(
            node(&[
                "127.0.0.1",
                "7000",
                "--heartbeat",
                "100",
                "--timeout",
                "200"
            ])
            .is_err()
        );
        assert!(node(&["127.0.0.1", "7000", "--bogus"]).is_err());
    }

    // Issue 10: --reconnect-timeout is at least 1 ms and at least --timeout.
    #[test]
    fn reconnect_timeout_is_checked() {
        let n = node(&["127.0.0.1", "7000", "--reconnect-timeout", "500"]).unwrap();
        assert_eq!(n.opts.reconnect_timeout, 500);
        let e = node(&["127.0.0.1", "7000", "--reconnect-timeout", "499"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error: --reconnect-timeout (499 ms) must be at least --timeout (500 ms)\n"
        );
        assert_eq!(e.exit_code(), 2);
        assert!(node(&["127.0.0.1", "7000", "--reconnect-timeout", "0"]).is_err());
        assert!(node(&["127.0.0.1", "7000", "--reconnect-timeout", "-1"]).is_err());
    }

    // Guarantee 12 (docs/GUARANTEES.md): the state file belongs to IP:PORT,
    // so port 0, a new port at every start, cannot have one.
    #[test]
    fn state_dir_needs_a_fixed_port() {
        let n = node(&["127.0.0.1", "7000", "--state-dir", "/var/lib/bossd"]).unwrap();
        assert_eq!(n.opts.state_dir, Some(PathBuf::from("/var/lib/bossd")));
        let e = node(&["127.0.0.1", "0", "--state-dir", "/var/lib/bossd"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("--state-dir needs a fixed PORT"),
            "{e}"
        );
        assert!(node(&["127.0.0.1", "0"]).is_ok());
    }

    #[test]
    fn ctl_takes_the_rest_as_the_command() {
        let Invocation::Ctl(c) = parse([
            "bossd",
            "ctl",
            "127.0.0.1",
            "7000",
            "-c",
            "127.0.0.1",
            "7001",
        ])
        .unwrap() else {
            panic!("expected ctl")
        };
        assert_eq!(c.command, ["-c", "127.0.0.1", "7001"]);
    }

    // Issue 11: every word after IP PORT is the command, also `-h`; ctl's
    // --secret-file goes before IP or right after PORT.
    #[test]
    fn ctl_leaves_words_that_look_like_flags_to_the_node() {
        let ctl = |args: &[&str]| match parse(["bossd", "ctl"].iter().chain(args)) {
            Ok(Invocation::Ctl(c)) => {
                Ok((c.secret_file.map(|p| p.display().to_string()), c.command))
            }
            Ok(_) => panic!("expected ctl"),
            Err(e) => Err(e.kind()),
        };
        let none = None::<String>;
        assert_eq!(
            ctl(&["127.0.0.1", "7000", "-h"]),
            Ok((none.clone(), vec!["-h".into()]))
        );
        assert_eq!(
            ctl(&["::1", "7000", "--help", "-V"]),
            Ok((none.clone(), vec!["--help".into(), "-V".into()]))
        );
        let secret = Some("s".to_owned());
        for args in [
            &["--secret-file", "s", "127.0.0.1", "7000", "-q"][..],
            &["--secret-file=s", "127.0.0.1", "7000", "-q"][..],
            &["127.0.0.1", "7000", "--secret-file", "s", "-q"][..],
            &["127.0.0.1", "7000", "--secret-file=s", "-q"][..],
        ] {
            assert_eq!(
                ctl(args),
                Ok((secret.clone(), vec!["-q".into()])),
                "{args:?}"
            );
        }
        assert_eq!(
            ctl(&["127.0.0.1", "7000", "-msg", "--secret-file", "s"]),
            Ok((
                none,
                vec!["-msg".into(), "--secret-file".into(), "s".into()]
            ))
        );
        use clap::error::ErrorKind;
        assert_eq!(ctl(&["--help"]), Err(ErrorKind::DisplayHelp));
        assert_eq!(
            ctl(&["127.0.0.1", "7000"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            ctl(&["127.0.0.1", "7000", "--secret-file"]),
            Err(ErrorKind::InvalidValue)
        );
        assert!(ctl(&["-x", "127.0.0.1", "7000", "-s"]).is_err());
    }

    #[test]
    fn demo_takes_3_to_20_nodes() {
        let demo = |args: &[&str]| match parse(["bossd", "demo"].iter().chain(args)) {
            Ok(Invocation::Demo(d)) => Ok(d.nodes),
            Ok(_) => panic!("expected demo"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(demo(&[]), Ok(3));
        assert_eq!(demo(&["20"]), Ok(20));
        for bad in ["2", "21", "x", "-1"] {
            assert!(demo(&[bad]).is_err(), "demo {bad}");
        }
        assert!(demo(&["3", "4"]).is_err());
    }
}
