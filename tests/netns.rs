//! Real-network partition tests (issue 3, item 6): five `bossd` hosts, each
//! in its own network namespace, on one Linux bridge. nftables cuts hosts
//! {1,2} off from {3,4,5}; later the rules are deleted again; three times
//! per test. An observer polls every node's `-s` every few milliseconds
//! for the whole run and records every sample, so a split brain that lasts
//! only moments is still seen; `Record::overlaps` states the rule that
//! decides when two `role=master` samples count as two masters at once.
//! Guarantees 1, 2, 7, 8 and 9 (docs/GUARANTEES.md).
//!
//! The network lives entirely inside namespaces these tests create; the
//! machine's own interfaces, routes and firewall are never touched:
//!
//! ```text
//!   bossd-PID-TAG-br:  br0 10.A.B.254/24 (the observer), ports vh1..vh5
//!                         | one veth pair per host
//!   bossd-PID-TAG-hN:  eth0 10.A.B.N/24, running bossd 10.A.B.N 7000
//! ```
//!
//! The observer runs as threads of this test process inside the bridge
//! namespace: setns(2) with `CLONE_NEWNET` moves only the calling thread,
//! and a socket stays in the namespace it was created in. So each observer
//! thread enters the bridge namespace, keeps one console connection to its
//! node and asks `-s` in a loop, while the test thread stays in the root
//! namespace, runs `ip` and `nft`, and reads the samples from shared
//! memory. (An observer child process under `ip netns exec` would need a
//! protocol of its own to hand its samples back.)
//!
//! The cut is an `inet` nftables table in each host's namespace that drops
//! input from, and output to, the other side's addresses: a silent cut, no
//! connection is closed. The observer's address is in no rule, so it keeps
//! reaching everybody. Healing deletes the tables.
//!
//! Needs root, `ip` with netns support (Debian package iproute2) and `nft`
//! (nftables). Without them each partition test says SKIPPED, why, and the
//! command that runs it (`tests/common/runner.rs`, a `harness = false`
//! suite); under CI a skip is a failure. Everything they create is removed on exit, pass or fail,
//! by Drop guards: the bossd processes are killed first, then the observer
//! threads stopped, then the namespaces deleted, which removes the veths,
//! the bridge and the nftables tables with them. Names carry the pid and a
//! per-test tag, so parallel runs never collide. (Only a test process killed
//! outright leaves its `bossd-PID-*` namespaces behind, for `ip netns del`.)
//!
//! As everywhere in the real-process tests, conditions are polled with
//! generous deadlines and nothing asserts how long anything took.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::netns::{Namespaces, enter_netns, netns_path, nft_load, on_thread_in, preflight, run};
use common::{Node, Status, runner};

/// A progress line, shown when the test fails or with `--nocapture`.
macro_rules! note {
    ($($arg:tt)*) => {
        runner::note(&format!($($arg)*))
    };
}

/// Hosts 1..=5; host N is `10.A.B.N`.
const HOSTS: usize = 5;
/// The minority side of the cut.
const SIDE_A: [usize; 2] = [1, 2];
/// The majority side of the cut.
const SIDE_B: [usize; 3] = [3, 4, 5];
/// Every node listens on this port of its own address.
const PORT: u16 = 7000;
/// The observer's host number on the bridge.
const OBSERVER_HOST: u8 = 254;
/// The nftables table that makes the cut, one per host namespace.
const CUT_TABLE: &str = "bossd_cut";

/// Pause between two polls of one node: "every few milliseconds".
const POLL_EVERY: Duration = Duration::from_millis(3);
/// Pause after a failed poll, so a dead node is not hammered.
const RETRY_EVERY: Duration = Duration::from_millis(20);
/// How long one poll may take to connect or to be answered before it
/// counts as failed; a live node answers in well under a millisecond.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the test thread looks at the latest samples.
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// Deadline to form the cluster, and for each side to settle after the
/// cut: far beyond the 2 × timeout (1 s) of guarantee 1, and beyond the
/// lease a strict majority must wait out.
const AGREE_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline to merge after healing: lost peers are retried with a backoff
/// of up to 5 s plus jitter (guarantee 7), then guarantee 1 applies.
const HEAL_DEADLINE: Duration = Duration::from_secs(30);
/// Cut-and-heal cycles per test. A split brain at a cut or a merge is a
/// race that a broken build loses only now and then; each cycle is another
/// chance to see it, for a few seconds.
const CYCLES: usize = 3;
/// How long the cut is kept after both sides settled, checking that they
/// stay so while the backoff grows towards its 5 s cap.
const HOLD: Duration = Duration::from_secs(3);

/// Lines of a node's log shown when a wait fails.
const LOG_TAIL_LINES: usize = 30;

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    runner::run(
        include_str!("netns.rs"),
        crate::test_list![
            partition_at_default_quorum_gives_each_side_a_master_then_heals,
            partition_with_strict_majority_quorum_never_shows_two_masters,
            overlap_rule_tells_sure_from_possible,
        ],
    )
}

