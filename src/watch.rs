//! The watch stream: `-w` on the console and `GET /events` over HTTP.
//!
//! It owns the stream's text and the set of watchers. A console watcher
//! gets the status line, then each new journal line as it happens, with no
//! `OK`. An HTTP watcher gets Server-Sent Events (`text/event-stream`):
//! `event: status` with the status as JSON, then `event: role-change` with
//! one JSON object per journal line, and a comment at least every
//! [`KEEPALIVE_MS`] so that proxies keep an idle stream open. Events carry
//! no `id:`: the journal keeps only its last lines, so a client that
//! reconnects could not be given what it missed, and it gets the current
//! status first anyway.
//!
//! It is sans-IO, like the election core: given the stream's items (the
//! lines and JSON the console and `/status` already render) and `now`, it
//! returns what to write to which watcher and when to call it again
//! ([`Watchers::next_deadline`]). The loop owns the connections and their
//! outboxes, and tells it how full each is; a watcher that does not read
//! is dropped when its outbox would pass [`MAX_WATCH_OUTBOX`], so a
//! watcher never holds the loop up or its memory without bound.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::Value;

/// Watchers at once, `-w` and `/events` together. Each holds a
/// connection and up to [`MAX_WATCH_OUTBOX`] of memory, so 64 bound a
/// node's watch memory at 4 MiB; dashboards, a few operators and a
/// service wrapper per host need far fewer. The next one is refused with
/// one line and closed.
pub const MAX_WATCHERS: usize = 64;

/// Bytes a watcher's outbox may hold before the watcher is dropped: about
/// 500 journal lines it has not read, on top of what the kernel's socket
/// buffer already holds. A watcher that far behind is not reading, and a
/// role change must not wait for it.
pub const MAX_WATCH_OUTBOX: usize = 64 * 1024;

/// Time between two SSE keep-alive comments, in ms. Proxies close an idle
/// stream after 30 to 60 s (nginx's `proxy_read_timeout` is 60 s); a
/// comment every 10 s stays within the promised 15 s even when the loop
/// runs a few seconds late.
pub const KEEPALIVE_MS: u64 = 10_000;

/// The keep-alive: an SSE comment line, which `EventSource` ignores.
pub const SSE_KEEPALIVE: &str = ": keep-alive\n\n";

/// What the loop calls a watcher's connection; it chooses the numbers.
pub type WatcherId = usize;

/// How a watcher reads the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `-w`: plain lines.
    Console,
    /// `GET /events`: Server-Sent Events.
    Sse,
}

/// One item of the stream in both its forms: the line a console watcher
/// reads (the `-s` line, or a journal line as `-j` writes it) and the JSON
/// an SSE watcher reads (the status as `/status` renders it, or one entry
/// of its `journal`).
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub line: &'a str,
    pub json: &'a Value,
}

/// Something the loop must do for one watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Queue this line, without its line end, as a console answer line
    /// is queued (sealed on an authenticated connection).
    Line(WatcherId, Rc<str>),
    /// Queue these bytes as they are.
    Bytes(WatcherId, Rc<str>),
    /// Close the connection once what is queued is written; it is no
    /// longer a watcher.
    Close(WatcherId, Closed),
}

/// Why a watcher was closed, for the loop's log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// [`MAX_WATCHERS`] were watching already; it got one line saying so.
    TooMany,
    /// Its outbox would have passed [`MAX_WATCH_OUTBOX`]: it does not read.
    OutboxFull,
}

impl Closed {
    /// The reason as one word, for `event=watcher-closed reason=...`.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::TooMany => "too-many-watchers",
            Closed::OutboxFull => "outbox-full",
        }
    }
}

/// The console's answer to the watcher after [`MAX_WATCHERS`].
pub fn console_refusal() -> String {
    format!("ERR too many watchers: {MAX_WATCHERS} are watching already")
}

/// The HTTP response head of `/events`. No `Content-Length`: the body is
/// the stream, and ends when the connection closes. `X-Accel-Buffering`
/// keeps nginx from holding events back in its buffer.
pub const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n";

/// The whole HTTP answer to the watcher after [`MAX_WATCHERS`]: 503, one
/// line of body. `EventSource` does not reconnect after a status other
/// than 200, so a full node is not hammered by browsers.
pub fn sse_refusal() -> String {
    let body = format!("too many watchers: {MAX_WATCHERS} are watching already\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nRetry-After: 10\r\n\r\n{body}",
        body.len()
    )
}

/// One Server-Sent Event: `event: NAME`, one `data:` line, a blank line.
/// Compact JSON never holds a raw line break (strings escape them), so
/// the data is always one line.
pub fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The watchers of one node, at most [`MAX_WATCHERS`].
#[derive(Debug, Default)]
pub struct Watchers {
    watchers: BTreeMap<WatcherId, Kind>,
    /// When the next keep-alive is due; `None` without SSE watchers.
    next_keepalive_ms: Option<u64>,
}

