//! Fencing with `BOSSD_EPOCH` (guarantee 12 and the epochs of guarantee 9,
//! docs/GUARANTEES.md; docs/OPERATIONS.md, "Fencing"): a master deposed
//! while it was frozen wakes up with its old epoch, and the store refuses
//! its late write. The store is `contrib/fenced_sqlite.py`, run by each
//! node's `--notify` hook when it becomes master, with the epoch bossd
//! gave that hook. And `--state-dir`: a state file bossd cannot trust
//! stops the node at start.
//!
//! Real `bossd` processes on loopback; python3 (its standard library's
//! sqlite3) runs the writer. Without python3 the fencing test says
//! SKIPPED and why (`tests/common/runner.rs`); under CI a skip is a
//! failure.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Node, TempDir, TestNet, run_to_exit, runner, wait_agreed, wait_until};

fn main() -> std::process::ExitCode {
    runner::run(
        include_str!("fencing.rs"),
        crate::test_list![
            a_deposed_masters_late_write_is_rejected,
            epochs_grow_across_a_full_cluster_restart,
            a_node_that_cannot_persist_an_epoch_stops,
            a_state_file_bossd_cannot_trust_stops_the_node,
            the_fence_admits_one_holder_per_epoch,
        ],
    )
}

const WRITER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/fenced_sqlite.py");

/// The writer's exit code for a write the fence rejected.
const REJECTED: i32 = 3;

/// Runs the writer with `args`, and the token `BOSSD_EPOCH`, `BOSSD_ID`
/// if given, as a hook gets it; its exit code, stdout and stderr.
fn writer(db: &Path, token: Option<(u64, &str)>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(WRITER).arg("--db").arg(db).args(args);
    cmd.env_remove("BOSSD_EPOCH").env_remove("BOSSD_ID");
    if let Some((epoch, id)) = token {
        cmd.env("BOSSD_EPOCH", epoch.to_string())
            .env("BOSSD_ID", id);
    }
    let out = cmd.output().expect("run python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the store holds: the fence's epoch, and the `owner` row's value
/// and epoch, read back through the writer's `show`.
fn store(db: &Path) -> (u64, Option<(String, u64)>) {
    let (code, out, err) = writer(db, None, &["show"]);
    assert_eq!(code, 0, "show failed: {err}");
    let mut lines = out.lines();
    let fence = lines
        .next()
        .and_then(|l| l.strip_prefix("fence epoch="))
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no fence line in {out:?}"));
    let owner = lines.find_map(|l| {
        let (value, epoch) = l.strip_prefix("owner=")?.split_once(" epoch=")?;
        Some((value.to_owned(), epoch.parse().ok()?))
    });
    (fence, owner)
}

/// The writes the hooks made, one `(id, epoch, exit code)` per line the
/// hook appended.
fn hook_writes(tokens: &Path) -> Vec<(String, u64, i32)> {
    std::fs::read_to_string(tokens)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let (id, epoch, code) = (w.next()?, w.next()?, w.next()?);
            Some((id.to_owned(), epoch.parse().ok()?, code.parse().ok()?))
        })
        .collect()
}

// Three nodes; each one's hook writes `owner = <its id>` through the
// fenced writer when it becomes master. The master A is frozen (SIGSTOP)
// until B and C elect B with a larger epoch and B's write lands; then A
// resumes, and a write with the epoch A's hook was given is rejected by
// the store. Without the fence it would overwrite B's.
fn a_deposed_masters_late_write_is_rejected() {
    runner::need_program("python3", &["--version"], "apt-get install python3");
    let net = TestNet::new();
    let tmp = TempDir::new("fencing");
    let db = tmp.file("app.db");
    let tokens = tmp.file("tokens");
    let hook = fenced_hook(&db, &tokens);
    let args = ["--notify", hook.as_str()];
    let a = Node::start("A", net.addr(), &args);
    let a_addr = a.addr.to_string();
    let join = ["--join", a_addr.as_str(), "--notify", hook.as_str()];
    let b = Node::start("B", net.addr(), &join);
    let c = Node::start("C", net.addr(), &join);
    let epoch_a = wait_agreed(&[&a, &b, &c], Some(&a))[0].epoch;
    wait_until("A's hook wrote with its epoch", &[&a, &b, &c], || {
        store(&db).1 == Some((a.id(), epoch_a))
    });
    let token_a = hook_writes(&tokens)
        .into_iter()
        .find(|(id, _, _)| *id == a.id())
        .expect("A's hook recorded its write");
    assert_eq!(
        token_a,
        (a.id(), epoch_a, 0),
        "A's hook got -s's epoch and wrote"
    );

    a.sigstop();
    let epoch_b = wait_agreed(&[&b, &c], Some(&b))[0].epoch;
    assert!(epoch_b > epoch_a, "B's epoch {epoch_b} after A's {epoch_a}");
    wait_until("B's hook wrote with its epoch", &[&b, &c], || {
        store(&db).1 == Some((b.id(), epoch_b))
    });

    // A wakes up still believing it is the master, and writes with the
    // token its hook was given.
    a.sigcont();
    let (code, out, err) = writer(
        &db,
        Some((token_a.1, &a.id())),
        &["write", "owner", &a.id()],
    );
    assert_eq!(
        code, REJECTED,
        "A's late write with epoch {epoch_a} after B's {epoch_b}: {out}{err}"
    );
    // Below B's epoch, or below A's new one if A took over again already.
    assert!(
        err.contains(&format!("rejected: epoch {epoch_a} is below ")),
        "{err}"
    );
    let (fence, owner) = store(&db);
    let (owner, owner_epoch) = owner.expect("an owner row");
    assert!(
        fence >= epoch_b && owner_epoch >= epoch_b && owner_epoch == fence,
        "the store went back: fence {fence}, owner {owner} at {owner_epoch}, B's epoch {epoch_b}"
    );
    assert!(
        owner != a.id() || owner_epoch > epoch_b,
        "A's late write landed: {owner} at {owner_epoch}"
    );

    // A rejoins (and, being the oldest, takes over again with a new, larger
    // epoch, which the store accepts): every hook's write went through,
    // each master's epoch above the one before.
    let last = wait_agreed(&[&a, &b, &c], None)[0].clone();
    wait_until("the last master's hook wrote", &[&a, &b, &c], || {
        store(&db) == (last.epoch, Some((last.master.clone().unwrap(), last.epoch)))
    });
    let writes = hook_writes(&tokens);
    assert!(
        writes.iter().all(|w| w.2 == 0),
        "a hook's write failed: {writes:?}"
    );
    assert!(
        writes.windows(2).all(|w| w[0].1 < w[1].1),
        "epochs did not grow: {writes:?}"
    );
}