// Guarantees 1, 2 and 7 (docs/GUARANTEES.md) at the default quorum of 2 (availability
// first, like keepalived): a cut gives each side of two or more nodes its
// own agreed master, and once healed the sides become one group again with
// one master, the oldest. Guarantee 9: no node's epoch ever goes back.
fn partition_at_default_quorum_gives_each_side_a_master_then_heals() {
    let mut bed = Testbed::new("q2", 101, &[]);
    bed.form();
    for cycle in 1..=CYCLES {
        let cut = bed.cut(cycle);
        let sides_agree = |st: &[Status]| {
            group_agrees(st, &SIDE_A)?;
            group_agrees(st, &SIDE_B)
        };
        bed.wait_for(
            "each side of the cut agrees on its own master",
            AGREE_DEADLINE,
            cut,
            sides_agree,
        );
        bed.holds_for("each side keeps its own master", HOLD, cut, sides_agree);

        let healed = bed.heal(cycle);
        bed.wait_for(
            "all five agree on one master again after healing",
            HEAL_DEADLINE,
            healed,
            |st| group_agrees(st, &ALL),
        );
    }

    let record = bed.finish();
    record.print("default quorum 2");
    // Two masters during the cut are expected here; they are only reported.
    record.assert_epochs_never_go_back();
}

// Guarantees 2, 8, 1, 7 and 9 (docs/GUARANTEES.md) with `--quorum 3 --strict` (safety
// first, like etcd): the minority {1,2}, which holds the old master, drops
// to role=none; the majority elects its own master; the observer never sees
// two nodes report role=master at the same moment, nor two masters of one
// epoch; after healing exactly one master remains, the oldest, and all
// agree.
fn partition_with_strict_majority_quorum_never_shows_two_masters() {
    let mut bed = Testbed::new("st", 102, &["--quorum", "3", "--strict"]);
    bed.form();
    for cycle in 1..=CYCLES {
        let cut = bed.cut(cycle);
        let minority_out = |st: &[Status]| {
            minority_has_no_master(st)?;
            group_agrees(st, &SIDE_B)
        };
        bed.wait_for(
            "the minority reports role=none and the majority agrees on a master",
            AGREE_DEADLINE,
            cut,
            minority_out,
        );
        bed.holds_for(
            "the minority stays without a master, the majority keeps its own",
            HOLD,
            cut,
            minority_out,
        );

        let healed = bed.heal(cycle);
        bed.wait_for(
            "all five agree on one master again after healing",
            HEAL_DEADLINE,
            healed,
            |st| group_agrees(st, &ALL),
        );
    }

    let record = bed.finish();
    record.print("--quorum 3 --strict");
    record.assert_never_two_masters();
    record.assert_epochs_never_go_back();
}

/// All hosts, for [`group_agrees`].
const ALL: [usize; HOSTS] = [1, 2, 3, 4, 5];

/// Whether the hosts `group` (numbers 1..=5) of the snapshot `st` form one
/// agreed group (guarantees 1 and 3): the same `master` and `epoch`
/// everywhere, the master the group's first under the rule `oldest` (ties:
/// lowest address), `role=master` on it and `role=follower` elsewhere, and
/// `peers` counting exactly the rest of the group. `Err` says what is off.
fn group_agrees(st: &[Status], group: &[usize]) -> Result<(), String> {
    let members: Vec<&Status> = group.iter().map(|&h| &st[h - 1]).collect();
    let first = members
        .iter()
        .min_by_key(|s| (s.started, s.id.parse::<SocketAddr>().ok()))
        .expect("a group is not empty");
    let want = first.id.as_str();
    let epoch = members
        .iter()
        .find(|s| s.id == want)
        .map(|s| s.epoch)
        .expect("the first is a member");
    for s in &members {
        let role = if s.id == want { "master" } else { "follower" };
        if s.master.as_deref() != Some(want)
            || s.epoch != epoch
            || s.role != role
            || s.peers != group.len() - 1
        {
            return Err(format!(
                "hosts {group:?}: want master={want} epoch={epoch} role={role} peers={}, \
                 got: {}",
                group.len() - 1,
                s.line
            ));
        }
    }
    Ok(())
}

