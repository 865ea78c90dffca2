//! The console and the secret's handshake under input from anyone who can
//! reach the port (docs/GUARANTEES.md, bad input: nothing a client or a peer sends crashes a
//! node; docs/GUARANTEES.md, `--secret-file`: peers must prove they know the secret).
//!
//! The codec has its own file, `tests/codec.rs`; `fuzz/` runs the decoder
//! and the handshake under libFuzzer for longer (docs/FUZZING.md).

use bossd::auth::{AuthError, Done, Handshake, NONCE_LEN, SEAL_OVERHEAD, Secret, Session};
use bossd::console::{self, Clock, Command, MAX_MSG_TEXT};
use bossd::core::{Config, Node};
use bossd::protocol::MAX_LINE;
use bossd::time::{Mono, Wall};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    // docs/GUARANTEES.md, console and bad input: any line a console client sends is parsed without a
    // panic; what parses runs on a node; no answer line, and no ERR
    // reason, carries a line break that could forge an `OK` for the client.
    #[test]
    fn console_lines_never_panic_or_forge_answers(line in console_line()) {
        let parsed = console::parse(&line);
        match &parsed {
            Err(reason) => prop_assert!(is_one_line(reason), "{:?}", reason),
            Ok(Some(Command::Msg(text))) => {
                prop_assert!(!text.is_empty());
                prop_assert!(text.len() <= MAX_MSG_TEXT);
                // Sealed and framed, the peer line still fits.
                prop_assert!("MSG ".len() + text.len() + SEAL_OVERHEAD <= MAX_LINE);
            }
            Ok(_) => {}
        }
        if let Ok(Some(cmd)) = parsed {
            let mut node = node();
            let reply = console::execute(cmd, &mut node, clock());
            for l in &reply.lines {
                prop_assert!(is_one_line(l), "{:?}", l);
            }
            if let Err(reason) = &reply.result {
                prop_assert!(is_one_line(reason), "{:?}", reason);
            }
            while node.poll_action().is_some() {}
        }
    }

    // An acceptor fed any lines, as a stranger would send them, never
    // panics and never authenticates: the first line goes to `accept`,
    // later ones to `step`. It keeps going after errors, where the loop
    // would close, to cover more states.
    #[test]
    fn acceptor_never_authenticates_a_stranger(lines in prop::collection::vec(auth_line(), 1..6)) {
        let secret = secret();
        let mut hs = None;
        for line in &lines {
            match &mut hs {
                None => hs = Handshake::accept(&secret, line, ACCEPTOR_NONCE, target()).ok().map(|(h, _)| h),
                Some(h) => {
                    let step = h.step(&secret, line);
                    prop_assert!(!matches!(step, Ok(Done { .. })), "authenticated by {:?}", lines);
                }
            }
        }
    }

    // The same for a dialer: no acceptor proof is accepted without the secret.
    #[test]
    fn dialer_never_authenticates_a_stranger(lines in prop::collection::vec(auth_line(), 1..6)) {
        let secret = secret();
        let (mut hs, _) = Handshake::dial(DIALER_NONCE, target());
        for line in &lines {
            let step = hs.step(&secret, line);
            prop_assert!(!matches!(step, Ok(Done { .. })), "authenticated by {:?}", lines);
        }
    }

    // An attacker sees a genuine handshake between two holders of the
    // secret and answers a fresh acceptor with what it saw, altered: the
    // recorded PROOF (for other nonces), the acceptor's own proof reflected,
    // a proof made with another secret, or the genuine PROOF with one
    // character changed. Only the genuine proof itself (hex digits in
    // either case) authenticates.
    #[test]
    fn only_the_genuine_proof_authenticates(
        nd in any::<[u8; NONCE_LEN]>(),
        na in any::<[u8; NONCE_LEN]>(),
        other in prop::collection::vec(any::<u8>(), 1..40),
        attack in 0..4u8,
        pos in any::<prop::sample::Index>(),
        ch in any::<char>(),
    ) {
        let secret = secret();
        let (first, acc_reply, proof) = genuine(&secret, nd, na);
        let candidate = match attack {
            0 => genuine(&secret, nd, [na[0] ^ 1; NONCE_LEN]).2,
            1 => format!("PROOF {}", acc_reply.rsplit(' ').next().unwrap()),
            // A holder of another secret (or, rarely, the same one).
            2 => genuine(&Secret::new(&other).unwrap(), nd, na).2,
            _ => {
                let mut chars: Vec<char> = proof.chars().collect();
                let i = pos.index(chars.len());
                chars[i] = ch;
                chars.into_iter().collect()
            }
        };
        let (mut acc, _) = Handshake::accept(&secret, &first, na, target()).unwrap();
        let done = matches!(acc.step(&secret, &candidate), Ok(Done { .. }));
        let same = candidate.strip_prefix("PROOF ")
            .is_some_and(|hex| hex.eq_ignore_ascii_case(&proof["PROOF ".len()..]));
        prop_assert_eq!(done, same, "{:?} vs genuine {:?}", candidate, proof);
    }

    // After a genuine handshake, lines sealed by one side open on the other
    // in order; an arbitrary line, a replayed one, one with a changed byte,
    // or one sealed on another connection fails.
    #[test]
    fn sessions_accept_only_their_own_lines(
        lines in prop::collection::vec("[^\r\n]{0,60}", 1..5),
        junk in "[ -~]{0,80}",
        flip in any::<prop::sample::Index>(),
    ) {
        let secret = secret();
        let (mut d, mut a) = sessions(&secret, DIALER_NONCE, ACCEPTOR_NONCE);
        let (mut d2, _) = sessions(&secret, DIALER_NONCE, [9; NONCE_LEN]);
        prop_assert!(a.open(&junk).is_err());
        for line in &lines {
            let sealed = seal(&mut d, line);
            // The same line from the same position on another connection.
            let elsewhere = seal(&mut d2, line);
            prop_assert_eq!(a.open(&elsewhere), Err(AuthError::BadTag));
            let mut bytes = sealed.clone().into_bytes();
            let i = flip.index(bytes.len());
            bytes[i] ^= 0x01;
            if let Ok(altered) = String::from_utf8(bytes) {
                prop_assert!(a.open(&altered).is_err(), "{:?} opened", altered);
            }
            prop_assert_eq!(a.open(&sealed), Ok(line.as_str()));
            prop_assert_eq!(a.open(&sealed), Err(AuthError::BadTag));
            let back = seal(&mut a, line);
            prop_assert_eq!(d.open(&back), Ok(line.as_str()));
        }
    }
}

