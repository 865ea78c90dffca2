//! The command line: `bossd IP PORT [OPTIONS]`, `bossd ctl IP PORT COMMAND...`
//! and `bossd demo [N]`.
//!
//! Parsing and checking live here; nothing here opens a socket. Every
//! usage mistake becomes one clear line and exit code 2 (SPEC §1), which
//! `main` applies.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser};

use crate::log::Level;
use crate::rule::Rule;

/// `--reconnect-timeout`'s default: one day, in ms.
pub const DEFAULT_RECONNECT_TIMEOUT_MS: u64 = 86_400_000;

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
/// Type console commands on stdin (-h lists them) or send them over TCP:
/// `nc IP PORT`, or `bossd ctl IP PORT -s`. The same port answers HTTP:
/// GET /metrics (Prometheus text) and GET /status (JSON).
#[derive(Parser, Debug)]
#[command(name = "bossd", version, after_help = NODE_EXAMPLES)]
pub struct NodeArgs {
    /// Address to listen on and to be known by (IPv4 or IPv6).
    pub ip: IpAddr,
    /// TCP port to listen on.
    pub port: u16,
    #[command(flatten)]
    pub opts: NodeOptions,
}

const NODE_EXAMPLES: &str = "\
Examples:
  bossd 127.0.0.1 7000                          first node
  bossd 127.0.0.1 7001 --join 127.0.0.1:7000    second node joins the first
  bossd ctl 127.0.0.1 7000 -s                   ask a node for its status line
  bossd demo [N]                                start N (3) local nodes, kill the master, time the failover

Exit codes: 0 after a graceful leave, 1 on a start-up or runtime error, 2 on a usage error.";

/// The options of a node (SPEC §1).
#[derive(Args, Debug, Clone)]
pub struct NodeOptions {
    /// Peer to join at start, IP:PORT or [IPv6]:PORT; repeatable. Retried
    /// with backoff until reached. Default: none (wait to be joined).
    #[arg(long = "join", value_name = "IP:PORT")]
    pub join: Vec<SocketAddr>,
    /// Election rule: a comma list of oldest, youngest, priority (higher
    /// wins), lowest-addr, highest-addr, applied in order; ties go to the
    /// lowest address, then the instance id. Must match across the cluster.
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
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub quorum: u32,
    /// Never two masters at once (with a quorum above half the cluster): a
    /// new master waits out the old one's lease, so a crash fails over in
    /// about --timeout. Must match across the cluster. Default: off.
    #[arg(long)]
    pub strict: bool,
    /// Interval between heartbeats on each peer link, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat: u64,
    /// A peer not heard from for this long is dead, in milliseconds; must
    /// exceed 2 x heartbeat.
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// How long a peer lost without leaving is retried, in milliseconds,
    /// counted from when it was last connected; then it is forgotten with
    /// one log line (and joins as a newcomer if it comes back). --join
    /// targets are retried for ever. Must be at least --timeout. The
    /// default, one day (as Serf's reconnect_timeout; Consul uses 72 h),
    /// outlasts a reboot, a maintenance window or a night's outage, and
    /// keeps no more than a day of replaced hosts (autoscaling, containers)
    /// being redialled; -forget drops one at once.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_RECONNECT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
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
    #[arg(long, value_name = "CMD")]
    pub notify: Option<String>,
    /// The --notify time limit in milliseconds instead of 30 s; for tests.
    #[arg(long, value_name = "MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub notify_time_limit: Option<u64>,
    /// Most open connections, peers and console clients together.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
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
#[command(name = "bossd ctl", version)]
pub struct CtlArgs {
    /// The node's address.
    pub ip: IpAddr,
    /// The node's port.
    pub port: u16,
    /// File holding the shared cluster secret, to run mutating commands.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// The console command and its arguments, e.g. `-s` or `-c 127.0.0.1 7001`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

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
nodes did not agree within 10 s or something else failed (said in one line),
2 on a usage error.";

/// Parses the whole command line, `args[0]` being the program name.
pub fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    if args.get(1).is_some_and(|a| a == "ctl") {
        let rest =
            std::iter::once(std::ffi::OsString::from("bossd ctl")).chain(args[2..].iter().cloned());
        return CtlArgs::try_parse_from(rest).map(Invocation::Ctl);
    }
    if args.get(1).is_some_and(|a| a == "demo") {
        let rest = std::iter::once(std::ffi::OsString::from("bossd demo"))
            .chain(args[2..].iter().cloned());
        return DemoArgs::try_parse_from(rest).map(Invocation::Demo);
    }
    let node = NodeArgs::try_parse_from(args)?;
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
    Ok(Invocation::Node(node))
}

impl NodeArgs {
    /// The address this node listens on and is known by.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
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

    // SPEC §1: the option table and its defaults.
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
        assert_eq!(o.log, Level::Info);
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

    // SPEC §5: --notify takes one shell command; the time limit is a
    // hidden option for tests, absent from --help.
    #[test]
    fn notify_parses_and_its_time_limit_is_hidden() {
        let n = node(&["127.0.0.1", "7000", "--notify", "logger \"$BOSSD_ROLE\""]).unwrap();
        assert_eq!(n.opts.notify.as_deref(), Some("logger \"$BOSSD_ROLE\""));
        assert_eq!(n.opts.notify_time_limit, None);
        let n = node(&["127.0.0.1", "7000", "--notify-time-limit", "250"]).unwrap();
        assert_eq!(n.opts.notify_time_limit, Some(250));
        assert!(node(&["127.0.0.1", "7000", "--notify-time-limit", "0"]).is_err());
        let help = node(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("--notify <CMD>") && !help.contains("notify-time-limit"));
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
