//! The link's cases without sockets: what only the hostile suite
//! (tests/hostile.rs) reached before.

use super::*;

const HELLO: &str = "HELLO bossd/4 join 127.0.0.1:7001 1 00000000deadbeef 0 2 0 oldest 0 0 ok";
const HERE: &str = "127.0.0.1:7000";

fn here() -> SocketAddr {
    HERE.parse().unwrap()
}

fn peer() -> SocketAddr {
    "127.0.0.1:7001".parse().unwrap()
}

fn secret() -> Secret {
    Secret::new(b"a shared secret of some length").unwrap()
}

/// A link's surroundings: the node's secret, counters and nonces.
struct Env {
    secret: Option<Secret>,
    counters: Counters,
    nonces: u8,
}

impl Env {
    fn new(secret: Option<Secret>) -> Env {
        Env {
            secret,
            counters: Counters::default(),
            nonces: 0,
        }
    }

    /// Feeds `bytes` and takes every inbound line they complete.
    fn feed(&mut self, link: &mut Link, bytes: &[u8]) -> Vec<Inbound> {
        link.on_bytes(bytes);
        self.take(link)
    }

    fn take(&mut self, link: &mut Link) -> Vec<Inbound> {
        let nonces = &mut self.nonces;
        let mut nonce = || {
            *nonces += 1;
            [*nonces; NONCE_LEN]
        };
        let mut ctx = Ctx {
            secret: self.secret.as_ref(),
            here: here(),
            counters: &mut self.counters,
            nonce: &mut nonce,
        };
        let mut got = Vec::new();
        while let Some(inbound) = link.poll_inbound(&mut ctx) {
            got.push(inbound);
        }
        got
    }
}

/// Takes everything queued for the socket, as text.
fn written(link: &mut Link) -> String {
    let text = String::from_utf8(link.outbox().to_vec()).unwrap();
    let n = link.outbox().len();
    link.wrote(n);
    text
}

fn draining(link: &Link) -> bool {
    matches!(link.life(), Life::Draining { .. })
}

fn console(cmd: Command, permitted: bool) -> Inbound {
    Inbound::Console {
        cmd: Ok(Some(cmd)),
        permitted,
    }
}

/// A dialer and an acceptor with the same secret, handshake done, and
/// what the acceptor handed up on the way.
fn sealed_pair() -> (Link, Env, Link, Env, Vec<Inbound>) {
    let mut d_env = Env::new(Some(secret()));
    let mut a_env = Env::new(Some(secret()));
    let mut dialer = Link::dialed(here(), Mono(0), d_env.secret.as_ref(), [7; NONCE_LEN]);
    // The core's HELLO goes out before the handshake finished: held.
    dialer.send_line(HELLO);
    let mut acceptor = Link::accepted(peer(), Mono(0));
    let mut up = Vec::new();
    for _ in 0..3 {
        let bytes = written(&mut dialer);
        up.extend(a_env.feed(&mut acceptor, bytes.as_bytes()));
        let bytes = written(&mut acceptor);
        assert!(d_env.feed(&mut dialer, bytes.as_bytes()).is_empty());
    }
    (dialer, d_env, acceptor, a_env, up)
}

#[test]
fn a_handshake_seals_the_held_hello() {
    let (_, _, acceptor, a_env, up) = sealed_pair();
    let hello = protocol::decode(HELLO).unwrap();
    assert_eq!(up, vec![Inbound::PeerOpened(hello)]);
    assert_eq!(acceptor.kind(), Kind::Peer);
    assert_eq!(acceptor.life(), Life::Open);
    assert_eq!(a_env.counters.auth_failures, 0);
}

#[test]
fn hello_without_authentication_is_refused_when_there_is_a_secret() {
    let mut env = Env::new(Some(secret()));
    let mut link = Link::accepted(peer(), Mono(0));
    let got = env.feed(&mut link, format!("{HELLO}\nPING 1\n").as_bytes());
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(written(&mut link), "REFUSE authentication required\n");
    assert!(draining(&link), "{:?}", link.life());
    assert_eq!(env.counters.auth_failures, 1);
    assert_eq!(env.counters.refused_auth, 1);
}

