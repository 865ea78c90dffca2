//! Clock skew: how far a peer's wall clock is from this node's, measured
//! from heartbeat round trips, and whether the master's place rests on
//! start times closer than that.
//!
//! It owns the estimate (`Skew`, pure arithmetic on three timestamps) and
//! the warning once per decision (`start-within-skew`). It corrects no
//! clock and changes no ranking: it never does more than measure and
//! warn.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

use super::{Node, candidate};
use crate::event::Event;
use crate::rule::{Candidate, Criterion};
use crate::time::Wall;

/// Round trips kept per peer to estimate its clock offset. The estimate is
/// the tightest of the last 8, as NTP's clock filter keeps (RFC 5905
/// §10.1): enough to ride out a few delayed answers, few enough that
/// clocks drifting apart are followed within 8 heartbeats.
pub(super) const SKEW_SAMPLES: usize = 8;

/// How far another node's wall clock is from this node's, measured by a
/// heartbeat's round trip (NTP-style, from three timestamps).
///
/// A PING leaves at `t1` and the peer's PING echoing it arrives at `t4`
/// (less the time the peer held it), both on our clock; the peer's clock
/// read `t2` when ours arrived, at some moment between.
/// So the peer's clock minus ours lies within `t2 - t4 .. t2 - t1`,
/// widened by 1 ms because every timestamp is truncated to whole
/// milliseconds: the estimate is the middle, `t2 - (t1 + t4) / 2`, and the
/// error half the round trip plus that millisecond. However the delay is
/// split between the two directions, the true offset lies within the
/// error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skew {
    /// The other clock minus ours, in ms: positive when it is ahead.
    pub offset_ms: i64,
    /// The true offset lies within `offset_ms` +- `error_ms`.
    pub error_ms: u64,
}

/// A place in the ranking that start times decide by no more than the
/// clock skew between the two nodes, so the order may be their clocks'
/// doing rather than when they started. Each node's `started` is read from
/// its own wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartDoubt {
    /// `Oldest` or `Youngest`: the criterion that ordered the two.
    pub criterion: Criterion,
    /// The member ranked first of the two.
    pub winner: SocketAddr,
    pub loser: SocketAddr,
    /// How far apart the two start times are, as each node read its clock.
    pub start_gap_ms: u64,
    /// The loser's clock against the winner's.
    pub skew: Skew,
}

impl Skew {
    /// This node's own clock.
    pub const ZERO: Skew = Skew {
        offset_ms: 0,
        error_ms: 0,
    };

    /// The estimate from one round trip: a PING sent at `sent` and
    /// its echo received at `received` on our clock (less the time the
    /// peer held it), heard at
    /// `replied_unix_ms` on the peer's. Saturates rather than overflows on
    /// absurd times.
    pub fn from_round_trip(sent: Wall, replied_unix_ms: u64, received: Wall) -> Skew {
        let (t1, t2, t4) = (
            i128::from(sent.ms()),
            i128::from(replied_unix_ms),
            i128::from(received.ms()),
        );
        let offset = (2 * t2 - t1 - t4).div_euclid(2);
        let round_trip_ms = received.ms().saturating_sub(sent.ms());
        Skew {
            offset_ms: offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            // Half the round trip, rounded up for the halved millisecond the
            // offset drops, plus the millisecond timestamps truncate.
            error_ms: round_trip_ms.div_ceil(2).saturating_add(1),
        }
    }

    /// `to`'s clock against `from`'s, both measured against this node's:
    /// the offsets subtract and the errors add.
    pub fn between(from: Skew, to: Skew) -> Skew {
        Skew {
            offset_ms: to.offset_ms.saturating_sub(from.offset_ms),
            error_ms: to.error_ms.saturating_add(from.error_ms),
        }
    }
}

/// `+3+-1ms`: the offset with its sign, then `+-` and the error, in
/// ASCII so that every answer a client decodes is.
impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:+}+-{}ms", self.offset_ms, self.error_ms)
    }
}

/// The tightest of a peer's recent samples; the newest among equals.
pub(super) fn best_skew(samples: &VecDeque<Skew>) -> Option<Skew> {
    samples.iter().rev().min_by_key(|s| s.error_ms).copied()
}

