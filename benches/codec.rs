//! Codec throughput: how fast bossd frames, decodes and encodes peer lines,
//! against plain newline splitting of the same bytes as the ceiling.
//!
//! The input is a reproducible mix of the lines a node receives from its
//! peers (mostly heartbeats, see `MIX`), fed in 16 KiB reads as `src/net/sockets.rs`
//! does. Each measurement is the median of several runs. `--quick` runs a
//! small input once per case, for CI; it asserts nothing about timings.
//!
//! `cargo bench --bench codec [-- --quick]`

#[path = "util/mod.rs"]
mod util;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bossd::protocol::{
    Echo, Health, Hello, LineBuffer, LinkKind, Message, Role, State, decode, encode,
};
use util::{Rng, Table, rate};

/// Bytes per read, as `READ_CHUNK` in src/net/mod.rs.
const READ_CHUNK: usize = 16 * 1024;

/// Percent of each message kind in the input: a steady cluster exchanges
/// PINGs both ways on every link every heartbeat, nearly all echoing the
/// peer's; elections, joins and operator text add the rest.
const MIX: [(&str, u64); 7] = [
    ("PING", 78),
    ("PING0", 2),
    ("STATE", 10),
    ("MEET", 5),
    ("HELLO", 3),
    ("MSG", 1),
    ("LEAVE", 1),
];

fn main() {
    let quick = util::quick();
    let (lines, reps) = if quick { (20_000, 1) } else { (400_000, 9) };
    let msgs = mix(lines, 0xC0DEC);
    let mut text = String::new();
    for m in &msgs {
        encode(m, &mut text);
    }
    let bytes = text.as_bytes();
    let n = msgs.len() as u64;
    let mb = bytes.len() as f64 / 1e6;
    println!("# codec bench: {}", util::machine());
    println!(
        "{} lines, {:.1} MB, {:.1} bytes a line on average; median of {reps} runs{}",
        util::thousands(n),
        mb,
        bytes.len() as f64 / n as f64,
        if quick { " (--quick)" } else { "" }
    );

    let split_lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(256);
    // `--only CASE` runs one case many times, for a profiler.
    let only = util::flag_value("--only");
    let reps = if only.is_some() { reps * 20 } else { reps };
    let mut rows: Vec<(&str, &str, Duration)> = Vec::new();
    let mut case = |key: &'static str, name: &'static str, f: &mut dyn FnMut()| {
        if only.as_deref().is_none_or(|o| o == key) {
            rows.push((key, name, util::median_time(reps, f)));
        }
    };

    // Ceiling: cut the bytes into line slices at each newline.
    case("split", "split by newline (byte slices)", &mut || {
        let mut total = 0usize;
        for chunk in bytes.chunks(READ_CHUNK) {
            for line in chunk.split(|&b| b == b'\n') {
                total += black_box(line).len();
            }
        }
        black_box(total);
    });
    // Ceiling: whole lines as checked UTF-8 text, borrowed.
    case("split_str", "split + UTF-8 check (&str lines)", &mut || {
        let mut total = 0usize;
        for line in bytes.split(|&b| b == b'\n') {
            if let Ok(s) = std::str::from_utf8(line) {
                total += black_box(s).len();
            }
        }
        black_box(total);
    });
    // bossd's framing alone: LineBuffer fed 16 KiB reads, owned lines.
    case("framing", "LineBuffer framing (as net/ reads)", &mut || {
        let mut buf = LineBuffer::default();
        let mut total = 0usize;
        for chunk in bytes.chunks(READ_CHUNK) {
            buf.extend(chunk);
            while let Ok(Some(line)) = buf.next_line() {
                total += black_box(line).len();
            }
        }
        black_box(total);
    });
    // The parser alone, on lines split beforehand.
    case("decode", "decode only (pre-split lines)", &mut || {
        for line in &split_lines {
            let _ = black_box(decode(black_box(line)));
        }
    });
    // The whole receive path: framing, then decode.
    case("receive", "LineBuffer + decode (receive path)", &mut || {
        let mut buf = LineBuffer::default();
        for chunk in bytes.chunks(READ_CHUNK) {
            buf.extend(chunk);
            while let Ok(Some(line)) = buf.next_line() {
                let _ = black_box(decode(&line));
            }
        }
    });
    // The send path: encode into one reused String, as src/endpoint.rs does.
    case(
        "encode",
        "encode (reused String, as the endpoint)",
        &mut || {
            for m in &msgs {
                out.clear();
                encode(black_box(m), &mut out);
                black_box(&out);
            }
        },
    );
    case(
        "encode_line",
        "encode_line (fresh String each)",
        &mut || {
            for m in &msgs {
                black_box(bossd::protocol::encode_line(black_box(m)));
            }
        },
    );
    if only.is_some() {
        for (key, _, d) in &rows {
            println!("{key}: {:.1} ns/line", d.as_secs_f64() * 1e9 / n as f64);
        }
        return;
    }
    let split = rows[0].2;
    let split_str = rows[1].2;
    let mut t = Table::new(&[
        "case",
        "lines/s",
        "MB/s",
        "ns/line",
        "x split",
        "x split+UTF-8",
    ]);
    for (_, name, d) in &rows {
        let s = d.as_secs_f64();
        t.row(vec![
            name.to_string(),
            rate(n as f64 / s),
            format!("{:.0}", mb / s),
            format!("{:.1}", s * 1e9 / n as f64),
            format!("{:.1}", s / split.as_secs_f64()),
            format!("{:.1}", s / split_str.as_secs_f64()),
        ]);
    }
    t.print("Codec throughput");

    // Where the time goes, per message kind: decode only.
    let mut t = Table::new(&["kind", "share", "bytes", "decode ns", "encode ns"]);
    for (kind, pct) in MIX {
        let sample: Vec<(&str, &Message)> = split_lines
            .iter()
            .zip(&msgs)
            .filter(|(_, m)| m.name() == kind)
            .map(|(l, m)| (*l, m))
            .collect();
        if sample.is_empty() {
            continue;
        }
        let k = sample.len() as f64;
        let avg_len = sample.iter().map(|(l, _)| l.len() + 1).sum::<usize>() as f64 / k;
        let dec = util::median_time(reps, || {
            for (l, _) in &sample {
                let _ = black_box(decode(black_box(l)));
            }
        });
        let enc = util::median_time(reps, || {
            for (_, m) in &sample {
                out.clear();
                encode(black_box(m), &mut out);
                black_box(&out);
            }
        });
        t.row(vec![
            kind.to_string(),
            format!("{pct} %"),
            format!("{avg_len:.0}"),
            format!("{:.0}", dec.as_secs_f64() * 1e9 / k),
            format!("{:.0}", enc.as_secs_f64() * 1e9 / k),
        ]);
    }
    t.print("Per message kind");
}