#[test]
fn hello_without_a_secret_opens_a_peer() {
    let mut env = Env::new(None);
    let mut link = Link::accepted(peer(), Mono(0));
    let got = env.feed(&mut link, format!("{HELLO}\n").as_bytes());
    assert_eq!(
        got,
        vec![Inbound::PeerOpened(protocol::decode(HELLO).unwrap())]
    );
    assert_eq!(link.kind(), Kind::Peer);
}

#[test]
fn blank_lines_are_no_command_and_decide_no_kind() {
    let mut env = Env::new(Some(secret()));
    let mut link = Link::accepted(peer(), Mono(0));
    let got = env.feed(&mut link, b"\n  \n\r\n");
    let blank = Inbound::Console {
        cmd: Ok(None),
        permitted: false,
    };
    assert_eq!(got, vec![blank.clone_like(), blank.clone_like(), blank]);
    assert_eq!(link.kind(), Kind::Undecided);
    // The idle limit still runs.
    link.tick(Mono(999), 1000);
    assert_eq!(link.life(), Life::Open);
    link.tick(Mono(1000), 1000);
    assert!(link.is_dead());
}

impl Inbound {
    fn clone_like(&self) -> Inbound {
        match self {
            Inbound::Console { cmd, permitted } => Inbound::Console {
                cmd: cmd.clone(),
                permitted: *permitted,
            },
            _ => unreachable!(),
        }
    }
}

#[test]
fn a_blank_line_inside_a_handshake_fails_it() {
    let mut env = Env::new(Some(secret()));
    let mut link = Link::accepted(peer(), Mono(0));
    let auth = format!("AUTH bossd/1 {} {HERE}\n", "11".repeat(NONCE_LEN));
    assert!(env.feed(&mut link, auth.as_bytes()).is_empty());
    assert!(written(&mut link).starts_with("AUTH bossd/1 "));
    assert!(env.feed(&mut link, b"\n").is_empty());
    let answer = written(&mut link);
    assert!(answer.starts_with("REFUSE bad handshake"), "{answer:?}");
    assert!(draining(&link));
    assert_eq!(env.counters.auth_failures, 1);
}

#[test]
fn a_long_line_inside_a_handshake_gets_a_plain_err() {
    let mut env = Env::new(Some(secret()));
    let mut link = Link::accepted(peer(), Mono(0));
    let auth = format!("AUTH bossd/1 {} {HERE}\n", "11".repeat(NONCE_LEN));
    env.feed(&mut link, auth.as_bytes());
    written(&mut link);
    let mut long = vec![b'z'; 5000];
    long.push(b'\n');
    assert!(env.feed(&mut link, &long).is_empty());
    assert_eq!(written(&mut link), "ERR line too long\n");
    assert!(draining(&link));
}

#[test]
fn held_lines_past_the_outbox_limit_kill_the_link() {
    let env = Env::new(Some(secret()));
    let mut link = Link::dialed(here(), Mono(0), env.secret.as_ref(), [1; NONCE_LEN]);
    let line = "x".repeat(1000);
    for _ in 0..MAX_OUTBOX / 1000 {
        link.send_line(&line);
    }
    assert_eq!(link.life(), Life::Open);
    link.send_line(&line);
    assert!(link.is_dead());
}

#[test]
fn a_slow_reader_dies_at_the_outbox_limit() {
    let mut link = Link::accepted(peer(), Mono(0));
    let line = "y".repeat(999);
    for _ in 0..MAX_OUTBOX / 1000 {
        link.send_line(&line);
    }
    assert_eq!(link.life(), Life::Open);
    link.send_line(&line);
    assert!(link.is_dead());
    assert!(link.is_finished(false));
}

#[test]
fn an_unauthenticated_quit_is_not_permitted() {
    let mut env = Env::new(Some(secret()));
    let mut link = Link::accepted(peer(), Mono(0));
    let got = env.feed(&mut link, b"-q\n-s\n");
    assert_eq!(
        got,
        vec![
            console(Command::Quit, false),
            console(Command::Status, false)
        ]
    );
    assert_eq!(link.kind(), Kind::Console);
    // Without a secret anyone may.
    let mut env = Env::new(None);
    let mut link = Link::accepted(peer(), Mono(0));
    assert_eq!(
        env.feed(&mut link, b"-q\n"),
        vec![console(Command::Quit, true)]
    );
}

