//! IPv6 (issue 5, docs/GUARANTEES.md, running bossd and console): clusters on `[::1]`, addresses written
//! `[addr]:port`. A machine without IPv6 cannot run them: each test then
//! says SKIPPED, why, and the command that runs it (`tests/common/runner.rs`,
//! a `harness = false` suite); under CI a skip is a failure.

mod common;

use common::{Node, StdinKind, free_ipv6_addr, run_to_exit, runner, wait_agreed};

fn main() -> std::process::ExitCode {
    runner::run(
        include_str!("ipv6.rs"),
        crate::test_list![
            ipv6_two_nodes,
            ipv6_three_nodes_with_a_secret_fail_over,
            bracketed_addresses_are_accepted,
        ],
    )
}

// docs/GUARANTEES.md, running bossd (IP is IPv4 or IPv6, `--join [v6]:port`) and console (IPv6 addresses
// are written `[addr]:port`): a two-node cluster on [::1].
fn ipv6_two_nodes() {
    let a_addr = free_ipv6_addr();
    let a = Node::start("A", a_addr, &[]);
    let b_addr = free_ipv6_addr();
    let join = a.addr.to_string();
    assert!(join.starts_with("[::1]:"), "{join}");
    let b = Node::start("B", b_addr, &["--join", &join]);
    let st = wait_agreed(&[&a, &b], Some(&a));
    assert_eq!(st[0].id, format!("[::1]:{}", a_addr.port()));
    assert_eq!(st[1].master.as_deref(), Some(join.as_str()));
    // `-c` takes an IPv6 address too; to an existing peer it is an error.
    let (lines, result) = b.ctl(&format!("-c ::1 {}", a_addr.port()));
    assert!(result.is_err(), "{lines:?}");
}

// Issue 5: three nodes on [::1] with a secret form a cluster, fail over
// when the master is killed, and answer ctl and HTTP over IPv6.
fn ipv6_three_nodes_with_a_secret_fail_over() {
    let a_addr = free_ipv6_addr();
    let dir = std::env::temp_dir().join(format!("bossd-v6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "v6 secret\n").unwrap();
    let secret = secret.to_string_lossy().into_owned();
    let a = Node::start("A", a_addr, &["--secret-file", &secret]);
    let join = a.addr.to_string();
    let b_addr = free_ipv6_addr();
    let b = Node::start("B", b_addr, &["--secret-file", &secret, "--join", &join]);
    let c_addr = free_ipv6_addr();
    let c = Node::start("C", c_addr, &["--secret-file", &secret, "--join", &join]);
    let st = wait_agreed(&[&a, &b, &c], Some(&a));
    assert!(st.iter().all(|s| s.id.starts_with("[::1]:")), "{st:?}");
    // An authenticated mutating command over IPv6.
    let out = run_to_exit(&[
        "ctl",
        "::1",
        &b_addr.port().to_string(),
        "--secret-file",
        &secret,
        "-msg",
        "v6",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "sent to 2 peers\n");
    // HTTP over IPv6.
    let mut s = std::net::TcpStream::connect(c_addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /status HTTP/1.1\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(
        page.contains(&format!("\"master\": \"{}\"", a.id())),
        "{page}"
    );
    let mut a = a;
    a.sigkill();
    wait_agreed(&[&b, &c], Some(&b));
    let _ = std::fs::remove_dir_all(&dir);
}

// Issue 11 (docs/GUARANTEES.md, running bossd): every output writes `[::1]:7000`, and the command
// line takes that form back: `bossd '[::1]' PORT` runs a node and `bossd
// ctl '[::1]' PORT -s` asks it.
fn bracketed_addresses_are_accepted() {
    let addr = free_ipv6_addr();
    let port = addr.port().to_string();
    let mut a = Node::spawn_with_args(
        "A",
        addr,
        vec!["[::1]".into(), port.clone()],
        StdinKind::Null,
    );
    a.wait_ready();
    assert_eq!(a.status().id, format!("[::1]:{port}"));
    let out = run_to_exit(&["ctl", "[::1]", &port, "-s"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!("id=[::1]:{port} ")),
        "{}",
        out.stdout
    );
}