/// Whether both minority hosts report `role=none` (guarantee 2).
fn minority_has_no_master(st: &[Status]) -> Result<(), String> {
    for h in SIDE_A {
        let s = &st[h - 1];
        if s.role != "none" {
            return Err(format!("minority host {h} should be role=none: {}", s.line));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The test bed: network, observer and nodes
// ---------------------------------------------------------------------------

/// Five nodes on their network, watched by the observer. The fields drop
/// in this order: nodes killed, observer stopped, network deleted.
struct Testbed {
    /// Which test this is, in progress lines.
    tag: String,
    nodes: Vec<Node>,
    observer: Observer,
    lab: Lab,
    extra_args: Vec<String>,
    t0: Instant,
}

impl Testbed {
    /// Checks the prerequisites, builds the network `10.A.B.0/24` in
    /// namespaces tagged `tag` and starts the observer; nodes run with
    /// `extra_args` once [`Testbed::form`] starts them.
    fn new(tag: &str, a: u8, extra_args: &[&str]) -> Testbed {
        preflight("create network namespaces, a bridge, veth pairs and nftables rules");
        let t0 = Instant::now();
        let lab = Lab::new(tag, a);
        let addrs: Vec<SocketAddr> = (1..=HOSTS).map(|h| lab.node_addr(h)).collect();
        let observer = Observer::start(&lab.bridge_ns(), &addrs);
        Testbed {
            tag: tag.to_owned(),
            nodes: Vec::new(),
            observer,
            lab,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            t0,
        }
    }

    /// Starts host 1, waits until it answers (so it is the oldest), starts
    /// hosts 2..=5 joining it, and waits until all five agree on the
    /// group's first under the rule, which is then host 1.
    fn form(&mut self) {
        let join = self.lab.node_addr(1).to_string();
        for h in 1..=HOSTS {
            let mut args: Vec<&str> = vec!["--no-console"];
            if h > 1 {
                args.extend(["--join", join.as_str()]);
            }
            args.extend(self.extra_args.iter().map(String::as_str));
            let node = Node::spawn_in_netns(
                &self.lab.host_ns(h),
                &format!("h{h}"),
                self.lab.node_addr(h),
                &args,
            );
            self.nodes.push(node);
            if h == 1 {
                let since = Instant::now();
                self.wait_until("host 1 answers -s", AGREE_DEADLINE, |bed| {
                    bed.observer.latest(1, since).map(|_| ())
                });
            }
        }
        let since = Instant::now();
        self.wait_for(
            "all five agree on the oldest, host 1",
            AGREE_DEADLINE,
            since,
            |st| group_agrees(st, &ALL),
        );
        self.note(&format!("formed: {}", st_summary(&self.snapshot(since))));
    }

    /// Cuts {1,2} from {3,4,5}; the instant the last rule was in place.
    fn cut(&self, cycle: usize) -> Instant {
        self.lab.cut(&SIDE_A, &SIDE_B);
        let at = Instant::now();
        self.note(&format!("cut {cycle}/{CYCLES}: {SIDE_A:?} from {SIDE_B:?}"));
        at
    }

    /// Deletes the cut; the instant the last rule was gone.
    fn heal(&self, cycle: usize) -> Instant {
        self.lab.heal();
        let at = Instant::now();
        self.note(&format!("healed {cycle}/{CYCLES}"));
        at
    }

    /// Prints a progress line, with the test's tag and the time since the
    /// test bed was made.
    fn note(&self, what: &str) {
        note!("[{} {:>6} ms] {what}", self.tag, self.ms(Instant::now()));
    }

    /// Milliseconds since the test bed was made.
    fn ms(&self, t: Instant) -> u128 {
        t.saturating_duration_since(self.t0).as_millis()
    }

    /// The latest status of every host, each polled after `since`.
    fn snapshot(&self, since: Instant) -> Result<Vec<Status>, String> {
        (1..=HOSTS)
            .map(|h| self.observer.latest(h, since))
            .collect()
    }

    /// Polls until `cond` holds on a snapshot taken after `since`; panics
    /// after `deadline`, naming `what` and showing every node.
    fn wait_for(
        &mut self,
        what: &str,
        deadline: Duration,
        since: Instant,
        cond: impl Fn(&[Status]) -> Result<(), String>,
    ) {
        self.wait_until(what, deadline, |bed| cond(&bed.snapshot(since)?));
        self.note(what);
    }

    /// Polls until `cond` returns `Ok`; panics after `deadline` with its
    /// last `Err` and every node's state, or at once if a node exited.
    fn wait_until(
        &mut self,
        what: &str,
        deadline: Duration,
        cond: impl Fn(&Testbed) -> Result<(), String>,
    ) {
        let end = Instant::now() + deadline;
        loop {
            let last = match cond(self) {
                Ok(()) => return,
                Err(why) => why,
            };
            self.check_alive(what);
            if Instant::now() > end {
                panic!(
                    "timed out after {deadline:?} waiting for: {what}\nlast: {last}\n{}",
                    self.describe()
                );
            }
            thread::sleep(CHECK_EVERY);
        }
    }

    /// Checks that `cond` holds on every look at the latest samples (sent
    /// after `since`) for `window`; panics otherwise. For states that must
    /// stay.
    fn holds_for(
        &mut self,
        what: &str,
        window: Duration,
        since: Instant,
        cond: impl Fn(&[Status]) -> Result<(), String>,
    ) {
        let start = Instant::now();
        let end = start + window;
        let mut looks = 0;
        while Instant::now() < end {
            let now = Instant::now();
            if let Err(why) = self.snapshot(since).and_then(|st| cond(&st)) {
                panic!(
                    "no longer true after {} ms: {what}\n{why}\n{}",
                    now.duration_since(start).as_millis(),
                    self.describe()
                );
            }
            looks += 1;
            self.check_alive(what);
            thread::sleep(CHECK_EVERY);
        }
        self.note(&format!("held for {window:?} ({looks} looks): {what}"));
    }

    /// Panics if a node has exited: none of them should.
    fn check_alive(&mut self, what: &str) {
        if self.nodes.iter_mut().any(|n| n.try_exit().is_some()) {
            panic!(
                "a node exited while waiting for: {what}\n{}",
                self.describe()
            );
        }
    }

    /// Every node's latest sample, exit status and log tail.
    fn describe(&mut self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let latest = match self.observer.latest(i + 1, self.t0) {
                Ok(s) => s.line,
                Err(e) => e,
            };
            let exit = node
                .try_exit()
                .map(|s| format!(" [exited: {}]", common::describe_exit(s)))
                .unwrap_or_default();
            let _ = writeln!(out, "--- {} ({}){exit}: {latest}", node.name, node.addr);
            for line in tail(&node.stderr_text(), LOG_TAIL_LINES) {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }

    /// Stops the observer and returns everything it saw, with every
    /// node's journal (`-j`) and log tail for failure messages.
    fn finish(&mut self) -> Record {
        let mut nodes = String::new();
        for node in &self.nodes {
            let _ = writeln!(nodes, "--- {} ({}) journal:", node.name, node.addr);
            let journal = self
                .observer
                .ask(node.addr, "-j")
                .unwrap_or_else(|e| vec![e]);
            for line in journal {
                let _ = writeln!(nodes, "    {line}");
            }
            let _ = writeln!(nodes, "--- {} log:", node.name);
            for line in tail(&node.stderr_text(), LOG_TAIL_LINES) {
                let _ = writeln!(nodes, "    {line}");
            }
        }
        let samples = self.observer.finish();
        Record {
            samples,
            t0: self.t0,
            nodes,
        }
    }
}

/// A one-line summary of a snapshot: host, role, master, epoch, peers.
fn st_summary(st: &Result<Vec<Status>, String>) -> String {
    match st {
        Ok(st) => st
            .iter()
            .map(|s| {
                format!(
                    "{} {} master={} epoch={} peers={}",
                    s.id,
                    s.role,
                    s.master.as_deref().unwrap_or("-"),
                    s.epoch,
                    s.peers
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => e.clone(),
    }
}

fn tail(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

// ---------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------

/// The namespaces, bridge, veths and addresses of one test; deleted on drop
/// (the processes in them were killed before: [`Testbed`] drops its nodes
/// first).
struct Lab {
    /// `bossd-PID-TAG`: the start of every namespace name.
    prefix: String,
    /// `A` and `B` of `10.A.B.0/24`. The addresses exist only inside this
    /// test's namespaces, so they cannot clash with the machine's or with a
    /// parallel run's; they differ per test and pid only to make logs
    /// easier to tell apart.
    net: (u8, u8),
    namespaces: Namespaces,
}

impl Lab {
    /// Builds the network of the test tagged `tag` on `10.A.B.0/24`.
    fn new(tag: &str, a: u8) -> Lab {
        let pid = std::process::id();
        let mut lab = Lab {
            prefix: format!("bossd-{pid}-{tag}"),
            net: (a, (pid % 250) as u8),
            namespaces: Namespaces::new(),
        };
        lab.build();
        lab
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    fn host_ns(&self, host: usize) -> String {
        format!("{}-h{host}", self.prefix)
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net.0, self.net.1, host)
    }

    fn node_addr(&self, host: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip(host as u8)), PORT)
    }

    fn build(&mut self) {
        let br = self.bridge_ns();
        self.namespaces.add_bridge(&br);
        let observer = format!("{}/24", self.ip(OBSERVER_HOST));
        run(&["ip", "-n", &br, "addr", "add", &observer, "dev", "br0"]);
        for h in 1..=HOSTS {
            let cidr = format!("{}/24", self.ip(h as u8));
            self.namespaces
                .add_host(&br, &format!("vh{h}"), &self.host_ns(h), &cidr);
        }
    }

    /// Drops all traffic between the hosts `a` and the hosts `b`: in each
    /// host's namespace, input from and output to the other side.
    fn cut(&self, a: &[usize], b: &[usize]) {
        for (mine, theirs) in [(a, b), (b, a)] {
            let set = theirs
                .iter()
                .map(|&h| self.ip(h as u8).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let rules = format!(
                "table inet {CUT_TABLE} {{\n\
                 \tchain input {{ type filter hook input priority 0; policy accept; \
                 ip saddr {{ {set} }} drop; }}\n\
                 \tchain output {{ type filter hook output priority 0; policy accept; \
                 ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            );
            for &h in mine {
                nft_load(&self.host_ns(h), &rules);
            }
        }
    }

    /// Deletes the cut everywhere.
    fn heal(&self) {
        for h in 1..=HOSTS {
            run(&[
                "ip",
                "netns",
                "exec",
                &self.host_ns(h),
                "nft",
                "delete",
                "table",
                "inet",
                CUT_TABLE,
            ]);
        }
    }
}

// ---------------------------------------------------------------------------
// The observer
// ---------------------------------------------------------------------------

/// One `-s` poll of one node.
#[derive(Clone, Debug)]
struct Sample {
    /// Just before the request was written (or the connection attempted).
    sent: Instant,
    /// Just after the answer was read (or the poll failed).
    received: Instant,
    status: Result<Status, String>,
}

/// Threads in the bridge namespace, one per node, each polling its node's
/// `-s` over one kept-open console connection every [`POLL_EVERY`], and
/// recording every sample. Stopped and joined on drop.
struct Observer {
    /// The bridge namespace the threads poll from.
    netns: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Index `host - 1`.
    samples: Vec<Arc<Mutex<Vec<Sample>>>>,
}

impl Observer {
    /// Starts one polling thread per address in the namespace `netns`.
    fn start(netns: &str, addrs: &[SocketAddr]) -> Observer {
        let mut observer = Observer {
            netns: netns.to_owned(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            samples: Vec::new(),
        };
        for &addr in addrs {
            let log = Arc::new(Mutex::new(Vec::new()));
            observer.samples.push(Arc::clone(&log));
            let stop = Arc::clone(&observer.stop);
            let path = netns_path(&observer.netns);
            let (entered_tx, entered_rx) = mpsc::channel();
            let thread = thread::Builder::new()
                .name(format!("observe {addr}"))
                .spawn(move || {
                    let entered = enter_netns(&path);
                    let ok = entered.is_ok();
                    let _ = entered_tx.send(entered);
                    if ok {
                        poll_loop(addr, &stop, &log);
                    }
                })
                .expect("spawn an observer thread");
            observer.threads.push(thread);
            match entered_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the observer cannot enter the namespace {netns}: {e}"),
                Err(_) => panic!("the observer thread for {addr} died"),
            }
        }
        observer
    }

    /// The status of the latest sample of `host` sent after `since`, or
    /// why there is none.
    fn latest(&self, host: usize, since: Instant) -> Result<Status, String> {
        let log = self.samples[host - 1].lock().expect("sample log");
        match log.last() {
            Some(s) if s.sent >= since => s.status.clone().map_err(|e| format!("host {host}: {e}")),
            _ => Err(format!("host {host}: no sample yet")),
        }
    }

    /// Asks one console command from inside the namespace, on a thread of
    /// its own; the answer's lines.
    fn ask(&self, addr: SocketAddr, command: &str) -> Result<Vec<String>, String> {
        let command = command.to_owned();
        on_thread_in(&self.netns, move || {
            let answer = bossd::ctl::ask(addr, &command).map_err(|e| format!("{e:#}"))?;
            answer.result.map(|()| answer.lines)
        })?
    }

    /// Stops the threads and returns every sample, index `host - 1`.
    fn finish(&mut self) -> Vec<Vec<Sample>> {
        self.halt();
        self.samples
            .iter()
            .map(|log| std::mem::take(&mut *log.lock().expect("sample log")))
            .collect()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A console connection kept open across polls.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn poll_loop(addr: SocketAddr, stop: &AtomicBool, log: &Mutex<Vec<Sample>>) {
    let mut conn = None;
    while !stop.load(Ordering::Relaxed) {
        let (sent, status) = poll(&mut conn, addr);
        let received = Instant::now();
        let failed = status.is_err();
        if failed {
            conn = None;
        }
        log.lock().expect("sample log").push(Sample {
            sent,
            received,
            status,
        });
        thread::sleep(if failed { RETRY_EVERY } else { POLL_EVERY });
    }
}

/// Asks `-s` once, connecting first if needed; when the request went out
/// and the parsed answer.
fn poll(conn: &mut Option<Conn>, addr: SocketAddr) -> (Instant, Result<Status, String>) {
    if conn.is_none() {
        let start = Instant::now();
        match connect(addr) {
            Ok(c) => *conn = Some(c),
            Err(e) => return (start, Err(e)),
        }
    }
    let c = conn.as_mut().expect("connected above");
    let sent = Instant::now();
    (sent, ask_status(c))
}

fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = TcpStream::connect_timeout(&addr, ASK_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(ASK_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ASK_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("cannot set up the connection to {addr}: {e}"))?;
    let writer = stream
        .try_clone()
        .map_err(|e| format!("cannot clone the connection to {addr}: {e}"))?;
    Ok(Conn {
        reader: BufReader::new(stream),
        writer,
    })
}

fn ask_status(c: &mut Conn) -> Result<Status, String> {
    c.writer
        .write_all(b"-s\n")
        .map_err(|e| format!("cannot send -s: {e}"))?;
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        match c.reader.read_line(&mut line) {
            Ok(0) => return Err("the node closed the console connection".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("no answer to -s: {e}")),
        }
        let line = line.trim_end_matches(['\n', '\r']).to_owned();
        if line == "OK" {
            break;
        }
        if line.starts_with("ERR") {
            return Err(format!("-s answered {line}"));
        }
        lines.push(line);
    }
    match lines.as_slice() {
        [line] => Status::parse(line),
        _ => Err(format!("-s answered {} lines: {lines:?}", lines.len())),
    }
}

// ---------------------------------------------------------------------------
// What the observer saw
// ---------------------------------------------------------------------------

/// Every sample of a run, index `host - 1`, and when the run began.
struct Record {
    samples: Vec<Vec<Sample>>,
    t0: Instant,
    /// Every node's journal and log tail at the end, for failure messages.
    nodes: String,
}

/// A stretch of consecutive samples of one node that all report
/// `role=master` with the same epoch.
#[derive(Debug)]
struct MasterRun {
    host: usize,
    epoch: u64,
    /// `[sent, received]` of each sample of the stretch.
    samples: Vec<(Instant, Instant)>,
}

impl MasterRun {
    /// When the node may have been master: from the first sample's request
    /// to the last sample's answer.
    fn span(&self) -> (Instant, Instant) {
        (self.samples[0].0, self.samples[self.samples.len() - 1].1)
    }

    /// When the node surely was master: from the first sample's answer to
    /// the last sample's request, if the run has two samples or more.
    fn sure(&self) -> Option<(Instant, Instant)> {
        let n = self.samples.len();
        (n >= 2).then(|| (self.samples[0].1, self.samples[n - 1].0))
    }

    /// Whether this node surely was master at some moment at which `other`
    /// surely was too (see [`Record::overlaps`]).
    fn surely_overlaps(&self, other: &MasterRun) -> bool {
        let inside = |(from, to): (Instant, Instant), run: &MasterRun| {
            run.samples.iter().any(|&(s, r)| from <= s && r <= to)
        };
        match (self.sure(), other.sure()) {
            (Some((fa, ta)), Some((fb, tb))) if fa <= tb && fb <= ta => true,
            (a, b) => a.is_some_and(|a| inside(a, other)) || b.is_some_and(|b| inside(b, self)),
        }
    }
}

/// Two master runs of different nodes whose spans overlap.
#[derive(Debug)]
struct Overlap {
    a: usize,
    b: usize,
    /// Pairs of single samples, one of each run, whose `[sent, received]`
    /// intervals themselves overlap.
    sample_pairs: usize,
    /// Whether both nodes surely were master at one moment.
    sure: bool,
}

impl Record {
    /// The master runs of every node, in order of their start.
    ///
    /// A run is broken by any sample that does not report `role=master`
    /// with the run's epoch, failed polls included (no evidence either
    /// way).
    fn master_runs(&self) -> Vec<MasterRun> {
        let mut runs = Vec::new();
        for (i, samples) in self.samples.iter().enumerate() {
            let mut current: Option<MasterRun> = None;
            for s in samples {
                let master_epoch = match &s.status {
                    Ok(st) if st.role == "master" => Some(st.epoch),
                    _ => None,
                };
                match (master_epoch, current.as_mut()) {
                    (Some(e), Some(run)) if run.epoch == e => {
                        run.samples.push((s.sent, s.received))
                    }
                    (Some(e), _) => {
                        runs.extend(current.take());
                        current = Some(MasterRun {
                            host: i + 1,
                            epoch: e,
                            samples: vec![(s.sent, s.received)],
                        });
                    }
                    (None, _) => runs.extend(current.take()),
                }
            }
            runs.extend(current);
        }
        runs.sort_by_key(|r| r.span().0);
        runs
    }

    /// Pairs of master runs of different nodes that may overlap in time,
    /// each marked whether they surely do.
    ///
    /// The overlap rule. A sample's answer was produced at some unknown
    /// moment within its `[sent, received]` interval, so two nodes'
    /// `role=master` samples whose intervals overlap (`sample_pairs`) show
    /// that both *may* have been master at once, not that they were: when
    /// the old master hands over by telling the new one (a release, or
    /// stepping down for a better-ranked node after a merge), the new claim
    /// can follow the step-down by less than one poll's round trip, and
    /// the two intervals then overlap although the two roles never did.
    /// Comparing single samples would also miss long split brains: each
    /// node is polled only every few milliseconds and each interval lasts
    /// a fraction of one, so two intervals of two concurrent masters may
    /// never meet.
    ///
    /// So the rule works on runs: consecutive samples of one node (no
    /// other sample, failed polls included, between them) that all say
    /// `role=master` with the same epoch. A node keeps its epoch only while
    /// it keeps its claim (a new claim takes a new epoch, guarantee 9), so
    /// it is taken to be master all along a run. It then surely was master
    /// from the first sample's answer to the last sample's request (the run
    /// is "sure" from two samples on) and maybe from the first request to
    /// the last answer (the run's span). Two runs of different nodes are a
    /// violation when some moment is surely inside both: their sure parts
    /// meet, or one's sure part holds a whole sample interval of the other.
    /// Runs whose spans merely overlap are reported as possible overlaps,
    /// with how many of their sample intervals overlap outright, but do not
    /// fail the test. A split brain longer than about two poll gaps is
    /// always sure; a shorter one is caught when the polls happen to frame
    /// it, and is always reported as possible.
    fn overlaps(runs: &[MasterRun]) -> Vec<Overlap> {
        let mut out = Vec::new();
        for (a, ra) in runs.iter().enumerate() {
            for (b, rb) in runs.iter().enumerate().skip(a + 1) {
                let (fa, ta) = ra.span();
                let (fb, tb) = rb.span();
                if ra.host != rb.host && fa <= tb && fb <= ta {
                    out.push(Overlap {
                        a,
                        b,
                        sample_pairs: overlapping_pairs(&ra.samples, &rb.samples),
                        sure: ra.surely_overlaps(rb),
                    });
                }
            }
        }
        out
    }

    /// The shortest time from the end of one node's master run to the
    /// start of another node's next one, over runs that do not overlap: how
    /// close the observer saw a split brain come. Reported, not asserted.
    fn closest_handover(runs: &[MasterRun]) -> Option<Duration> {
        let mut closest: Option<Duration> = None;
        for a in runs {
            let next = runs
                .iter()
                .filter(|b| b.host != a.host && b.span().0 > a.span().1)
                .map(|b| b.span().0 - a.span().1)
                .min();
            if let Some(gap) = next {
                closest = Some(closest.map_or(gap, |c| c.min(gap)));
            }
        }
        closest
    }

    /// Epochs for which more than one node reported `role=master`.
    fn shared_epochs(&self) -> BTreeMap<u64, BTreeSet<String>> {
        let mut masters: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for s in self.samples.iter().flatten() {
            if let Ok(st) = &s.status
                && st.role == "master"
            {
                masters.entry(st.epoch).or_default().insert(st.id.clone());
            }
        }
        masters.retain(|_, ids| ids.len() > 1);
        masters
    }

    /// Samples whose epoch is below one the same node reported before
    /// (guarantee 9), with that earlier epoch.
    fn epoch_regressions(&self) -> Vec<(u64, Status)> {
        let mut out = Vec::new();
        for samples in &self.samples {
            let mut highest = 0;
            for s in samples {
                if let Ok(st) = &s.status {
                    if st.epoch < highest {
                        out.push((highest, st.clone()));
                    }
                    highest = highest.max(st.epoch);
                }
            }
        }
        out
    }

    fn ms(&self, t: Instant) -> u128 {
        t.saturating_duration_since(self.t0).as_millis()
    }

    /// Prints the numbers: samples, failed polls, master runs, overlaps.
    fn print(&self, mode: &str) {
        let per_host: Vec<String> = self
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let failed = s.iter().filter(|s| s.status.is_err()).count();
                format!("h{}: {} ({failed} failed)", i + 1, s.len())
            })
            .collect();
        let total: usize = self.samples.iter().map(Vec::len).sum();
        let runs = self.master_runs();
        let overlaps = Record::overlaps(&runs);
        let pairs: usize = overlaps.iter().map(|o| o.sample_pairs).sum();
        note!(
            "=== netns partition, {mode}: {total} samples [{}]",
            per_host.join(", ")
        );
        note!("master runs (host, epoch, samples, span in ms since start):");
        for r in &runs {
            let (from, to) = r.span();
            note!(
                "  h{} epoch {} : {} samples, {}..{}",
                r.host,
                r.epoch,
                r.samples.len(),
                self.ms(from),
                self.ms(to)
            );
        }
        let sure = overlaps.iter().filter(|o| o.sure).count();
        note!(
            "master runs of different nodes that overlap: {sure} surely, {} possibly \
             (overlapping single-sample pairs: {pairs})",
            overlaps.len() - sure
        );
        for o in &overlaps {
            note!("  {}", self.describe_overlap(&runs, o));
        }
        match Record::closest_handover(&runs) {
            Some(gap) => note!(
                "closest handover between two nodes' master runs (one ends, the other starts): \
                 {} us",
                gap.as_micros()
            ),
            None => note!("no handover between two nodes' master runs"),
        }
        note!("epochs with two masters: {:?}", self.shared_epochs());
        note!("epoch regressions: {}", self.epoch_regressions().len());
    }

    fn describe_overlap(&self, runs: &[MasterRun], o: &Overlap) -> String {
        let (a, b) = (&runs[o.a], &runs[o.b]);
        let (fa, ta) = a.span();
        let (fb, tb) = b.span();
        format!(
            "{}: h{} (epoch {}, {}..{} ms) and h{} (epoch {}, {}..{} ms): both role=master \
             for up to {} ms; {} sample pairs overlap outright",
            if o.sure { "SURE" } else { "possible" },
            a.host,
            a.epoch,
            self.ms(fa),
            self.ms(ta),
            b.host,
            b.epoch,
            self.ms(fb),
            self.ms(tb),
            ta.min(tb).saturating_duration_since(fa.max(fb)).as_millis(),
            o.sample_pairs
        )
    }

    /// Guarantee 8: never two nodes surely reporting `role=master` at the
    /// same moment (the rule is at [`Record::overlaps`]), never two masters
    /// of one epoch.
    fn assert_never_two_masters(&self) {
        let runs = self.master_runs();
        let overlaps = Record::overlaps(&runs);
        let shared = self.shared_epochs();
        let mut why = String::new();
        for o in overlaps.iter().filter(|o| o.sure) {
            let _ = writeln!(
                why,
                "two masters at once: {}",
                self.describe_overlap(&runs, o)
            );
        }
        for (epoch, ids) in &shared {
            let _ = writeln!(why, "epoch {epoch} had several masters: {ids:?}");
        }
        assert!(
            why.is_empty(),
            "guarantee 8 (no split brain when strict) broken:\n{why}{}",
            self.nodes
        );
    }

    /// Guarantee 9: no node ever reports a smaller epoch than before.
    fn assert_epochs_never_go_back(&self) {
        let back = self.epoch_regressions();
        assert!(
            back.is_empty(),
            "guarantee 9 broken: {} samples report a smaller epoch than the same node did \
             before; first: after epoch {}: {}\n{}",
            back.len(),
            back[0].0,
            back[0].1.line,
            self.nodes
        );
    }
}

/// How many pairs of intervals, one from each list, overlap. Each list is
/// sorted and its intervals are disjoint (one node's polls follow each
/// other), so one merge-like pass finds them all.
fn overlapping_pairs(a: &[(Instant, Instant)], b: &[(Instant, Instant)]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        if a[i].0 <= b[j].1 && b[j].0 <= a[i].1 {
            n += 1;
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    n
}

// The overlap rule of `Record::overlaps` on made-up samples; needs no root.
fn overlap_rule_tells_sure_from_possible() {
    let t0 = Instant::now();
    // One sample of `host`: role, epoch, and [sent, received] in tenths of
    // a millisecond after t0; `None` for a failed poll.
    let sample = |host: usize, role: Option<&str>, epoch: u64, sent: u64, received: u64| {
        let at = |tenths: u64| t0 + Duration::from_micros(tenths * 100);
        let status = match role {
            Some(role) => Status::parse(&format!(
                "id=10.0.0.{host}:7000 role={role} master=10.0.0.{host}:7000 epoch={epoch} \
                 peers=2 quorum=3 started=1 rule=oldest health=ok"
            )),
            None => Err("no answer".to_owned()),
        };
        Sample {
            sent: at(sent),
            received: at(received),
            status,
        }
    };
    let verdicts = |a: Vec<Sample>, b: Vec<Sample>| {
        let record = Record {
            samples: vec![a, b],
            t0,
            nodes: String::new(),
        };
        let runs = record.master_runs();
        Record::overlaps(&runs)
            .iter()
            .map(|o| (o.sure, o.sample_pairs))
            .collect::<Vec<_>>()
    };
    let m = Some("master");
    let f = Some("follower");

    // Two long runs interleaved without any two intervals meeting: sure.
    assert_eq!(
        verdicts(
            vec![
                sample(1, m, 1, 0, 3),
                sample(1, m, 1, 30, 33),
                sample(1, m, 1, 60, 63)
            ],
            vec![sample(2, m, 2, 10, 13), sample(2, m, 2, 40, 43)],
        ),
        vec![(true, 0)]
    );
    // A single sample of one node inside the other's sure part: sure.
    assert_eq!(
        verdicts(
            vec![sample(1, m, 1, 0, 3), sample(1, m, 1, 30, 33)],
            vec![
                sample(2, f, 1, 0, 2),
                sample(2, m, 2, 10, 12),
                sample(2, f, 2, 20, 22)
            ],
        ),
        vec![(true, 0)]
    );
    // A handover faster than a poll: the intervals overlap, the sure parts
    // do not; possible only.
    assert_eq!(
        verdicts(
            vec![
                sample(1, m, 1, 0, 3),
                sample(1, m, 1, 100, 103),
                sample(1, f, 2, 130, 133)
            ],
            vec![
                sample(2, f, 1, 0, 3),
                sample(2, m, 2, 102, 105),
                sample(2, m, 2, 135, 138)
            ],
        ),
        vec![(false, 1)]
    );
    // A failed poll breaks a run: no sure part spans it.
    assert_eq!(
        verdicts(
            vec![
                sample(1, m, 1, 0, 3),
                sample(1, None, 0, 30, 33),
                sample(1, m, 1, 60, 63)
            ],
            vec![sample(2, m, 2, 10, 13), sample(2, f, 2, 40, 43)],
        ),
        Vec::<(bool, usize)>::new()
    );
    // One after the other: nothing.
    assert_eq!(
        verdicts(
            vec![
                sample(1, m, 1, 0, 3),
                sample(1, m, 1, 30, 33),
                sample(1, f, 2, 60, 63)
            ],
            vec![
                sample(2, f, 1, 0, 3),
                sample(2, m, 2, 70, 73),
                sample(2, m, 2, 100, 103)
            ],
        ),
        Vec::<(bool, usize)>::new()
    );
}
