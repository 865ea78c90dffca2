//! The job end to end (issue 16): a virtual IP that a real client follows.
//!
//! Three hosts and a client, each in its own network namespace, on one
//! bridge. Every host runs `bossd` with `contrib/vip-hook.sh` as its
//! `--notify` hook, and a small TCP service that answers each connection
//! with its host's name and closes it. The client connects to the virtual
//! IP every few milliseconds, a fresh connection each time with a short
//! time limit, and records who answered when. Each test does one thing to
//! the master's host (its bossd crashes, it loses power, its bossd
//! freezes, its service fails the `--check`, or the operator hands over
//! for maintenance) and checks, from the client's side and in every
//! host's `ip addr`, that:
//!
//! - the client ends up answered by the host the survivors elected, and
//!   its neighbour entry for the VIP names that host's MAC (the hook's
//!   gratuitous ARP moved it: without one the client would keep sending to
//!   the old MAC until its entry expired, tens of seconds);
//! - no request the client sent after it first heard from the new master
//!   is answered by the old host, although the old host may still hold the
//!   address (a SIGKILLed or frozen bossd runs no hook);
//! - once the old host is back, it no longer holds the address;
//! - in the planned cases (failing check, handover), no two hosts hold
//!   the address at any moment, and the old host has dropped it by the
//!   time the client hears from the new one (guarantee 11).
//!
//! The time from the fault to the client's first answer from the new
//! master is printed, not asserted (machines are shared and noisy;
//! `benches/compare_keepalived.sh` measures it against keepalived).
//!
//! ```text
//!   NS-br:  br0, ports vh1 vh2 vh3 vcl
//!   NS-hN:  eth0 10.116.C.N/24: bossd 10.116.C.N 7000, the service on
//!           port 8080, and the VIP 10.116.C.100/24 while bossd is master
//!   NS-cl:  eth0 10.116.C.200/24: the client, and the test's console asks
//! ```
//!
//! `NS` is `bossd-PID-vip-CASE`, and `C` is the case's own number, so each
//! test has its own /24 (tests/netns.rs uses 10.101 and 10.102). Nothing
//! is addressed outside these namespaces. Each host's MAC is fixed
//! (`02:00:0a:74:C:N`), as a real NIC's is across a reboot.
//!
//! Each case is one function over the same [`Bed`]: `form` the cluster,
//! do the fault with the fault's method, `failover` to learn the new
//! master and time it, `hold` to check the client stays with it, and
//! `never_back` over the whole run. The service is this test binary
//! itself, started with [`SERVICE_ENV`] set (see `main`), so the suite
//! needs nothing but `ip`, `nft` and `arping`.
//!
//! Needs root, `ip` (iproute2), `nft` (nftables; a cut is a bridge-family
//! rule in the bridge namespace) and iputils' `arping` (the hook's
//! gratuitous ARP). Without them each test says SKIPPED, why, and the
//! command that runs it; under CI a skip is a failure. Everything is
//! removed on exit, pass or fail, by Drop guards: the client thread
//! stopped, every bossd and service killed, then the namespaces deleted
//! with their veths, addresses and nftables tables.

mod common;

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::netns::{Namespaces, netns_path, nft_load, on_thread_in, preflight, run, try_run};
use common::{Node, Status, runner};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// A progress line, shown when the test fails or with `--nocapture`.
macro_rules! note {
    ($($arg:tt)*) => {
        runner::note(&format!($($arg)*))
    };
}

/// Hosts 1..=3; host N is `10.116.C.N`.
const HOSTS: usize = 3;
/// The first two octets of every case's /24.
const NET: (u8, u8) = (10, 116);
/// The VIP's host number in the case's /24.
const VIP_HOST: u8 = 100;
/// The client's host number.
const CLIENT_HOST: u8 = 200;
/// bossd listens on this port of its host's address.
const BOSSD_PORT: u16 = 7000;
/// The service listens on this port of every address of its host.
const SERVICE_PORT: u16 = 8080;
/// Set to a host's name, this test binary is that host's service.
const SERVICE_ENV: &str = "BOSSD_VIP_TEST_SERVICE";
/// Set, this test binary is a `--check`: it exits 0 when the service on
/// its own host answers, 1 when it does not.
const PROBE_ENV: &str = "BOSSD_VIP_TEST_PROBE";
/// How long the probe waits for the service: a live one on the loopback
/// answers in well under a millisecond.
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);
/// The bridge-family table in the bridge namespace that cuts a host off.
const CUT_TABLE: &str = "bossd_vip_cut";
/// The hook, from this checkout.
const HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/vip-hook.sh");

/// How often the client starts a connection to the VIP: the resolution of
/// the failover time it sees.
const ASK_EVERY: Duration = Duration::from_millis(5);
/// How long one connection may take to be answered. A live host on the
/// bridge answers in well under a millisecond; a SYN to a dead or cut
/// host's MAC is never answered.
const ASK_TIMEOUT: Duration = Duration::from_millis(100);
/// The most connections in flight: ASK_TIMEOUT / ASK_EVERY of them pile up
/// while the VIP points at a dead host; more means the client fell behind.
const MAX_IN_FLIGHT: usize = 64;
/// The longest answer a service sends: a host's name and a newline.
const MAX_ANSWER: usize = 16;

