//! The two kinds of time bossd counts, as distinct types so that they
//! cannot be mixed up: [`Mono`], monotonic milliseconds since the node
//! started (every timer, deadline and "last heard"), and [`Wall`], unix
//! milliseconds (start times, the strict epoch floor, PING echo stamps,
//! what humans read).
//!
//! It owns only the arithmetic, all of it saturating: a remote can send
//! any number, and a sum of times must never overflow. It never reads a
//! clock; the loop does, once per iteration (`net`), and the simulator
//! makes its own.

use std::fmt;

/// A point in monotonic time: milliseconds since the node's time zero, as
/// the loop's clock (or the simulator's) counts them. Durations are plain
/// `u64` milliseconds, named `..._ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(pub u64);

/// A point in wall-clock time: milliseconds since the unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Wall(pub u64);

impl Mono {
    /// The node's time zero.
    pub const ZERO: Mono = Mono(0);
    /// Later than any deadline: "never".
    pub const MAX: Mono = Mono(u64::MAX);

    /// Milliseconds since time zero.
    pub const fn ms(self) -> u64 {
        self.0
    }

    /// `ms` later, saturating at [`Mono::MAX`].
    pub const fn plus(self, ms: u64) -> Mono {
        Mono(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`; 0 if `earlier` is later.
    pub const fn since(self, earlier: Mono) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Wall {
    /// Milliseconds since the unix epoch.
    pub const fn ms(self) -> u64 {
        self.0
    }

    /// `ms` later, saturating.
    pub const fn plus(self, ms: u64) -> Wall {
        Wall(self.0.saturating_add(ms))
    }

    /// The wall clock at monotonic time `at`, for a clock that read `self`
    /// at time zero.
    pub const fn at(self, at: Mono) -> Wall {
        self.plus(at.0)
    }
}

impl fmt::Display for Mono {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Wall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Mono(5).plus(u64::MAX), Mono::MAX);
        assert_eq!(Mono(5).since(Mono(7)), 0);
        assert_eq!(Mono(7).since(Mono(5)), 2);
        assert_eq!(Wall(u64::MAX - 1).at(Mono(10)), Wall(u64::MAX));
        assert_eq!(Wall(1_000).at(Mono(234)), Wall(1_234));
    }
}