/// The hook of [`a_deposed_masters_late_write_is_rejected`]: on becoming
/// master, write `owner = BOSSD_ID` through the fence and record the token.
fn fenced_hook(db: &Path, tokens: &Path) -> String {
    format!(
        "[ \"$BOSSD_ROLE\" = master ] || exit 0\n\
         python3 '{WRITER}' --db '{}' write owner \"$BOSSD_ID\"\n\
         echo \"$BOSSD_ID $BOSSD_EPOCH $?\" >> '{}'",
        db.display(),
        tokens.display()
    )
}

/// The epoch in a node's state file.
fn on_disk(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join(bossd::state::STATE_FILE)).expect("a state file");
    bossd::state::parse(&text)
        .expect("a valid state file")
        .epoch
}

// Guarantee 12 (docs/GUARANTEES.md): three nodes with --state-dir, each
// hook writing through the fence. A is master, then frozen until B takes
// over and writes; then every node is SIGKILLed (A still frozen) and
// restarted on the same address and state dir. The new master's epoch is
// above every epoch before, so its hook's write is accepted, and the
// frozen old master's token is rejected. In default mode and in strict.
// Without --state-dir the default mode would start again at epoch 1, and
// the store would reject the new master.
fn epochs_grow_across_a_full_cluster_restart() {
    runner::need_program("python3", &["--version"], "apt-get install python3");
    for strict in [false, true] {
        let net = TestNet::new();
        let tmp = TempDir::new("restart");
        let db = tmp.file("app.db");
        let tokens = tmp.file("tokens");
        let hook = fenced_hook(&db, &tokens);
        let addrs = [net.addr(), net.addr(), net.addr()];
        let dirs: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|n| tmp.file(n).to_string_lossy().into_owned())
            .collect();
        let start = |i: usize| {
            let mut args = vec!["--state-dir", dirs[i].as_str(), "--notify", hook.as_str()];
            let seed = addrs[0].to_string();
            if strict {
                args.push("--strict");
            }
            if i > 0 {
                args.extend(["--join", seed.as_str()]);
            }
            Node::start(["A", "B", "C"][i], addrs[i], &args)
        };
        let (mut a, mut b, mut c) = (start(0), start(1), start(2));
        let epoch_a = wait_agreed(&[&a, &b, &c], Some(&a))[0].epoch;
        wait_until("A's hook wrote", &[&a, &b, &c], || {
            store(&db).1 == Some((a.id(), epoch_a))
        });
        a.sigstop();
        let epoch_b = wait_agreed(&[&b, &c], Some(&b))[0].epoch;
        wait_until("B's hook wrote", &[&b, &c], || {
            store(&db).1 == Some((b.id(), epoch_b))
        });
        assert!(
            on_disk(Path::new(&dirs[1])) >= epoch_b,
            "B persisted {epoch_b}"
        );

        for n in [&mut a, &mut b, &mut c] {
            n.sigkill();
        }
        drop((a, b, c));
        let (a, b, c) = (start(0), start(1), start(2));
        let after = wait_agreed(&[&a, &b, &c], Some(&a))[0].epoch;
        assert!(
            after > epoch_b,
            "strict {strict}: epoch {after} after the restart, not above {epoch_b}"
        );
        wait_until("the new master's write was accepted", &[&a, &b, &c], || {
            store(&db).1 == Some((a.id(), after))
        });
        // The old master, frozen through it all, writes with its old token.
        let (code, out, err) = writer(&db, Some((epoch_a, &a.id())), &["write", "owner", "late"]);
        assert_eq!(code, REJECTED, "strict {strict}: {out}{err}");
        assert_eq!(store(&db), (after, Some((a.id(), after))));
        let writes = hook_writes(&tokens);
        assert!(
            writes.iter().all(|w| w.2 == 0) && writes.windows(2).all(|w| w[0].1 < w[1].1),
            "strict {strict}: every master's write went through, epochs growing: {writes:?}"
        );
        assert!(on_disk(Path::new(&dirs[0])) >= after, "A persisted {after}");
    }
}