/// Deadline for the client's first answer from a new master after a
/// fault: far beyond guarantee 5's --timeout + 2 × --heartbeat (0.7 s)
/// plus the hook.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline for the cluster, the addresses and the client to settle.
const SETTLE_DEADLINE: Duration = common::DEADLINE;
/// How long the client is watched staying with one host.
const HOLD: Duration = Duration::from_secs(1);
/// The fewest answers a hold must see: the client asks 200 times a second,
/// so even a starved machine gets far more.
const HOLD_MIN_ANSWERS: usize = 10;
/// How often waits look again.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// Lines of a node's log shown when a wait fails.
const LOG_TAIL_LINES: usize = 30;

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    if let Ok(name) = std::env::var(SERVICE_ENV) {
        serve(&name);
    }
    if std::env::var_os(PROBE_ENV).is_some() {
        probe();
    }
    runner::run(
        include_str!("vip.rs"),
        crate::test_list![
            vip_follows_the_master_when_its_bossd_crashes_and_its_host_goes_away,
            vip_follows_the_master_when_its_host_loses_power,
            vip_follows_the_master_when_it_freezes_and_leaves_it_on_resume,
            vip_moves_in_order_when_the_masters_service_fails_its_check,
            vip_moves_in_order_on_a_handover_for_maintenance,
        ],
    )
}

// The master's bossd is SIGKILLed: its links close, so the others elect the
// next master at once (guarantee 4), whose hook adds the address and
// announces it. The old host keeps the address and its service (a killed
// bossd runs no hook) until its link is cut; the gratuitous ARP alone keeps
// the client away from it. When the host is back, its bossd is started
// again, as systemd's Restart= would: it joins as a follower (it is now
// the youngest) and its hook drops the stale address.
fn vip_follows_the_master_when_its_bossd_crashes_and_its_host_goes_away() {
    let mut bed = Bed::new("crash", 1);
    let old = bed.form();
    let fault = bed.crash(old);
    let new = bed.failover(old, fault, "SIGKILL of its bossd");
    bed.still_holds_vip(old, "a SIGKILLed bossd runs no hook");
    bed.hold(
        new,
        "the client stays with the new master while the old host still holds the VIP",
    );

    bed.net.cut(old);
    bed.note(&format!("cut h{old} off"));
    bed.hold(
        new,
        "the client stays with the new master while the old host is away",
    );

    bed.net.heal();
    bed.start_bossd(old);
    bed.note(&format!("h{old} is back, its bossd restarted"));
    bed.old_host_back(old, new, fault);
}

// The master's host loses power: its link is cut first, so no FIN or RST of
// its dying connections reaches anyone, then everything on it stops and
// its network namespace, with all its kernel held, is deleted. The others
// see only silence and elect the next master within --timeout + 2 ×
// --heartbeat (guarantee 5). Power comes back as a fresh namespace with the
// same MAC, address, service and bossd, which joins as a follower.
fn vip_follows_the_master_when_its_host_loses_power() {
    let mut bed = Bed::new("power", 2);
    let old = bed.form();
    let fault = bed.power_off(old);
    let new = bed.failover(old, fault, "power loss (link cut first)");
    bed.hold(
        new,
        "the client stays with the new master while the old host is off",
    );

    bed.power_on(old);
    bed.note(&format!("h{old} powered on"));
    bed.old_host_back(old, new, fault);
}

// The master's bossd is frozen (SIGSTOP) with its connections open: the
// others elect the next master after --timeout (guarantee 5) while the old
// host keeps the address and its service. On SIGCONT the old master finds
// its links gone and steps down, and its hook removes the address before
// anything else. The cluster runs with --no-preempt, as a VIP cluster
// should: the recovered member, although still the oldest, does not take
// the role back (guarantee 1), so the client never hears from it again.
fn vip_follows_the_master_when_it_freezes_and_leaves_it_on_resume() {
    let mut bed = Bed::new("freeze", 3);
    bed.bossd_args(&["--no-preempt"]);
    let old = bed.form();
    let fault = bed.freeze(old);
    let new = bed.failover(old, fault, "SIGSTOP of its bossd");
    bed.still_holds_vip(old, "a frozen bossd runs no hook");
    bed.hold(
        new,
        "the client stays with the new master while the old one is frozen",
    );

    bed.resume(old);
    bed.wait_until("the old master's hook removed the VIP on resume", |bed| {
        let log = bed.hosts[old - 1].log();
        let removed = format!("removed {}/24 from eth0", bed.net.vip());
        log.contains(&removed)
            .then_some(())
            .ok_or_else(|| format!("no `{removed}` in h{old}'s log"))
    });
    bed.old_host_back(old, new, fault);
}

// The master's service dies while its bossd runs on: its --check (the
// test binary as a probe of the service, every 100 ms, failing after two
// misses) turns it `failing`, and it hands over at once (guarantee 1,
// docs/GUARANTEES.md: a failing member is never master): its hook removes the VIP first, and only
// when that hook has ended does the next master's hook add it (guarantee
// 11), so at no moment do two hosts hold the address. With --no-preempt
// the old host, once its service is back and its check passes, stays a
// follower.
fn vip_moves_in_order_when_the_masters_service_fails_its_check() {
    let mut bed = Bed::new("check", 4);
    let probe = format!("{PROBE_ENV}=1 exec '{}'", exe_path());
    bed.bossd_args(&[
        "--no-preempt",
        "--check",
        &probe,
        "--check-interval",
        "100",
        "--check-fall",
        "2",
    ]);
    let old = bed.form();
    let fault = bed.stop_service(old);
    let new = bed.planned_failover(old, fault, "stop of its service");
    bed.hold(
        new,
        "the client stays with the new master while the old service is down",
    );

    bed.start_service(old);
    bed.note(&format!("h{old}'s service is back"));
    bed.old_host_back(old, new, fault);
}

