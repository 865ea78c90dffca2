//! The health check's verdict (`--check`, `--check-fall`, `--check-rise`),
//! sans IO: given how each run ended, whether the node is healthy.
//!
//! [`Verdict`] counts consecutive failures and passes against the fall and
//! rise thresholds, like keepalived's `vrrp_script` with `init_fail`: a
//! node is failing from start until its first check passes (whatever the
//! rise), then failing after `fall` failures in a row and healthy again
//! after `rise` passes in a row. It reports only changes of the verdict,
//! so the caller logs and tells the core once per change, never per run.
//! It runs nothing and reads no clock: `src/net/check.rs` runs the
//! command and feeds the results in.

/// The most `--check-fall` and `--check-rise` accept: a check run every
/// second reacts within about a minute at most; a larger streak says the
/// check is flaky, which no count fixes.
pub const MAX_STREAK: u32 = 100;

/// How one check run ended, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunResult {
    Pass,
    /// It exited non-zero, was killed by a signal bossd did not send, or
    /// `sh` did not start.
    Fail,
    /// It ran past `--check-timeout` and was killed.
    Timeout,
}

impl RunResult {
    /// The `result` label of `bossd_check_runs_total`.
    pub fn label(self) -> &'static str {
        match self {
            RunResult::Pass => "pass",
            RunResult::Fail => "fail",
            RunResult::Timeout => "timeout",
        }
    }
}

/// The debounced verdict of a health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    fall: u32,
    rise: u32,
    passing: bool,
    /// Whether any check has passed yet: until then the node is failing
    /// and one pass is enough.
    passed_once: bool,
    /// Consecutive results that disagree with `passing`.
    streak: u32,
}

impl Verdict {
    /// A verdict that starts failing; `fall` and `rise` are at least 1
    /// (a 0 is taken as 1).
    pub fn new(fall: u32, rise: u32) -> Verdict {
        Verdict {
            fall: fall.max(1),
            rise: rise.max(1),
            passing: false,
            passed_once: false,
            streak: 0,
        }
    }

    /// Whether the node counts as healthy now.
    pub fn passing(&self) -> bool {
        self.passing
    }

    /// One check ended, passed or not: the new verdict if this run changed
    /// it, else `None`.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed == self.passing {
            self.streak = 0;
            return None;
        }
        // Counted up to the threshold only, so no run of results overflows.
        let needed = match (passed, self.passed_once) {
            (true, false) => 1,
            (true, true) => self.rise,
            (false, _) => self.fall,
        };
        self.streak = (self.streak + 1).min(needed);
        if self.streak < needed {
            return None;
        }
        self.passing = passed;
        self.passed_once |= passed;
        self.streak = 0;
        Some(passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changes a sequence of results (`+` pass, `-` fail) reports.
    fn changes(fall: u32, rise: u32, runs: &str) -> Vec<(usize, bool)> {
        let mut v = Verdict::new(fall, rise);
        runs.chars()
            .enumerate()
            .filter_map(|(i, c)| v.record(c == '+').map(|p| (i, p)))
            .collect()
    }

    #[test]
    fn it_starts_failing_and_the_first_pass_ends_that_whatever_the_rise() {
        let v = Verdict::new(3, 5);
        assert!(!v.passing());
        assert_eq!(changes(3, 5, "--+"), [(2, true)]);
        assert_eq!(changes(1, 1, "+"), [(0, true)]);
    }

    #[test]
    fn failures_at_start_report_nothing_new() {
        assert_eq!(changes(1, 1, "-----"), []);
    }

    #[test]
    fn fall_counts_consecutive_failures() {
        assert_eq!(changes(3, 1, "+--+---"), [(0, true), (6, false)]);
        assert_eq!(changes(1, 1, "+-"), [(0, true), (1, false)]);
    }

    #[test]
    fn rise_counts_consecutive_passes_after_the_first() {
        assert_eq!(
            changes(1, 3, "+-++-+++"),
            [(0, true), (1, false), (7, true)]
        );
    }

    #[test]
    fn only_changes_are_reported() {
        assert_eq!(
            changes(2, 2, "++++--------++++"),
            [(0, true), (5, false), (13, true)]
        );
    }

    #[test]
    fn a_zero_threshold_counts_as_one() {
        assert_eq!(changes(0, 0, "+-+"), [(0, true), (1, false), (2, true)]);
    }

    #[test]
    fn long_runs_do_not_overflow_the_streak() {
        let mut v = Verdict::new(MAX_STREAK, MAX_STREAK);
        assert_eq!(v.record(true), Some(true));
        for _ in 0..10_000 {
            v.record(true);
        }
        for i in 1..MAX_STREAK {
            assert_eq!(v.record(false), None, "failure {i}");
        }
        assert_eq!(v.record(false), Some(false));
    }
}