/// `n` messages drawn from `MIX` with varied fields.
fn mix(n: usize, seed: u64) -> Vec<Message> {
    let mut rng = Rng(seed);
    let total: u64 = MIX.iter().map(|(_, p)| p).sum();
    (0..n)
        .map(|_| {
            let mut pick = rng.below(total);
            let kind = MIX
                .iter()
                .find(|(_, p)| {
                    if pick < *p {
                        true
                    } else {
                        pick -= p;
                        false
                    }
                })
                .map_or("PING", |(k, _)| *k);
            message(kind, &mut rng)
        })
        .collect()
}

fn message(kind: &str, rng: &mut Rng) -> Message {
    match kind {
        "PING" => Message::Ping {
            seq: 1 + rng.below(10_000_000),
            view: rng.next(),
            fresh_ms: 104,
            echo: Some(Echo {
                seq: 1 + rng.below(10_000_000),
                held_ms: rng.below(100),
                stamp_unix_ms: 1_795_000_000_000 + rng.below(100_000_000),
            }),
        },
        "PING0" => Message::Ping {
            seq: 1 + rng.below(10_000_000),
            view: rng.next(),
            fresh_ms: 104,
            echo: None,
        },
        "STATE" => Message::State(State {
            role: [Role::Master, Role::Follower, Role::None][rng.below(3) as usize],
            epoch: 1 + rng.below(1_000),
            epoch_master: (rng.below(10) != 0).then(|| address(rng)),
        }),
        "MEET" => Message::Meet(address(rng)),
        "HELLO" => Message::Hello(Hello {
            kind: if rng.below(2) == 0 {
                LinkKind::Join
            } else {
                LinkKind::Mesh
            },
            addr: address(rng),
            started_unix_ms: 1_795_000_000_000 + rng.below(1_000_000_000),
            instance: rng.next(),
            priority: rng.below(200) as i32 - 100,
            quorum: 2 + rng.below(3) as u32,
            strict: rng.below(4) == 0,
            rule: ["oldest", "priority,oldest", "lowest-addr"][rng.below(3) as usize]
                .parse()
                .expect("a valid rule"),
            no_preempt: rng.below(4) == 0,
            preempt_delay_ms: rng.below(2) * 500,
            health: Health::Ok,
        }),
        "MSG" => Message::Msg(format!(
            "deploy {} finished on host {}",
            rng.below(1000),
            rng.below(100)
        )),
        _ => Message::Leave,
    }
}

/// A peer address: mostly IPv4 on a private network, some IPv6.
fn address(rng: &mut Rng) -> SocketAddr {
    let port = 7000 + rng.below(100) as u16;
    if rng.below(5) == 0 {
        let ip = Ipv6Addr::new(
            0xfd00,
            0,
            0,
            rng.below(16) as u16,
            0,
            0,
            0,
            1 + rng.below(250) as u16,
        );
        SocketAddr::new(IpAddr::V6(ip), port)
    } else {
        let ip = Ipv4Addr::new(10, 0, rng.below(4) as u8, 1 + rng.below(250) as u8);
        SocketAddr::new(IpAddr::V4(ip), port)
    }
}
