//! The peer codec under libFuzzer: the input is the byte stream a peer
//! sends. It goes through `LineBuffer` as the loop reads it, once whole and
//! once a byte per read, and every line through `decode`.
//!
//! Checked, besides "never panics" (docs/GUARANTEES.md, bad input):
//! - both deliveries give the same lines and the same first error;
//! - no line exceeds `MAX_LINE` or holds a newline;
//! - a line that decodes re-encodes to one line that decodes to the same
//!   message (free text with CR comes back with spaces, as the encoder
//!   promises), and encoding that again gives the same line.

#![no_main]

use bossd::protocol::{FrameError, LineBuffer, MAX_LINE, Message, decode, encode_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = frame(data, data.len().max(1));
    let bytewise = frame(data, 1);
    assert_eq!(whole, bytewise, "framing depends on the read size");
    for line in whole.iter().flatten() {
        assert!(line.len() <= MAX_LINE, "line of {} bytes", line.len());
        assert!(!line.contains('\n'));
        check_line(line);
    }
});

/// The lines the framer yields when `data` arrives `read` bytes at a time,
/// up to and including the first error, where the loop closes.
fn frame(data: &[u8], read: usize) -> Vec<Result<String, FrameError>> {
    let mut framer = LineBuffer::default();
    let mut out = Vec::new();
    for chunk in data.chunks(read) {
        framer.extend(chunk);
        loop {
            match framer.next_line() {
                Ok(Some(line)) => out.push(Ok(line)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

fn check_line(line: &str) {
    let Ok(msg) = decode(line) else {
        return;
    };
    let encoded = encode_line(&msg);
    assert!(encoded.ends_with('\n'));
    assert_eq!(
        encoded.matches('\n').count(),
        1,
        "{encoded:?} is not one line"
    );
    let again = decode(&encoded[..encoded.len() - 1]);
    let expected = match msg {
        Message::Msg(t) => Message::Msg(t.replace('\r', " ")),
        Message::Refuse(t) => Message::Refuse(t.replace('\r', " ")),
        m => m,
    };
    assert_eq!(again.as_ref(), Ok(&expected), "{line:?} -> {encoded:?}");
    assert_eq!(encode_line(&expected), encoded, "encoding is not stable");
}
