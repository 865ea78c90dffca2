//! A small test runner for suites with prerequisites (root, a network
//! namespace, curl, python3, IPv6): test binaries with `harness = false`.
//!
//! libtest captures what a passing test prints, so a test that skips for
//! want of a tool passes in silence. This runner prints one line per test
//! as libtest does, but a skipped test says so, why, and the command that
//! runs it:
//!
//! ```text
//! test metrics_match_the_status_line ... SKIPPED (curl is not installed: apt-get install curl; run: cargo test --test http)
//! ```
//!
//! A test is a plain `fn()`; it skips by calling [`skip`] or one of the
//! `need_*` checks, which unwind out of it. Under CI (`CI` set, as CI
//! systems do, and not `false` or `0`) a skip counts as a failure: CI
//! installs everything (`.ci/run`).
//!
//! A suite's `main` hands the runner its tests, listed with
//! [`test_list!`](crate::test_list), and its own source, so that a
//! `#[test]` attribute (ignored without libtest, so the test would never
//! run) fails the run instead:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     common::runner::run(include_str!("http.rs"), test_list![a_test, another_test])
//! }
//! ```
//!
//! It takes libtest's command line as far as it matters here: name filters
//! (substrings; `--exact` for whole names), `--skip FILTER`, `--list`,
//! `--test-threads N` (or `RUST_TEST_THREADS`), `--ignored` (there are no
//! ignored tests, so nothing runs) and `--nocapture`; other libtest flags
//! (`-q`, `--color auto`, ...) are accepted and change nothing. Tests run in
//! parallel threads. What a test says with [`note`] is kept, as libtest
//! keeps what a test prints, and shown with its panic message in a
//! `failures:` section at the end, or at once with `--nocapture`. The exit
//! code is 101 when any test failed, as with libtest.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Instant;

/// One test: its name and its body.
pub type Test = (&'static str, fn());

/// The tests of a suite, each named by its function:
/// `test_list![first_test, second_test]`.
#[macro_export]
macro_rules! test_list {
    ($($test:ident),* $(,)?) => {
        &[$((stringify!($test), $test as fn())),*]
    };
}

/// Why a test did not run, and the command that runs it where the
/// prerequisite is met (`None`: `cargo test --test SUITE`).
#[derive(Debug)]
pub struct Skip {
    pub reason: String,
    pub run: Option<String>,
}

/// Ends the test as skipped; `reason` says what is missing and how to get it.
pub fn skip(reason: impl Into<String>) -> ! {
    panic::panic_any(Skip {
        reason: reason.into(),
        run: None,
    })
}

/// Ends the test as skipped, with the command that runs it instead of the
/// plain `cargo test --test SUITE` (e.g. under `sudo`).
pub fn skip_with_command(reason: impl Into<String>, run: impl Into<String>) -> ! {
    panic::panic_any(Skip {
        reason: reason.into(),
        run: Some(run.into()),
    })
}

/// Set by `--nocapture`: notes go to stderr at once.
static NO_CAPTURE: AtomicBool = AtomicBool::new(false);

/// A progress line of the running test: kept for its failure report, or
/// written to stderr at once with `--nocapture` (and on threads the test
/// started itself).
pub fn note(text: &str) {
    let kept = !NO_CAPTURE.load(Ordering::Relaxed)
        && CAPTURED.with(|c| match c.borrow_mut().as_mut() {
            Some(buf) => {
                buf.push_str(text);
                buf.push('\n');
                true
            }
            None => false,
        });
    if !kept {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

/// Whether this runs under CI, where every prerequisite is installed and
/// a skip is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Skips unless `program args` runs and succeeds; `install` says how to
/// get it (e.g. `apt-get install curl`).
pub fn need_program(program: &str, args: &[&str], install: &str) {
    if !runs(program, args) {
        skip(format!("{program} is not installed: {install}"));
    }
}

/// Skips unless python3 can import `module`; `install` says how to get it.
pub fn need_python_module(module: &str, install: &str) {
    need_program("python3", &["--version"], "apt-get install python3");
    if !runs("python3", &["-c", &format!("import {module}")]) {
        skip(format!("the Python module {module} is missing: {install}"));
    }
}

/// Whether `program args` runs and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips unless the effective user is root; `why` says what needs it.
pub fn need_root(why: &str) {
    // SAFETY: geteuid(2) always succeeds and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        skip_with_command(
            format!("needs root to {why} (effective uid is {euid})"),
            format!("sudo -E env PATH=\"$PATH\" cargo test --test {}", suite()),
        );
    }
}

/// The suite's name: the test binary's crate name, e.g. `netns`.
fn suite() -> &'static str {
    env!("CARGO_CRATE_NAME")
}