// A planned move: `-handover` on the master (with --no-preempt, as it
// needs) gives the role to the best other member. The old master's hook
// removes the VIP before the new master's hook adds it (guarantee 11):
// the client sees a short gap in which no host answers, never two hosts,
// and never the old host again.
fn vip_moves_in_order_on_a_handover_for_maintenance() {
    let mut bed = Bed::new("handover", 5);
    bed.bossd_args(&["--no-preempt"]);
    let old = bed.form();
    let fault = Instant::now();
    if let Err(e) = bed.ask(old, "-handover") {
        panic!("-handover on h{old}: {e}\n{}", bed.describe());
    }
    bed.note(&format!("-handover on h{old}"));
    let new = bed.planned_failover(old, fault, "-handover");
    bed.hold(
        new,
        "the client stays with the new master after the handover",
    );
    bed.old_host_back(old, new, fault);
}

// ---------------------------------------------------------------------------
// The test bed
// ---------------------------------------------------------------------------

/// One host's processes, both killed on drop, and what its earlier bossd
/// processes logged.
#[derive(Default)]
struct Host {
    bossd: Option<Node>,
    /// Whether its bossd is SIGSTOPped: not to be asked anything.
    frozen: bool,
    service: Option<Service>,
    earlier_logs: String,
}

impl Host {
    /// Whether its bossd runs and can answer.
    fn answers(&self) -> bool {
        self.bossd.is_some() && !self.frozen
    }

    /// Forgets its bossd (killed, or to be killed on drop), keeping its log.
    fn retire_bossd(&mut self) {
        if let Some(node) = self.bossd.take() {
            self.earlier_logs.push_str(&node.stderr_text());
        }
    }

    /// Everything its bossd processes and their hooks wrote to stderr.
    fn log(&self) -> String {
        let current = self.bossd.as_ref().map(Node::stderr_text);
        format!("{}{}", self.earlier_logs, current.unwrap_or_default())
    }
}

/// The hosts, their bossd and services, the client and the network. The
/// fields drop in this order: the client stops, the processes are killed,
/// the namespaces are deleted.
struct Bed {
    case: &'static str,
    t0: Instant,
    client: Client,
    /// Index `host - 1`.
    hosts: Vec<Host>,
    /// Options every bossd of this case gets besides the hook and joins.
    args: Vec<String>,
    net: Net,
}

impl Bed {
    /// Checks the prerequisites, builds the network of case number `c`
    /// (`10.116.c.0/24`), starts each host's service and the client.
    fn new(case: &'static str, c: u8) -> Bed {
        preflight("create network namespaces, a bridge, veth pairs and nftables rules");
        runner::need_program(
            "arping",
            &["-V"],
            "apt-get install iputils-arping (the VIP hook's gratuitous ARP)",
        );
        let t0 = Instant::now();
        let net = Net::new(case, c);
        let client = Client::start(&net.client_ns(), net.vip_service());
        let mut bed = Bed {
            case,
            t0,
            client,
            hosts: (0..HOSTS).map(|_| Host::default()).collect(),
            args: Vec::new(),
            net,
        };
        for h in 1..=HOSTS {
            bed.start_service(h);
        }
        bed
    }