impl Watchers {
    pub fn new() -> Watchers {
        Watchers::default()
    }

    /// A new watcher `id`, which is sent `status` first. When
    /// [`MAX_WATCHERS`] watch already it is refused instead: one line, then
    /// [`Output::Close`], and it is not a watcher.
    pub fn open(
        &mut self,
        id: WatcherId,
        kind: Kind,
        status: Item<'_>,
        now_ms: u64,
    ) -> Vec<Output> {
        if self.watchers.len() >= MAX_WATCHERS && !self.watchers.contains_key(&id) {
            let refusal = match kind {
                Kind::Console => Output::Line(id, console_refusal().into()),
                Kind::Sse => Output::Bytes(id, sse_refusal().into()),
            };
            return vec![refusal, Output::Close(id, Closed::TooMany)];
        }
        self.watchers.insert(id, kind);
        match kind {
            Kind::Console => vec![Output::Line(id, status.line.into())],
            Kind::Sse => {
                self.next_keepalive_ms
                    .get_or_insert(now_ms.saturating_add(KEEPALIVE_MS));
                let text = format!("{SSE_HEAD}{}", sse_event("status", status.json));
                vec![Output::Bytes(id, text.into())]
            }
        }
    }

    /// The connection of watcher `id` closed; it is forgotten.
    pub fn close(&mut self, id: WatcherId) {
        self.watchers.remove(&id);
        self.stop_keepalives_if_idle();
    }

    /// A new journal line, for every watcher. `outbox_len` tells how many
    /// bytes wait in a watcher's outbox; one that has no room for this
    /// item is dropped ([`Closed::OutboxFull`]) and gets nothing.
    pub fn publish(
        &mut self,
        change: Item<'_>,
        outbox_len: impl Fn(WatcherId) -> usize,
    ) -> Vec<Output> {
        let has = |k: Kind| self.watchers.values().any(|&w| w == k);
        let line: Option<Rc<str>> = has(Kind::Console).then(|| change.line.into());
        let sse: Option<Rc<str>> =
            has(Kind::Sse).then(|| sse_event("role-change", change.json).into());
        self.fan_out(outbox_len, |kind| match kind {
            Kind::Console => line.clone(),
            Kind::Sse => sse.clone(),
        })
    }

    /// Sends the keep-alive to every SSE watcher when it is due.
    pub fn handle_timeout(
        &mut self,
        now_ms: u64,
        outbox_len: impl Fn(WatcherId) -> usize,
    ) -> Vec<Output> {
        if self.next_keepalive_ms.is_none_or(|t| now_ms < t) {
            return Vec::new();
        }
        // From now, not from when it was due: a loop that woke late sends
        // one comment, not a burst of the ones it missed.
        self.next_keepalive_ms = Some(now_ms.saturating_add(KEEPALIVE_MS));
        let keepalive: Rc<str> = SSE_KEEPALIVE.into();
        let out = self.fan_out(outbox_len, |kind| match kind {
            Kind::Console => None,
            Kind::Sse => Some(keepalive.clone()),
        });
        self.stop_keepalives_if_idle();
        out
    }

