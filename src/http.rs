//! HTTP on the console port: `GET /metrics` answers Prometheus text
//! exposition, `GET /status` JSON with the status line's fields, the peers
//! and the journal (issue 5), and `GET /events` the watch stream
//! (src/watch.rs, which the endpoint runs).
//!
//! It owns the request-line test, the counters the loop keeps, and the
//! rendering of the pages and of the JSON `/events` sends. It is HTTP/1.x
//! at its smallest: one request per connection, headers read and ignored,
//! `Connection: close`. Every page is read-only, so they need no secret,
//! like `-s`. It never touches a socket.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::console::{Clock, iso_ms};
use crate::core::check::RunResult;
use crate::core::{JournalEntry, Node};
use crate::protocol::{Health, Role};

/// Header lines read before a request is refused as too large: real
/// clients send under 20, and the line limit bounds each one.
pub const MAX_HEADERS: usize = 64;

/// What a request line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Metrics,
    Status,
    /// `/events`: the watch stream as Server-Sent Events (src/watch.rs).
    Events,
    /// Another path: 404.
    NotFound,
    /// Another method than GET or HEAD: 405.
    BadMethod,
}

/// A parsed request line, `Some` when `line` is `METHOD TARGET HTTP/1.x`.
pub fn request_line(line: &str) -> Option<(Request, bool)> {
    let mut words = line.split(' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let head = method == "HEAD";
    if method != "GET" && !head {
        return Some((Request::BadMethod, false));
    }
    let path = target.split('?').next().unwrap_or(target);
    let req = match path {
        "/metrics" => Request::Metrics,
        "/status" => Request::Status,
        "/events" => Request::Events,
        _ => Request::NotFound,
    };
    Some((req, head))
}

/// Direction of a counted peer message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    In,
    Out,
}

/// What the loop counts for `/metrics`. Everything else is read from the
/// core when the page is rendered.
#[derive(Debug, Default)]
pub struct Counters {
    /// Peer messages by wire name and direction.
    pub messages: BTreeMap<(&'static str, Direction), u64>,
    /// Role changes of this node.
    pub role_changes: u64,
    /// Handshakes that failed, bad tags, and HELLOs without authentication.
    pub auth_failures: u64,
    /// Connections refused for `--max-conns`.
    pub refused_busy: u64,
    /// Connections refused for lack of authentication or a failed one.
    pub refused_auth: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Health check runs (`--check`).
    pub checks: CheckRuns,
}

impl Counters {
    pub fn message(&mut self, name: &'static str, dir: Direction) {
        *self.messages.entry((name, dir)).or_default() += 1;
    }
}

/// Upper bounds of `bossd_check_duration_seconds`' buckets, in seconds:
/// from a fork-and-exit (a few ms) to a check near a long time limit.
pub const CHECK_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Health check runs by result, and their durations as a histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckRuns {
    pub pass: u64,
    pub fail: u64,
    pub timeout: u64,
    /// Runs at or under each of [`CHECK_BUCKETS`] (not cumulative).
    buckets: [u64; CHECK_BUCKETS.len()],
    /// Total run time, in seconds.
    seconds: f64,
}

impl CheckRuns {
    /// One run that ended with `result` after `elapsed`.
    pub fn record(&mut self, result: RunResult, elapsed: std::time::Duration) {
        let n = match result {
            RunResult::Pass => &mut self.pass,
            RunResult::Fail => &mut self.fail,
            RunResult::Timeout => &mut self.timeout,
        };
        *n = n.saturating_add(1);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = CHECK_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] = self.buckets[i].saturating_add(1);
        }
        self.seconds += secs;
    }

    /// Every run counted.
    pub fn count(&self) -> u64 {
        self.pass
            .saturating_add(self.fail)
            .saturating_add(self.timeout)
    }
}

/// Open connections by kind, as the loop sees them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Open {
    pub peers: usize,
    pub clients: usize,
    /// HTTP requests: a scrape, until it is answered.
    pub http: usize,
    /// Accepted, before their first line says what they are.
    pub unknown: usize,
    /// `-w` and `/events` connections (counted here, not as clients or
    /// HTTP).
    pub watchers: usize,
}

