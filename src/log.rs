//! Log lines on stderr: one line an event, RFC 3339 UTC time, level, then
//! the event in logfmt:
//!
//! ```text
//! 2026-11-24T22:07:34.848Z INFO event=role-change from=none to=follower epoch=1 master=127.0.9.2:7402 cause=claim
//! 2026-11-24T22:07:35.204Z WARN event=auth-failed peer=127.0.0.1:41544 reason="wrong secret"
//! ```
//!
//! Every event starts with `event=<name>`, a kebab-case name, followed by
//! `key=value` fields with lowercase, underscore-separated keys. A value is
//! written bare unless it is empty or holds whitespace, `"`, `=` or a control
//! character; then it is double-quoted, with `"`, `\` and control
//! characters escaped ([`format_event`] has the rules). So a line always
//! splits on spaces outside quotes into `key=value` pairs, whatever text a
//! remote put into a value.
//!
//! This module is the one place logfmt text is made. [`event!`](crate::event!)
//! writes an event of the loop's own when its level is enabled. The
//! sans-IO parts (core, links, endpoint) hand over typed events instead
//! ([`crate::event::Event`], a [`Record`]), which [`emit`] writes, and
//! formats only when their level is enabled. The level is set once at
//! start. `docs/OPERATIONS.md` lists the events.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

/// Writes one event to stderr when `level` is enabled, without formatting
/// anything otherwise:
///
/// ```
/// # use bossd::log::Level;
/// # let addr = "127.0.0.1:7000";
/// bossd::event!(Level::Info, "peer-joined", peer = addr);
/// ```
///
/// Keys are identifiers (lowercase, underscores); values are anything that
/// implements `Display`.
#[macro_export]
macro_rules! event {
    ($level:expr, $event:expr $(, $key:ident = $value:expr)* $(,)?) => {{
        let level: $crate::log::Level = $level;
        if $crate::log::enabled(level) {
            $crate::log::write(level, &$crate::event_text!($event $(, $key = $value)*));
        }
    }};
}

/// Formats one event as [`format_event`] does, for [`event!`](crate::event!):
///
/// ```
/// let text = bossd::event_text!("peer-left", peer = "127.0.0.1:7001", reason = "bye now");
/// assert_eq!(text, r#"event=peer-left peer=127.0.0.1:7001 reason="bye now""#);
/// ```
#[macro_export]
macro_rules! event_text {
    ($event:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log::format_event(
            $event,
            &[$((stringify!($key), &$value as &dyn ::std::fmt::Display)),*],
        )
    };
}

/// Severity, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Lines above this level are dropped.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a line at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line to stderr if `level` is enabled: the time, the level
/// and `event`, which [`format_event`] made.
pub fn write(level: Level, event: &str) {
    if enabled(level) {
        write_unfiltered(level, event);
    }
}

/// Writes one line to stderr whatever `--log` lets through: for the rare
/// line a caller cannot do without, such as the port a node on port 0 got.
pub fn write_unfiltered(level: Level, event: &str) {
    let now = humantime::format_rfc3339_millis(SystemTime::now());
    // One write(2) for the whole line: a hook writing to the same stderr,
    // or a SIGKILL, cannot cut it in half (pipes keep writes of up to 4 KiB
    // whole).
    let line = format!("{now} {level} {event}\n");
    // A closed stderr must not take the node down: the line is lost.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Writes `text` and a newline to stdout in one write. A closed or broken
/// stdout (`bossd ctl ... | head -1`) loses the line; `println!` would
/// panic, and the release build would abort.
pub fn stdout_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{text}\n").as_bytes());
    let _ = out.flush();
}

/// Writes `text` and a newline to stderr in one write; a closed stderr
/// (`2>&1 | head -1`) loses the line instead of panicking, as
/// `eprintln!` would.
pub fn stderr_line(text: &str) {
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{text}\n").as_bytes());
}

