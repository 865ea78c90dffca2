//! HTTP on the console port (issue 5): `/metrics` read with curl and parsed
//! by a real Prometheus text parser (the `prometheus-client` Python
//! package), `/status` parsed as JSON, both checked against `-s`.
//!
//! curl and prometheus-client are installed by `.ci/run`; on a machine
//! without them the tests that need them say SKIPPED, why, and the command
//! that runs them (`tests/common/runner.rs`); under CI a skip is a failure.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Node, TestNet, runner, wait_agreed, wait_until};

fn main() -> std::process::ExitCode {
    runner::run(
        include_str!("http.rs"),
        crate::test_list![
            metrics_match_the_status_line,
            status_json_matches_the_status_line,
            http_edges_and_counters,
        ],
    )
}

/// Skips unless curl is installed.
fn need_curl() {
    runner::need_program("curl", &["--version"], "apt-get install curl");
}

fn curl(url: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "/dev/stderr"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success() || !extra.is_empty(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One sample of a parsed exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses exposition text with prometheus_client's parser, which raises on
/// anything that breaks the format.
fn parse_exposition(text: &str) -> Vec<Sample> {
    const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the page: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_owned(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {samples:#?}"))
}

fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn metrics_of(n: &Node) -> Vec<Sample> {
    let (headers, body) = curl(&format!("http://{}/metrics", n.addr), &[]);
    assert!(headers.starts_with("HTTP/1.1 200 OK"), "{headers}");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    parse_exposition(&body)
}

// Issue 5: /metrics on every node of a cluster, parsed by a real parser,
// agrees with `-s`; counters move.
fn metrics_match_the_status_line() {
    need_curl();
    runner::need_python_module(
        "prometheus_client",
        "python3 -m pip install prometheus-client",
    );
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let join = a.addr.to_string();
    let b = Node::start("B", net.addr(), &["--join", &join]);
    let c = Node::start("C", net.addr(), &["--join", &join]);
    wait_agreed(&[&a, &b, &c], Some(&a));
    // Let heartbeats flow, so the message counters have something to count.
    wait_until("heartbeats counted", &[&a], || {
        find(
            &metrics_of(&a),
            "bossd_messages_total",
            &[("type", "PING"), ("direction", "in")],
        )
        .is_some_and(|n| n >= 4.0)
    });
    for n in [&a, &b, &c] {
        let st = n.status();
        let m = metrics_of(n);
        let is_master = st.role == "master";
        assert_eq!(value(&m, "bossd_up", &[]), 1.0);
        assert_eq!(
            value(&m, "bossd_is_master", &[]),
            f64::from(u8::from(is_master))
        );
        assert_eq!(value(&m, "bossd_role", &[("role", &st.role)]), 1.0);
        assert_eq!(value(&m, "bossd_epoch", &[]), st.epoch as f64);
        assert_eq!(value(&m, "bossd_peers", &[]), 2.0);
        assert_eq!(value(&m, "bossd_quorum", &[]), 2.0);
        assert!(value(&m, "bossd_role_changes_total", &[]) >= 1.0);
        for dir in ["in", "out"] {
            assert!(
                value(
                    &m,
                    "bossd_messages_total",
                    &[("type", "HELLO"), ("direction", dir)]
                ) >= 1.0
            );
            assert!(
                value(
                    &m,
                    "bossd_messages_total",
                    &[("type", "PING"), ("direction", dir)]
                ) >= 1.0
            );
        }
        assert_eq!(value(&m, "bossd_auth_failures_total", &[]), 0.0);
        assert_eq!(
            value(&m, "bossd_connections_refused_total", &[("reason", "busy")]),
            0.0
        );
        assert_eq!(value(&m, "bossd_connections", &[("kind", "peer")]), 2.0);
        // Issue 10: the reconnect set and its bounds.
        assert_eq!(value(&m, "bossd_reconnecting", &[]), 0.0);
        assert_eq!(value(&m, "bossd_dials_in_flight", &[]), 0.0);
        assert_eq!(value(&m, "bossd_meets_dropped_total", &[]), 0.0);
        assert_eq!(value(&m, "bossd_protocol_violations_total", &[]), 0.0);
        let start = value(&m, "bossd_start_time_seconds", &[]);
        assert!(
            (start * 1000.0 - st.started as f64).abs() < 1.0,
            "{start} vs {}",
            st.started
        );
        assert_eq!(
            value(
                &m,
                "bossd_info",
                &[("id", &n.id()), ("rule", "oldest"), ("strict", "false")]
            ),
            1.0
        );
    }
    // A failover moves the epoch, the role and the role-change counter.
    let before = value(&metrics_of(&b), "bossd_role_changes_total", &[]);
    drop(a);
    let st = wait_agreed(&[&b, &c], Some(&b));
    let m = metrics_of(&b);
    assert_eq!(value(&m, "bossd_is_master", &[]), 1.0);
    assert_eq!(value(&m, "bossd_epoch", &[]), st[0].epoch as f64);
    assert!(value(&m, "bossd_role_changes_total", &[]) > before);
}

// Issue 5: /status is JSON with the status fields, the peers and the
// journal; it is read-only, so it needs no secret.
fn status_json_matches_the_status_line() {
    need_curl();
    let net = TestNet::new();
    let dir = std::env::temp_dir().join(format!("bossd-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "http test secret\n").unwrap();
    let secret = secret.to_string_lossy().into_owned();
    let a = Node::start("A", net.addr(), &["--secret-file", &secret]);
    let b = Node::start(
        "B",
        net.addr(),
        &["--secret-file", &secret, "--join", &a.addr.to_string()],
    );
    wait_agreed(&[&a, &b], Some(&a));
    for n in [&a, &b] {
        let (headers, body) = curl(&format!("http://{}/status", n.addr), &[]);
        assert!(
            headers.contains("Content-Type: application/json"),
            "{headers}"
        );
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        let st = n.status();
        assert_eq!(doc["id"], st.id);
        assert_eq!(doc["role"], st.role);
        assert_eq!(doc["master"], a.id());
        assert_eq!(doc["epoch"], st.epoch);
        assert_eq!(doc["peers"], 1);
        assert_eq!(doc["quorum"], 2);
        assert_eq!(doc["started"], st.started);
        assert_eq!(doc["rule"], "oldest");
        assert_eq!(doc["status_line"], n.ctl("-s").0[0]);
        let members = doc["members"].as_array().unwrap();
        assert_eq!(members.len(), 1);
        let other = if n.id() == a.id() { &b } else { &a };
        assert_eq!(members[0]["id"], other.id());
        assert_eq!(members[0]["master"], other.id() == a.id());
        // A skew measured on one machine: near zero, within its error.
        let skew = members[0]["skew_ms"]
            .as_i64()
            .expect("a skew after heartbeats");
        let error = members[0]["skew_error_ms"].as_i64().unwrap();
        assert!(
            skew.abs() <= error.max(5),
            "skew {skew}+-{error} on one machine"
        );
        let journal = doc["journal"].as_array().unwrap();
        let last = journal.last().expect("a role change");
        assert_eq!(last["to"], st.role);
        assert_eq!(last["epoch"], st.epoch);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends raw bytes and reads the whole answer until the node closes.
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

// HTTP errors, HEAD, and that the console still works beside HTTP; auth
// failures and refusals are counted.
fn http_edges_and_counters() {
    let net = TestNet::new();
    let a = Node::start("A", net.addr(), &[]);
    let r = raw(a.addr, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    let r = raw(a.addr, "DELETE /metrics HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
    let r = raw(a.addr, "HEAD /status HTTP/1.0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let r = raw(a.addr, &format!("GET /metrics HTTP/1.1\r\n{many}\r\n"));
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    // An AUTH to a node without a secret is refused and counted.
    let r = raw(a.addr, &format!("AUTH bossd/1 {}\n", "00".repeat(32)));
    assert_eq!(r, "REFUSE this node has no secret\n");
    let r = raw(a.addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(r.contains("\nbossd_auth_failures_total 0\n"), "{r}");
    assert!(
        r.contains("\nbossd_connections_refused_total{reason=\"auth\"} 1\n"),
        "{r}"
    );
    // Issue 11: the connection a scrape comes on counts as http, also
    // while another request waits for its headers.
    let mut waiting = TcpStream::connect(a.addr).unwrap();
    waiting.write_all(b"GET /status HTTP/1.1\r\n").unwrap();
    wait_until("the waiting request is taken", &[&a], || {
        raw(a.addr, "GET /metrics HTTP/1.1\r\n\r\n")
            .contains("\nbossd_connections{kind=\"http\"} 2\n")
    });
    let r = raw(a.addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        r.contains("\nbossd_connections{kind=\"unknown\"} 0\n"),
        "{r}"
    );
    drop(waiting);
    // The console is unaffected.
    assert_eq!(a.status().role, "none");
}
