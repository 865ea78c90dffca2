//! The man pages and shell completions in contrib/ are generated from the
//! clap definitions in src/config.rs (`bossd::config::command()`, through
//! clap_mangen and clap_complete), never written by hand. These tests
//! generate them again and fail when a committed file differs or misses an
//! option, so they cannot fall behind the flags. After changing an option:
//!
//!     BOSSD_REGENERATE=1 cargo test --test generated
//!
//! rewrites them; commit the result. The Debian package installs them
//! (Cargo.toml, `[package.metadata.deb]`).

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use bossd::config::{CtlArgs, DemoArgs, NodeArgs};

/// Section 8, system administration commands and daemons, as for
/// keepalived(8): a node is a daemon, and ctl and demo are its tools.
const SECTION: &str = "8";

/// Where the Debian package puts what an operator looks for, for the
/// FILES section of bossd(8).
const FILES: &[(&str, &str)] = &[
    (
        "/etc/bossd/bossd.env",
        "The address, port and other options of this node, read by bossd.service.",
    ),
    (
        "/etc/bossd/secret",
        "The shared cluster secret (--secret-file), the same on every node; mode 600, owned by the bossd user.",
    ),
    (
        "/usr/lib/systemd/system/bossd.service",
        "The systemd unit: one node, run as the bossd user, with --no-console.",
    ),
    (
        "/usr/libexec/bossd/vip-hook.sh",
        "A --notify hook that moves a virtual IP with the master.",
    ),
    (
        "/usr/share/doc/bossd/",
        "README.md, and OPERATIONS.md on running bossd in production.",
    ),
];

/// Every generated file: its path in the repository and its contents.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();

    // As clap_mangen::generate_to does: the tree is built once, so each
    // subcommand's page is titled bossd-ctl and bossd-demo, and the help
    // subcommand gets no page (bossd(8)'s synopsis shows `bossd help`).
    let mut tree = bossd::config::command().disable_help_subcommand(true);
    tree.build();
    let page = |cmd: &clap::Command| {
        Man::new(cmd.clone())
            .section(SECTION)
            .source(concat!("bossd ", env!("CARGO_PKG_VERSION")))
    };
    files.push(("contrib/man/bossd.8", node_page(&page(&tree))));
    for (path, name) in [
        ("contrib/man/bossd-ctl.8", "ctl"),
        ("contrib/man/bossd-demo.8", "demo"),
    ] {
        let sub = tree
            .find_subcommand(name)
            .expect("ctl and demo are subcommands");
        let mut out = Vec::new();
        page(sub).render(&mut out).expect("render to memory");
        files.push((path, out));
    }

    for (path, shell) in [
        ("contrib/completions/bossd.bash", Shell::Bash),
        ("contrib/completions/_bossd", Shell::Zsh),
        ("contrib/completions/bossd.fish", Shell::Fish),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut bossd::config::command(), "bossd", &mut out);
        files.push((path, out));
    }
    files
}

/// bossd(8): clap_mangen's page with a FILES section before VERSION.
fn node_page(man: &Man) -> Vec<u8> {
    let mut page = Vec::new();
    man.render(&mut page).expect("render to memory");
    let page = String::from_utf8(page).expect("UTF-8");
    let mut files = Roff::new();
    files.control("SH", ["FILES"]);
    for (path, what) in FILES {
        files
            .control("TP", [])
            .text([bold(*path)])
            .text([roman(*what)]);
    }
    // to_roff() leaves out the preamble the page already has; it would
    // set an apostrophe as a quote, so FILES has none.
    assert!(
        FILES
            .iter()
            .all(|(p, w)| !p.contains('\'') && !w.contains('\''))
    );
    let at = page.find("\n.SH VERSION\n").expect("a VERSION section") + 1;
    format!("{}{}{}", &page[..at], files.to_roff(), &page[at..]).into_bytes()
}