    /// Gives every bossd started from now on these options as well.
    fn bossd_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|&a| a.to_owned()).collect();
    }

    /// Starts bossd on hosts 1, 2, 3 in turn, each once the one before
    /// answers, so that host 1 is the oldest; waits until all agree on it,
    /// only it holds the VIP and the client is answered by it. Returns 1.
    fn form(&mut self) -> usize {
        for h in 1..=HOSTS {
            self.start_bossd(h);
            self.wait_until(&format!("h{h}'s bossd answers -s"), |bed| {
                bed.status(h).map(|_| ())
            });
        }
        let first = 1;
        self.wait_settled(first);
        self.note(&format!("formed: h{first} is master and holds the VIP"));
        first
    }

    /// Waits until every host whose bossd answers agrees that `master` is
    /// the master and has run the hooks of all its changes, only
    /// `master`'s host holds the VIP, and the client has been answered by
    /// it since then.
    ///
    /// A fault comes only after this. A hook still running when its bossd
    /// is killed goes on in its own process group: an old master's arping
    /// would announce the VIP once more a second later and pull the client
    /// back (systemd's KillMode=control-group ends it with bossd; here
    /// nothing would).
    fn wait_settled(&mut self, master: usize) {
        self.wait_until(&format!("all agree on h{master}"), |bed| bed.agreed(master));
        self.wait_until("every bossd has run the hooks of all its changes", |bed| {
            (1..=HOSTS)
                .filter(|&h| bed.hosts[h - 1].answers())
                .try_for_each(|h| bed.hooks_done(h))
        });
        self.wait_until(&format!("only h{master} holds the VIP"), |bed| {
            match bed.net.vip_holders() {
                holders if holders == [master] => Ok(()),
                holders => Err(format!("the VIP is on hosts {holders:?}")),
            }
        });
        let since = Instant::now();
        self.wait_until(&format!("the client is answered by h{master}"), |bed| {
            bed.client
                .first_answer_from(master, since)
                .map(|_| ())
                .ok_or_else(|| "no answer from it yet".to_owned())
        });
    }

    /// Whether every host whose bossd answers reports `master` as the
    /// master, with one epoch and the right role.
    fn agreed(&self, master: usize) -> Result<(), String> {
        let want = self.net.bossd_addr(master).to_string();
        let mut epoch = None;
        for h in 1..=HOSTS {
            if !self.hosts[h - 1].answers() {
                continue;
            }
            let s = self.status(h)?;
            let role = if h == master { "master" } else { "follower" };
            if s.master.as_deref() != Some(want.as_str())
                || s.role != role
                || epoch.is_some_and(|e| e != s.epoch)
            {
                return Err(format!(
                    "h{h}: want role={role} master={want}, got: {}",
                    s.line
                ));
            }
            epoch = Some(s.epoch);
        }
        Ok(())
    }

    /// The client's first answer from a host other than `old` after
    /// `fault`; prints how long after the fault it came, checks that the
    /// survivors elected that host and that the client's neighbour entry
    /// for the VIP names its MAC. Returns the new master.
    fn failover(&mut self, old: usize, fault: Instant, what: &str) -> usize {
        let mut first = None;
        let deadline = Instant::now() + FAILOVER_DEADLINE;
        while first.is_none() {
            first = self.client.first_answer_not_from(old, fault);
            if first.is_none() && Instant::now() > deadline {
                panic!(
                    "the client was not answered by any host but h{old} within \
                     {FAILOVER_DEADLINE:?} of the {what}\n{}",
                    self.describe()
                );
            }
            thread::sleep(CHECK_EVERY);
        }
        let first = first.expect("loop ends on Some");
        let new = first.host;
        let ms = first.done.duration_since(fault).as_secs_f64() * 1e3;
        println!(
            "vip {}: the client's first answer from the new master h{new} came {ms:.1} ms \
             after the {what} of h{old} (its request was sent {:.1} ms after)",
            self.case,
            first.sent.saturating_duration_since(fault).as_secs_f64() * 1e3
        );
        self.note(&format!("failover to h{new}: {ms:.1} ms after the {what}"));
        self.wait_until(&format!("the survivors agree on h{new}"), |bed| {
            bed.agreed(new)
        });
        let mac = self.net.mac(new);
        self.wait_until(
            &format!("the client's neighbour entry for the VIP names h{new}'s MAC {mac}"),
            |bed| match bed.net.client_vip_mac() {
                Some(m) if m == mac => Ok(()),
                other => Err(format!("the entry names {other:?}")),
            },
        );
        new
    }

    /// A planned move away from `old` (guarantee 11), begun at `fault`:
    /// while waiting for the client's first answer from another host,
    /// checks over and over that at most one host holds the VIP; then
    /// that `old` holds it no more (its hook removed it before the new
    /// master's hook added it), and prints the gap in which no host
    /// answered. Returns the new master.
    fn planned_failover(&mut self, old: usize, fault: Instant, what: &str) -> usize {
        let deadline = Instant::now() + FAILOVER_DEADLINE;
        while self.client.first_answer_not_from(old, fault).is_none() {
            let holders = self.net.vip_holders();
            assert!(
                holders.len() <= 1,
                "after the {what} of h{old}, hosts {holders:?} hold the VIP at once\n{}",
                self.describe()
            );
            assert!(
                Instant::now() <= deadline,
                "the client was not answered by any host but h{old} within \
                 {FAILOVER_DEADLINE:?} of the {what}\n{}",
                self.describe()
            );
            thread::sleep(CHECK_EVERY);
        }
        let new = self.failover(old, fault, what);
        assert!(
            !self.net.holds_vip(old),
            "h{old} still holds the VIP although h{new} answers for it\n{}",
            self.describe()
        );
        let first = self
            .client
            .first_answer_from(new, fault)
            .expect("failover saw it");
        let last_old = self
            .client
            .attempts()
            .into_iter()
            .filter(|a| a.host == old && a.done <= first.done)
            .max_by_key(|a| a.sent);
        if let Some(last) = last_old {
            println!(
                "vip {}: no host answered requests sent in the {:.1} ms between the old \
                 master's last answer and the new master's first",
                self.case,
                first
                    .sent
                    .saturating_duration_since(last.sent)
                    .as_secs_f64()
                    * 1e3
            );
        }
        new
    }

    /// Checks that `host` still holds the VIP, which it should because
    /// `why`.
    fn still_holds_vip(&self, host: usize, why: &str) {
        assert!(
            self.net.holds_vip(host),
            "h{host} should still hold the VIP: {why}\n{}",
            self.describe()
        );
    }

    /// Checks that every answer the client gets for [`HOLD`] comes from
    /// `host`, and that it gets enough of them.
    fn hold(&mut self, host: usize, what: &str) {
        let from = Instant::now();
        thread::sleep(HOLD);
        let to = Instant::now();
        let answers = self.client.answers_between(from, to);
        let strays: Vec<&Attempt> = answers.iter().filter(|a| a.host != host).collect();
        if !strays.is_empty() || answers.len() < HOLD_MIN_ANSWERS {
            panic!(
                "{what}: of {} answers in {HOLD:?}, {} came from other hosts than h{host} \
                 (first: {:?}; at least {HOLD_MIN_ANSWERS} expected from h{host})\n{}",
                answers.len(),
                strays.len(),
                strays.first().map(|a| (a.host, self.ms(a.done))),
                self.describe()
            );
        }
        self.note(&format!(
            "held {HOLD:?} ({} answers, all from h{host}): {what}",
            answers.len()
        ));
    }

    /// Once `old` is back after the failover to `new` at `fault`: waits
    /// until all agree on `new` and only `new` holds the VIP, checks that
    /// the client stays with it, and that the old host answered no request
    /// sent after the client first heard from the new master.
    fn old_host_back(&mut self, old: usize, new: usize, fault: Instant) {
        self.wait_settled(new);
        self.hold(
            new,
            "the client stays with the new master once the old host is back",
        );
        self.never_back(old, new, fault, Instant::now());
    }

    /// Checks that no request the client sent between its first answer
    /// from `new` after `fault` and `until` was answered by `old`.
    fn never_back(&mut self, old: usize, new: usize, fault: Instant, until: Instant) {
        let first = self
            .client
            .first_answer_from(new, fault)
            .expect("the failover saw an answer from the new master");
        let back: Vec<Attempt> = self
            .client
            .attempts()
            .into_iter()
            .filter(|a| a.host == old && a.sent >= first.done && a.sent <= until)
            .collect();
        if let Some(a) = back.first() {
            panic!(
                "{} requests sent after the client first heard from h{new} (at {} ms) were \
                 answered by the old master h{old}; the first sent at {} ms\n{}",
                back.len(),
                self.ms(first.done),
                self.ms(a.sent),
                self.describe()
            );
        }
    }

    // --- Faults -----------------------------------------------------------

    /// SIGKILLs `host`'s bossd; the instant just before.
    fn crash(&mut self, host: usize) -> Instant {
        let node = self.hosts[host - 1].bossd.as_mut().expect("bossd runs");
        let at = Instant::now();
        node.sigkill();
        self.hosts[host - 1].retire_bossd();
        self.note(&format!("SIGKILLed h{host}'s bossd"));
        at
    }

    /// SIGSTOPs `host`'s bossd; the instant just before.
    fn freeze(&mut self, host: usize) -> Instant {
        self.set_frozen(host, true)
    }

    /// SIGCONTs `host`'s bossd; the instant just before.
    fn resume(&mut self, host: usize) -> Instant {
        self.set_frozen(host, false)
    }

    fn set_frozen(&mut self, host: usize, frozen: bool) -> Instant {
        let at = Instant::now();
        let h = &mut self.hosts[host - 1];
        let node = h.bossd.as_ref().expect("bossd runs");
        if frozen {
            node.sigstop()
        } else {
            node.sigcont()
        }
        h.frozen = frozen;
        let signal = if frozen { "SIGSTOP" } else { "SIGCONT" };
        self.note(&format!("{signal}: h{host}'s bossd"));
        at
    }

    /// Kills `host`'s service, leaving its bossd running; the instant just
    /// before.
    fn stop_service(&mut self, host: usize) -> Instant {
        let at = Instant::now();
        self.hosts[host - 1].service = None;
        self.note(&format!("killed h{host}'s service"));
        at
    }

    /// Cuts `host`'s link, then kills everything on it and deletes its
    /// namespace; the instant the cut was in place.
    fn power_off(&mut self, host: usize) -> Instant {
        self.net.cut(host);
        let at = Instant::now();
        self.hosts[host - 1].retire_bossd();
        self.hosts[host - 1].service = None;
        self.net.remove_host(host);
        self.note(&format!("h{host} lost power"));
        at
    }

    /// Lifts the cut and brings `host` back as from a boot: its namespace,
    /// link and address, then its service and bossd.
    fn power_on(&mut self, host: usize) {
        self.net.heal();
        self.net.add_host(host);
        self.start_service(host);
        self.start_bossd(host);
    }

    // --- Processes --------------------------------------------------------

    /// Starts the service of `host` and waits until it answers on the
    /// host's own address.
    fn start_service(&mut self, host: usize) {
        self.hosts[host - 1].service = Some(Service::start(&self.net.host_ns(host), host));
        let addr = SocketAddr::new(IpAddr::V4(self.net.ip(host as u8)), SERVICE_PORT);
        self.wait_until(&format!("h{host}'s service answers"), move |bed| {
            on_thread_in(&bed.net.client_ns(), move || {
                let mut s = TcpStream::connect_timeout(&addr, ASK_TIMEOUT)
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                let mut name = String::new();
                s.set_read_timeout(Some(ASK_TIMEOUT))
                    .and_then(|()| s.read_to_string(&mut name))
                    .map_err(|e| format!("no answer from {addr}: {e}"))?;
                (name.trim() == format!("h{host}"))
                    .then_some(())
                    .ok_or_else(|| format!("{addr} answered {name:?}"))
            })?
        });
    }

    /// Starts bossd on `host`, joining the other hosts, with the VIP hook.
    fn start_bossd(&mut self, host: usize) {
        let hook = format!("VIP={}/24 VIP_IFACE=eth0 exec '{HOOK}'", self.net.vip());
        let joins: Vec<String> = (1..=HOSTS)
            .filter(|&h| h != host)
            .map(|h| self.net.bossd_addr(h).to_string())
            .collect();
        let mut args = vec!["--no-console", "--notify", hook.as_str()];
        args.extend(self.args.iter().map(String::as_str));
        for j in &joins {
            args.extend(["--join", j.as_str()]);
        }
        let node = Node::spawn_in_netns(
            &self.net.host_ns(host),
            &format!("h{host}"),
            self.net.bossd_addr(host),
            &args,
        );
        self.hosts[host - 1].retire_bossd();
        self.hosts[host - 1].bossd = Some(node);
    }

    /// The `-s` line of `host`'s bossd.
    fn status(&self, host: usize) -> Result<Status, String> {
        match self.ask(host, "-s")?.as_slice() {
            [line] => Status::parse(line),
            lines => Err(format!("h{host}: -s answered {lines:?}")),
        }
    }

    /// Whether the hook of `host`'s latest change (the last line of its
    /// journal, `-j`) has ended: a `hook-exited`, `hook-failed` or
    /// `hook-killed` line with that change's fields is in its log.
    fn hooks_done(&self, host: usize) -> Result<(), String> {
        let journal = self.ask(host, "-j")?;
        let last = journal
            .last()
            .ok_or_else(|| format!("h{host} has no change in its journal"))?;
        // `TIME epoch=N FROM->TO master=M cause=C`
        let words: Vec<&str> = last.split(' ').collect();
        let (epoch, change, master) = match words.as_slice() {
            [_, epoch, change, master, _] => (
                epoch.strip_prefix("epoch="),
                change.split_once("->"),
                master.strip_prefix("master="),
            ),
            _ => (None, None, None),
        };
        let (Some(epoch), Some((from, to)), Some(master)) = (epoch, change, master) else {
            return Err(format!("h{host}: a journal line {last:?}"));
        };
        let change = [
            ("from", from),
            ("to", to),
            ("epoch", epoch),
            ("master", master),
        ];
        let node = self.hosts[host - 1].bossd.as_ref().expect("it answers");
        ["hook-exited", "hook-failed", "hook-killed"]
            .iter()
            .any(|end| node.logged(end, &change))
            .then_some(())
            .ok_or_else(|| format!("h{host}: the hook of {last:?} has not ended"))
    }

    /// Asks `host`'s bossd one console command from the client's
    /// namespace; the answer's lines.
    fn ask(&self, host: usize, command: &'static str) -> Result<Vec<String>, String> {
        let addr = self.net.bossd_addr(host);
        let answer = on_thread_in(&self.net.client_ns(), move || {
            bossd::ctl::ask(addr, command).map_err(|e| format!("{e:#}"))
        })??;
        answer
            .result
            .map_err(|e| format!("h{host}: {command} answered ERR {e}"))?;
        Ok(answer.lines)
    }

    // --- Waiting and telling ----------------------------------------------

    /// Polls `cond` until it returns `Ok`; panics after [`SETTLE_DEADLINE`]
    /// with its last `Err` and everything [`Bed::describe`] shows, or at
    /// once when a bossd exited.
    fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&Bed) -> Result<(), String>) {
        let end = Instant::now() + SETTLE_DEADLINE;
        loop {
            let last = match cond(self) {
                Ok(()) => break,
                Err(why) => why,
            };
            let exited = self
                .hosts
                .iter_mut()
                .enumerate()
                .find_map(|(i, h)| h.bossd.as_mut()?.try_exit().map(|s| (i + 1, s)));
            if let Some((h, status)) = exited {
                panic!(
                    "h{h}'s bossd exited ({}) while waiting for: {what}\n{}",
                    common::describe_exit(status),
                    self.describe()
                );
            }
            if Instant::now() > end {
                panic!(
                    "timed out after {SETTLE_DEADLINE:?} waiting for: {what}\nlast: {last}\n{}",
                    self.describe()
                );
            }
            thread::sleep(CHECK_EVERY);
        }
        self.note(what);
    }

    /// Every host's status, addresses and log tail, and the client's
    /// record, for failure messages.
    fn describe(&self) -> String {
        let mut out = String::new();
        for h in 1..=HOSTS {
            let host = &self.hosts[h - 1];
            let status = if host.answers() {
                self.status(h).map(|s| s.line).unwrap_or_else(|e| e)
            } else if host.frozen {
                "frozen".to_owned()
            } else {
                "no bossd".to_owned()
            };
            let _ = writeln!(
                out,
                "--- h{h}: {status}\n    VIP held: {}",
                self.net.holds_vip(h)
            );
            for line in tail(&self.hosts[h - 1].log(), LOG_TAIL_LINES) {
                let _ = writeln!(out, "    {line}");
            }
        }
        let _ = writeln!(
            out,
            "--- the client's neighbour entry for the VIP: {:?}",
            self.net.client_vip_mac()
        );
        let _ = writeln!(out, "--- the client saw (ms since the test began):");
        out.push_str(&self.client.timeline(self.t0));
        out
    }

    fn note(&self, what: &str) {
        note!("[{} {:>6} ms] {what}", self.case, self.ms(Instant::now()));
    }

    fn ms(&self, t: Instant) -> u128 {
        t.saturating_duration_since(self.t0).as_millis()
    }
}