/// The `/metrics` page: Prometheus text exposition format 0.0.4.
pub fn metrics(node: &Node, counters: &Counters, open: Open) -> String {
    let st = node.status();
    let cfg = node.config();
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    family(
        "bossd_up",
        "gauge",
        "1 while the node runs.",
        &one("1".into()),
    );
    family(
        "bossd_info",
        "gauge",
        "Constant 1, labelled with the node's identity and configuration.",
        &[(
            format!(
                "{{id=\"{}\",version=\"{}\",rule=\"{}\",quorum=\"{}\",strict=\"{}\"}}",
                cfg.addr,
                env!("CARGO_PKG_VERSION"),
                cfg.rule,
                cfg.quorum,
                cfg.strict
            ),
            "1".into(),
        )],
    );
    family(
        "bossd_is_master",
        "gauge",
        "1 if this node is the master, else 0.",
        &one(u8::from(st.role == Role::Master).to_string()),
    );
    family(
        "bossd_role",
        "gauge",
        "1 for this node's current role (master, follower or none).",
        &[Role::Master, Role::Follower, Role::None]
            .iter()
            .map(|r| {
                (
                    format!("{{role=\"{r}\"}}"),
                    u8::from(st.role == *r).to_string(),
                )
            })
            .collect::<Vec<_>>(),
    );
    family(
        "bossd_health",
        "gauge",
        "1 for this node's current health (ok, failing or standby).",
        &[Health::Ok, Health::Failing, Health::Standby]
            .iter()
            .map(|h| {
                (
                    format!("{{state=\"{h}\"}}"),
                    u8::from(st.health == *h).to_string(),
                )
            })
            .collect::<Vec<_>>(),
    );
    family(
        "bossd_epoch",
        "gauge",
        "The current epoch, the fencing token; never goes down.",
        &one(st.epoch.to_string()),
    );
    family(
        "bossd_peers",
        "gauge",
        "Peers in this node's view.",
        &one(st.peers.to_string()),
    );
    family(
        "bossd_quorum",
        "gauge",
        "Fewest members a group must have to hold a master.",
        &one(st.quorum.to_string()),
    );
    let counts = node.counts();
    family(
        "bossd_reconnecting",
        "gauge",
        "Addresses this node tries to reach: --join targets, lost peers, introductions.",
        &one(counts.wanted.to_string()),
    );
    family(
        "bossd_dials_in_flight",
        "gauge",
        "Dials started whose handshake has not finished.",
        &one(counts.dials_in_flight.to_string()),
    );
    family(
        "bossd_meets_dropped_total",
        "counter",
        "Introductions (MEET) dropped because too many were waiting.",
        &one(counts.meets_dropped.to_string()),
    );
    family(
        "bossd_protocol_violations_total",
        "counter",
        "Established peer links closed for breaking the protocol.",
        &one(counts.violations.to_string()),
    );
    family(
        "bossd_handovers_total",
        "counter",
        "Times this node stepped down as master in order and released the role to its peers.",
        &one(counts.handovers.to_string()),
    );
    family(
        "bossd_role_changes_total",
        "counter",
        "Role changes of this node since it started.",
        &one(counters.role_changes.to_string()),
    );
    let mut messages: Vec<(String, String)> = counters
        .messages
        .iter()
        .map(|((name, dir), n)| {
            let dir = match dir {
                Direction::In => "in",
                Direction::Out => "out",
            };
            (
                format!("{{type=\"{name}\",direction=\"{dir}\"}}"),
                n.to_string(),
            )
        })
        .collect();
    if messages.is_empty() {
        messages.push(("{type=\"PING\",direction=\"out\"}".into(), "0".into()));
    }
    family(
        "bossd_messages_total",
        "counter",
        "Peer messages by type and direction.",
        &messages,
    );
    family(
        "bossd_auth_failures_total",
        "counter",
        "Failed handshakes, lines with bad tags and HELLOs without authentication.",
        &one(counters.auth_failures.to_string()),
    );
    family(
        "bossd_connections_refused_total",
        "counter",
        "Connections refused, by reason.",
        &[
            (
                "{reason=\"busy\"}".into(),
                counters.refused_busy.to_string(),
            ),
            (
                "{reason=\"auth\"}".into(),
                counters.refused_auth.to_string(),
            ),
        ],
    );
    family(
        "bossd_connections_accepted_total",
        "counter",
        "Connections accepted on the listening port.",
        &one(counters.accepted.to_string()),
    );
    family(
        "bossd_connections",
        "gauge",
        "Open connections by kind.",
        &[
            ("{kind=\"peer\"}".into(), open.peers.to_string()),
            ("{kind=\"client\"}".into(), open.clients.to_string()),
            ("{kind=\"http\"}".into(), open.http.to_string()),
            ("{kind=\"unknown\"}".into(), open.unknown.to_string()),
            ("{kind=\"watcher\"}".into(), open.watchers.to_string()),
        ],
    );
    if cfg.checked {
        let runs = &counters.checks;
        family(
            "bossd_check_runs_total",
            "counter",
            "Health check (--check) runs by result: pass, fail (exit status not 0), timeout (killed past --check-timeout).",
            &[
                ("{result=\"pass\"}".into(), runs.pass.to_string()),
                ("{result=\"fail\"}".into(), runs.fail.to_string()),
                ("{result=\"timeout\"}".into(), runs.timeout.to_string()),
            ],
        );
        let mut samples = Vec::with_capacity(CHECK_BUCKETS.len() + 3);
        let mut cumulative = 0u64;
        for (bound, n) in CHECK_BUCKETS.iter().zip(runs.buckets) {
            cumulative = cumulative.saturating_add(n);
            samples.push((format!("_bucket{{le=\"{bound}\"}}"), cumulative.to_string()));
        }
        samples.push(("_bucket{le=\"+Inf\"}".into(), runs.count().to_string()));
        samples.push(("_sum".into(), format!("{:.6}", runs.seconds)));
        samples.push(("_count".into(), runs.count().to_string()));
        family(
            "bossd_check_duration_seconds",
            "histogram",
            "How long health check runs took, from start to exit or kill.",
            &samples,
        );
    }
    family(
        "bossd_start_time_seconds",
        "gauge",
        "Start time of this node, unix seconds.",
        &one(format!("{:.3}", st.started_unix_ms as f64 / 1000.0)),
    );
    out
}