/// An event as a log line sees it: a level, a kebab-case name and
/// `key=value` fields in order. [`crate::event::Event`] is one.
pub trait Record {
    fn level(&self) -> Level;
    fn name(&self) -> &'static str;
    /// Calls `field` with each key and value, in the order of the line.
    fn fields(&self, field: &mut dyn FnMut(&'static str, &dyn fmt::Display));
}

/// Writes `record` to stderr if its level is enabled; formats nothing
/// otherwise.
pub fn emit(record: &dyn Record) {
    let level = record.level();
    if enabled(level) {
        write(level, &format(record));
    }
}

/// The text of `record` after the time and level, as [`format_event`]
/// makes it.
pub fn format(record: &dyn Record) -> String {
    let name = record.name();
    debug_assert!(is_name(name, '-'), "event name {name:?} is not kebab-case");
    let mut out = format!("event={name}");
    let mut value = String::new();
    record.fields(&mut |key, v| push_field(&mut out, &mut value, key, v));
    out
}

/// `event=<event>` and then ` key=value` for each field, in order: the text
/// of a log line after its time and level. Pure, so the core can use it.
///
/// A value is its `Display` text, bare when that is non-empty and holds no
/// whitespace, `"`, `=` or control character. Otherwise it is quoted:
/// `"` becomes `\"`, `\` becomes `\\`, newline, carriage return and tab
/// become `\n`, `\r`, `\t`, any other control character `\u{hex}`.
///
/// `event` must be kebab-case and keys lowercase words joined by `_`
/// (checked in debug builds): readers match them as `[a-z-]+` and `[a-z_]+`.
pub fn format_event(event: &str, fields: &[(&str, &dyn fmt::Display)]) -> String {
    debug_assert!(
        is_name(event, '-'),
        "event name {event:?} is not kebab-case"
    );
    let mut out = format!("event={event}");
    let mut value = String::new();
    for (key, v) in fields {
        push_field(&mut out, &mut value, key, *v);
    }
    out
}

/// Appends ` key=value`; `value` is scratch space.
fn push_field(out: &mut String, value: &mut String, key: &str, v: &dyn fmt::Display) {
    debug_assert!(is_name(key, '_'), "log key {key:?} is not snake_case");
    value.clear();
    // Writing to a String cannot fail.
    let _ = write!(value, "{v}");
    out.push(' ');
    out.push_str(key);
    out.push('=');
    push_value(out, value);
}

/// Appends `value` bare or quoted, as [`format_event`] describes.
fn push_value(out: &mut String, value: &str) {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == '"' || c == '=' || c.is_whitespace() || c.is_control());
    if bare {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Lowercase ASCII words joined by single `sep`s.
fn is_name(s: &str, sep: char) -> bool {
    !s.is_empty()
        && s.split(sep)
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        })
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "error" => Ok(Level::Error),
            "warn" => Ok(Level::Warn),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(format!(
                "unknown log level {s:?}; use error, warn, info or debug"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &str) -> String {
        let text = format_event("test", &[("v", &value)]);
        text.strip_prefix("event=test v=").unwrap().to_owned()
    }

    #[test]
    fn plain_values_are_bare() {
        assert_eq!(one("127.0.0.1:7000"), "127.0.0.1:7000");
        assert_eq!(one("[::1]:7000"), "[::1]:7000");
        assert_eq!(one("master-left"), "master-left");
        assert_eq!(one("-"), "-");
        // A backslash alone does not need quotes; no bare value has a quote.
        assert_eq!(one(r"C:\x"), r"C:\x");
        assert_eq!(one("grüße"), "grüße");
    }

    #[test]
    fn values_with_space_quote_equals_or_nothing_are_quoted() {
        assert_eq!(one("wrong secret"), r#""wrong secret""#);
        assert_eq!(one(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(one("a=b"), r#""a=b""#);
        assert_eq!(one(""), r#""""#);
        assert_eq!(one(r#"a\"#), r#"a\"#);
        assert_eq!(one(r#"a \ b"#), r#""a \\ b""#);
        // Non-ASCII whitespace splits words for readers too.
        assert_eq!(one("a\u{a0}b"), "\"a\u{a0}b\"");
    }

    #[test]
    fn control_characters_are_escaped_so_a_line_stays_one_line() {
        assert_eq!(one("a\nb"), r#""a\nb""#);
        assert_eq!(one("a\r\n"), r#""a\r\n""#);
        assert_eq!(one("\ta"), r#""\ta""#);
        assert_eq!(one("\u{1b}[31m"), r#""\u{1b}[31m""#);
        assert_eq!(one("\u{7f}"), r#""\u{7f}""#);
        assert!(!one("x\ny\rz\u{85}").contains(['\n', '\r', '\u{85}']));
    }

    #[test]
    fn fields_follow_the_event_in_order() {
        let epoch = 7_u64;
        let text = crate::event_text!(
            "role-change",
            from = "none",
            to = "master",
            epoch = epoch,
            reason = "two words",
        );
        assert_eq!(
            text,
            r#"event=role-change from=none to=master epoch=7 reason="two words""#
        );
        assert_eq!(crate::event_text!("left"), "event=left");
    }

    #[test]
    fn names_are_checked() {
        assert!(is_name("role-change", '-'));
        assert!(is_name("elapsed_ms", '_'));
        assert!(!is_name("Role-change", '-'));
        assert!(!is_name("role--change", '-'));
        assert!(!is_name("role-", '-'));
        assert!(!is_name("", '_'));
        assert!(!is_name("ms2", '_'));
    }

    #[test]
    fn levels_parse_and_print() {
        for (name, level) in [
            ("error", Level::Error),
            ("warn", Level::Warn),
            ("info", Level::Info),
            ("debug", Level::Debug),
        ] {
            assert_eq!(name.parse::<Level>(), Ok(level));
            assert_eq!(level.to_string(), name.to_uppercase());
        }
        assert!("trace".parse::<Level>().is_err());
    }
}
