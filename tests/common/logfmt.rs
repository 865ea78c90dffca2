//! A hand-written reader of bossd's log lines, independent of `src/log.rs`
//! (docs/OPERATIONS.md, "Logs"). It accepts exactly
//!
//! ```text
//! ^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN|INFO|DEBUG) event=[a-z-]+( [a-z_]+=("([^"\\]|\\.)*"|[^ "]+))*$
//! ```
//!
//! with the escapes bossd writes (`\"`, `\\`, `\n`, `\r`, `\t`, `\u{hex}`),
//! and returns the fields with their values unquoted.

/// One parsed log line (or, from [`parse_event`], the text after the level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `ERROR`, `WARN`, `INFO` or `DEBUG`; empty from [`parse_event`].
    pub level: String,
    pub name: String,
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// The unquoted value of `key`, if the line has it.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is `name` with every one of `fields` (and maybe more).
    pub fn is(&self, name: &str, fields: &[(&str, &str)]) -> bool {
        self.name == name && fields.iter().all(|(k, v)| self.field(k) == Some(*v))
    }
}

/// Parses a whole line: time, level, event.
pub fn parse_line(line: &str) -> Result<Event, String> {
    let (time, rest) = line
        .split_once(' ')
        .ok_or_else(|| format!("no space after the time in {line:?}"))?;
    check_time(time).map_err(|e| format!("{e} in {line:?}"))?;
    let (level, text) = rest
        .split_once(' ')
        .ok_or_else(|| format!("no space after the level in {line:?}"))?;
    if !["ERROR", "WARN", "INFO", "DEBUG"].contains(&level) {
        return Err(format!("level {level:?} in {line:?}"));
    }
    let mut event = parse_event(text).map_err(|e| format!("{e} in {line:?}"))?;
    event.level = level.to_owned();
    Ok(event)
}

/// Parses the text after the level: `event=NAME( key=value)*`, as the core
/// hands it over in `Action::Log`.
pub fn parse_event(text: &str) -> Result<Event, String> {
    let rest = text
        .strip_prefix("event=")
        .ok_or("the text does not start with event=")?;
    let end = rest.find(' ').unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return Err(format!("event name {name:?}"));
    }
    let mut rest = &rest[end..];
    let mut fields = Vec::new();
    while !rest.is_empty() {
        rest = rest.strip_prefix(' ').ok_or("no space before a field")?;
        let eq = rest.find('=').ok_or("a field without =")?;
        let key = &rest[..eq];
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("key {key:?}"));
        }
        rest = &rest[eq + 1..];
        let (value, after) = if let Some(quoted) = rest.strip_prefix('"') {
            unquote(quoted).map_err(|e| format!("{e} in the value of {key}"))?
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            let value = &rest[..end];
            if value.is_empty() || value.contains('"') {
                return Err(format!("bare value {value:?} of {key}"));
            }
            (value.to_owned(), &rest[end..])
        };
        fields.push((key.to_owned(), value));
        rest = after;
    }
    Ok(Event {
        level: String::new(),
        name: name.to_owned(),
        fields,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, digits where digits go.
fn check_time(time: &str) -> Result<(), String> {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    let ok = time.len() == SHAPE.len()
        && time.bytes().zip(SHAPE).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            s => b == *s,
        });
    if ok {
        Ok(())
    } else {
        Err(format!("time {time:?}"))
    }
}

/// Reads a quoted value after its opening quote: the value and what
/// follows the closing quote.
fn unquote(s: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('"') => value.push('"'),
                Some('\\') => value.push('\\'),
                Some('n') => value.push('\n'),
                Some('r') => value.push('\r'),
                Some('t') => value.push('\t'),
                Some('u') => {
                    let tail = &s[i + 2..];
                    let hex = tail
                        .strip_prefix('{')
                        .and_then(|t| t.split_once('}'))
                        .map(|(h, _)| h)
                        .ok_or("a \\u escape without {hex}")?;
                    let c = u32::from_str_radix(hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("\\u{{{hex}}}"))?;
                    value.push(c);
                    for _ in 0..hex.len() + 2 {
                        chars.next();
                    }
                }
                other => return Err(format!("escape \\{other:?}")),
            },
            c if c.is_control() => return Err(format!("raw control character {c:?}")),
            c => value.push(c),
        }
    }
    Err("no closing quote".to_owned())
}