/// The `/status` page: the `-s` fields, the peers of `-cl` and the journal
/// of `-j`, as one JSON object.
pub fn status(node: &Node, clock: Clock) -> String {
    let mut text = serde_json::to_string_pretty(&status_json(node, clock)).unwrap_or_default();
    text.push('\n');
    text
}

/// The document `/status` renders, which `/events` sends first.
pub fn status_json(node: &Node, clock: Clock) -> Value {
    let st = node.status();
    let master = node.master();
    let peers: Vec<_> = node
        .peers()
        .map(|p| {
            json!({
                "id": p.hello.addr.to_string(),
                "started": p.hello.started_unix_ms,
                "started_iso": iso_ms(p.hello.started_unix_ms),
                "master": master == Some(p.hello.addr),
                "last_heard_ms": clock.now.since(p.last_heard),
                "priority": p.hello.priority,
                "health": node.health_of(p.hello.addr).map(|h| h.to_string()),
                "skew_ms": p.skew.map(|k| k.offset_ms),
                "skew_error_ms": p.skew.map(|k| k.error_ms),
            })
        })
        .collect();
    let journal: Vec<_> = node.journal().map(|e| journal_json(e, clock)).collect();
    json!({
        "id": st.id.to_string(),
        "role": st.role.to_string(),
        "master": st.master.map(|m| m.to_string()),
        "epoch": st.epoch,
        "peers": st.peers,
        "quorum": st.quorum,
        "started": st.started_unix_ms,
        "rule": st.rule.to_string(),
        "health": st.health.to_string(),
        "priority": node.config().priority,
        "strict": node.config().strict,
        "status_line": crate::console::status_line(node),
        "members": peers,
        "journal": journal,
    })
}

/// One journal entry as `/status` lists it and `/events` sends it.
pub fn journal_json(e: &JournalEntry, clock: Clock) -> Value {
    let at = clock.wall(e.at).ms();
    json!({
        "time": iso_ms(at),
        "unix_ms": at,
        "epoch": e.epoch,
        "from": e.from.to_string(),
        "to": e.to.to_string(),
        "master": e.master.map(|m| m.to_string()),
        "cause": e.cause.to_string(),
    })
}

