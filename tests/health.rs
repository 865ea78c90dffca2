//! Real-process tests of the health check (docs/GUARANTEES.md, health
//! checks; guarantee 1 for who may be master): actual `bossd` binaries on
//! loopback with `--check`, whose commands record each run in files of
//! the test's own.
//!
//! Conditions are polled with generous deadlines; nothing asserts how long
//! anything took. Where a check must fail or pass on cue, it tests for a
//! file the test creates or removes, or reads its outcome for each run
//! from a file, instead of sleeping.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{DEADLINE, Node, TempDir, TestNet, holds_for, run_to_exit, wait_agreed, wait_until};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `--check-timeout` for checks run every few ms: a loaded machine can
/// take far longer than the interval to run even `sh -c true`, and a
/// check must time out only where a test means it to.
const SLOW_OK: &str = "10000";

/// The `/metrics` page of the node at `addr`.
fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set_read_timeout");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send the request");
    let mut page = String::new();
    s.read_to_string(&mut page).expect("read the page");
    page
}

/// The value of the sample `name` (with its labels) on a `/metrics` page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Runs of `result` counted on the node's `/metrics`.
fn runs(node: &Node, result: &str) -> u64 {
    let name = format!("bossd_check_runs_total{{result=\"{result}\"}}");
    sample(&metrics(node.addr), &name).unwrap_or(0.0) as u64
}

/// The node's health check log lines, `check-failed` and `check-passed`,
/// in order.
fn check_events(node: &Node) -> Vec<String> {
    node.events()
        .into_iter()
        .filter(|e| e.name.starts_with("check-"))
        .map(|e| e.name)
        .collect()
}