fn tail(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

// ---------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------

/// The namespaces of one case; deleted on drop.
struct Net {
    /// `bossd-PID-vip-CASE`: the start of every namespace name.
    prefix: String,
    /// The case's number: the third octet of its /24.
    c: u8,
    namespaces: Namespaces,
}

impl Net {
    fn new(case: &str, c: u8) -> Net {
        let mut net = Net {
            prefix: format!("bossd-{}-vip-{case}", std::process::id()),
            c,
            namespaces: Namespaces::new(),
        };
        net.namespaces.add_bridge(&net.bridge_ns());
        for h in 1..=HOSTS {
            net.add_host(h);
        }
        let (bridge, client) = (net.bridge_ns(), net.client_ns());
        let cidr = format!("{}/24", net.ip(CLIENT_HOST));
        net.namespaces.add_host(&bridge, "vcl", &client, &cidr);
        net
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    fn host_ns(&self, host: usize) -> String {
        format!("{}-h{host}", self.prefix)
    }

    fn client_ns(&self) -> String {
        format!("{}-cl", self.prefix)
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(NET.0, NET.1, self.c, host)
    }

    fn vip(&self) -> Ipv4Addr {
        self.ip(VIP_HOST)
    }

    fn vip_service(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.vip()), SERVICE_PORT)
    }

    fn bossd_addr(&self, host: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip(host as u8)), BOSSD_PORT)
    }

    /// `host`'s fixed MAC, `02:00:0a:74:C:N`, as `ip` writes it.
    fn mac(&self, host: usize) -> String {
        format!(
            "02:00:{:02x}:{:02x}:{:02x}:{host:02x}",
            NET.0, NET.1, self.c
        )
    }

    /// Creates `host`'s namespace, plugged into the bridge, with its MAC
    /// and address.
    fn add_host(&mut self, host: usize) {
        let (bridge, ns) = (self.bridge_ns(), self.host_ns(host));
        let cidr = format!("{}/24", self.ip(host as u8));
        self.namespaces
            .add_host(&bridge, &format!("vh{host}"), &ns, &cidr);
        run(&[
            "ip",
            "-n",
            &ns,
            "link",
            "set",
            "eth0",
            "address",
            &self.mac(host),
        ]);
    }

    /// Deletes `host`'s link and namespace: its address, VIP and every
    /// connection its kernel held are gone. The link goes first and by
    /// itself: the connections of its killed processes, their FINs held
    /// back by the cut, keep the namespace alive in the kernel until they
    /// time out, and its veth with it, whose bridge end would block the
    /// next boot's.
    fn remove_host(&mut self, host: usize) {
        run(&[
            "ip",
            "-n",
            &self.bridge_ns(),
            "link",
            "del",
            &format!("vh{host}"),
        ]);
        let ns = self.host_ns(host);
        self.namespaces.delete(&ns);
    }

    /// Drops every frame to or from `host` at the bridge: nobody, `host`
    /// included, sees a link go down or a connection close.
    fn cut(&self, host: usize) {
        let port = format!("vh{host}");
        nft_load(
            &self.bridge_ns(),
            &format!(
                "table bridge {CUT_TABLE} {{\n\
                 \tchain forward {{ type filter hook forward priority 0; policy accept; \
                 iifname \"{port}\" drop; oifname \"{port}\" drop; }}\n\
                 }}\n"
            ),
        );
    }

    /// Lifts the cut.
    fn heal(&self) {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.bridge_ns(),
            "nft",
            "delete",
            "table",
            "bridge",
            CUT_TABLE,
        ]);
    }

    /// Whether `host`'s `eth0` holds the VIP now; false for a host that is
    /// powered off.
    fn holds_vip(&self, host: usize) -> bool {
        let ns = self.host_ns(host);
        if !std::path::Path::new(&netns_path(&ns)).exists() {
            return false;
        }
        let shown = try_run(
            &["ip", "-n", &ns, "-o", "addr", "show", "dev", "eth0"],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        shown.contains(&format!(" {}/", self.vip()))
    }

    /// The hosts that hold the VIP now.
    fn vip_holders(&self) -> Vec<usize> {
        (1..=HOSTS).filter(|&h| self.holds_vip(h)).collect()
    }

    /// The MAC the client's neighbour entry for the VIP names, if any.
    fn client_vip_mac(&self) -> Option<String> {
        let shown = try_run(
            &[
                "ip",
                "-n",
                &self.client_ns(),
                "neigh",
                "show",
                &self.vip().to_string(),
                "dev",
                "eth0",
            ],
            None,
        )
        .ok()?;
        let mut words = shown.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/// A host's service: this test binary, run inside the host's namespace with
/// [`SERVICE_ENV`] set to the host's name. Killed with SIGKILL on drop, or
/// when the thread that started it ends (a test process killed outright
/// leaves none behind).
struct Service {
    child: Child,
}

impl Service {
    fn start(ns: &str, host: usize) -> Service {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&exe)
            .env(SERVICE_ENV, format!("h{host}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: prctl(2) is async-signal-safe and changes only the child;
        // `ip netns exec` execs the binary in place, which keeps the
        // setting (neither is set-user-ID).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the service in {ns}: {e}"));
        Service { child }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service's body: answers every connection to port [`SERVICE_PORT`],
/// on any address, with `name` and a newline, then closes it. Runs until
/// killed.
fn serve(name: &str) -> ! {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, SERVICE_PORT)).unwrap_or_else(|e| {
        eprintln!("vip service {name}: cannot listen on port {SERVICE_PORT}: {e}");
        std::process::exit(1)
    });
    let answer = format!("{name}\n");
    loop {
        match listener.accept() {
            // A client that went away is no concern of the service.
            Ok((mut conn, _)) => {
                let _ = conn.write_all(answer.as_bytes());
            }
            // Out of descriptors, say: wait rather than spin.
            Err(_) => thread::sleep(CHECK_EVERY),
        }
    }
}

/// The probe's body, run by bossd as its `--check` inside the host's
/// namespace: exits 0 if the service on this host answers with a name
/// within [`PROBE_TIMEOUT`], else 1.
fn probe() -> ! {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, SERVICE_PORT));
    let answered = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).and_then(|mut s| {
        s.set_read_timeout(Some(PROBE_TIMEOUT))?;
        let mut name = String::new();
        s.read_to_string(&mut name)?;
        Ok(name.starts_with('h'))
    });
    std::process::exit(if matches!(answered, Ok(true)) { 0 } else { 1 })
}