/// A whole response with `Connection: close`; `head` leaves the body out.
pub fn response(code: u16, content_type: &str, body: &str, head: bool) -> String {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head {
        out.push_str(body);
    }
    out
}

/// The answer to `req`, rendered now.
pub fn answer(
    req: Request,
    head: bool,
    node: &Node,
    counters: &Counters,
    open: Open,
    clock: Clock,
) -> String {
    match req {
        Request::Metrics => response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics(node, counters, open),
            head,
        ),
        Request::Status => response(200, "application/json", &status(node, clock), head),
        // A GET becomes a watcher (the endpoint's); a HEAD gets the head.
        Request::Events => crate::watch::SSE_HEAD.to_owned(),
        Request::NotFound => response(
            404,
            "text/plain; charset=utf-8",
            "not found: try /metrics, /status or /events\n",
            head,
        ),
        Request::BadMethod => response(
            405,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line("GET /metrics HTTP/1.1"),
            Some((Request::Metrics, false))
        );
        assert_eq!(
            request_line("HEAD /status?x=1 HTTP/1.0"),
            Some((Request::Status, true))
        );
        assert_eq!(
            request_line("GET / HTTP/1.1"),
            Some((Request::NotFound, false))
        );
        assert_eq!(
            request_line("POST /metrics HTTP/1.1"),
            Some((Request::BadMethod, false))
        );
        for console in [
            "-s",
            "GET /metrics",
            "GET /metrics HTTP/2",
            "-msg GET / HTTP/1.1",
            "",
        ] {
            assert_eq!(request_line(console), None, "{console:?}");
        }
    }

    /// A node alone, with `--check` or without.
    fn node(checked: bool) -> Node {
        let mut cfg = crate::core::test_node(1).config().clone();
        cfg.checked = checked;
        Node::new(cfg)
    }

    // The histogram's buckets are cumulative and end in +Inf = _count.
    #[test]
    fn check_runs_render_as_a_counter_and_a_histogram() {
        let mut runs = CheckRuns::default();
        runs.record(RunResult::Pass, std::time::Duration::from_millis(3));
        runs.record(RunResult::Fail, std::time::Duration::from_millis(30));
        runs.record(RunResult::Timeout, std::time::Duration::from_secs(60));
        assert_eq!(
            (runs.pass, runs.fail, runs.timeout, runs.count()),
            (1, 1, 1, 3)
        );
        let counters = Counters {
            checks: runs,
            ..Counters::default()
        };
        let page = metrics(&node(true), &counters, Open::default());
        let value = |name: &str| -> String {
            page.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} in\n{page}"))
                .to_owned()
        };
        assert_eq!(value("bossd_check_runs_total{result=\"pass\"}"), "1");
        assert_eq!(value("bossd_check_runs_total{result=\"fail\"}"), "1");
        assert_eq!(value("bossd_check_runs_total{result=\"timeout\"}"), "1");
        assert_eq!(
            value("bossd_check_duration_seconds_bucket{le=\"0.005\"}"),
            "1"
        );
        assert_eq!(
            value("bossd_check_duration_seconds_bucket{le=\"0.025\"}"),
            "1"
        );
        assert_eq!(
            value("bossd_check_duration_seconds_bucket{le=\"0.05\"}"),
            "2"
        );
        assert_eq!(value("bossd_check_duration_seconds_bucket{le=\"30\"}"), "2");
        assert_eq!(
            value("bossd_check_duration_seconds_bucket{le=\"+Inf\"}"),
            "3"
        );
        assert_eq!(value("bossd_check_duration_seconds_count"), "3");
        assert_eq!(value("bossd_check_duration_seconds_sum"), "60.033000");
        assert!(page.contains("# TYPE bossd_check_duration_seconds histogram"));
        let page = metrics(&node(false), &counters, Open::default());
        assert!(!page.contains("bossd_check_"), "without --check: {page}");
    }

    #[test]
    fn responses_carry_their_length() {
        let r = response(200, "text/plain", "abc\n", false);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 4\r\n"));
        assert!(r.ends_with("\r\n\r\nabc\n"));
        let h = response(200, "text/plain", "abc\n", true);
        assert!(h.ends_with("\r\n\r\n"));
        assert!(h.contains("Content-Length: 4\r\n"));
    }
}
