//! The election rule: an ordered list of criteria that ranks members.
//!
//! A rule is pure data with a total order over [`Candidate`]s; it never
//! looks at the network. Every node of a cluster must hold the same rule, so
//! every node ranks the same view the same way.

use std::cmp::Ordering;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// One criterion of a rule; earlier criteria decide first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Criterion {
    /// Earliest start time wins (the seed's default).
    Oldest,
    /// Latest start time wins.
    Youngest,
    /// Highest `--priority` wins.
    Priority,
    /// Lowest listening address wins.
    LowestAddr,
    /// Highest listening address wins.
    HighestAddr,
}

/// A comma-separated list of criteria, e.g. `priority,oldest`, each at
/// most once (so at most five: that bounds what a peer's HELLO can make
/// a node allocate).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule(Vec<Criterion>);

/// What the rule looks at to rank one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub started_unix_ms: u64,
    pub priority: i32,
    pub instance: u64,
}

/// Why a `--rule` value is not a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseRuleError(String);

impl fmt::Display for ParseRuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseRuleError {}

impl Rule {
    /// The criteria, in the order they decide.
    pub fn criteria(&self) -> &[Criterion] {
        &self.0
    }

    /// Orders two candidates: `Less` means `a` ranks before (is better than) `b`.
    /// Ties under every criterion fall to the lowest address, then the lowest
    /// instance id, so the order is total.
    pub fn compare(&self, a: &Candidate, b: &Candidate) -> Ordering {
        self.0
            .iter()
            .map(|c| c.compare(a, b))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.addr.cmp(&b.addr))
            .then_with(|| a.instance.cmp(&b.instance))
    }

    /// The criterion that orders `a` and `b`: the first on which they
    /// differ. `None` when they tie on every one and the final tie-break
    /// (address, then instance) decides.
    pub fn deciding_criterion(&self, a: &Candidate, b: &Candidate) -> Option<Criterion> {
        self.0.iter().copied().find(|c| c.compare(a, b).is_ne())
    }

    /// The values of `c` this rule looks at, as `key=value` words, for `-r`.
    pub fn deciding_values(&self, c: &Candidate) -> String {
        let mut words: Vec<String> = Vec::new();
        for crit in &self.0 {
            let w = match crit {
                Criterion::Oldest | Criterion::Youngest => format!("started={}", c.started_unix_ms),
                Criterion::Priority => format!("priority={}", c.priority),
                Criterion::LowestAddr | Criterion::HighestAddr => format!("addr={}", c.addr),
            };
            if !words.contains(&w) {
                words.push(w);
            }
        }
        words.push(format!("instance={:016x}", c.instance));
        words.join(" ")
    }
}

impl Criterion {
    /// Orders two candidates by this criterion alone: `Less` means `a` is better.
    fn compare(self, a: &Candidate, b: &Candidate) -> Ordering {
        match self {
            Criterion::Oldest => a.started_unix_ms.cmp(&b.started_unix_ms),
            Criterion::Youngest => b.started_unix_ms.cmp(&a.started_unix_ms),
            Criterion::Priority => b.priority.cmp(&a.priority),
            Criterion::LowestAddr => a.addr.cmp(&b.addr),
            Criterion::HighestAddr => b.addr.cmp(&a.addr),
        }
    }
}

impl Default for Rule {
    fn default() -> Self {
        Rule(vec![Criterion::Oldest])
    }
}

impl FromStr for Rule {
    type Err = ParseRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list = Vec::new();
        for word in s.split(',') {
            let c = match word {
                "oldest" => Criterion::Oldest,
                "youngest" => Criterion::Youngest,
                "priority" => Criterion::Priority,
                "lowest-addr" => Criterion::LowestAddr,
                "highest-addr" => Criterion::HighestAddr,
                _ => {
                    return Err(ParseRuleError(format!(
                        "unknown rule criterion {word:?}; use a comma list of \
                         oldest, youngest, priority, lowest-addr, highest-addr"
                    )));
                }
            };
            if list.contains(&c) {
                return Err(ParseRuleError(format!(
                    "criterion {word:?} is listed twice; a later one could never decide"
                )));
            }
            list.push(c);
        }
        Ok(Rule(list))
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Criterion::Oldest => "oldest",
            Criterion::Youngest => "youngest",
            Criterion::Priority => "priority",
            Criterion::LowestAddr => "lowest-addr",
            Criterion::HighestAddr => "highest-addr",
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            c.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(port: u16, started: u64, priority: i32) -> Candidate {
        Candidate {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            started_unix_ms: started,
            priority,
            instance: u64::from(port),
        }
    }

    fn best(rule: &str, cands: &[Candidate]) -> u16 {
        let rule: Rule = rule.parse().unwrap();
        let mut v = cands.to_vec();
        v.sort_by(|a, b| rule.compare(a, b));
        v[0].addr.port()
    }

    // docs/GUARANTEES.md, running bossd `--rule`: each criterion, comma lists, and the final tie-break.
    #[test]
    fn every_criterion_picks_its_winner() {
        let c = [cand(7001, 200, 1), cand(7000, 300, 5), cand(7002, 100, 5)];
        assert_eq!(best("oldest", &c), 7002);
        assert_eq!(best("youngest", &c), 7000);
        assert_eq!(
            best("priority", &c),
            7000,
            "tie on priority goes to the lowest address"
        );
        assert_eq!(best("priority,oldest", &c), 7002);
        assert_eq!(best("lowest-addr", &c), 7000);
        assert_eq!(best("highest-addr", &c), 7002);
    }

    #[test]
    fn equal_values_fall_to_address_then_instance() {
        let mut a = cand(7000, 100, 0);
        let b = cand(7001, 100, 0);
        let rule = Rule::default();
        assert_eq!(rule.compare(&a, &b), Ordering::Less);
        let mut a2 = a;
        a2.instance = 1;
        a.instance = 2;
        assert_eq!(rule.compare(&a2, &a), Ordering::Less);
    }

    #[test]
    fn the_deciding_criterion_is_the_first_that_differs() {
        let rule: Rule = "priority,oldest".parse().unwrap();
        let (a, b, c) = (cand(7000, 100, 1), cand(7001, 200, 1), cand(7002, 100, 1));
        assert_eq!(
            rule.deciding_criterion(&a, &b),
            Some(Criterion::Oldest),
            "equal priority: start time decides"
        );
        assert_eq!(
            rule.deciding_criterion(&a, &cand(7001, 200, 0)),
            Some(Criterion::Priority)
        );
        assert_eq!(
            rule.deciding_criterion(&a, &c),
            None,
            "a tie: the address decides"
        );
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in ["oldest", "priority,youngest", "highest-addr,lowest-addr"] {
            assert_eq!(s.parse::<Rule>().unwrap().to_string(), s);
        }
        for bad in ["", "old", "oldest,", "oldest,,priority", "a,b,c,d,e,f"] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?}");
        }
        // Issue 11: a repeated criterion could never decide; with each
        // criterion at most once, a rule holds at most five.
        for twice in ["oldest,oldest", "priority,oldest,priority"] {
            assert!(
                twice
                    .parse::<Rule>()
                    .unwrap_err()
                    .to_string()
                    .contains("listed twice"),
                "{twice}"
            );
        }
        assert!(
            "oldest,youngest,priority,lowest-addr,highest-addr"
                .parse::<Rule>()
                .is_ok()
        );
    }
}