#[test]
fn an_authenticated_client_may_quit() {
    let (mut dialer, _, mut acceptor, mut a_env, _) = sealed_pair();
    // The dialer side stands in for `bossd ctl` with the secret.
    dialer.send_line("-q");
    let bytes = written(&mut dialer);
    // The acceptor took HELLO, so it is a peer; a fresh client shows the
    // console gate instead.
    let got = a_env.feed(&mut acceptor, bytes.as_bytes());
    assert!(matches!(got[..], [Inbound::PeerViolation(_)]), "{got:?}");
    let (mut d2, mut d_env, mut a2, mut a_env2) = {
        let d_env = Env::new(Some(secret()));
        let d = Link::dialed(here(), Mono(0), d_env.secret.as_ref(), [9; NONCE_LEN]);
        (
            d,
            d_env,
            Link::accepted(peer(), Mono(0)),
            Env::new(Some(secret())),
        )
    };
    d2.send_line("-q");
    let mut up = Vec::new();
    for _ in 0..3 {
        let b = written(&mut d2);
        up.extend(a_env2.feed(&mut a2, b.as_bytes()));
        let b = written(&mut a2);
        d_env.feed(&mut d2, b.as_bytes());
    }
    assert_eq!(up, vec![console(Command::Quit, true)]);
}