/// How one test ended.
enum Outcome {
    Passed,
    Failed(String),
    Skipped(Skip),
}

thread_local! {
    /// On a runner thread, the panic messages of the test it runs.
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What the command line asks for.
#[derive(Default)]
struct Args {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    ignored_only: bool,
    no_capture: bool,
    threads: Option<usize>,
}

/// libtest flags that take a value, which must not be read as a filter.
const FLAGS_WITH_VALUE: &[&str] = &[
    "--color",
    "--format",
    "--logfile",
    "--shuffle-seed",
    "--test-threads",
    "--skip",
    "-Z",
];

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Args {
        let mut out = Args::default();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let value = if FLAGS_WITH_VALUE.contains(&flag.as_str()) {
                inline.or_else(|| args.next())
            } else {
                None
            };
            match flag.as_str() {
                "--exact" => out.exact = true,
                "--list" => out.list = true,
                "--ignored" => out.ignored_only = true,
                "--nocapture" | "--no-capture" => out.no_capture = true,
                "--skip" => out.skip.extend(value),
                "--test-threads" => out.threads = value.and_then(|v| v.parse().ok()),
                f if f.starts_with('-') => {}
                _ => out.filters.push(arg),
            }
        }
        out
    }

    fn selects(&self, name: &str) -> bool {
        let hit = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(hit))
            && !self.skip.iter().any(|s| name.contains(s.as_str()))
    }
}