/// This test binary's path, for the probe.
fn exe_path() -> String {
    std::env::current_exe()
        .expect("the test binary's path")
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// One request of the client that was answered.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    /// When the connection was started.
    sent: Instant,
    /// When the answer was complete.
    done: Instant,
    /// The host that answered.
    host: usize,
}

/// What the client saw, answered or not, in order of completion.
#[derive(Default)]
struct Record {
    answered: Vec<Attempt>,
    /// Requests not answered: (sent, done, why).
    failed: Vec<(Instant, Instant, String)>,
}

/// A thread in the client's namespace that connects to the VIP every
/// [`ASK_EVERY`], without waiting for earlier connections, so the moment
/// the VIP moves is seen within that resolution even while connections
/// to a dead host are still waiting out [`ASK_TIMEOUT`]. Stopped on drop.
struct Client {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    record: Arc<Mutex<Record>>,
}

impl Client {
    fn start(ns: &str, vip: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let path = netns_path(ns);
        let (s, r) = (Arc::clone(&stop), Arc::clone(&record));
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("client of {vip}"))
            .spawn(move || {
                let entered = common::netns::enter_netns(&path);
                let ok = entered.is_ok();
                let _ = entered_tx.send(entered);
                if ok {
                    ask_loop(vip, &s, &r);
                }
            })
            .expect("spawn the client thread");
        match entered_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the client cannot enter {ns}: {e}"),
            Err(_) => panic!("the client thread died"),
        }
        Client {
            stop,
            thread: Some(thread),
            record,
        }
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.record.lock().expect("client record").answered.clone()
    }

    /// The earliest-completed answer from `host` completed after `after`.
    fn first_answer_from(&self, host: usize, after: Instant) -> Option<Attempt> {
        self.first_answer(after, |h| h == host)
    }

    /// The earliest-completed answer from any host but `host` completed
    /// after `after`.
    fn first_answer_not_from(&self, host: usize, after: Instant) -> Option<Attempt> {
        self.first_answer(after, |h| h != host)
    }

    fn first_answer(&self, after: Instant, host: impl Fn(usize) -> bool) -> Option<Attempt> {
        let record = self.record.lock().expect("client record");
        record
            .answered
            .iter()
            .filter(|a| a.done >= after && host(a.host))
            .min_by_key(|a| a.done)
            .copied()
    }

    /// The answers completed within `[from, to]`.
    fn answers_between(&self, from: Instant, to: Instant) -> Vec<Attempt> {
        let record = self.record.lock().expect("client record");
        record
            .answered
            .iter()
            .filter(|a| a.done >= from && a.done <= to)
            .copied()
            .collect()
    }

    /// Runs of consecutive outcomes, one a line: who answered (or why not),
    /// how often, from when to when, in ms since `t0`.
    fn timeline(&self, t0: Instant) -> String {
        let record = self.record.lock().expect("client record");
        let mut all: Vec<(Instant, String)> = record
            .answered
            .iter()
            .map(|a| (a.done, format!("answered by h{}", a.host)))
            .chain(record.failed.iter().map(|(_, d, why)| (*d, why.clone())))
            .collect();
        all.sort_by_key(|(t, _)| *t);
        let ms = |t: Instant| t.saturating_duration_since(t0).as_millis();
        let mut out = String::new();
        let mut i = 0;
        while i < all.len() {
            let j = (i..all.len())
                .find(|&j| all[j].1 != all[i].1)
                .unwrap_or(all.len());
            let _ = writeln!(
                out,
                "    {:>6}..{:<6} {:>5} x {}",
                ms(all[i].0),
                ms(all[j - 1].0),
                j - i,
                all[i].1
            );
            i = j;
        }
        out
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection in flight.
struct Flight {
    stream: MioStream,
    sent: Instant,
    answer: Vec<u8>,
}

/// The client's loop: start a connection every [`ASK_EVERY`], read each
/// answer to its end, give up on one after [`ASK_TIMEOUT`].
fn ask_loop(vip: SocketAddr, stop: &AtomicBool, record: &Mutex<Record>) {
    let mut poll = Poll::new().expect("a mio poll");
    let mut events = Events::with_capacity(MAX_IN_FLIGHT);
    let mut flights: Slab<Flight> = Slab::with_capacity(MAX_IN_FLIGHT);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            next = now + ASK_EVERY;
            if flights.len() < MAX_IN_FLIGHT {
                match MioStream::connect(vip) {
                    Ok(mut stream) => {
                        let key = flights.vacant_key();
                        poll.registry()
                            .register(&mut stream, Token(key), Interest::READABLE)
                            .expect("register a connection");
                        flights.insert(Flight {
                            stream,
                            sent: now,
                            answer: Vec::new(),
                        });
                    }
                    Err(e) => fail(record, now, format!("cannot connect: {e}")),
                }
            } else {
                fail(record, now, "too many connections in flight".to_owned());
            }
        }
        let expired: Vec<usize> = flights
            .iter()
            .filter(|(_, f)| now >= f.sent + ASK_TIMEOUT)
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            let f = flights.remove(k);
            fail(record, f.sent, format!("no answer within {ASK_TIMEOUT:?}"));
        }
        let wake = flights
            .iter()
            .map(|(_, f)| f.sent + ASK_TIMEOUT)
            .fold(next, Instant::min);
        let timeout = wake.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != ErrorKind::Interrupted
        {
            panic!("the client's poll failed: {e}");
        }
        for ev in events.iter() {
            let k = ev.token().0;
            let Some(f) = flights.get_mut(k) else {
                continue;
            };
            if let Some(outcome) = read_answer(f) {
                let mut f = flights.remove(k);
                let _ = poll.registry().deregister(&mut f.stream);
                let done = Instant::now();
                let mut r = record.lock().expect("client record");
                match outcome {
                    Ok(host) => r.answered.push(Attempt {
                        sent: f.sent,
                        done,
                        host,
                    }),
                    Err(why) => r.failed.push((f.sent, done, why)),
                }
            }
        }
    }
}

/// Reads what has arrived; `None` while the answer is incomplete, else the
/// answering host or why there is none.
fn read_answer(f: &mut Flight) -> Option<Result<usize, String>> {
    let mut buf = [0u8; MAX_ANSWER];
    loop {
        match f.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if f.answer.len() + n <= MAX_ANSWER => f.answer.extend_from_slice(&buf[..n]),
            Ok(_) => return Some(Err("an answer too long".to_owned())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::NotConnected) => {
                return None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(e.kind().to_string())),
        }
    }
    let text = String::from_utf8_lossy(&f.answer);
    Some(
        text.trim()
            .strip_prefix('h')
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=HOSTS).contains(n))
            .ok_or_else(|| format!("a strange answer {text:?}")),
    )
}

fn fail(record: &Mutex<Record>, sent: Instant, why: String) {
    let mut r = record.lock().expect("client record");
    r.failed.push((sent, Instant::now(), why));
}
