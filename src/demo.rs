//! `bossd demo`: a cluster on this machine in one command, for a first look.
//!
//! Starts N nodes as child processes of this binary on loopback, waits
//! until they agree on a master, kills the master with SIGKILL, times how
//! long the survivors take to agree on the next one, and stops every
//! child: at the end, on an error or a panic (the `Nodes` guard's
//! `Drop`), and on SIGINT or SIGTERM (a flag every wait checks). It is a
//! client of the nodes, like `bossd ctl`, asking `-s` over the TCP
//! console; it never touches the core or the loop.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::config::DemoArgs;
use crate::console::StatusLine;
use crate::ctl::Client;

/// How long the nodes may take to start, to agree on a master and to agree
/// on the next one. Each takes milliseconds; ten seconds leaves room for a
/// loaded machine and still ends a broken run with an answer.
const DEADLINE: Duration = Duration::from_secs(10);

/// Pause between rounds of questions while the nodes start and elect.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// After the kill, rounds of `-s` follow back to back for this long, so the
/// failover time is exact to one round trip; then they slow to
/// [`POLL_EVERY`] so a slow failover does not load a shared machine.
const TIGHT_FOR: Duration = Duration::from_millis(200);

/// How long a node may take to leave after SIGTERM before it gets
/// SIGKILL: guarantee 6 (docs/GUARANTEES.md) promises one second.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The first port tried. Ports are searched upwards from here to
/// [`LAST_PORT`], below Linux's ephemeral range (32768-60999), where
/// outgoing connections take their local ports and could hold one.
const FIRST_PORT: u16 = 7000;
const LAST_PORT: u16 = 32_767;

/// How much of each node's log (stderr) is kept, from its end: enough for
/// the line that says why a node stopped.
const LOG_KEEP: usize = 4096;

/// Runs the demo, printing its progress on stdout. `Err` is one line that
/// says what went wrong; every node has been stopped by then.
pub fn run(args: &DemoArgs) -> Result<()> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C ends the demo at once; the nodes then die with it
        // (`PR_SET_PDEATHSIG` in `Nodes::spawn`).
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&interrupted))
            .context("cannot handle signals")?;
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("cannot handle signals")?;
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut nodes = Nodes {
        procs: Vec::new(),
        interrupted,
    };
    let mut out = Out(std::io::stdout().lock());
    let shown = show(&mut out, &mut nodes, &exe, usize::from(args.nodes));
    nodes.stop();
    shown?;
    out.line("stopped all nodes")?;
    Ok(())
}

/// Starts the nodes, shows the election and the failover. Leaves stopping
/// the nodes to the caller.
fn show(out: &mut Out, nodes: &mut Nodes, exe: &Path, n: usize) -> Result<()> {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let first = free_ports(ip, n)?;
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::new(ip, first + i as u16))
        .collect();
    out.line(format_args!(
        "starting {n} nodes on {ip}:{first}..{} (the others join {})",
        first as usize + n - 1,
        addrs[0]
    ))?;

    // One after the other, each listening before the next starts: the
    // others find the first at their first dial, and under the default
    // rule `oldest` the masters come in port order, which reads well.
    let mut clients = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        nodes.spawn(exe, addr, (i > 0).then_some(addrs[0]))?;
        clients.push(nodes.connect(i)?);
    }

    let deadline = Instant::now() + DEADLINE;
    let (master, statuses) = loop {
        let statuses = ask_all(nodes, &mut clients)?;
        if let Some(master) = agreed(&statuses, Some(n - 1)) {
            break (master, statuses);
        }
        if Instant::now() > deadline {
            bail!(
                "the {n} nodes did not agree on a master within {} s",
                DEADLINE.as_secs()
            );
        }
        nodes.pause(POLL_EVERY)?;
    };
    out.line(format_args!(
        "elected: {} is master (epoch {})",
        master, statuses[0].epoch
    ))?;
    print_lines(out, &statuses)?;

    let dead = addrs
        .iter()
        .position(|a| a.to_string() == master)
        .with_context(|| format!("the master {master} is none of the nodes started"))?;
    clients.remove(dead);
    out.line(format_args!("killing the master {master} (SIGKILL)"))?;
    let killed_at = Instant::now();
    nodes.kill(dead)?;
    let (next, statuses, took) = loop {
        let statuses = ask_all(nodes, &mut clients)?;
        let took = killed_at.elapsed();
        if let Some(next) = agreed(&statuses, None).filter(|m| *m != master) {
            break (next, statuses, took);
        }
        nodes.check()?;
        if took > DEADLINE {
            bail!(
                "the {} survivors did not agree on a new master within {} s",
                n - 1,
                DEADLINE.as_secs()
            );
        }
        if took > TIGHT_FOR {
            nodes.pause(POLL_EVERY)?;
        } else if nodes.interrupted() {
            bail!("interrupted");
        }
    };
    out.line(format_args!(
        "failover: {next} is master (epoch {}) after {:.1} ms",
        statuses[0].epoch,
        took.as_secs_f64() * 1000.0
    ))?;
    print_lines(out, &statuses)?;
    Ok(())
}