fn repo_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn committed_man_pages_and_completions_match_the_clap_definitions() {
    let regenerate = std::env::var_os("BOSSD_REGENERATE").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (path, contents) in generated() {
        let file = repo_file(path);
        if regenerate {
            std::fs::create_dir_all(file.parent().expect("a directory"))
                .and_then(|()| std::fs::write(&file, &contents))
                .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        } else if std::fs::read(&file).ok().as_deref() != Some(&contents[..]) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what src/config.rs generates (or are missing); \
         run `BOSSD_REGENERATE=1 cargo test --test generated` and commit the result"
    );
}

/// The long options a user may give each form, from the parsers themselves
/// (not from `config::command()`, which could leave one out).
fn public_longs(cmd: clap::Command) -> Vec<String> {
    let mut cmd = cmd;
    cmd.build();
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect()
}

fn hidden_longs(cmd: clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| a.is_hide_set())
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect()
}

/// A generated file's text. These tests read what the generator makes,
/// not the committed copy, which may be rewritten while they run; the
/// first test holds the two equal.
fn text(path: &str) -> String {
    let (_, contents) = generated()
        .into_iter()
        .find(|(p, _)| *p == path)
        .expect("a generated file");
    String::from_utf8(contents).expect("UTF-8")
}

/// Whether a generated file lists option `long` as an option (not merely
/// names it in a text, as bossd(8)'s examples name --join): roff sets it
/// bold with each `-` escaped, zsh as a spec `--long[` or `--long=[`, fish
/// as `-l long`, bash in its list of words.
fn mentions(path: &str, body: &str, long: &str) -> bool {
    if path.ends_with(".8") {
        body.contains(&format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-")))
    } else if path.ends_with("_bossd") {
        body.contains(&format!("--{long}[")) || body.contains(&format!("--{long}=["))
    } else if path.ends_with(".fish") {
        body.contains(&format!("-l {long} "))
    } else {
        body.contains(&format!(" --{long} ")) || body.contains(&format!(" --{long}\""))
    }
}

#[test]
fn every_option_is_in_the_man_pages_and_every_completion() {
    let node = public_longs(NodeArgs::command());
    let ctl = public_longs(CtlArgs::command());
    let demo = public_longs(DemoArgs::command());
    assert!(
        node.len() >= 12 && node.iter().any(|l| l == "join"),
        "{node:?}"
    );
    let completions = [
        "contrib/completions/bossd.bash",
        "contrib/completions/_bossd",
        "contrib/completions/bossd.fish",
    ];
    let mut missing = Vec::new();
    for (page, longs) in [
        ("contrib/man/bossd.8", &node),
        ("contrib/man/bossd-ctl.8", &ctl),
        ("contrib/man/bossd-demo.8", &demo),
    ] {
        let body = text(page);
        for long in longs {
            if !mentions(page, &body, long) {
                missing.push(format!("{page}: --{long}"));
            }
        }
    }
    for path in completions {
        let body = text(path);
        for long in node.iter().chain(&ctl) {
            if !mentions(path, &body, long) {
                missing.push(format!("{path}: --{long}"));
            }
        }
        for word in ["ctl", "demo"] {
            if !body.contains(word) {
                missing.push(format!("{path}: {word}"));
            }
        }
    }
    assert!(missing.is_empty(), "missing: {missing:?}");
}

#[test]
fn hidden_test_options_stay_out_of_man_pages_and_completions() {
    let hidden = hidden_longs(NodeArgs::command());
    assert!(
        hidden.iter().any(|l| l == "notify-time-limit"),
        "{hidden:?}"
    );
    for (path, _) in generated() {
        let body = text(path).replace("\\-", "-");
        for long in &hidden {
            assert!(!body.contains(long.as_str()), "{path} offers --{long}");
        }
    }
}

#[test]
fn the_man_page_shows_all_three_forms() {
    let page = text("contrib/man/bossd.8");
    for form in [
        "\\fBbossd\\fR <IP> <PORT>",
        "bossd ctl",
        "bossd demo",
        "bossd\\-ctl(8)",
        "bossd\\-demo(8)",
    ] {
        assert!(page.contains(form), "bossd.8 lacks {form:?}");
    }
}