impl Node {
    /// The clock of the member at `addr` against this node's: zero for
    /// this node, `None` for a peer not yet measured or not a peer.
    pub fn skew(&self, addr: SocketAddr) -> Option<Skew> {
        if addr == self.cfg.addr {
            return Some(Skew::ZERO);
        }
        best_skew(&self.peers.get(&addr)?.skew_samples)
    }

    /// Whether the order of `winner` before `loser` (adjacent in the
    /// ranking) rests on start times no further apart than the clock skew
    /// between the two nodes, counted in the direction that could reverse
    /// it. Only when `oldest` or `youngest` is the criterion that orders
    /// them, and only once both clocks are measured.
    pub fn start_doubt(&self, winner: &Candidate, loser: &Candidate) -> Option<StartDoubt> {
        let criterion = self.cfg.rule.deciding_criterion(winner, loser)?;
        let skew = Skew::between(self.skew(winner.addr)?, self.skew(loser.addr)?);
        let start_gap_ms = winner.started_unix_ms.abs_diff(loser.started_unix_ms);
        // On the winner's clock the loser started at its own reading minus
        // the offset. With `oldest` a positive offset (the loser's clock
        // ahead) eats into the gap, with `youngest` a negative one does.
        let toward = match criterion {
            Criterion::Oldest => i128::from(skew.offset_ms),
            Criterion::Youngest => -i128::from(skew.offset_ms),
            Criterion::Priority | Criterion::LowestAddr | Criterion::HighestAddr => return None,
        };
        (i128::from(start_gap_ms) <= toward + i128::from(skew.error_ms)).then_some(StartDoubt {
            criterion,
            winner: winner.addr,
            loser: loser.addr,
            start_gap_ms,
            skew,
        })
    }

    /// Warns once per decision when the master's place before the
    /// runner-up rests on start times within their clocks' skew.
    pub(super) fn check_start_doubt(&mut self) {
        let (Some(first), Some(second)) = self.ranked_first_two() else {
            self.start_doubt_checked = None;
            return;
        };
        let (first, second) = (&first, &second);
        let pair = ((first.addr, first.instance), (second.addr, second.instance));
        let warned = match self.start_doubt_checked {
            Some((a, b, warned)) if (a, b) == pair => warned,
            _ => false,
        };
        self.start_doubt_checked = Some((pair.0, pair.1, warned));
        if warned {
            return;
        }
        if let Some(d) = self.start_doubt(first, second) {
            self.start_doubt_checked = Some((pair.0, pair.1, true));
            self.event(Event::StartWithinSkew(d));
        }
    }

    /// [`Node::first_two`], found again only when the view or a member's
    /// priority changed since: this runs on every echoed heartbeat, and
    /// even the one pass over the view there made a heartbeat round at 999
    /// peers quadratic (docs/BENCHMARKS.md, "The core at 1,000 nodes").
    fn ranked_first_two(&mut self) -> (Option<Candidate>, Option<Candidate>) {
        if let Some(two) = self.ranked_two {
            return two;
        }
        let two = self.first_two();
        self.ranked_two = Some(two);
        two
    }