/// The first of `n` consecutive ports of `ip` that are all free right now,
/// checked by binding each once. Consecutive ports read well in the output.
fn free_ports(ip: IpAddr, n: usize) -> Result<u16> {
    first_free_run(n, |port| TcpListener::bind((ip, port)).is_ok()).with_context(|| {
        format!("found no {n} consecutive free ports on {ip} between {FIRST_PORT} and {LAST_PORT}")
    })
}

/// The first port of a run of `n` from [`FIRST_PORT`] up to [`LAST_PORT`]
/// for which `free` holds, asking about each port once, in order.
fn first_free_run(n: usize, mut free: impl FnMut(u16) -> bool) -> Option<u16> {
    let (mut first, mut port) = (FIRST_PORT, FIRST_PORT);
    while usize::from(first) + n - 1 <= usize::from(LAST_PORT) {
        if usize::from(port - first) == n {
            return Some(first);
        }
        let is_free = free(port);
        port += 1;
        if !is_free {
            first = port;
        }
    }
    None
}

fn print_lines(out: &mut Out, statuses: &[StatusLine]) -> Result<()> {
    for s in statuses {
        out.line(format_args!("  {}", s.line))?;
    }
    Ok(())
}

/// Where the demo prints its progress. A closed stdout (`bossd demo | head
/// -1`) ends the demo like any other error.
struct Out(std::io::StdoutLock<'static>);

impl Out {
    fn line(&mut self, text: impl std::fmt::Display) -> Result<()> {
        writeln!(self.0, "{text}").context("cannot write to stdout")
    }
}

// ---------------------------------------------------------------------------
// Status lines
// ---------------------------------------------------------------------------

/// Asks every client for `-s`, in order. When one cannot answer, a node
/// that exited is the better explanation, so that is checked first.
fn ask_all(nodes: &mut Nodes, clients: &mut [Client]) -> Result<Vec<StatusLine>> {
    match ask_each(clients) {
        Ok(statuses) => Ok(statuses),
        Err(e) => {
            nodes.check()?;
            Err(e)
        }
    }
}

fn ask_each(clients: &mut [Client]) -> Result<Vec<StatusLine>> {
    clients
        .iter_mut()
        .map(|c| {
            let answer = c.ask("-s")?;
            if let Err(reason) = answer.result {
                bail!("{} answered -s with ERR {reason}", c.addr());
            }
            match answer.lines.as_slice() {
                [line] => StatusLine::parse(line).map_err(anyhow::Error::msg),
                lines => bail!("{} answered -s with {} lines", c.addr(), lines.len()),
            }
        })
        .collect()
}

/// The master every status names, if they agree: the same master and
/// epoch everywhere, `role=master` on the master and `role=follower` on
/// the others, and `peers` as given when it is (guarantees 1 and 3 in docs/GUARANTEES.md).
fn agreed(statuses: &[StatusLine], peers: Option<usize>) -> Option<String> {
    let first = statuses.first()?;
    let master = first.master.as_deref()?;
    let all = statuses.iter().all(|s| {
        s.master.as_deref() == Some(master)
            && s.epoch == first.epoch
            && s.role == if s.id == master { "master" } else { "follower" }
            && peers.is_none_or(|p| s.peers == p)
    });
    let present = statuses.iter().any(|s| s.id == master);
    (all && present).then(|| master.to_owned())
}

// ---------------------------------------------------------------------------
// The child processes
// ---------------------------------------------------------------------------

/// Every node this demo started. Dropping it stops them all, so an early
/// return or a panic leaves no node behind.
struct Nodes {
    procs: Vec<Proc>,
    interrupted: Arc<AtomicBool>,
}

struct Proc {
    addr: SocketAddr,
    child: Child,
    /// The tail of the node's stderr, filled by a thread.
    log: Arc<Mutex<String>>,
    /// Set once the child is reaped, so its pid is never signalled again.
    exit: Option<ExitStatus>,
    /// Killed on purpose: its exit is not an error.
    killed: bool,
}

impl Nodes {
    /// Starts `bossd IP PORT --no-console [--join JOIN]`.
    fn spawn(&mut self, exe: &Path, addr: SocketAddr, join: Option<SocketAddr>) -> Result<()> {
        if self.interrupted() {
            bail!("interrupted");
        }
        let mut cmd = Command::new(exe);
        cmd.arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg("--no-console");
        if let Some(join) = join {
            cmd.arg("--join").arg(join.to_string());
        }
        // In a process group of their own the nodes do not see the
        // terminal's Ctrl-C: the demo decides when and how they stop.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            keep_tail(stderr, Arc::clone(&log));
        }
        self.procs.push(Proc {
            addr,
            child,
            log,
            exit: None,
            killed: false,
        });
        Ok(())
    }

    /// Connects to node `i`'s console once it listens.
    fn connect(&mut self, i: usize) -> Result<Client> {
        let addr = self.procs[i].addr;
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(client) = Client::connect(addr) {
                return Ok(client);
            }
            self.check()?;
            if Instant::now() > deadline {
                bail!("node {addr} did not listen within {} s", DEADLINE.as_secs());
            }
            self.pause(POLL_EVERY)?;
        }
    }

    /// `Err` if a node that should run has exited, with its last log line.
    fn check(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if p.killed {
                continue;
            }
            if p.exit.is_none() {
                p.exit = p.child.try_wait()?;
            }
            if let Some(status) = p.exit {
                let log = p.log.lock().unwrap_or_else(|e| e.into_inner());
                let last = log.lines().last().unwrap_or("no log");
                bail!("node {} exited ({status}): {last}", p.addr);
            }
        }
        Ok(())
    }

    /// SIGKILLs node `i`. It is reaped later, by `stop`, so that the time
    /// measured after this call is the cluster's alone.
    fn kill(&mut self, i: usize) -> Result<()> {
        let p = &mut self.procs[i];
        p.killed = true;
        p.child
            .kill()
            .with_context(|| format!("cannot kill node {}", p.addr))
    }

    /// Sleeps for `d`; `Err` once SIGINT or SIGTERM arrived.
    fn pause(&self, d: Duration) -> Result<()> {
        if self.interrupted() {
            bail!("interrupted");
        }
        thread::sleep(d);
        Ok(())
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Stops every node: SIGTERM (a graceful leave), then SIGKILL for any
    /// still running after [`STOP_GRACE`]; reaps them all. Idempotent.
    fn stop(&mut self) {
        for p in &mut self.procs {
            if p.exit.is_none() {
                // SAFETY: kill(2) on our own child, not yet reaped, so its
                // pid cannot have been reused.
                unsafe {
                    libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for p in &mut self.procs {
            while p.exit.is_none() {
                match p.child.try_wait() {
                    Ok(Some(status)) => p.exit = Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    // Past the grace, or the child cannot be waited for:
                    // make sure it is dead and reaped.
                    _ => {
                        let _ = p.child.kill();
                        p.exit = p.child.wait().ok();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks the kernel to SIGKILL the child when the demo dies, so even a demo
/// killed with SIGKILL leaves no node behind (Linux only).
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid is async-signal-safe and read here, before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: prctl and getppid are async-signal-safe and touch only the
    // child, between fork and exec; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The demo died before the prctl: don't outlive it.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// Reads `pipe` to its end on a thread, keeping the last [`LOG_KEEP`] bytes.
fn keep_tail(mut pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&String::from_utf8_lossy(&chunk[..n]));
            if log.len() > 2 * LOG_KEEP {
                let mut cut = log.len() - LOG_KEEP;
                while !log.is_char_boundary(cut) {
                    cut += 1;
                }
                log.drain(..cut);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(line: &str) -> StatusLine {
        StatusLine::parse(line).unwrap()
    }

    #[test]
    fn agreement_needs_one_master_one_epoch_and_the_peers() {
        let line = |id: u16, role: &str, master: &str, epoch: u64, peers: usize| {
            status(&format!(
                "id=127.0.0.1:{id} role={role} master={master} epoch={epoch} peers={peers} quorum=2 started=1 rule=oldest"
            ))
        };
        let m = "127.0.0.1:7000";
        let good = [
            line(7000, "master", m, 1, 2),
            line(7001, "follower", m, 1, 2),
        ];
        assert_eq!(agreed(&good, Some(2)).as_deref(), Some(m));
        assert_eq!(agreed(&good, Some(1)), None);
        assert_eq!(agreed(&good, None).as_deref(), Some(m));
        let epochs = [
            line(7000, "master", m, 2, 1),
            line(7001, "follower", m, 1, 1),
        ];
        assert_eq!(agreed(&epochs, None), None);
        let lone = [line(7000, "none", "-", 1, 0), line(7001, "none", "-", 1, 0)];
        assert_eq!(agreed(&lone, None), None);
        let absent = [
            line(7001, "follower", m, 1, 1),
            line(7002, "follower", m, 1, 1),
        ];
        assert_eq!(agreed(&absent, None), None);
    }

    #[test]
    fn a_run_of_free_ports_skips_taken_ones() {
        let taken = [FIRST_PORT, FIRST_PORT + 2];
        assert_eq!(
            first_free_run(3, |p| !taken.contains(&p)),
            Some(FIRST_PORT + 3)
        );
        assert_eq!(first_free_run(1, |p| p != FIRST_PORT), Some(FIRST_PORT + 1));
        assert_eq!(
            first_free_run(2, |p| p == LAST_PORT),
            None,
            "no run of 2 below the last port"
        );
        assert_eq!(first_free_run(1, |p| p == LAST_PORT), Some(LAST_PORT));
    }

    // Other programs may bind a port between the search and a test's own
    // check (a race the search cannot prevent; the demo then reports the
    // node that could not listen), so only the range is checked here.
    #[test]
    fn free_ports_are_found_in_the_range() {
        let first = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 3).unwrap();
        assert!((FIRST_PORT..=LAST_PORT - 2).contains(&first));
    }
}