/// The lines of a file, none while it does not exist.
fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether the process `pid` is gone (or a zombie nobody reaped yet: it
/// runs no more).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// A check that starts `sleep 30` in the background, appends its pid to
/// `pids`, and waits for it: it only ends when killed.
fn sleeping_check(pids: &Path) -> String {
    format!("sleep 30 & echo $! >> '{}'; wait", pids.display())
}

// ---------------------------------------------------------------------------
// Eligibility (needs the election side of issue 13)
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, health checks: a node whose check fails is never
// master, even when it ranks first by the rule (here: the oldest).
#[test]
fn a_node_whose_check_fails_is_never_master() {
    let net = TestNet::new();
    let (a_addr, b_addr) = (net.addr(), net.addr());
    let a = Node::start(
        "a",
        a_addr,
        &[
            "--check",
            "false",
            "--check-interval",
            "50",
            "--check-timeout",
            SLOW_OK,
        ],
    );
    let join = a_addr.to_string();
    let b = Node::start("b", b_addr, &["--join", &join]);
    wait_agreed(&[&a, &b], Some(&b));
    holds_for("b stays master", Duration::from_secs(2), &[&a, &b], || {
        let (sa, sb) = (a.status(), b.status());
        sa.role != "master" && sb.role == "master" && sa.master.as_deref() == Some(&*b.id())
    });
    assert!(a.logged("check-failed", &[("status", "1")]));
}

// docs/GUARANTEES.md, health checks: a master whose check starts failing
// hands over; once it passes again, the rule (oldest, preempting by
// default) makes it master again.
#[test]
fn a_master_whose_check_fails_hands_over_and_takes_back_when_it_passes() {
    let net = TestNet::new();
    let dir = TempDir::new("move");
    let flag = dir.file("healthy");
    std::fs::write(&flag, "").expect("create the flag file");
    let check = format!("test -e '{}'", flag.display());
    let (a_addr, b_addr) = (net.addr(), net.addr());
    let a = Node::start(
        "a",
        a_addr,
        &[
            "--check",
            &check,
            "--check-interval",
            "50",
            "--check-timeout",
            SLOW_OK,
        ],
    );
    let join = a_addr.to_string();
    let b = Node::start("b", b_addr, &["--join", &join]);
    let first = wait_agreed(&[&a, &b], Some(&a))[0].epoch;
    std::fs::remove_file(&flag).expect("remove the flag file");
    let second = wait_agreed(&[&a, &b], Some(&b))[0].epoch;
    assert!(second > first, "a new master has a larger epoch");
    assert_eq!(check_events(&a), ["check-passed", "check-failed"]);
    std::fs::write(&flag, "").expect("create the flag file again");
    let third = wait_agreed(&[&a, &b], Some(&a))[0].epoch;
    assert!(third > second);
    assert_eq!(
        check_events(&a),
        ["check-passed", "check-failed", "check-passed"]
    );
}

// ---------------------------------------------------------------------------
// The check itself
// ---------------------------------------------------------------------------

// docs/GUARANTEES.md, health checks: failing after --check-fall failures
// in a row, healthy after --check-rise passes in a row, and the first pass
// after start ends the initial failing whatever the rise. Each run reads
// its outcome from line N of a script of outcomes (1 pass, 0 fail); past
// the script every run passes.
#[test]
fn fall_and_rise_count_consecutive_results() {
    let net = TestNet::new();
    let dir = TempDir::new("fallrise");
    let (count, script) = (dir.file("count"), dir.file("script"));
    // Run:         1 2 3 4 5 6 7 8 9 10 11
    // With fall 3 and rise 2: passed at 1 (the first pass), failed at 7
    // (the third failure in a row), passed at 11 (the second pass in a
    // row). With fall 1 and rise 1 it would change eight times.
    std::fs::write(&script, "1\n0\n0\n1\n0\n0\n0\n1\n0\n1\n1\n").expect("write the script");
    let check = format!(
        "n=$(( $(cat '{c}' 2>/dev/null || echo 0) + 1 )); echo $n > '{c}'; \
         [ \"$(sed -n ${{n}}p '{s}')\" != 0 ]",
        c = count.display(),
        s = script.display()
    );
    let args = [
        "--quorum",
        "1",
        "--check",
        &check,
        "--check-interval",
        "20",
        "--check-timeout",
        SLOW_OK,
        "--check-fall",
        "3",
        "--check-rise",
        "2",
    ];
    let a = Node::start("a", net.addr(), &args);
    wait_until("20 checks ran", &[&a], || {
        lines(&count)
            .first()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 20)
    });
    assert_eq!(
        check_events(&a),
        ["check-passed", "check-failed", "check-passed"]
    );
    assert!(a.logged("check-failed", &[("status", "1"), ("fall", "3")]));
    assert!(a.logged("check-passed", &[("rise", "2")]));
    assert!(runs(&a, "fail") >= 6, "{}", metrics(a.addr));
    assert!(runs(&a, "pass") >= 5, "{}", metrics(a.addr));
}

// docs/GUARANTEES.md, health checks: a check past --check-timeout is
// killed with its process group (the `sleep` it started is gone) and
// counts as a failure.
#[test]
fn a_check_past_its_timeout_is_killed_with_its_group() {
    let net = TestNet::new();
    let dir = TempDir::new("timeout");
    let pids = dir.file("pids");
    let check = sleeping_check(&pids);
    let args = [
        "--quorum",
        "1",
        "--check",
        &check,
        "--check-interval",
        "100",
        "--check-timeout",
        "200",
    ];
    let a = Node::start("a", net.addr(), &args);
    wait_until("a check timed out", &[&a], || {
        a.logged(
            "check-failed",
            &[("reason", "timeout"), ("timeout_ms", "200")],
        )
    });
    let first: i32 = lines(&pids)
        .first()
        .and_then(|p| p.parse().ok())
        .expect("the check wrote the sleep's pid");
    wait_until("the timed-out check's sleep is gone", &[&a], || gone(first));
    wait_until("two timeouts counted", &[&a], || runs(&a, "timeout") >= 2);
    assert_eq!(runs(&a, "pass"), 0);
    // Logged once: the health did not change after the first run.
    assert_eq!(check_events(&a), ["check-failed"]);
    let page = metrics(a.addr);
    let count = sample(&page, "bossd_check_duration_seconds_count").expect("a histogram");
    let inf = sample(&page, "bossd_check_duration_seconds_bucket{le=\"+Inf\"}").expect("+Inf");
    assert!(count >= 2.0 && inf == count, "{page}");
}