const SECRET: &[u8] = b"correct horse battery staple";

/// The node every handshake here means and reaches.
fn target() -> std::net::SocketAddr {
    "127.0.0.1:7000".parse().unwrap()
}
const DIALER_NONCE: [u8; NONCE_LEN] = [0x11; NONCE_LEN];
const ACCEPTOR_NONCE: [u8; NONCE_LEN] = [0x22; NONCE_LEN];

fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

fn node() -> Node {
    Node::new(Config {
        addr: "127.0.0.1:7000".parse().unwrap(),
        started_unix_ms: 1_764_000_000_000,
        instance: 1,
        priority: 0,
        quorum: 2,
        strict: false,
        rule: Default::default(),
        heartbeat_ms: 100,
        timeout_ms: 500,
        reconnect_timeout_ms: bossd::config::DEFAULT_RECONNECT_TIMEOUT_MS,
        seed: 1,
        wall_at_zero: Wall(1_764_000_000_000),
        durable: None,
        checked: false,
        no_preempt: false,
        preempt_delay_ms: 0,
    })
}

fn clock() -> Clock {
    Clock {
        now: Mono::ZERO,
        wall_at_zero: Wall(1_764_000_000_000),
    }
}

fn is_one_line(s: &str) -> bool {
    !s.contains(['\n', '\r'])
}

/// Console commands with arguments of every kind, `-msg` texts around the
/// length limit, and arbitrary text.
fn console_line() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        prop::sample::select(vec![
            "-h",
            "-c",
            "-m",
            "-t",
            "-cn",
            "-cl",
            "-s",
            "-r",
            "-j",
            "-msg",
            "-q",
            "127.0.0.1",
            "::1",
            "[::1]",
            "[::1",
            "fe80::1%2",
            "7000",
            "65536",
            "-1",
            "",
        ])
        .prop_map(String::from),
        "[ -~]{0,10}",
        "\\PC{0,6}",
    ];
    let space = prop_oneof![
        Just(" "),
        Just("  "),
        Just("\t"),
        Just("\r"),
        Just("\u{2028}")
    ];
    let words = prop::collection::vec((word, space), 0..5).prop_map(|ws| {
        ws.into_iter()
            .flat_map(|(w, s)| [w, s.to_owned()])
            .collect::<String>()
    });
    let long_msg = (MAX_MSG_TEXT - 2..MAX_MSG_TEXT + 3, "[ a-z]")
        .prop_map(|(n, c)| format!("-msg {}", c.repeat(n)));
    prop_oneof![
        4 => words,
        1 => long_msg,
        1 => any::<String>(),
    ]
}

/// Lines a stranger might send during a handshake: the right words with
/// wrong or malformed proofs and nonces, refusals, and anything else.
fn auth_line() -> impl Strategy<Value = String> {
    let hex = prop_oneof![
        prop::collection::vec(any::<u8>(), 32).prop_map(|b| hex(&b)),
        "[0-9a-fA-F]{0,70}",
        "[0-9a-f]{63}[g-z\u{e9}]",
    ];
    let head = prop::sample::select(vec![
        "AUTH bossd/1",
        "AUTH bossd/2",
        "AUTH",
        "PROOF",
        "REFUSE",
        "ERR",
        "",
    ]);
    prop_oneof![
        4 => (head, prop::collection::vec(hex, 0..3)).prop_map(|(head, words)| {
            std::iter::once(head.to_owned()).chain(words).collect::<Vec<_>>().join(" ")
        }),
        1 => any::<String>(),
    ]
}

/// A whole handshake between two holders of `secret`: the dialer's first
/// line, the acceptor's answer and the dialer's PROOF line.
fn genuine(secret: &Secret, nd: [u8; NONCE_LEN], na: [u8; NONCE_LEN]) -> (String, String, String) {
    let (mut d, first) = Handshake::dial(nd, target());
    let (_, reply) = Handshake::accept(secret, &first, na, target()).unwrap();
    let Ok(Done {
        reply: Some(proof), ..
    }) = d.step(secret, &reply)
    else {
        panic!("a genuine dialer did not finish");
    };
    (first, reply, proof)
}

/// Both ends' sessions after a genuine handshake.
fn sessions(secret: &Secret, nd: [u8; NONCE_LEN], na: [u8; NONCE_LEN]) -> (Session, Session) {
    let (mut d, first) = Handshake::dial(nd, target());
    let (mut a, reply) = Handshake::accept(secret, &first, na, target()).unwrap();
    let Ok(Done {
        reply: Some(proof),
        session: ds,
    }) = d.step(secret, &reply)
    else {
        panic!("dialer did not finish");
    };
    let Ok(Done { session: acs, .. }) = a.step(secret, &proof) else {
        panic!("acceptor did not finish");
    };
    (ds, acs)
}

/// One sealed line without its newline.
fn seal(s: &mut Session, line: &str) -> String {
    let mut out = String::new();
    s.seal(line, &mut out);
    out.pop();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