/// Runs the selected tests of a suite and returns the exit code: 0 when
/// none failed (skips count as failures under CI), else 101.
/// `source` is the suite's own text, checked for `#[test]` attributes.
pub fn run(source: &str, tests: &[Test]) -> ExitCode {
    if let Some(line) = source
        .lines()
        .position(|l| l.trim() == "#[test]")
        .map(|i| i + 1)
    {
        println!(
            "error: {}.rs line {line} has #[test], which a harness = false suite ignores; \
             list the test in its main() instead",
            suite()
        );
        return ExitCode::from(101);
    }
    let args = Args::parse(std::env::args().skip(1));
    NO_CAPTURE.store(args.no_capture, Ordering::Relaxed);
    let selected: Vec<Test> = tests
        .iter()
        .copied()
        .filter(|(name, _)| args.selects(name))
        .collect();
    if args.list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let filtered = tests.len() - selected.len();
    println!(
        "\nrunning {} test{}",
        selected.len(),
        plural(selected.len())
    );
    install_panic_hook();
    let threads = args
        .threads
        .or_else(|| std::env::var("RUST_TEST_THREADS").ok()?.parse().ok())
        .or_else(|| thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .clamp(1, selected.len().max(1));
    let results = run_all(selected, threads);
    report(&results, filtered, started)
}

/// Runs the tests on `threads` threads, printing each result as it comes.
fn run_all(tests: Vec<Test>, threads: usize) -> Vec<(&'static str, Outcome)> {
    let queue = Arc::new(Mutex::new(VecDeque::from(tests)));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let tx = tx.clone();
            thread::spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((name, test)) = next else { return };
                    // A thread per test, named after it, as libtest does:
                    // panic messages name the test.
                    let outcome = thread::Builder::new()
                        .name(name.to_owned())
                        .spawn(move || run_one(test))
                        .map(|h| h.join().unwrap_or_else(|_| Outcome::Failed(String::new())))
                        .unwrap_or_else(|e| Outcome::Failed(format!("cannot start a thread: {e}")));
                    if tx.send((name, outcome)).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut results = Vec::new();
    for (name, outcome) in rx {
        let status = match &outcome {
            Outcome::Passed => "ok".to_owned(),
            Outcome::Failed(_) => "FAILED".to_owned(),
            Outcome::Skipped(s) => skip_text(s),
        };
        say(&format!("test {name} ... {status}"));
        results.push((name, outcome));
    }
    for w in workers {
        let _ = w.join();
    }
    results
}

/// Runs one test on the current thread, catching its panic.
fn run_one(test: fn()) -> Outcome {
    CAPTURED.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = panic::catch_unwind(AssertUnwindSafe(test));
    let captured = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    match result {
        Ok(()) => Outcome::Passed,
        Err(payload) => match payload.downcast::<Skip>() {
            Ok(skip) if in_ci() => Outcome::Failed(format!(
                "SKIPPED under CI, which counts as a failure: {}",
                skip_text(&skip)
            )),
            Ok(skip) => Outcome::Skipped(*skip),
            Err(_) => Outcome::Failed(captured),
        },
    }
}

/// `SKIPPED (reason; run: command)`.
fn skip_text(s: &Skip) -> String {
    let run = s
        .run
        .clone()
        .unwrap_or_else(|| format!("cargo test --test {}", suite()));
    format!("SKIPPED ({}; run: {run})", s.reason)
}

/// Prints the failures and the summary; the exit code.
fn report(results: &[(&str, Outcome)], filtered: usize, started: Instant) -> ExitCode {
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|(_, o)| f(o)).count();
    let passed = count(|o| matches!(o, Outcome::Passed));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
    let mut out = String::new();
    if failed > 0 {
        out.push_str("\nfailures:\n");
        for (name, outcome) in results {
            if let Outcome::Failed(text) = outcome {
                let _ = writeln!(out, "\n---- {name} ----\n{}", text.trim_end());
            }
        }
        out.push_str("\nfailures:\n");
        for (name, outcome) in results {
            if matches!(outcome, Outcome::Failed(_)) {
                let _ = writeln!(out, "    {name}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\ntest result: {}. {passed} passed; {failed} failed; {skipped} skipped; \
         {filtered} filtered out; finished in {:.2}s",
        if failed > 0 { "FAILED" } else { "ok" },
        started.elapsed().as_secs_f64()
    );
    if skipped > 0 {
        let _ = writeln!(
            out,
            "note: {skipped} test{} of tests/{}.rs SKIPPED, as said above; under CI=true a skip fails",
            plural(skipped),
            suite()
        );
    }
    say(out.trim_end());
    if failed > 0 {
        ExitCode::from(101)
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints a line on stdout; a closed stdout is not worth a panic.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// On a test's own thread, panic messages are kept for the `failures:`
/// section (a skip's is dropped); elsewhere (threads a test starts) they
/// print as usual.
fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if info.payload().is::<Skip>() {
            return;
        }
        let kept = CAPTURED.with(|c| {
            let mut c = c.borrow_mut();
            let Some(text) = c.as_mut() else {
                return false;
            };
            let name = thread::current().name().unwrap_or("?").to_owned();
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let _ = writeln!(
                text,
                "thread '{name}' panicked at {location}:\n{}",
                message(info.payload())
            );
            let trace = std::backtrace::Backtrace::capture();
            if trace.status() == std::backtrace::BacktraceStatus::Captured {
                let _ = writeln!(text, "stack backtrace:\n{trace}");
            }
            true
        });
        if !kept {
            default(info);
        }
    }));
}

/// A panic payload's text.
fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}
