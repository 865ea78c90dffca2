//! The cost of `--state-dir`: one persist of a new epoch (temp file, fsync,
//! rename, fsync of the directory), which a claim will wait for before
//! its first STATE goes out. The target is at most 2 ms per claim on this
//! disk (issue 15). It prints percentiles; it asserts nothing.
//!
//! The files go under cargo's target tmpdir, on the disk the repository is
//! on; `--dir PATH` measures another (a node's real /var/lib/bossd). A
//! tmpfs measures nothing: its fsync returns at once.
//!
//! `cargo bench --bench state [-- --quick] [--dir PATH]`

#[path = "util/mod.rs"]
mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use bossd::state::{State, StateDir, format, parse};
use util::Table;

fn main() {
    let quick = util::quick();
    let persists = if quick { 20 } else { 500 };
    let dir = util::flag_value("--dir").map_or_else(
        || {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("state-bench-{}", std::process::id()))
        },
        PathBuf::from,
    );
    let id: SocketAddr = "127.0.0.1:7000".parse().expect("a literal address");
    println!("# state bench: {}", util::machine());
    println!(
        "{persists} persists of a growing epoch into {}{}",
        dir.display(),
        if quick { " (--quick)" } else { "" }
    );

    let (mut state, _) = StateDir::open(&dir, id).expect("the bench's state dir opens");
    let mut ms = Vec::with_capacity(persists);
    let first = state.highest() + 1;
    for epoch in first..first + persists as u64 {
        let t = Instant::now();
        state
            .persist(epoch)
            .expect("the bench's state dir is writable");
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let repeat = Instant::now();
    for _ in 0..persists {
        state.persist(state.highest()).expect("no write");
    }
    let repeat_ns = repeat.elapsed().as_secs_f64() * 1e9 / persists as f64;

    let text_reps = 100_000u32;
    let sample = State {
        id: id.to_string(),
        epoch: 1 << 40,
    };
    let t = Instant::now();
    for _ in 0..text_reps {
        std::hint::black_box(parse(&format(std::hint::black_box(&sample))).ok());
    }
    let text_ns = t.elapsed().as_secs_f64() * 1e9 / f64::from(text_reps);

    let ms = util::sorted(ms);
    let mut table = Table::new(&["case", "p50 ms", "p90 ms", "p99 ms", "max ms"]);
    table.row(vec![
        "persist a new epoch (write, fsync, rename, fsync dir)".into(),
        util::ms(util::percentile(&ms, 50.0)),
        util::ms(util::percentile(&ms, 90.0)),
        util::ms(util::percentile(&ms, 99.0)),
        util::ms(util::percentile(&ms, 100.0)),
    ]);
    table.print("One persist per claim");
    let mut table = Table::new(&["case", "ns"]);
    table.row(vec![
        "persist of an epoch not above the highest (no write)".into(),
        format!("{repeat_ns:.1}"),
    ]);
    table.row(vec![
        "format + parse of the file's text".into(),
        format!("{text_ns:.0}"),
    ]);
    table.print("What costs no disk");
    if util::flag_value("--dir").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
