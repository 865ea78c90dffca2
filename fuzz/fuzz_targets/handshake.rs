//! The secret's handshake under libFuzzer (docs/GUARANTEES.md: `--secret-file`, bad input).
//!
//! The input becomes the byte stream a dialer sends, framed by
//! `LineBuffer` as the loop frames it. An acceptor with a fixed secret and
//! nonce takes the first line with `Handshake::accept`, later ones with
//! `step` until it is done, then every line with `Session::open`; it stops
//! at the first error, where the loop closes the connection. A dialer with
//! the same secret takes the same lines (its first with `step`, the rest
//! with `Session::open`), to fuzz that side too.
//!
//! The first input byte picks how the stream is made:
//! - even: the rest of the input is the stream itself;
//! - odd: the rest is a script over a genuine dialer's lines (its AUTH,
//!   its PROOF, lines it seals, some sealed and dropped), lines a genuine
//!   acceptor seals, replays, one-byte alterations, the acceptor's own
//!   handshake lines reflected, and raw bytes, so the fuzzer gets past the
//!   proofs and into sealed lines on both sides.
//!
//! Besides "never panics", an oracle holding the secret checks that the
//! acceptor authenticates only on the genuine PROOF for the nonce the
//! first line carried (hex in either case), that every line it opens is
//! exactly what the genuine dialer would seal next, and likewise for the
//! dialer: it finishes only on the genuine acceptor answer for its nonce
//! and opens only what the genuine acceptor would seal.

#![no_main]

use bossd::auth::{Done, Handshake, NONCE_LEN, Secret, Session};
use bossd::protocol::LineBuffer;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"correct horse battery staple";
const DIALER_NONCE: [u8; NONCE_LEN] = [0x11; NONCE_LEN];
const ACCEPTOR_NONCE: [u8; NONCE_LEN] = [0x22; NONCE_LEN];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let stream = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        script(&mut Unstructured::new(rest))
    };
    let lines = frame(&stream);
    acceptor(&lines);
    dialer(&lines);
});

/// The lines of a stream, up to the first framing error.
fn frame(stream: &[u8]) -> Vec<String> {
    let mut framer = LineBuffer::default();
    framer.extend(stream);
    let mut lines = Vec::new();
    while let Ok(Some(line)) = framer.next_line() {
        lines.push(line);
    }
    lines
}

/// The node every handshake here means and reaches.
fn target() -> std::net::SocketAddr {
    "127.0.0.1:7000".parse().expect("a valid address")
}

fn secret() -> Secret {
    Secret::new(SECRET).expect("the secret is not empty")
}

/// The acceptor's side, checked against the oracle.
fn acceptor(lines: &[String]) {
    let secret = secret();
    let Some((first, rest)) = lines.split_first() else {
        return;
    };
    let Ok((mut hs, _reply)) = Handshake::accept(&secret, first, ACCEPTOR_NONCE, target()) else {
        return;
    };
    // `accept` took the line, so its third word is the dialer's nonce.
    let nd = nonce(first.split(' ').nth(2).expect("accepted AUTH has a nonce"));
    let (proof, mut oracle) = genuine_dialer(&secret, nd, ACCEPTOR_NONCE);
    let mut session: Option<Session> = None;
    for line in rest {
        match &mut session {
            None => match hs.step(&secret, line) {
                Ok(Done { reply, session: s }) => {
                    assert!(reply.is_none(), "the acceptor has nothing to add");
                    assert!(same_proof(line, &proof), "authenticated by {line:?}");
                    session = Some(s);
                }
                Err(_) => return,
            },
            Some(s) => match s.open(line) {
                Ok(plain) => {
                    let mut expected = String::new();
                    oracle.seal(plain, &mut expected);
                    expected.pop();
                    assert!(
                        expected.eq_ignore_ascii_case(line),
                        "opened {line:?}, the dialer would have sent {expected:?}"
                    );
                }
                Err(_) => return,
            },
        }
    }
}

/// The dialer's side: its first line from the acceptor must finish the
/// handshake, and does only if it is the acceptor's genuine answer; later
/// lines open only if the genuine acceptor sealed them. The dialer's own
/// sealed lines, reflected by the script, must not.
fn dialer(lines: &[String]) {
    let secret = secret();
    let (mut hs, first) = Handshake::dial(DIALER_NONCE, target());
    let Some((answer, rest)) = lines.split_first() else {
        return;
    };
    let mut session = match hs.step(&secret, answer) {
        Ok(Done { reply, session }) => {
            assert!(reply.is_some(), "the dialer must send its PROOF");
            session
        }
        Err(_) => return,
    };
    let na = nonce(answer.split(' ').nth(2).expect("answer has a nonce"));
    let (_, genuine) = Handshake::accept(&secret, &first, na, target()).expect("own AUTH");
    assert!(
        genuine.eq_ignore_ascii_case(answer) && answer.starts_with("AUTH bossd/1 "),
        "dialer authenticated by {answer:?}"
    );
    let mut oracle = genuine_acceptor(&secret, DIALER_NONCE, na);
    for line in rest {
        let Ok(plain) = session.open(line) else {
            return;
        };
        let mut expected = String::new();
        oracle.seal(plain, &mut expected);
        expected.pop();
        assert!(
            expected.eq_ignore_ascii_case(line),
            "dialer opened {line:?}, the acceptor would have sent {expected:?}"
        );
    }
}

