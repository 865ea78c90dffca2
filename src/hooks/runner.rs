//! Runs one shell command at a time as a child process and reports how it
//! ended: the thin IO part of the hooks, and of the health check
//! (`src/net/check.rs`), each with a runner of its own.
//!
//! A [`Runner`] owns at most one child. [`Runner::start`] spawns
//! `sh -c CMD` with the [`Job`]'s environment in a process group of its
//! own, so a kill (the time limit, or the caller's [`Runner::kill`])
//! reaches everything the command started, and a Ctrl-C meant for bossd
//! does not reach it. Its stdin is `/dev/null`; its stdout and stderr go
//! to bossd's stderr, next to the log lines, and never mix with console
//! answers on stdout ([`Output::Log`], for hooks, which run once per role
//! change), or into a pipe of which only the last [`MAX_CAPTURED`] bytes
//! are kept ([`Output::Capture`], for a health check, which runs every
//! interval and would otherwise fill the log with the same lines; what it
//! said is logged only when its result changes the health). The pipe is
//! drained as it fills ([`Runner::read_output`], on the loop's readiness
//! event for [`Runner::output_source`]), so a chatty command never blocks
//! on a full pipe. Every descriptor bossd opens itself is close-on-exec,
//! as std and mio create them, so the child inherits none of them.
//!
//! [`Runner::poll`] reaps with `try_wait` and kills the group once the
//! job's time limit is over; the loop calls it once per iteration (SIGCHLD
//! wakes the loop when a child ends) and puts [`Runner::deadline`] into its
//! poll timeout. It never blocks, never waits for a child, never reads a
//! clock (the caller passes `now`), and knows nothing of what the command
//! is for: what to run next, and why, is the caller's business.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mio::unix::pipe::Receiver;

/// The bytes of a captured job's output kept: its last ones, where a
/// failing command usually says why, and short enough for one log line.
pub const MAX_CAPTURED: usize = 256;

/// Bytes read from a captured job's pipe per [`Runner::read_output`]:
/// one pipe's worth, so a command writing without pause cannot hold the
/// loop; the rest is read at the next call.
const CAPTURE_BUDGET: usize = 64 * 1024;

/// What to run: `sh -c cmd` with `env` added to bossd's environment, killed
/// with its process group once it has run for `time_limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub cmd: String,
    pub env: Vec<(String, String)>,
    pub time_limit: Duration,
}

/// How a job ended, and after how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub exit: Exit,
    /// From start to reaping, or zero when it did not start.
    pub elapsed: Duration,
    /// The child's pid, when it started.
    pub pid: Option<u32>,
    /// With [`Output::Capture`]: the last [`MAX_CAPTURED`] bytes it wrote
    /// (lossy UTF-8, trimmed); else empty.
    pub output: String,
}

/// The ways a job ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited by itself with this code.
    Exited(i32),
    /// A signal bossd did not send ended it.
    Signalled(i32),
    /// It ran past its time limit and was killed with its group.
    TimedOut,
    /// The caller killed it ([`Runner::kill`]).
    Killed,
    /// `sh` could not be started.
    NotStarted(String),
    /// The child could not be waited for (it never should be): it is
    /// forgotten rather than hold the caller back.
    Lost(String),
}

/// Where a job's stdout and stderr go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// To bossd's stderr, beside the log lines.
    #[default]
    Log,
    /// To `/dev/null`.
    Discard,
    /// Into a pipe; the last [`MAX_CAPTURED`] bytes come back in
    /// [`Finished::output`].
    Capture,
}

/// At most one running job.
#[derive(Debug, Default)]
pub struct Runner {
    current: Option<Running>,
    output: Output,
}

#[derive(Debug)]
struct Running {
    child: Child,
    started: Instant,
    time_limit: Duration,
    /// Why it was killed, once it was: it still runs until it is reaped.
    killed: Option<Exit>,
    /// With [`Output::Capture`]: the pipe's read end, until its end of
    /// file, and the output's tail.
    pipe: Option<Receiver>,
    tail: Vec<u8>,
    /// The last read stopped at [`CAPTURE_BUDGET`], not at an empty pipe.
    unread: bool,
}