#[test]
fn an_http_first_line_reads_headers_then_asks() {
    let mut env = Env::new(Some(secret()));
    let mut link = Link::accepted(peer(), Mono(0));
    let got = env.feed(&mut link, b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    assert!(got.is_empty());
    assert!(matches!(link.kind(), Kind::Http { headers: 1, .. }));
    assert_eq!(
        env.feed(&mut link, b"\r\n"),
        vec![Inbound::Http {
            req: Request::Metrics,
            head: false
        }]
    );
    link.answer_http("HTTP/1.1 200 OK\r\n\r\n");
    assert!(draining(&link));
}

#[test]
fn too_many_http_headers_are_refused() {
    let mut env = Env::new(None);
    let mut link = Link::accepted(peer(), Mono(0));
    let mut req = b"HEAD /status HTTP/1.1\r\n".to_vec();
    for _ in 0..=http::MAX_HEADERS {
        req.extend_from_slice(b"X: y\r\n");
    }
    assert!(env.feed(&mut link, &req).is_empty());
    assert!(written(&mut link).starts_with("HTTP/1.1 431 "));
    assert!(draining(&link));
}

#[test]
fn a_stream_split_at_every_byte_reads_the_same() {
    let stream = format!("{HELLO}\r\nPING 1 00000000000000aa 0\nNOT A MESSAGE\n");
    let mut env = Env::new(None);
    let mut whole = Link::accepted(peer(), Mono(0));
    let expected = env.feed(&mut whole, stream.as_bytes());
    assert_eq!(expected.len(), 3, "{expected:?}");
    assert!(matches!(expected[2], Inbound::PeerViolation(_)));
    for cut in 0..=stream.len() {
        let mut link = Link::accepted(peer(), Mono(0));
        let mut got = env.feed(&mut link, &stream.as_bytes()[..cut]);
        got.extend(env.feed(&mut link, &stream.as_bytes()[cut..]));
        assert_eq!(got, expected, "split at byte {cut}");
    }
}

#[test]
fn a_sealed_stream_split_at_every_byte_reads_the_same() {
    let (mut dialer, _, acceptor, a_env, _) = sealed_pair();
    drop((acceptor, a_env));
    dialer.send_line("PING 1 0000000000000001 0");
    dialer.send_line("PING 2 0000000000000001 0");
    let bytes = written(&mut dialer);
    for cut in 0..=bytes.len() {
        let (mut d, _, mut a, mut env, _) = sealed_pair();
        d.send_line("PING 1 0000000000000001 0");
        d.send_line("PING 2 0000000000000001 0");
        let b = written(&mut d);
        assert_eq!(b.len(), bytes.len());
        let mut got = env.feed(&mut a, &b.as_bytes()[..cut]);
        got.extend(env.feed(&mut a, &b.as_bytes()[cut..]));
        let lines: Vec<&str> = got
            .iter()
            .map(|i| match i {
                Inbound::Peer { line, .. } => line.as_str(),
                other => panic!("split at {cut}: {other:?}"),
            })
            .collect();
        assert_eq!(
            lines,
            ["PING 1 0000000000000001 0", "PING 2 0000000000000001 0"],
            "split at byte {cut}"
        );
    }
}

#[test]
fn an_altered_sealed_line_kills_a_peer() {
    let (mut dialer, _, mut acceptor, mut env, _) = sealed_pair();
    dialer.send_line("PING 1 0000000000000001 0");
    let altered =
        written(&mut dialer).replace("PING 1 0000000000000001 0", "PING 2 0000000000000001 0");
    assert!(env.feed(&mut acceptor, altered.as_bytes()).is_empty());
    assert!(acceptor.is_dead());
    assert_eq!(env.counters.auth_failures, 1);
}

#[test]
fn a_bad_peer_line_is_a_violation() {
    let mut env = Env::new(None);
    let mut link = Link::accepted(peer(), Mono(0));
    let got = env.feed(&mut link, format!("{HELLO}\nBOGUS\nLEAVE\n").as_bytes());
    assert_eq!(got.len(), 2);
    assert!(matches!(got[1], Inbound::PeerViolation(_)));
    assert!(link.is_dead());
}

#[test]
fn a_peer_that_closed_goes_at_once_a_client_drains() {
    let mut env = Env::new(None);
    let mut peer_link = Link::accepted(peer(), Mono(0));
    env.feed(&mut peer_link, format!("{HELLO}\n").as_bytes());
    peer_link.send_line("REFUSE no");
    peer_link.on_eof();
    assert!(peer_link.is_finished(false));
    let mut client = Link::accepted(peer(), Mono(0));
    env.feed(&mut client, b"-s\n");
    client.send_line("OK");
    client.on_eof();
    assert!(!client.is_finished(false));
    written(&mut client);
    assert!(client.is_finished(false));
    assert!(!client.is_finished(true), "a dial under way is waited for");
}

#[test]
fn the_close_grace_starts_at_the_first_tick() {
    let mut link = Link::accepted(peer(), Mono(0));
    link.send_line("unread");
    link.close();
    assert_eq!(link.deadline(Mono(10), u64::MAX), Some(Mono(10)));
    link.tick(Mono(10), u64::MAX);
    assert_eq!(
        link.deadline(Mono(10), u64::MAX),
        Some(Mono(10 + CLOSE_GRACE_MS))
    );
    link.tick(Mono(10 + CLOSE_GRACE_MS - 1), u64::MAX);
    assert!(!link.is_dead());
    link.tick(Mono(10 + CLOSE_GRACE_MS), u64::MAX);
    assert!(link.is_dead());
}

#[test]
fn a_pending_join_answer_holds_input_and_the_grace() {
    let mut env = Env::new(None);
    let mut link = Link::accepted(peer(), Mono(0));
    env.feed(&mut link, b"-s\n");
    link.await_join(peer(), Mono(500));
    assert!(
        env.feed(&mut link, b"-s\n").is_empty(),
        "held while waiting"
    );
    link.on_eof();
    link.tick(Mono(5_000), u64::MAX);
    assert!(!link.is_dead());
    assert!(!link.is_finished(false));
    assert_eq!(link.deadline(Mono(0), u64::MAX), Some(Mono(500)));
    link.join_answered();
    assert!(link.is_finished(false));
}

#[test]
fn an_auth_line_without_a_secret_is_refused() {
    let mut env = Env::new(None);
    let mut link = Link::accepted(peer(), Mono(0));
    let auth = format!("AUTH bossd/1 {} {HERE}\n", "11".repeat(NONCE_LEN));
    assert!(env.feed(&mut link, auth.as_bytes()).is_empty());
    assert_eq!(written(&mut link), "REFUSE this node has no secret\n");
    assert_eq!(env.counters.refused_auth, 1);
}
