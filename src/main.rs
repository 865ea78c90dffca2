//! The `bossd` binary: parses the command line, runs a node, `ctl` or `demo`, and
//! maps the outcome to the exit code (SPEC §1: 0 left, 1 error, 2 usage).

use std::process::ExitCode;
use std::time::Instant;

use bossd::config::{self, Invocation, NodeArgs};
use bossd::core::Config;
use bossd::log::{self, Level};
use bossd::net;

fn main() -> ExitCode {
    let start = Instant::now();
    let invocation = match config::parse(std::env::args_os()) {
        Ok(i) => i,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            // Printing help or a usage error to a closed stream is not worth a panic.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match invocation {
        Invocation::Ctl(args) => match bossd::ctl::run(&args) {
            Ok(answer) => {
                for line in &answer.lines {
                    println!("{line}");
                }
                match answer.result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(reason) => {
                        eprintln!("bossd ctl: ERR {reason}");
                        ExitCode::from(1)
                    }
                }
            }
            Err(e) => {
                eprintln!("bossd ctl: {e:#}");
                ExitCode::from(1)
            }
        },
        Invocation::Demo(args) => match bossd::demo::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bossd demo: {e:#}");
                ExitCode::from(1)
            }
        },
        Invocation::Node(args) => match run_node(args, start) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // One clear line (SPEC §1), not a log line and a repeat.
                eprintln!("bossd: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn run_node(args: NodeArgs, start: Instant) -> anyhow::Result<()> {
    log::set_level(args.opts.log);
    if args.opts.secret_file.is_some() {
        anyhow::bail!("--secret-file is not supported by this build yet");
    }
    if args.opts.notify.is_some() {
        anyhow::bail!("--notify is not supported by this build yet");
    }
    let addr = args.addr();
    if !addr.ip().is_loopback() {
        log::write(
            Level::Warn,
            &format!("listening on {addr} without a secret: anyone who can reach it can join"),
        );
    }
    let wall_at_zero_ms = net::unix_ms_now().saturating_sub(start.elapsed().as_millis() as u64);
    let cfg = Config {
        addr,
        started_unix_ms: net::unix_ms_now(),
        instance: random_u64(),
        priority: args.opts.priority,
        quorum: args.opts.quorum,
        strict: args.opts.strict,
        rule: args.opts.rule.clone(),
        heartbeat_ms: args.opts.heartbeat,
        timeout_ms: args.opts.timeout,
        seed: random_u64(),
        wall_at_zero_ms,
    };
    let opts = net::Options {
        join: args.opts.join.clone(),
        max_conns: args.opts.max_conns as usize,
        console: !args.opts.no_console,
    };
    net::run(cfg, opts, wall_at_zero_ms, start)
}

/// A random number from the OS, through std's randomly keyed hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(start_nanos());
    h.finish()
}

fn start_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
