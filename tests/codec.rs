//! The peer codec: every encoded message decodes to itself, malformed
//! lines are refused with a typed error, and no input makes it panic.
//! (docs/PROTOCOL.md grammar; SPEC §6: nothing a peer sends crashes a node.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bossd::protocol::{
    DecodeError, Hello, LineBuffer, LinkKind, MAX_LINE, Message, Role, State, decode, encode_line,
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

fn rule() -> impl Strategy<Value = Rule> {
    let word = prop_oneof![
        Just("oldest"),
        Just("youngest"),
        Just("priority"),
        Just("lowest-addr"),
        Just("highest-addr")
    ];
    prop::collection::vec(word, 1..=5).prop_map(|w| w.join(",").parse().unwrap())
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
    )
        .prop_map(
            |(kind, addr, started_unix_ms, instance, priority, quorum, strict, rule)| {
                Message::Hello(Hello {
                    kind,
                    addr,
                    started_unix_ms,
                    instance,
                    priority,
                    quorum,
                    strict,
                    rule,
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
        (any::<u64>(), any::<u64>()).prop_map(|(seq, view)| Message::Ping { seq, view }),
        (any::<u64>(), any::<u64>()).prop_map(|(seq, replied_unix_ms)| Message::Pong {
            seq,
            replied_unix_ms
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

    // SPEC §6: arbitrary bytes never panic the framer or the decoder, and
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

    // Near-miss lines: a valid line with one word mangled must not panic.
    #[test]
    fn mangled_lines_never_panic(msg in message(), pos in any::<usize>(), junk in "[ -~]{0,12}") {
        let line = encode_line(&msg);
        let line = line.trim_end();
        let mut words: Vec<&str> = line.split(' ').collect();
        let i = pos % words.len();
        words[i] = &junk;
        let _ = decode(&words.join(" "));
    }
}

// The table of malformed lines; each is refused, none panics.
#[test]
fn malformed_lines_are_refused() {
    let good_hello =
        "HELLO bossd/1 join 127.0.0.1:7000 1764000000123 deadbeef00000001 -5 2 0 oldest";
    assert!(decode(good_hello).is_ok());
    let table: &[(&str, &str)] = &[
        ("", "empty line"),
        ("hello", "lowercase name"),
        ("NOPE 1 2", "unknown message"),
        ("HELLO", "HELLO without fields"),
        (
            "HELLO bossd/2 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest",
            "other version",
        ),
        (
            "HELLO bossd/1 knock 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest",
            "bad kind",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1 1 deadbeef00000001 0 2 0 oldest",
            "address without port",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:70000 1 deadbeef00000001 0 2 0 oldest",
            "port out of range",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 -1 deadbeef00000001 0 2 0 oldest",
            "negative start",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 1 deadbeef 0 2 0 oldest",
            "short instance",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 1 deadbeef0000000g 0 2 0 oldest",
            "non-hex instance",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 1 deadbeef00000001 99999999999 2 0 oldest",
            "priority overflow",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 1 deadbeef00000001 0 4294967296 0 oldest",
            "quorum overflow",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 1 deadbeef00000001 0 2 2 oldest",
            "strict not 0/1",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 eldest",
            "unknown rule",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000 1 deadbeef00000001 0 2 0 oldest extra",
            "trailing word",
        ),
        (
            "HELLO bossd/1 join 127.0.0.1:7000  1 deadbeef00000001 0 2 0 oldest",
            "double space",
        ),
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
        ("PING -1 0000000000000000", "negative PING"),
        ("PING 1", "PING without a digest"),
        ("PING 1 abc", "PING with a short digest"),
        ("PONG", "PONG without a number"),
        ("PONG 1", "PONG without a time"),
        ("PONG 1 2 3", "PONG three numbers"),
        ("PONG 1 -2", "PONG with a negative time"),
        ("PONG 1 18446744073709551616", "PONG time overflow"),
        ("PONG 1  2", "PONG double space"),
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
