//! The peer codec: every encoded message decodes to itself, every decoded
//! line re-encodes to the same message, malformed lines are refused with a
//! typed error, framing does not depend on where the stream was cut, and
//! no input makes it panic.
//! (docs/PROTOCOL.md grammar; docs/GUARANTEES.md, bad input: nothing a peer sends crashes a node.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bossd::protocol::{
    DecodeError, Echo, FrameError, Health, Hello, LineBuffer, LinkKind, MAX_LINE, Message, Role,
    State, decode, encode_line,
};
use bossd::rule::Rule;
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// A rule: one to five criteria in any order, each at most once.
fn rule() -> impl Strategy<Value = Rule> {
    let words = vec![
        "oldest",
        "youngest",
        "priority",
        "lowest-addr",
        "highest-addr",
    ];
    (Just(words).prop_shuffle(), 1..=5usize).prop_map(|(w, n)| w[..n].join(",").parse().unwrap())
}

fn health() -> impl Strategy<Value = Health> {
    prop_oneof![
        Just(Health::Ok),
        Just(Health::Failing),
        Just(Health::Standby)
    ]
}

/// Free text as a line can carry it: no line breaks.
fn text() -> impl Strategy<Value = String> {
    "[^\r\n]{0,200}"
}

fn message() -> impl Strategy<Value = Message> {
    let hello = (
        prop_oneof![Just(LinkKind::Join), Just(LinkKind::Mesh)],
        addr(),
        any::<u64>(),
        any::<u64>(),
        any::<i32>(),
        any::<u32>(),
        any::<bool>(),
        rule(),
        (any::<bool>(), any::<u64>(), health()),
    )
        .prop_map(
            |(
                kind,
                addr,
                started_unix_ms,
                instance,
                priority,
                quorum,
                strict,
                rule,
                (no_preempt, preempt_delay_ms, health),
            )| {
                Message::Hello(Hello {
                    kind,
                    addr,
                    started_unix_ms,
                    instance,
                    priority,
                    quorum,
                    strict,
                    rule,
                    no_preempt,
                    preempt_delay_ms,
                    health,
                })
            },
        );
    let state = (
        prop_oneof![Just(Role::Master), Just(Role::Follower), Just(Role::None)],
        any::<u64>(),
        prop::option::of(addr()),
    )
        .prop_map(|(role, epoch, epoch_master)| {
            Message::State(State {
                role,
                epoch,
                epoch_master,
            })
        });
    prop_oneof![
        hello,
        state,
        text().prop_map(Message::Refuse),
        addr().prop_map(Message::Redirect),
        addr().prop_map(Message::Meet),
        text().prop_map(Message::Msg),
        Just(Message::Leave),
        (health(), any::<i32>()).prop_map(|(health, priority)| Message::Rank { health, priority }),
        (any::<u64>(), prop::option::of(addr()))
            .prop_map(|(epoch, next)| Message::Release { epoch, next }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(seq, view, fresh_ms)| {
            Message::Ping {
                seq,
                view,
                fresh_ms,
                echo: None,
            }
        }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<(u64, u64, u64)>()
        )
            .prop_map(|(seq, view, fresh_ms, (echoed, held_ms, stamp_unix_ms))| {
                Message::Ping {
                    seq,
                    view,
                    fresh_ms,
                    echo: Some(Echo {
                        seq: echoed,
                        held_ms,
                        stamp_unix_ms,
                    }),
                }
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    // Encoding and decoding are bound together: every message survives.
    #[test]
    fn every_message_round_trips(msg in message()) {
        let line = encode_line(&msg);
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1, "one line: {:?}", line);
        prop_assert_eq!(decode(&line[..line.len() - 1]), Ok(msg));
    }

    // Through the framer too, split at an arbitrary point.
    #[test]
    fn framed_messages_round_trip(msgs in prop::collection::vec(message(), 1..8), cut in any::<usize>()) {
        let bytes: String = msgs.iter().map(encode_line).collect();
        let cut = cut % (bytes.len() + 1);
        let mut framer = LineBuffer::default();
        let mut got = Vec::new();
        for part in [&bytes.as_bytes()[..cut], &bytes.as_bytes()[cut..]] {
            framer.extend(part);
            while let Some(line) = framer.next_line().unwrap() {
                got.push(decode(&line).unwrap());
            }
        }
        prop_assert_eq!(got, msgs);
    }

    // docs/GUARANTEES.md, bad input: arbitrary bytes never panic the framer or the decoder, and
    // the framer never holds more than one line's worth.
    #[test]
    fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 0..20)) {
        let mut framer = LineBuffer::default();
        for chunk in chunks {
            framer.extend(&chunk);
            loop {
                match framer.next_line() {
                    Ok(Some(line)) => { let _ = decode(&line); }
                    Ok(None) => break,
                    Err(_) => { framer = LineBuffer::default(); break; }
                }
            }
            prop_assert!(framer.pending() <= MAX_LINE + 600);
        }
    }

    // Near-miss lines: a valid line with one word mangled must not panic,
    // and whatever still decodes is a message the encoder can say.
    #[test]
    fn mangled_lines_never_panic(msg in message(), pos in any::<usize>(), junk in "[ -~]{0,12}") {
        let line = encode_line(&msg);
        let line = line.trim_end();
        let mut words: Vec<&str> = line.split(' ').collect();
        let i = pos % words.len();
        words[i] = &junk;
        check_reencodes(&words.join(" "))?;
    }

    // Lines of protocol words in any order, one or two spaces apart: the
    // decoder's nom parsers see every field type in every position.
    #[test]
    fn word_soup_reencodes(line in word_soup()) {
        check_reencodes(&line)?;
    }

    // The framer's answer does not depend on how TCP cut the stream: every
    // split of the same bytes gives the same lines and the same error, no
    // line exceeds MAX_LINE, and none holds a newline.
    #[test]
    fn framing_ignores_chunk_boundaries(bytes in stream(), cuts in prop::collection::vec((any::<bool>(), any::<usize>()), 0..12)) {
        let whole = frame(&[&bytes]);
        // Half the cuts fall just before a CR or LF, where framing decides.
        let ends: Vec<usize> = (0..bytes.len()).filter(|&i| matches!(bytes[i], b'\r' | b'\n')).collect();
        let mut cuts: Vec<usize> = cuts
            .into_iter()
            .map(|(at_end, c)| match at_end {
                true if !ends.is_empty() => ends[c % ends.len()],
                _ => c % (bytes.len() + 1),
            })
            .collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(&bytes[from..cut]);
            from = cut;
        }
        let split = frame(&chunks);
        prop_assert_eq!(&split, &whole, "chunks at {:?}", chunks.iter().map(|c| c.len()).collect::<Vec<_>>());
        for line in whole.iter().flatten() {
            prop_assert!(line.len() <= MAX_LINE);
            prop_assert!(!line.contains('\n'));
        }
    }
}

