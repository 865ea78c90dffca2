//! Interoperability (issue 6): `docs/PROTOCOL.md` "Authentication" is
//! implementable from the text alone. `contrib/bossd_auth.py`, which shares
//! no code with bossd, authenticates and runs a mutating command; with the
//! wrong secret it is refused. It needs python3: without it the test says
//! SKIPPED, why, and the command that runs it (`tests/common/runner.rs`, a
//! `harness = false` suite); under CI a skip is a failure.

mod common;

use common::{Node, TempDir, TestNet, runner, wait_agreed, wait_until};

fn main() -> std::process::ExitCode {
    runner::run(
        include_str!("interop.rs"),
        crate::test_list![an_independent_client_follows_the_documented_handshake],
    )
}

fn an_independent_client_follows_the_documented_handshake() {
    runner::need_program("python3", &["--version"], "apt-get install python3");
    let net = TestNet::new();
    let dir = TempDir::new("python");
    let secret = dir.secret("secret", "correct horse battery staple");
    let other = dir.secret("other", "incorrect horse");
    let a = Node::start("A", net.addr(), &["--secret-file", &secret]);
    let join = a.addr.to_string();
    let b = Node::start(
        "B",
        net.addr(),
        &["--secret-file", &secret, "--join", &join],
    );
    let c = Node::start(
        "C",
        net.addr(),
        &["--secret-file", &secret, "--join", &join],
    );
    let before = wait_agreed(&[&a, &b, &c], Some(&a));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/bossd_auth.py");
    let run = |secret: &str| {
        std::process::Command::new("python3")
            .args([script, &a.addr.ip().to_string(), &a.addr.port().to_string()])
            .args([secret, "-msg", "from python"])
            .output()
            .expect("run python3")
    };
    let out = run(&secret);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" sent to 2 peers\n"), "{stdout}");
    wait_until("B prints the message", &[&b], || {
        b.stdout_text().contains("from python")
    });
    let out = run(&other);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another secret"));
    // Unharmed: the same master and epoch, and the secret never logged.
    let after = wait_agreed(&[&a, &b, &c], Some(&a));
    assert_eq!(after[0].epoch, before[0].epoch);
    for n in [&a, &b, &c] {
        assert!(
            !n.stderr_text().contains("correct horse"),
            "{} logged the secret",
            n.name
        );
    }
}