    /// When [`Watchers::handle_timeout`] has work next, if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        self.next_keepalive_ms
    }

    /// Watchers now.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Whether `id` is a watcher, and of which kind.
    pub fn kind(&self, id: WatcherId) -> Option<Kind> {
        self.watchers.get(&id).copied()
    }

    /// `text(kind)` to each watcher of that kind that has room for it;
    /// the others are dropped.
    fn fan_out(
        &mut self,
        outbox_len: impl Fn(WatcherId) -> usize,
        text: impl Fn(Kind) -> Option<Rc<str>>,
    ) -> Vec<Output> {
        let mut out = Vec::with_capacity(self.watchers.len());
        self.watchers.retain(|&id, &mut kind| {
            let Some(text) = text(kind) else {
                return true;
            };
            // A console line also takes its line end (and a tag when sealed,
            // well within the margin the bound leaves).
            if outbox_len(id).saturating_add(text.len() + 1) > MAX_WATCH_OUTBOX {
                out.push(Output::Close(id, Closed::OutboxFull));
                return false;
            }
            out.push(match kind {
                Kind::Console => Output::Line(id, text),
                Kind::Sse => Output::Bytes(id, text),
            });
            true
        });
        self.stop_keepalives_if_idle();
        out
    }

    fn stop_keepalives_if_idle(&mut self) {
        if !self.watchers.values().any(|&k| k == Kind::Sse) {
            self.next_keepalive_ms = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const STATUS_LINE: &str = "id=127.0.0.1:7000 role=master master=127.0.0.1:7000 epoch=3 peers=2 quorum=2 started=1 rule=oldest health=ok";
    const JOURNAL_LINE: &str =
        "2026-11-24T10:00:00.000Z epoch=4 follower->master master=127.0.0.1:7000 cause=master-lost";

    fn status_json() -> Value {
        json!({"id": "127.0.0.1:7000", "role": "master", "epoch": 3})
    }

    fn change_json() -> Value {
        json!({"epoch": 4, "from": "follower", "to": "master", "cause": "master-lost"})
    }

    fn empty(_: WatcherId) -> usize {
        0
    }

    /// The events of an SSE body as the WHATWG algorithm dispatches them
    /// (`event` name, `data` joined by newlines), and its comment count.
    fn sse_parse(body: &str) -> (Vec<(String, String)>, usize) {
        let (mut events, mut comments) = (Vec::new(), 0);
        let (mut name, mut data): (String, Option<String>) = (String::new(), None);
        for line in body.split('\n') {
            if line.is_empty() {
                if let Some(d) = data.take() {
                    let n = if name.is_empty() { "message" } else { &name };
                    events.push((n.to_owned(), d));
                }
                name.clear();
            } else if line.starts_with(':') {
                comments += 1;
            } else {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = value.to_owned(),
                    "data" => {
                        let d = data.get_or_insert_with(String::new);
                        if !d.is_empty() {
                            d.push('\n');
                        }
                        d.push_str(value);
                    }
                    _ => panic!("unexpected field {field:?}"),
                }
            }
        }
        (events, comments)
    }

    fn text(out: &Output) -> &str {
        match out {
            Output::Line(_, t) | Output::Bytes(_, t) => t,
            Output::Close(..) => panic!("no text in {out:?}"),
        }
    }

    // -w: the status line first, then each journal line, no OK.
    #[test]
    fn a_console_watcher_gets_the_status_line_then_journal_lines() {
        let mut w = Watchers::new();
        let (s, c) = (status_json(), change_json());
        let out = w.open(
            7,
            Kind::Console,
            Item {
                line: STATUS_LINE,
                json: &s,
            },
            0,
        );
        assert_eq!(out, [Output::Line(7, STATUS_LINE.into())]);
        assert_eq!(w.next_deadline(), None, "no keep-alives on the console");
        let out = w.publish(
            Item {
                line: JOURNAL_LINE,
                json: &c,
            },
            empty,
        );
        assert_eq!(out, [Output::Line(7, JOURNAL_LINE.into())]);
        assert_eq!(w.handle_timeout(1_000_000, empty), []);
    }

    // GET /events: the head, `event: status`, then `event: role-change`
    // with JSON a client reads back, and comments that dispatch nothing.
    #[test]
    fn an_sse_watcher_gets_events_a_client_parses() {
        let mut w = Watchers::new();
        let s = status_json();
        let c = json!({"master": "[::1]:7000", "cause": "line\nbreak \"quoted\""});
        let mut body = String::new();
        for o in w.open(
            1,
            Kind::Sse,
            Item {
                line: "-",
                json: &s,
            },
            0,
        ) {
            body.push_str(text(&o));
        }
        let head = body.strip_prefix(SSE_HEAD).expect("the head comes first");
        assert!(SSE_HEAD.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(SSE_HEAD.contains("\r\nContent-Type: text/event-stream\r\n"));
        assert!(!SSE_HEAD.contains("Content-Length"));
        let mut stream = head.to_owned();
        for o in w.publish(
            Item {
                line: "-",
                json: &c,
            },
            empty,
        ) {
            stream.push_str(text(&o));
        }
        for o in w.handle_timeout(KEEPALIVE_MS, empty) {
            stream.push_str(text(&o));
        }
        let (events, comments) = sse_parse(&stream);
        assert_eq!(comments, 1);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0, "status");
        assert_eq!(serde_json::from_str::<Value>(&events[0].1).unwrap(), s);
        assert_eq!(events[1].0, "role-change");
        assert_eq!(serde_json::from_str::<Value>(&events[1].1).unwrap(), c);
        assert_eq!(
            sse_event("status", &json!({"a": 1})),
            "event: status\ndata: {\"a\":1}\n\n"
        );
    }

    // A keep-alive at least every 15 s, to SSE watchers only, and no
    // deadline once none is left.
    #[test]
    fn keepalives_follow_the_sse_watchers() {
        let mut w = Watchers::new();
        let s = status_json();
        let item = Item {
            line: STATUS_LINE,
            json: &s,
        };
        w.open(1, Kind::Console, item, 0);
        assert_eq!(w.next_deadline(), None);
        w.open(2, Kind::Sse, item, 500);
        assert_eq!(w.next_deadline(), Some(500 + KEEPALIVE_MS));
        w.open(3, Kind::Sse, item, 700);
        assert_eq!(w.next_deadline(), Some(500 + KEEPALIVE_MS));
        const { assert!(KEEPALIVE_MS <= 15_000) };
        assert_eq!(w.handle_timeout(500 + KEEPALIVE_MS - 1, empty), []);
        let out = w.handle_timeout(500 + KEEPALIVE_MS, empty);
        assert_eq!(
            out,
            [
                Output::Bytes(2, SSE_KEEPALIVE.into()),
                Output::Bytes(3, SSE_KEEPALIVE.into())
            ]
        );
        // A loop that wakes late sends one comment and counts from then.
        let late = 500 + 5 * KEEPALIVE_MS;
        assert_eq!(w.handle_timeout(late, empty).len(), 2);
        assert_eq!(w.next_deadline(), Some(late + KEEPALIVE_MS));
        w.close(2);
        assert!(w.next_deadline().is_some());
        w.close(3);
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.len(), 1);
    }

    // At most 64 watchers; the 65th gets one line and is closed; a place
    // freed is taken again.
    #[test]
    fn the_watcher_after_the_64th_is_refused_with_one_line() {
        let mut w = Watchers::new();
        let s = status_json();
        let item = Item {
            line: STATUS_LINE,
            json: &s,
        };
        for id in 0..MAX_WATCHERS {
            let kind = if id % 2 == 0 {
                Kind::Console
            } else {
                Kind::Sse
            };
            assert_eq!(w.open(id, kind, item, 0).len(), 1);
        }
        assert_eq!(w.len(), MAX_WATCHERS);
        let out = w.open(100, Kind::Console, item, 0);
        assert_eq!(
            out,
            [
                Output::Line(100, console_refusal().into()),
                Output::Close(100, Closed::TooMany)
            ]
        );
        let out = w.open(101, Kind::Sse, item, 0);
        let refusal = text(&out[0]);
        assert!(refusal.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        let body = refusal.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body.lines().count(), 1);
        assert!(refusal.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert_eq!(out[1], Output::Close(101, Closed::TooMany));
        assert_eq!(
            (w.len(), w.kind(100), w.kind(101)),
            (MAX_WATCHERS, None, None)
        );
        let c = change_json();
        assert_eq!(
            w.publish(
                Item {
                    line: "x",
                    json: &c
                },
                empty
            )
            .len(),
            MAX_WATCHERS
        );
        w.close(5);
        assert_eq!(w.open(100, Kind::Console, item, 0).len(), 1);
        assert_eq!(w.kind(100), Some(Kind::Console));
    }

    // A watcher that does not read is dropped when its outbox is full;
    // the others still get every line, and it gets nothing more.
    #[test]
    fn a_watcher_whose_outbox_is_full_is_dropped() {
        let mut w = Watchers::new();
        let (s, c) = (status_json(), change_json());
        let item = Item {
            line: STATUS_LINE,
            json: &s,
        };
        for id in 1..=3 {
            let kind = if id == 3 { Kind::Sse } else { Kind::Console };
            w.open(id, kind, item, 0);
        }
        let change = Item {
            line: JOURNAL_LINE,
            json: &c,
        };
        let line_cost = JOURNAL_LINE.len() + 1;
        let almost = |id| {
            if id == 2 {
                MAX_WATCH_OUTBOX - line_cost
            } else {
                0
            }
        };
        let out = w.publish(change, almost);
        assert_eq!(out.len(), 3, "exactly full still fits: {out:?}");
        let over = |id| {
            if id == 2 {
                MAX_WATCH_OUTBOX - line_cost + 1
            } else {
                0
            }
        };
        let out = w.publish(change, over);
        assert_eq!(
            out,
            [
                Output::Line(1, JOURNAL_LINE.into()),
                Output::Close(2, Closed::OutboxFull),
                Output::Bytes(3, sse_event("role-change", &c).into()),
            ]
        );
        assert_eq!(w.kind(2), None);
        assert_eq!(w.publish(change, empty).len(), 2);
        // The keep-alive drops a full SSE watcher too, and with it the deadline.
        let out = w.handle_timeout(KEEPALIVE_MS, |_| MAX_WATCH_OUTBOX);
        assert_eq!(out, [Output::Close(3, Closed::OutboxFull)]);
        assert_eq!((w.len(), w.next_deadline()), (1, None));
        // A remote cannot overflow the check.
        assert_eq!(
            w.publish(change, |_| usize::MAX),
            [Output::Close(1, Closed::OutboxFull)]
        );
        assert!(w.is_empty());
    }
}