/// What the framer yields for a stream delivered in these chunks, up to and
/// including its first error (the loop closes the connection there). Each
/// line also goes through the decoder, which must not panic.
fn frame(chunks: &[&[u8]]) -> Vec<Result<String, FrameError>> {
    let mut framer = LineBuffer::default();
    let mut out = Vec::new();
    for chunk in chunks {
        framer.extend(chunk);
        loop {
            match framer.next_line() {
                Ok(Some(line)) => {
                    let _ = decode(&line);
                    out.push(Ok(line));
                }
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

/// Bytes with lines of every interesting length: short ones, ones at the
/// limit give or take two bytes, ending in LF, CR LF, a lone CR or nothing,
/// some with bytes that are not UTF-8, and stretches of arbitrary bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![0..8usize, (MAX_LINE - 2)..=(MAX_LINE + 2)];
    let fill = prop_oneof![Just(b'a'), Just(b'\r'), Just(0xff)];
    let end = prop_oneof![
        Just(&b"\n"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\r\r\n"[..]),
        Just(&b"\r"[..]),
        Just(&b""[..]),
    ];
    let line = (len, fill, end).prop_map(|(len, fill, end)| {
        let mut l = vec![b'a'; len];
        if len > 0 && fill != b'a' {
            l[len / 2] = fill;
        }
        l.extend_from_slice(end);
        l
    });
    let part = prop_oneof![
        3 => line,
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    prop::collection::vec(part, 0..6).prop_map(|parts| parts.concat())
}

/// Lines shaped like each message, every field drawn from values at its
/// limits or (one time in eight) just past them, with now and then a word
/// dropped, repeated or followed by two spaces: many decode, and those
/// that do carry edge values.
fn word_soup() -> impl Strategy<Value = String> {
    // Each field: valid values | invalid ones.
    const U64: &str = "0 1 007 +1 18446744073709551615 | -1 18446744073709551616 x";
    const I32: &str = "0 -1 +1 -0 2147483647 -2147483648 | 2147483648 --1 1.5";
    const U32: &str = "0 2 +2 4294967295 | 4294967296 -2";
    const HEX: &str = "deadbeef00000001 DEADBEEF00000001 ffffffffffffffff \
                       | deadbeef0000001 deadbeef000000001 0x00000000000001";
    const ADDR: &str = "127.0.0.1:7000 0.0.0.0:0 [::1]:7000 [::ffff:1.2.3.4]:1 [fe80::1%2]:7 \
                        | [fe80::1%4294967296]:7 ::1:7000 1.2.3.4:65536 1.2.3.4 01.2.3.4:5";
    const RULE: &str = "oldest priority,oldest lowest-addr,highest-addr \
                        oldest,oldest,oldest,oldest,oldest \
                        | youngest, ,oldest oldest,oldest,oldest,oldest,oldest,oldest";
    let shapes: [&[&str]; 10] = [
        &[
            "HELLO",
            "bossd/4 | bossd/3 bossd/1",
            "join mesh | knock",
            ADDR,
            U64,
            HEX,
            I32,
            U32,
            "0 1 | 2",
            RULE,
        ],
        &["STATE", "master follower none | boss", U64, ADDR],
        &["STATE", "master follower none", U64, "- | -x"],
        &["PING", U64, HEX, U64],
        &["PING", U64, HEX, U64, U64, U64, U64],
        &["MEET", ADDR],
        &["REDIRECT", ADDR],
        &["LEAVE"],
        &["MSG", "hi \u{e9}t\u{e9} a\rb \r"],
        &["REFUSE", "no \u{1f600}"],
    ];
    let shape = prop::sample::select(shapes.to_vec());
    let pick = (0..8u8, any::<prop::sample::Index>(), 0..20u8);
    (shape, prop::collection::vec(pick, 12)).prop_map(|(shape, picks)| {
        let mut line = String::new();
        for (field, (bad, pick, twist)) in shape.iter().zip(picks) {
            let (good, worse) = field.split_once('|').unwrap_or((field, ""));
            let pool = if bad == 0 && !worse.trim().is_empty() {
                worse
            } else {
                good
            };
            // Split at spaces only: a CR is a word of its own here.
            let choices: Vec<&str> = pool.split(' ').filter(|w| !w.is_empty()).collect();
            let word = pick.get(&choices);
            let (times, sep) = match twist {
                0 => (0, " "),
                1 => (2, " "),
                2 => (1, "  "),
                _ => (1, " "),
            };
            for _ in 0..times {
                if !line.is_empty() {
                    line.push_str(sep);
                }
                line.push_str(word);
            }
        }
        line
    })
}

/// If `line` decodes, its message encodes to one line that decodes to the
/// same message (free text with CR in it comes back with spaces, as the
/// encoder promises), and encoding that again changes nothing.
fn check_reencodes(line: &str) -> Result<(), TestCaseError> {
    let Ok(msg) = decode(line) else {
        return Ok(());
    };
    let encoded = encode_line(&msg);
    prop_assert_eq!(encoded.matches('\n').count(), 1, "one line: {:?}", encoded);
    let again = decode(encoded.trim_end_matches('\n'));
    let expected = match msg {
        Message::Msg(t) => Message::Msg(t.replace('\r', " ")),
        Message::Refuse(t) => Message::Refuse(t.replace('\r', " ")),
        m => m,
    };
    prop_assert_eq!(again, Ok(expected), "{:?} -> {:?}", line, encoded);
    Ok(())
}

// The table of malformed lines; each is refused, none panics.
#[test]
fn malformed_lines_are_refused() {
    let good_hello =
        "HELLO bossd/4 join 127.0.0.1:7000 1764000000123 deadbeef00000001 -5 2 0 oldest 0 0 ok";
    assert!(decode(good_hello).is_ok());
    let table: &[(&str, &str)] = &[
        ("", "empty line"),
        ("hello", "lowercase name"),
        ("NOPE 1 2", "unknown message"),
        ("HELLO", "HELLO without fields"),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest",
            "other version",
        ),
        (
            "HELLO bossd/4 knock 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest 0 0 ok",
            "bad kind",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1 1 deadbeef00000001 0 2 0 oldest 0 0 ok",
            "address without port",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:70000 1 deadbeef00000001 0 2 0 oldest 0 0 ok",
            "port out of range",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 -1 deadbeef00000001 0 2 0 oldest 0 0 ok",
            "negative start",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef 0 2 0 oldest 0 0 ok",
            "short instance",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef0000000g 0 2 0 oldest 0 0 ok",
            "non-hex instance",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 99999999999 2 0 oldest 0 0 ok",
            "priority overflow",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 0 4294967296 0 oldest 0 0 ok",
            "quorum overflow",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 0 2 2 oldest 0 0 ok",
            "strict not 0/1",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 eldest 0 0 ok",
            "unknown rule",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest 0 0 ok extra",
            "trailing word",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000  1 deadbeef00000001 0 2 0 oldest 0 0 ok",
            "double space",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest",
            "HELLO without preemption and health",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest 2 0 ok",
            "no-preempt not 0/1",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest 0 -1 ok",
            "negative preempt delay",
        ),
        (
            "HELLO bossd/4 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest 0 0 sick",
            "unknown health",
        ),
        ("RANK ok", "RANK without priority"),
        ("RANK unwell 1", "RANK unknown health"),
        ("RELEASE 3", "RELEASE without next"),
        ("RELEASE x -", "RELEASE epoch not a number"),
        ("STATE master 1", "STATE without master"),
        ("STATE boss 1 127.0.0.1:7000", "unknown role"),
        ("STATE master x 127.0.0.1:7000", "epoch not a number"),
        ("STATE master 18446744073709551616 -", "epoch overflow"),
        ("STATE none 0 - extra", "STATE trailing word"),
        ("STATE none 0 -x", "dash with tail"),
        ("MEET", "MEET without address"),
        ("MEET 127.0.0.1:7000 127.0.0.1:7001", "MEET two addresses"),
        ("MEET ::1:7000", "IPv6 without brackets"),
        ("REDIRECT nowhere", "REDIRECT to a name"),
        ("LEAVE now", "LEAVE with an argument"),
        ("PING", "PING without a number"),
        ("PING -1 0000000000000000 0", "negative PING"),
        ("PING 1", "PING without a digest"),
        ("PING 1 abc 0", "PING with a short digest"),
        ("PING 1 0000000000000000", "PING without fresh"),
        ("PING 1 0000000000000000 -1", "PING with a negative fresh"),
        (
            "PING 1 0000000000000000 18446744073709551616",
            "PING fresh overflow",
        ),
        ("PING 1 0000000000000000 0 2", "PING with half an echo"),
        ("PING 1 0000000000000000 0 2 3", "PING echo without a stamp"),
        (
            "PING 1 0000000000000000 0 2 3 4 5",
            "PING with a word too many",
        ),
        (
            "PING 1 0000000000000000 0 2 -3 4",
            "PING with a negative held time",
        ),
        (
            "PING 1 0000000000000000 0 2 3 18446744073709551616",
            "PING stamp overflow",
        ),
        ("PING 1 0000000000000000 0  2 3 4", "PING double space"),
        ("PONG 1 2", "PONG, which bossd/1 answered PINGs with"),
    ];
    for (line, why) in table {
        assert!(decode(line).is_err(), "{why}: {line:?} was accepted");
    }
    assert!(matches!(
        decode("HELLO bossd/9 join"),
        Err(DecodeError::Version(v)) if v == "bossd/9"
    ));
    assert!(matches!(
        decode("BOGUS"),
        Err(DecodeError::UnknownMessage(_))
    ));
}

// Message::name is the first word its encoding starts with.
#[test]
fn names_match_the_encoding() {
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&message(), |msg| {
            let line = encode_line(&msg);
            prop_assert_eq!(line.split([' ', '\n']).next(), Some(msg.name()));
            Ok(())
        })
        .unwrap();
}
