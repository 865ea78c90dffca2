//! Network namespaces for the suites that build hosts out of them
//! (tests/netns.rs, tests/vip.rs): running `ip` and `nft`, a set of
//! namespaces on one bridge that is deleted on drop, and moving one thread
//! into a namespace.
//!
//! Everything lives inside namespaces the test creates: a bridge namespace
//! holding `br0`, and one namespace per host whose `eth0` is a veth pair's
//! end, the other end a port of `br0`. Each pair is made inside the bridge
//! namespace with its peer put straight into the host's, so no interface
//! ever exists in the root namespace, where its name could clash with the
//! machine's or a parallel run's. Deleting a namespace destroys its
//! interfaces (a veth's peer goes with it) and its nftables tables, so
//! [`Namespaces`]' drop leaves nothing behind once the processes inside
//! have been killed (a namespace lives on while a process is in it).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread;

use super::runner;

/// Skips, saying what is missing, unless the test can build namespaces
/// and nftables rules; `why` says what the test builds, for the root hint.
pub fn preflight(why: &str) {
    runner::need_root(why);
    runner::need_program("ip", &["netns", "list"], "apt-get install iproute2");
    runner::need_program("nft", &["--version"], "apt-get install nftables");
}

/// Runs a command, feeding it `input` on stdin; its stdout, or why it
/// failed with its stderr.
pub fn try_run(args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", args.join(" ")))?;
    if let Some(text) = input {
        // Dropping the pipe after writing closes it: the command sees EOF.
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot feed `{}`: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot wait for `{}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`try_run`] without input, panicking on failure.
pub fn run(args: &[&str]) {
    if let Err(e) = try_run(args, None) {
        panic!("{e}");
    }
}

/// Loads an nftables ruleset into the namespace `ns`; panics with the
/// rules on failure.
pub fn nft_load(ns: &str, rules: &str) {
    if let Err(e) = try_run(&["ip", "netns", "exec", ns, "nft", "-f", "-"], Some(rules)) {
        panic!("cannot load nftables rules in {ns}: {e}\nrules:\n{rules}");
    }
}

/// Where `ip netns` mounts the namespace `name`.
pub fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Moves the calling thread, and only it, into the network namespace
/// mounted at `path`: setns(2) with `CLONE_NEWNET` changes only the calling
/// thread, and a socket stays in the namespace it was created in.
pub fn enter_netns(path: &str) -> Result<(), String> {
    let ns = File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    // SAFETY: setns(2) on a descriptor we own and keep open for the call;
    // with CLONE_NEWNET it changes only this thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "setns({path}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Runs `f` on a thread of its own inside the namespace `ns`, and returns
/// what it returned; for a short exchange with a process in there (a
/// console command) while the calling thread stays where it is.
pub fn on_thread_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let path = netns_path(ns);
    thread::spawn(move || enter_netns(&path).map(|()| f()))
        .join()
        .unwrap_or_else(|_| Err(format!("the thread inside {ns} panicked")))
}

/// The namespaces of one test, deleted in reverse order on drop.
pub struct Namespaces {
    made: Vec<String>,
}

impl Namespaces {
    pub fn new() -> Namespaces {
        Namespaces { made: Vec::new() }
    }

    /// Creates the namespace `name`, with its loopback up.
    pub fn add(&mut self, name: &str) {
        if let Err(e) = try_run(&["ip", "netns", "add", name], None) {
            panic!(
                "cannot create the network namespace {name}: {e}\nthis test needs root and a \
                 kernel and `ip` (iproute2) with network namespace support"
            );
        }
        self.made.push(name.to_owned());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// Creates the namespace `name` holding the bridge `br0`, up.
    pub fn add_bridge(&mut self, name: &str) {
        self.add(name);
        run(&["ip", "-n", name, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", name, "link", "set", "br0", "up"]);
    }

    /// Creates the namespace `host` with an `eth0` holding `cidr`
    /// (`10.1.2.3/24`), plugged into `br0` of the namespace `bridge` as its
    /// port `port` (at most 15 bytes, unique in the bridge namespace).
    pub fn add_host(&mut self, bridge: &str, port: &str, host: &str, cidr: &str) {
        self.add(host);
        run(&[
            "ip", "-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", host,
        ]);
        run(&["ip", "-n", bridge, "link", "set", port, "master", "br0"]);
        run(&["ip", "-n", bridge, "link", "set", port, "up"]);
        run(&["ip", "-n", host, "addr", "add", cidr, "dev", "eth0"]);
        run(&["ip", "-n", host, "link", "set", "eth0", "up"]);
    }

    /// Deletes the namespace `name` now, with its interfaces (its veth's
    /// bridge port too) and everything its kernel held: connections,
    /// addresses, neighbour entries. The processes in it must be gone.
    pub fn delete(&mut self, name: &str) {
        self.made.retain(|n| n != name);
        run(&["ip", "netns", "del", name]);
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces::new()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = try_run(&["ip", "netns", "del", ns], None) {
                runner::note(&format!("namespace cleanup: {e}"));
            }
        }
    }
}