impl Runner {
    /// A runner with nothing running.
    pub fn new() -> Runner {
        Runner::default()
    }

    /// A runner whose jobs' output goes to `output`.
    pub fn with_output(output: Output) -> Runner {
        Runner {
            current: None,
            output,
        }
    }

    /// Whether a job runs (or was killed and is not reaped yet).
    pub fn is_running(&self) -> bool {
        self.current.is_some()
    }

    /// The running job's pid.
    pub fn pid(&self) -> Option<u32> {
        self.current.as_ref().map(|r| r.child.id())
    }

    /// Starts `job` at `now`; its pid, or how it failed to start. A job
    /// already running is the caller's bug: it is left alone and the new
    /// one is reported not started.
    pub fn start(&mut self, job: &Job, now: Instant) -> Result<u32, Finished> {
        let not_started = |why: String| Finished {
            exit: Exit::NotStarted(why),
            elapsed: Duration::ZERO,
            pid: None,
            output: String::new(),
        };
        if self.current.is_some() {
            debug_assert!(false, "one job at a time");
            return Err(not_started("another job still runs".into()));
        }
        let (child, pipe) = spawn(job, self.output).map_err(|e| not_started(e.to_string()))?;
        let pid = child.id();
        self.current = Some(Running {
            child,
            started: now,
            time_limit: job.time_limit,
            killed: None,
            pipe,
            tail: Vec::new(),
            unread: false,
        });
        Ok(pid)
    }

    /// With [`Output::Capture`], the running job's pipe, for the loop to
    /// watch for readability and then call [`Runner::read_output`].
    pub fn output_source(&mut self) -> Option<&mut Receiver> {
        self.current.as_mut()?.pipe.as_mut()
    }

    /// Reads what the running job wrote, up to [`CAPTURE_BUDGET`], keeping
    /// the last [`MAX_CAPTURED`] bytes. Never blocks.
    pub fn read_output(&mut self) {
        if let Some(r) = self.current.as_mut() {
            r.read_output();
        }
    }

    /// Whether output is left in the pipe after a read that used its whole
    /// budget: the caller should read again soon, not wait for an event.
    pub fn output_unread(&self) -> bool {
        self.current.as_ref().is_some_and(|r| r.unread)
    }

    /// Reaps the job if it ended, or kills it if its time limit is over
    /// at `now`. Never blocks.
    pub fn poll(&mut self, now: Instant) -> Option<Finished> {
        let r = self.current.as_mut()?;
        r.read_output();
        let exit = match r.child.try_wait() {
            Ok(Some(status)) => r.killed.take().unwrap_or_else(|| exit_of(status)),
            Ok(None) => {
                if r.killed.is_none() && now >= r.started + r.time_limit {
                    kill_group(&r.child);
                    r.killed = Some(Exit::TimedOut);
                }
                return None;
            }
            Err(e) => Exit::Lost(e.to_string()),
        };
        let mut r = self.current.take()?;
        // What it wrote just before it ended; a descendant still writing
        // to the pipe is not waited for.
        r.read_output();
        let output = r.output();
        Some(Finished {
            exit,
            elapsed: now.saturating_duration_since(r.started),
            pid: Some(r.child.id()),
            output,
        })
    }

    /// Kills the running job with its group; [`Runner::poll`] reports it
    /// [`Exit::Killed`] once reaped. Does nothing if none runs or it was
    /// killed already.
    pub fn kill(&mut self) {
        if let Some(r) = self.current.as_mut().filter(|r| r.killed.is_none()) {
            kill_group(&r.child);
            r.killed = Some(Exit::Killed);
        }
    }

    /// When [`Runner::poll`] must run to kill the job on time; none once
    /// it was killed (its end wakes the loop through SIGCHLD).
    pub fn deadline(&self) -> Option<Instant> {
        let r = self.current.as_ref().filter(|r| r.killed.is_none())?;
        Some(r.started + r.time_limit)
    }