    /// The first two of [`Node::ranking`], in one pass without sorting:
    /// this runs on every echoed heartbeat, and sorting the whole view
    /// there took 14 % of a 100-node cluster's CPU at rest (issue 14,
    /// docs/BENCHMARKS.md). Ties keep the ranking's order, as its stable
    /// sort does.
    pub(super) fn first_two(&self) -> (Option<Candidate>, Option<Candidate>) {
        let rule = &self.cfg.rule;
        let before = |a: &Candidate, b: &Option<Candidate>| {
            b.as_ref()
                .is_none_or(|b| rule.compare(a, b) == std::cmp::Ordering::Less)
        };
        let mut first: Option<Candidate> = None;
        let mut second: Option<Candidate> = None;
        let all =
            std::iter::once(self.me()).chain(self.peers.values().map(|p| candidate(&p.hello)));
        for c in all {
            if before(&c, &first) {
                second = first.replace(c);
            } else if before(&c, &second) {
                second = Some(c);
            }
        }
        (first, second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_two_are_the_rankings_first_two() {
        use crate::protocol::{LinkKind, Message};
        // Node 3 with peers 5, 1, 4 and 2 (older the lower): then 1, 2, ...
        let mut n = crate::core::test_node(3);
        for (link, k) in [5u8, 1, 4, 2].into_iter().enumerate() {
            n.handle_accepted(link, crate::time::Mono(1));
            let Message::Hello(h) = crate::core::test_node(k).hello(LinkKind::Mesh) else {
                unreachable!("hello() makes a HELLO")
            };
            n.handle_message(link, Message::Hello(h), crate::time::Mono(1));
        }
        assert_eq!(n.peers.len(), 4);
        let ranking = n.ranking();
        let (first, second) = n.first_two();
        assert_eq!(first.map(|c| c.addr), Some(ranking[0].addr));
        assert_eq!(second.map(|c| c.addr), Some(ranking[1].addr));
        assert_eq!(ranking[0].addr.ip().to_string(), "127.0.0.1");
    }

    #[test]
    fn a_round_trip_brackets_the_offset() {
        // Sent at 1000, answered at 5010 on a clock 4000 ahead, back at 1020:
        // the answer could have been stamped anywhere in 1000..=1020 of ours.
        let s = Skew::from_round_trip(Wall(1000), 5010, Wall(1020));
        assert_eq!(
            s,
            Skew {
                offset_ms: 4000,
                error_ms: 11
            }
        );
        // An odd round trip: the middle, 4000.5, is kept as 4000, and the
        // error is half the 5 ms rounded up, plus 1 ms of truncation.
        assert_eq!(
            Skew::from_round_trip(Wall(1000), 5003, Wall(1005)),
            Skew {
                offset_ms: 4000,
                error_ms: 4
            }
        );
        assert_eq!(
            Skew::from_round_trip(Wall(1000), 1000, Wall(1000)),
            Skew {
                offset_ms: 0,
                error_ms: 1
            }
        );
        assert_eq!(
            Skew::from_round_trip(Wall(1000), 900, Wall(1000)).offset_ms,
            -100
        );
    }

    // docs/GUARANTEES.md, bad input: absurd times from a peer saturate, never panic.
    #[test]
    fn absurd_times_saturate() {
        assert_eq!(
            Skew::from_round_trip(Wall(0), u64::MAX, Wall(0)).offset_ms,
            i64::MAX
        );
        assert_eq!(
            Skew::from_round_trip(Wall(u64::MAX), 0, Wall(u64::MAX)).offset_ms,
            i64::MIN
        );
        assert_eq!(
            Skew::from_round_trip(Wall(5), 5, Wall(0)).error_ms,
            1,
            "a clock going back"
        );
        let far = Skew {
            offset_ms: i64::MAX,
            error_ms: u64::MAX,
        };
        let near = Skew {
            offset_ms: i64::MIN,
            error_ms: 1,
        };
        assert_eq!(Skew::between(near, far).offset_ms, i64::MAX);
        assert_eq!(Skew::between(near, far).error_ms, u64::MAX);
    }

    #[test]
    fn skews_compose_and_print_with_sign() {
        let a = Skew {
            offset_ms: 5,
            error_ms: 1,
        };
        let b = Skew {
            offset_ms: -7,
            error_ms: 2,
        };
        assert_eq!(
            Skew::between(a, b),
            Skew {
                offset_ms: -12,
                error_ms: 3
            }
        );
        assert_eq!(Skew::between(a, b).to_string(), "-12+-3ms");
        assert_eq!(a.to_string(), "+5+-1ms");
        assert_eq!(Skew::ZERO.to_string(), "+0+-0ms");
    }

    #[test]
    fn the_tightest_recent_sample_wins() {
        let s = |offset_ms, error_ms| Skew {
            offset_ms,
            error_ms,
        };
        let samples = VecDeque::from([s(10, 3), s(12, 1), s(9, 5), s(11, 1)]);
        assert_eq!(best_skew(&samples), Some(s(11, 1)), "the newest of equals");
        assert_eq!(best_skew(&VecDeque::new()), None);
    }
}