/// A genuine acceptor's session for these nonces.
fn genuine_acceptor(secret: &Secret, nd: [u8; NONCE_LEN], na: [u8; NONCE_LEN]) -> Session {
    let (mut d, first) = Handshake::dial(nd, target());
    let (mut a, reply) = Handshake::accept(secret, &first, na, target()).expect("a genuine AUTH");
    let Ok(Done {
        reply: Some(proof), ..
    }) = d.step(secret, &reply)
    else {
        panic!("a genuine dialer did not finish");
    };
    match a.step(secret, &proof) {
        Ok(Done { session, .. }) => session,
        _ => panic!("a genuine acceptor did not finish"),
    }
}

/// A genuine dialer's PROOF line for these nonces, and its session.
fn genuine_dialer(secret: &Secret, nd: [u8; NONCE_LEN], na: [u8; NONCE_LEN]) -> (String, Session) {
    let (mut d, first) = Handshake::dial(nd, target());
    let (_, reply) = Handshake::accept(secret, &first, na, target()).expect("a genuine AUTH");
    match d.step(secret, &reply) {
        Ok(Done {
            reply: Some(proof),
            session,
        }) => (proof, session),
        _ => panic!("a genuine dialer did not finish"),
    }
}

/// `PROOF <hex>` with the genuine proof's digits, in either case.
fn same_proof(line: &str, genuine: &str) -> bool {
    match (line.strip_prefix("PROOF "), genuine.strip_prefix("PROOF ")) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

fn nonce(hex: &str) -> [u8; NONCE_LEN] {
    let mut out = [0u8; NONCE_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex nonce");
    }
    out
}

/// A stream built from a genuine dialer's lines and the fuzzer's choices.
fn script(u: &mut Unstructured) -> Vec<u8> {
    let secret = secret();
    let (mut dialer, auth) = Handshake::dial(DIALER_NONCE, target());
    let (_, answer) =
        Handshake::accept(&secret, &auth, ACCEPTOR_NONCE, target()).expect("a genuine AUTH line");
    let Ok(Done {
        reply: Some(proof),
        session: mut sealer,
    }) = dialer.step(&secret, &answer)
    else {
        panic!("a genuine dialer did not finish");
    };
    let acceptor_proof = answer.rsplit(' ').next().unwrap_or_default().to_owned();
    let mut acceptor_sealer = genuine_acceptor(&secret, DIALER_NONCE, ACCEPTOR_NONCE);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut stream = Vec::new();
    let _ = (|| -> Result<()> {
        while !u.is_empty() {
            let line: Vec<u8> = match u.int_in_range(0..=9u8)? {
                0 => auth.clone().into_bytes(),
                1 => proof.clone().into_bytes(),
                // A line sealed by the genuine dialer or, for the dialer
                // under test, by the genuine acceptor.
                op @ (2 | 3 | 9) => {
                    let text: String = u.arbitrary()?;
                    let text = text.replace(['\n', '\r'], " ");
                    let mut out = String::new();
                    match op {
                        9 => acceptor_sealer.seal(&text, &mut out),
                        _ => sealer.seal(&text, &mut out),
                    }
                    out.pop();
                    out.into_bytes()
                }
                4 => {
                    // Sealed, then lost: every later tag is out of step.
                    let mut out = String::new();
                    sealer.seal("PING 1 0000000000000000", &mut out);
                    continue;
                }
                5 if !sent.is_empty() => sent[u.choose_index(sent.len())?].clone(),
                6 if !sent.is_empty() => {
                    let mut l = sent[u.choose_index(sent.len())?].clone();
                    if !l.is_empty() {
                        let i = u.choose_index(l.len())?;
                        l[i] = u.arbitrary()?;
                    }
                    l
                }
                7 => match u.arbitrary::<bool>()? {
                    true => answer.clone().into_bytes(),
                    false => format!("PROOF {acceptor_proof}").into_bytes(),
                },
                _ => {
                    let n = u.int_in_range(0..=64usize)?;
                    u.bytes(n)?.to_vec()
                }
            };
            stream.extend_from_slice(&line);
            stream.push(b'\n');
            sent.push(line);
        }
        Ok(())
    })();
    stream
}
