//! The `bossd` binary: parses the command line, runs a node, `ctl` or `demo`, and
//! maps the outcome to the exit code (docs/GUARANTEES.md, running bossd: 0 left, 1 error, 2 usage).
//!
//! Nothing here prints with `println!` or `eprintln!`, which panic on a
//! closed pipe (and abort, in the release build): output goes through
//! [`log::stdout_line`] and [`log::stderr_line`], which lose a line instead.

#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bossd::auth::Secret;
use bossd::config::{self, Invocation, NodeArgs};
use bossd::core::Config;
use bossd::hooks::{HOOK_TIME_LIMIT, Hooks};
use bossd::log::{self, Level};
use bossd::net;
use bossd::time::Wall;

fn main() -> ExitCode {
    let start = Instant::now();
    let args: Vec<OsString> = std::env::args_os().collect();
    let invocation = match config::parse(args.iter().cloned()) {
        Ok(i) => i,
        // A usage error: one line, exit 2 (docs/GUARANTEES.md, running bossd).
        Err(e) if e.use_stderr() => {
            log::stderr_line(&config::usage_line(&e, &args));
            return ExitCode::from(2);
        }
        Err(e) => {
            // --help or --version; printing them to a closed stream is not worth a panic.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match invocation {
        Invocation::Ctl(args) if bossd::ctl::is_watch(&args) => match bossd::ctl::watch(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::stderr_line(&format!("bossd ctl: {e:#}"));
                ExitCode::from(1)
            }
        },
        Invocation::Ctl(args) => match bossd::ctl::run(&args) {
            Ok(answer) => {
                for line in &answer.lines {
                    log::stdout_line(line);
                }
                match answer.result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(reason) => {
                        log::stderr_line(&format!("bossd ctl: ERR {reason}"));
                        ExitCode::from(1)
                    }
                }
            }
            Err(e) => {
                log::stderr_line(&format!("bossd ctl: {e:#}"));
                ExitCode::from(1)
            }
        },
        Invocation::Demo(args) => match bossd::demo::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::stderr_line(&format!("bossd demo: {e:#}"));
                ExitCode::from(1)
            }
        },
        Invocation::Node(args) => match run_node(args, start) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // One clear line (docs/GUARANTEES.md, running bossd), not a log line and a repeat.
                log::stderr_line(&format!("bossd: {e:#}"));
                ExitCode::from(1)
            }
        },
    }
}

fn run_node(args: NodeArgs, start: Instant) -> anyhow::Result<()> {
    log::set_level(args.opts.log);
    let addr = args.addr();
    let secret = match &args.opts.secret_file {
        Some(path) => {
            let loaded = Secret::load(path)?;
            if let Some(warning) = loaded.warning {
                bossd::event!(Level::Warn, "secret-file-warning", reason = warning);
            }
            if let Some(weak) = loaded.secret.weakness() {
                bossd::event!(Level::Warn, "weak-secret", reason = weak);
            }
            Some(loaded.secret)
        }
        None => None,
    };
    // Read before the node listens, so that an unreadable, corrupt or
    // foreign state file stops it with one line and exit 1 before it
    // joins anything (guarantee 12, docs/GUARANTEES.md).
    let state = match &args.opts.state_dir {
        Some(dir) => {
            let (state, highest) = bossd::state::StateDir::open(dir, addr)?;
            bossd::event!(
                Level::Info,
                "state-read",
                path = state.path().display(),
                epoch = highest.map_or("-".to_owned(), |e| e.to_string()),
            );
            Some((state, highest.unwrap_or(0)))
        }
        None => None,
    };
    let durable = state.as_ref().map(|(_, highest)| *highest);
    let wall_at_zero = Wall(net::unix_ms_now().saturating_sub(start.elapsed().as_millis() as u64));
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
        reconnect_timeout_ms: args.opts.reconnect_timeout,
        seed: random_u64(),
        wall_at_zero,
        durable,
        checked: args.opts.check.is_some(),
        no_preempt: args.opts.no_preempt,
        preempt_delay_ms: args.opts.preempt_delay,
    };
    let check = args.opts.check.clone().map(|cmd| net::check::CheckSpec {
        cmd,
        interval: Duration::from_millis(args.opts.check_interval),
        timeout: Duration::from_millis(args.opts.check_timeout_ms()),
        fall: args.opts.check_fall,
        rise: args.opts.check_rise,
    });
    let opts = net::Options {
        join: args.opts.join.clone(),
        max_conns: args.opts.max_conns as usize,
        console: !args.opts.no_console,
        secret,
        hooks: Hooks::new(args.opts.notify.clone(), addr).with_time_limit(
            args.opts
                .notify_time_limit
                .map_or(HOOK_TIME_LIMIT, Duration::from_millis),
        ),
        state: state.map(|(state, _)| state),
        check,
    };
    net::run(cfg, opts, start)
}

/// A random number from the OS.
fn random_u64() -> u64 {
    // Linux's getrandom(2) does not fail once the pool is initialised at
    // boot; a clock-derived value would do for an instance id regardless.
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}