    /// Forgets the running job without killing it, for a node that exits
    /// now; its pid.
    pub fn abandon(&mut self) -> Option<u32> {
        self.current.take().map(|r| r.child.id())
    }
}

impl Running {
    fn read_output(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut budget = CAPTURE_BUDGET;
        self.unread = false;
        while budget > 0 {
            match pipe.read(&mut buf[..budget.min(4096)]) {
                Ok(0) => {
                    // End of file: every writer closed it.
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    budget -= n;
                    self.tail.extend_from_slice(&buf[..n]);
                    if self.tail.len() > 2 * MAX_CAPTURED {
                        self.tail.drain(..self.tail.len() - MAX_CAPTURED);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
        self.unread = true;
    }

    /// The last [`MAX_CAPTURED`] bytes, as text.
    fn output(&self) -> String {
        let from = self.tail.len().saturating_sub(MAX_CAPTURED);
        String::from_utf8_lossy(&self.tail[from..])
            .trim()
            .to_owned()
    }
}

/// Starts `sh -c` for `job` (see the module comment for its descriptors
/// and process group), and with [`Output::Capture`] the read end of its
/// output's pipe, non-blocking.
fn spawn(job: &Job, output: Output) -> std::io::Result<(Child, Option<Receiver>)> {
    let mut pipe = None;
    // The child's stdout goes where the log goes: stdout carries console
    // answers. If stderr cannot be duplicated, the output is dropped.
    let (stdout, stderr) = match output {
        Output::Log => (
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_or_else(|_| Stdio::null(), Stdio::from),
            Stdio::inherit(),
        ),
        Output::Discard => (Stdio::null(), Stdio::null()),
        Output::Capture => {
            // Both ends close-on-exec; the child gets the write end as its
            // stdout and stderr, and the parent's copies close with the
            // Command below, so the read end sees end of file once the
            // child and whatever it started are done with it.
            let (reader, writer) = std::io::pipe()?;
            let receiver = Receiver::from(OwnedFd::from(reader));
            receiver.set_nonblocking(true)?;
            pipe = Some(receiver);
            let second = writer.try_clone()?;
            (Stdio::from(writer), Stdio::from(second))
        }
    };
    let child = Command::new("sh")
        .arg("-c")
        .arg(&job.cmd)
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        // systemd's notify socket and watchdog are bossd's, not its children's.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()?;
    Ok((child, pipe))
}

fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Exited(code),
        (None, Some(sig)) => Exit::Signalled(sig),
        // Neither a code nor a signal does not happen on Unix.
        (None, None) => Exit::Exited(-1),
    }
}

/// SIGKILL to the child's process group, which the child leads.
fn kill_group(child: &Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects. The child is not reaped yet,
    // so its pid, and with it its process group id, cannot have been reused.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn job(cmd: &str) -> Job {
        Job {
            cmd: cmd.into(),
            env: vec![("BOSSD_TEST_VALUE".into(), "7".into())],
            time_limit: Duration::from_secs(30),
        }
    }

    /// Polls until the job is reaped, as the loop would after SIGCHLD.
    fn reap(runner: &mut Runner) -> Finished {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(done) = runner.poll(Instant::now()) {
                return done;
            }
            assert!(Instant::now() < give_up, "the job was not reaped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A file in a directory of its own, removed with it when dropped.
    pub(crate) struct TempFile(pub(crate) std::path::PathBuf);

    impl TempFile {
        pub(crate) fn new(name: &str) -> TempFile {
            let dir = std::env::temp_dir()
                .join(format!("bossd-hooks-unit-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the temp dir");
            TempFile(dir.join(name))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn the_exit_status_and_environment_come_back() {
        let mut runner = Runner::new();
        let started = runner.start(&job("exit $BOSSD_TEST_VALUE"), Instant::now());
        assert!(started.is_ok(), "{started:?}");
        assert!(runner.deadline().is_some());
        let done = reap(&mut runner);
        assert_eq!(done.exit, Exit::Exited(7));
        assert!(!runner.is_running());
        assert_eq!(runner.deadline(), None);
    }

    // A captured job's output comes back, only its last MAX_CAPTURED
    // bytes, and a job writing more than a pipe holds does not block as
    // long as the caller reads on.
    #[test]
    fn captured_output_keeps_its_tail() {
        let mut runner = Runner::with_output(Output::Capture);
        let cmd = "head -c 200000 /dev/zero | tr '\\0' a; echo; echo the end >&2; exit 3";
        let _ = runner.start(&job(cmd), Instant::now()).expect("sh starts");
        assert!(runner.output_source().is_some());
        let done = reap(&mut runner);
        assert_eq!(done.exit, Exit::Exited(3));
        assert!(done.output.len() <= MAX_CAPTURED, "{}", done.output.len());
        assert!(done.output.ends_with("aaa\nthe end"), "{:?}", done.output);
        let mut quiet = Runner::with_output(Output::Capture);
        let _ = quiet
            .start(&job("true"), Instant::now())
            .expect("sh starts");
        assert_eq!(reap(&mut quiet).output, "");
        let mut logged = Runner::new();
        let _ = logged
            .start(&job("true"), Instant::now())
            .expect("sh starts");
        assert!(logged.output_source().is_none());
        let _ = reap(&mut logged);
    }

    #[test]
    fn a_signal_it_was_not_sent_is_reported() {
        let mut runner = Runner::new();
        let _ = runner.start(&job("kill -TERM $$"), Instant::now());
        assert_eq!(reap(&mut runner).exit, Exit::Signalled(libc::SIGTERM));
    }

    // docs/GUARANTEES.md, hook: a command still running after its limit is
    // killed with everything it started. `now` is moved past the limit
    // instead of waiting for it.
    #[test]
    fn past_its_time_limit_the_whole_group_is_killed() {
        let file = TempFile::new("killed");
        let cmd = format!("sleep 30 & echo $! > {f}; wait", f = file.0.display());
        let mut runner = Runner::new();
        let t0 = Instant::now();
        let _ = runner.start(&job(&cmd), t0).expect("sh starts");
        assert_eq!(runner.deadline(), Some(t0 + Duration::from_secs(30)));
        let give_up = Instant::now() + Duration::from_secs(20);
        let pid = loop {
            // The shell writes the pid before it waits.
            if let Ok(pid) = std::fs::read_to_string(&file.0)
                .unwrap_or_default()
                .trim()
                .parse::<i32>()
            {
                break pid;
            }
            assert!(Instant::now() < give_up, "the shell wrote no pid");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(runner.poll(t0 + Duration::from_secs(29)), None);
        assert!(runner.deadline().is_some(), "not killed before its limit");
        assert_eq!(runner.poll(t0 + Duration::from_secs(30)), None);
        assert_eq!(runner.deadline(), None, "killed: nothing left to time");
        assert_eq!(reap(&mut runner).exit, Exit::TimedOut);
        // The sleep was killed with the group; init reaps it soon after.
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.contains(") Z") {
                break;
            }
            assert!(Instant::now() < give_up, "the child {pid} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_callers_kill_is_reported_as_such() {
        let mut runner = Runner::new();
        let _ = runner.start(&job("sleep 30"), Instant::now());
        runner.kill();
        runner.kill();
        assert_eq!(reap(&mut runner).exit, Exit::Killed);
    }

    #[test]
    fn an_abandoned_job_keeps_running() {
        let mut runner = Runner::new();
        let pid = runner
            .start(&job("sleep 30"), Instant::now())
            .expect("sh starts");
        assert_eq!(runner.abandon(), Some(pid));
        assert!(!runner.is_running());
        let group = libc::pid_t::try_from(pid).expect("a pid");
        // SAFETY: kill(2) on the group of a child this test started.
        unsafe {
            assert_eq!(libc::kill(-group, 0), 0, "it still runs");
            libc::kill(-group, libc::SIGKILL);
        }
    }
}