// Without --strict, two sides of a cut can each elect a master with the
// same epoch (guarantee 9: only the pair epoch, master is unique): the
// store takes the first to write at an epoch as its holder, refuses the
// other, and takes any larger epoch. The writer alone, no nodes.
fn the_fence_admits_one_holder_per_epoch() {
    runner::need_program("python3", &["--version"], "apt-get install python3");
    let tmp = TempDir::new("holder");
    let db = tmp.file("app.db");
    let write = |epoch, id, value| writer(&db, Some((epoch, id)), &["write", "owner", value]).0;
    assert_eq!(write(3, "10.0.0.1:7000", "a"), 0);
    assert_eq!(
        write(3, "10.0.0.1:7000", "a again"),
        0,
        "one master writes often"
    );
    assert_eq!(
        write(3, "10.0.0.2:7000", "b"),
        REJECTED,
        "same epoch, other master"
    );
    assert_eq!(write(4, "10.0.0.2:7000", "b"), 0);
    assert_eq!(write(3, "10.0.0.1:7000", "a late"), REJECTED);
    assert_eq!(store(&db), (4, Some(("b".to_owned(), 4))));
    let (code, _, err) = writer(&db, None, &["write", "owner", "no token"]);
    assert_eq!(
        (code, err.contains("BOSSD_EPOCH is not set")),
        (2, true),
        "{err}"
    );
}

// Guarantee 12: an unreadable, corrupt or foreign state file stops the
// node at start with one line and exit 1; it is never silently reset.
fn a_state_file_bossd_cannot_trust_stops_the_node() {
    let net = TestNet::new();
    let tmp = TempDir::new("state");
    let addr = net.addr();
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    let dir = tmp.file("state");
    let dir_arg = dir.to_string_lossy().into_owned();
    let file = dir.join("bossd.state");
    std::fs::create_dir(&dir).expect("create the state dir");
    let other = format!("{}:{}", addr.ip(), addr.port() + 1);
    let cases = [
        ("garbage\n".to_owned(), "not a bossd state file"),
        ("bossd-state 1\nid ".to_owned(), "truncated"),
        (
            format!(
                "bossd-state 1\nid {addr}\nepoch 7\nsha256 {}\n",
                "0".repeat(64)
            ),
            "checksum",
        ),
        (
            bossd::state::format(&bossd::state::State {
                id: other.clone(),
                epoch: 7,
            }),
            "belongs to node",
        ),
    ];
    for (text, why) in cases {
        std::fs::write(&file, &text).expect("write the state file");
        let run = run_to_exit(&[&ip, &port, "--no-console", "--state-dir", &dir_arg]);
        assert_eq!(run.status.code(), Some(1), "{why}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line for {why}: {:?}", run.stderr);
        assert!(
            lines[0].starts_with("bossd: state file ")
                && lines[0].contains(&file.display().to_string())
                && lines[0].contains(why),
            "{why}: {}",
            lines[0]
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "the file is left as it was"
        );
    }
}

// Guarantee 12: a node whose state dir went away after start cannot make
// its next epoch durable, so it stops (exit 1, `state-write-failed`)
// rather than claim it; its peer never sees it master.
fn a_node_that_cannot_persist_an_epoch_stops() {
    let net = TestNet::new();
    let tmp = TempDir::new("nopersist");
    let dir = tmp.file("state");
    let dir_arg = dir.to_string_lossy().into_owned();
    let mut a = Node::start("A", net.addr(), &["--state-dir", &dir_arg]);
    std::fs::remove_dir_all(&dir).expect("remove the state dir");
    let a_addr = a.addr.to_string();
    let b = Node::start("B", net.addr(), &["--join", &a_addr]);
    let status = a.wait_exit(std::time::Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "A: {}",
        a.stderr_text()
    );
    assert!(
        a.logged("state-write-failed", &[("epoch", "1")]),
        "{}",
        a.stderr_text()
    );
    assert!(
        a.stderr_text()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("bossd: cannot write epoch 1")),
        "{}",
        a.stderr_text()
    );
    assert!(
        !b.logged("role-change", &[("master", &a_addr)]),
        "B saw A master: {}",
        b.stderr_text()
    );
}