// docs/GUARANTEES.md, health checks: the check gets BOSSD_ROLE,
// BOSSD_MASTER, BOSSD_EPOCH and BOSSD_ID.
#[test]
fn the_check_gets_the_nodes_role_master_epoch_and_id() {
    let net = TestNet::new();
    let dir = TempDir::new("env");
    let out = dir.file("env");
    let check = format!(
        "echo \"$BOSSD_ROLE $BOSSD_MASTER $BOSSD_EPOCH $BOSSD_ID\" >> '{}'",
        out.display()
    );
    let addr = net.addr();
    let args = [
        "--quorum",
        "1",
        "--check",
        &check,
        "--check-interval",
        "20",
        "--check-timeout",
        SLOW_OK,
    ];
    let a = Node::start("a", addr, &args);
    wait_until("a is master", &[&a], || a.status().role == "master");
    let epoch = a.status().epoch;
    let want = format!("master {addr} {epoch} {addr}");
    wait_until("a check saw a master", &[&a], || {
        lines(&out).contains(&want)
    });
    for line in lines(&out) {
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words.len(), 4, "{line:?}");
        assert!(["master", "follower", "none"].contains(&words[0]), "{line}");
        assert_eq!(words[3], addr.to_string(), "{line}");
    }
}

// docs/GUARANTEES.md, health checks: results are logged when they change
// the health, not every run; a check's output reaches the log only in
// that one line.
#[test]
fn results_are_logged_once_per_change_not_per_run() {
    let net = TestNet::new();
    let dir = TempDir::new("once");
    let (fails, passes) = (dir.file("fails"), dir.file("passes"));
    let failing = format!(
        "echo run >> '{}'; echo noisy-output; echo noisy-error >&2; exit 3",
        fails.display()
    );
    let passing = format!("echo run >> '{}'; echo noisy-output", passes.display());
    let base = [
        "--quorum",
        "1",
        "--check-interval",
        "20",
        "--check-timeout",
        SLOW_OK,
    ];
    let a = Node::start(
        "a",
        net.addr(),
        &[&base[..], &["--check", &failing]].concat(),
    );
    let b = Node::start(
        "b",
        net.addr(),
        &[&base[..], &["--check", &passing]].concat(),
    );
    wait_until("both checks ran 15 times", &[&a, &b], || {
        lines(&fails).len() >= 15 && lines(&passes).len() >= 15
    });
    assert_eq!(check_events(&a), ["check-failed"]);
    assert!(a.logged(
        "check-failed",
        &[("status", "3"), ("output", "noisy-output\nnoisy-error")]
    ));
    assert_eq!(check_events(&b), ["check-passed"]);
    let noisy = |node: &Node| {
        let log = node.stderr_text();
        log.lines().filter(|l| l.contains("noisy")).count()
    };
    assert_eq!(noisy(&a), 1, "{}", a.stderr_text());
    assert_eq!(noisy(&b), 0, "{}", b.stderr_text());
    assert!(runs(&a, "fail") >= 15 && runs(&a, "pass") == 0);
    assert!(runs(&b, "pass") >= 15 && runs(&b, "fail") == 0);
}

// A check that writes a megabyte is drained as it writes (it ends with
// its own status, not killed at its time limit), and only its last 256
// bytes reach its one log line.
#[test]
fn a_chatty_check_neither_blocks_nor_floods_the_log() {
    let net = TestNet::new();
    let check = "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo last words >&2; exit 4";
    let args = [
        "--quorum",
        "1",
        "--check",
        check,
        "--check-interval",
        "200",
        "--check-timeout",
        "20000",
    ];
    let a = Node::start("a", net.addr(), &args);
    wait_until("three checks ran", &[&a], || runs(&a, "fail") >= 3);
    assert_eq!(runs(&a, "timeout"), 0);
    let failed = a.events_named("check-failed");
    assert_eq!(failed.len(), 1, "{}", a.stderr_text());
    let output = failed[0].field("output").expect("the output is logged");
    assert_eq!(failed[0].field("status"), Some("4"));
    assert!(
        output.len() <= 256 && output.ends_with("x\nlast words"),
        "{output:?}"
    );
    assert!(a.stderr_text().len() < 4096, "{}", a.stderr_text());
}

// One check at a time: a check that outlasts the interval delays the next
// start instead of overlapping it.
#[test]
fn checks_never_overlap() {
    let net = TestNet::new();
    let dir = TempDir::new("overlap");
    let (log, running) = (dir.file("log"), dir.file("running"));
    let check = format!(
        "if [ -e '{r}' ]; then echo overlap >> '{l}'; fi; touch '{r}'; sleep 0.2; \
         rm -f '{r}'; echo done >> '{l}'",
        r = running.display(),
        l = log.display()
    );
    let args = [
        "--quorum",
        "1",
        "--check",
        &check,
        "--check-interval",
        "20",
        "--check-timeout",
        "10000",
    ];
    let a = Node::start("a", net.addr(), &args);
    wait_until("five checks ran", &[&a], || lines(&log).len() >= 5);
    assert!(lines(&log).iter().all(|l| l == "done"), "{:?}", lines(&log));
}

// Guarantee 6 (docs/GUARANTEES.md): a graceful leave kills a running check
// with its group and reaps it; the node exits 0.
#[test]
fn leaving_kills_a_running_check() {
    let net = TestNet::new();
    let dir = TempDir::new("leave");
    let pids = dir.file("pids");
    let check = sleeping_check(&pids);
    let args = [
        "--quorum",
        "1",
        "--check",
        &check,
        "--check-timeout",
        "60000",
    ];
    let mut a = Node::start("a", net.addr(), &args);
    wait_until("the check runs", &[&a], || !lines(&pids).is_empty());
    let sleep: i32 = lines(&pids)[0].parse().expect("a pid");
    a.sigterm();
    let status = a.wait_exit(DEADLINE).expect("a left");
    assert_eq!(status.code(), Some(0), "{}", a.stderr_text());
    wait_until("the check's sleep is gone", &[], || gone(sleep));
    assert!(!a.logged("check-abandoned", &[]), "{}", a.stderr_text());
}

// docs/GUARANTEES.md, running bossd: each misuse of the check's options is
// a usage error (exit 2) with a line naming the option.
#[test]
fn the_check_options_refuse_misuse() {
    let cases: [(&[&str], &str); 9] = [
        (&["--check-interval", "500"], "--check"),
        (&["--check-fall", "2"], "--check"),
        (
            &["--check", "true", "--check-interval", "5"],
            "--check-interval",
        ),
        (
            &["--check", "true", "--check-interval", "x"],
            "--check-interval",
        ),
        (
            &["--check", "true", "--check-timeout", "0"],
            "--check-timeout",
        ),
        (&["--check", "true", "--check-fall", "0"], "--check-fall"),
        (&["--check", "true", "--check-rise", "101"], "--check-rise"),
        (&["--check", "true", "--check-rise", "x"], "--check-rise"),
        (&["--check", "  "], "--check"),
    ];
    for (args, flag) in cases {
        let full: Vec<&str> = ["127.0.0.1", "0"].iter().chain(args).copied().collect();
        let run = run_to_exit(&full);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && run.stderr.contains(flag),
            "{args:?}: {}",
            run.stderr
        );
    }
}

// --help documents every option of the check.
#[test]
fn the_help_teaches_the_check_options() {
    let run = run_to_exit(&["--help"]);
    assert_eq!(run.status.code(), Some(0));
    for flag in [
        "--check <CMD>",
        "--check-interval <MS>",
        "--check-timeout <MS>",
        "--check-fall <N>",
        "--check-rise <N>",
    ] {
        assert!(
            run.stdout.contains(flag),
            "{flag} in --help:\n{}",
            run.stdout
        );
    }
}
