//! The election core under libFuzzer, driven as the loop drives it (issue
//! 10): the input is a script of connections accepted and dialed, lines
//! (any well-formed message with edge values: epochs at the top of the
//! range and of the lead bound, start times past the year 9999, made-up
//! addresses), undecodable lines, closes, time passing (a millisecond or
//! a stall of days), and operator commands (`-c`, `--join`, `-forget`,
//! `-msg`, `-q`), under a configuration from the input, wall clock and
//! timeouts at the ends of the range included.
//!
//! Checked, besides "never panics" (guarantee 9, docs/GUARANTEES.md, and
//! the core's own asserts):
//! - the epoch never goes back and never passes `MAX_EPOCH`;
//! - what a peer can make the core hold stays within its bounds: the
//!   reconnect set, dials in flight, introductions per peer, the journal;
//! - every Connect is answered (as the loop does) and every Close leads
//!   to `handle_link_closed`;
//! - no delivered `-msg` text holds a control character;
//! - everything an operator can read renders: `-s`, `-cl`, `-r`, `-j`,
//!   `/status`, `/metrics`.

#![no_main]

use std::net::SocketAddr;

use bossd::console::{self, Clock};
use bossd::core::{
    Action, Config, JOURNAL_LEN, LinkId, MAX_DIALS_IN_FLIGHT, MAX_EPOCH, MAX_EPOCH_LEAD_MS,
    MAX_INTRODUCED_PER_PEER, MAX_WANTED, Node,
};
use bossd::protocol::{Echo, Health, Hello, LinkKind, Message, Role, State};
use bossd::rule::Rule;
use bossd::time::{Mono, Wall};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});

/// This node's address; the others come from a small pool, so that lines
/// name members the node knows.
const ME: ([u8; 4], u16) = ([127, 0, 0, 1], 7000);

const RULES: [&str; 4] = ["oldest", "youngest", "priority,oldest", "lowest-addr"];

struct Driver {
    node: Node,
    now: Mono,
    next_link: LinkId,
    /// Links the node knows of.
    links: Vec<LinkId>,
    /// Connects asked for and not yet answered.
    dials: Vec<(SocketAddr, LinkKind)>,
    wall_at_zero_ms: u64,
    epoch: u64,
    rule: Rule,
    quorum: u32,
    strict: bool,
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let heartbeat_ms: u64 = match u.int_in_range(0..=3)? {
        0 => 100,
        1 => 1,
        2 => u.int_in_range(1..=10_000)?,
        _ => u64::MAX / 4,
    };
    let timeout_ms = match u.int_in_range(0..=3)? {
        0 => heartbeat_ms.saturating_mul(5),
        1 => u64::MAX,
        _ => heartbeat_ms.saturating_mul(2).saturating_add(u.int_in_range(1..=10_000)?),
    };
    let wall_at_zero_ms = match u.int_in_range(0..=5)? {
        0 => 0,
        1 => MAX_EPOCH - MAX_EPOCH_LEAD_MS,
        2 => MAX_EPOCH,
        3 => u64::MAX,
        4 => u.arbitrary()?,
        _ => 1_800_000_000_000,
    };
    let rule: Rule = RULES[u.int_in_range(0..=RULES.len() - 1)?]
        .parse()
        .expect("a valid rule");
    let quorum = u.int_in_range(1..=4)?;
    let strict = u.arbitrary()?;
    let reconnect_timeout_ms = match u.int_in_range(0..=2)? {
        0 => timeout_ms,
        1 => u64::MAX,
        _ => timeout_ms.saturating_add(u.int_in_range(0..=100_000)?),
    };
    let cfg = Config {
        addr: SocketAddr::from(ME),
        started_unix_ms: u.arbitrary()?,
        instance: 1,
        priority: u.arbitrary()?,
        quorum,
        strict,
        rule: rule.clone(),
        heartbeat_ms,
        timeout_ms,
        reconnect_timeout_ms,
        seed: u.arbitrary()?,
        wall_at_zero: Wall(wall_at_zero_ms),
        durable: None,
        checked: false,
        no_preempt: false,
        preempt_delay_ms: 0,
    };
    let mut d = Driver {
        node: Node::new(cfg),
        now: Mono::ZERO,
        next_link: 1,
        links: Vec::new(),
        dials: Vec::new(),
        wall_at_zero_ms,
        epoch: 0,
        rule,
        quorum,
        strict,
    };
    d.settle();
    while !u.is_empty() {
        d.step(&mut u)?;
        d.settle();
        d.check();
    }
    d.read_everything();
    Ok(())
}

impl Driver {
    fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        match u.int_in_range(0..=12)? {
            // A connection whose first line is a HELLO.
            0 | 1 => {
                let link = self.new_link();
                self.node.handle_accepted(link, self.now);
                self.links.push(link);
                let hello = self.hello(u)?;
                self.node.handle_message(link, hello, self.now);
            }
            // A line on a known link.
            2..=5 => {
                if let Some(link) = self.pick_link(u)? {
                    let msg = self.message(u)?;
                    self.node.handle_message(link, msg, self.now);
                }
            }
            // The loop answers a Connect: opened, or failed at once.
            6 => {
                if !self.dials.is_empty() {
                    let i = u.choose_index(self.dials.len())?;
                    let (addr, kind) = self.dials.swap_remove(i);
                    if u.arbitrary()? {
                        let link = self.new_link();
                        self.links.push(link);
                        self.node.handle_dialed(link, addr, kind, self.now);
                    } else {
                        self.node
                            .handle_dial_failed(addr, "connection refused", self.now);
                    }
                }
            }
            // The far end closes, or a line does not decode.
            7 => {
                if let Some(link) = self.pick_link(u)? {
                    if u.arbitrary()? {
                        self.links.retain(|l| *l != link);
                        self.node.handle_link_closed(link, self.now);
                    } else {
                        self.node
                            .handle_protocol_violation(link, "malformed line", self.now);
                    }
                }
            }
            // Time passes: a moment, a heartbeat, a stall, days.
            8 | 9 => {
                let dt: u64 = match u.int_in_range(0..=4)? {
                    0 => u.int_in_range(0..=10)?,
                    1 => u.int_in_range(0..=1_000)?,
                    2 => u.int_in_range(0..=100_000)?,
                    3 => u.int_in_range(0..=100_000_000_000)?,
                    _ => u.arbitrary()?,
                };
                self.now = self.now.plus(dt);
                self.node.handle_timeout(self.now);
            }
            // Operator commands.
            10 => {
                let addr = self.addr(u)?;
                let _ = match u.int_in_range(0..=7)? {
                    0 => self.node.connect(addr, self.now).map_err(drop),
                    1 => self.node.join(addr, self.now).map_err(drop),
                    2 => self.node.forget(addr, self.now).map_err(drop),
                    // Eligibility (issue 13): checks, standby, priority,
                    // handover, and the loop saying the hooks ended.
                    3 => {
                        self.node.handle_check(u.arbitrary()?, self.now);
                        Ok(())
                    }
                    4 => {
                        self.node.set_standby(u.arbitrary()?, self.now);
                        Ok(())
                    }
                    5 => {
                        self.node.set_priority(u.arbitrary()?, self.now);
                        Ok(())
                    }
                    6 => {
                        let to = if u.arbitrary()? { Some(addr) } else { None };
                        self.node.handover(to, self.now).map(drop).map_err(drop)
                    }
                    _ => {
                        self.node.handle_hook_ended(self.now);
                        Ok(())
                    }
                };
            }
            11 => {
                let text: String = u.arbitrary()?;
                self.node.send_text(&text);
            }
            _ => {
                if u.int_in_range(0..=15)? == 0 {
                    self.node.leave(self.now);
                }
            }
        }
        Ok(())
    }

    /// Carries out the node's actions as the loop does, until none is left.
    fn settle(&mut self) {
        loop {
            let mut closed = Vec::new();
            let mut any = false;
            while let Some(action) = self.node.poll_action() {
                any = true;
                match action {
                    Action::Connect { addr, kind } => self.dials.push((addr, kind)),
                    Action::Close(link) => closed.push(link),
                    Action::Deliver { text, .. } => {
                        assert!(
                            !text.chars().any(char::is_control),
                            "a control character reached the console: {text:?}"
                        );
                    }
                    Action::Send(..)
                    | Action::Log(..)
                    | Action::RoleChanged(_)
                    | Action::Persist(_) => {}
                }
            }
            for link in closed {
                self.links.retain(|l| *l != link);
                self.node.handle_link_closed(link, self.now);
            }
            if !any {
                return;
            }
        }
    }

    fn check(&mut self) {
        let epoch = self.node.epoch();
        assert!(epoch >= self.epoch, "the epoch went back");
        assert!(epoch <= MAX_EPOCH, "the epoch passed MAX_EPOCH");
        self.epoch = epoch;
        let c = self.node.counts();
        assert!(c.wanted <= MAX_WANTED, "{c:?}");
        assert!(c.dials_in_flight <= MAX_DIALS_IN_FLIGHT, "{c:?}");
        assert!(c.journal <= JOURNAL_LEN, "{c:?}");
        assert!(self.node.introduced_by_one_peer() <= MAX_INTRODUCED_PER_PEER);
        let _ = self.node.next_deadline();
    }

    fn read_everything(&mut self) {
        let clock = Clock {
            now: self.now,
            wall_at_zero: Wall(self.wall_at_zero_ms),
        };
        for line in ["-s", "-cl", "-r", "-j", "-t", "-cn", "-m", "-h"] {
            let cmd = console::parse(line).expect("a command").expect("not blank");
            console::execute(cmd, &mut self.node, clock);
        }
        bossd::http::status(&self.node, clock);
        let counters = bossd::http::Counters::default();
        bossd::http::metrics(&self.node, &counters, bossd::http::Open::default());
    }

    fn new_link(&mut self) -> LinkId {
        self.next_link += 1;
        self.next_link
    }

    fn pick_link(&mut self, u: &mut Unstructured) -> Result<Option<LinkId>> {
        if self.links.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.links[u.choose_index(self.links.len())?]))
    }

    fn addr(&self, u: &mut Unstructured) -> Result<SocketAddr> {
        Ok(match u.int_in_range(0..=9)? {
            0 => SocketAddr::from(ME),
            1 => SocketAddr::from(([127, 0, 5, u.arbitrary()?], u.arbitrary()?)),
            2 => "[::1]:7000".parse().expect("an address"),
            n => SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16)),
        })
    }

    fn epoch(&self, u: &mut Unstructured) -> Result<u64> {
        let ahead = self
            .wall_at_zero_ms
            .saturating_add(self.now.ms())
            .saturating_add(MAX_EPOCH_LEAD_MS);
        Ok(match u.int_in_range(0..=10)? {
            0 => 0,
            1 => self.epoch,
            2 => self.epoch.saturating_add(1),
            3 => ahead,
            4 => ahead.saturating_add(1),
            5 => MAX_EPOCH - 1,
            6 => MAX_EPOCH,
            7 => MAX_EPOCH + 1,
            8 => u64::MAX,
            9 => u.int_in_range(0..=16)?,
            _ => u.arbitrary()?,
        })
    }

    fn time(&self, u: &mut Unstructured) -> Result<u64> {
        Ok(match u.int_in_range(0..=4)? {
            0 => 0,
            1 => u64::MAX,
            2 => 253_402_300_800_000,
            3 => self.wall_at_zero_ms.saturating_add(self.now.ms()),
            _ => u.arbitrary()?,
        })
    }

    fn hello(&self, u: &mut Unstructured) -> Result<Message> {
        let rule = if u.int_in_range(0..=7)? == 0 {
            RULES[u.int_in_range(0..=RULES.len() - 1)?]
                .parse()
                .expect("a valid rule")
        } else {
            self.rule.clone()
        };
        Ok(Message::Hello(Hello {
            kind: if u.arbitrary()? {
                LinkKind::Join
            } else {
                LinkKind::Mesh
            },
            addr: self.addr(u)?,
            started_unix_ms: self.time(u)?,
            instance: u.int_in_range(0..=4)?,
            priority: u.arbitrary()?,
            quorum: if u.int_in_range(0..=7)? == 0 {
                u.arbitrary()?
            } else {
                self.quorum
            },
            strict: if u.int_in_range(0..=7)? == 0 {
                !self.strict
            } else {
                self.strict
            },
            rule,
            no_preempt: false,
            preempt_delay_ms: 0,
            health: self.health(u)?,
        }))
    }

    fn health(&self, u: &mut Unstructured) -> Result<Health> {
        Ok(match u.int_in_range(0..=2)? {
            0 => Health::Ok,
            1 => Health::Failing,
            _ => Health::Standby,
        })
    }

    fn message(&self, u: &mut Unstructured) -> Result<Message> {
        Ok(match u.int_in_range(0..=11)? {
            0 => self.hello(u)?,
            10 => Message::Rank {
                health: self.health(u)?,
                priority: u.arbitrary()?,
            },
            11 => Message::Release {
                epoch: self.epoch(u)?,
                next: if u.arbitrary()? {
                    Some(self.addr(u)?)
                } else {
                    None
                },
            },
            1 => Message::Refuse(u.arbitrary()?),
            2 => Message::Redirect(self.addr(u)?),
            3 | 4 => Message::State(State {
                role: match u.int_in_range(0..=2)? {
                    0 => Role::Master,
                    1 => Role::Follower,
                    _ => Role::None,
                },
                epoch: self.epoch(u)?,
                epoch_master: if u.arbitrary()? {
                    Some(self.addr(u)?)
                } else {
                    None
                },
            }),
            5 => Message::Meet(self.addr(u)?),
            6 => Message::Msg(u.arbitrary()?),
            7 => Message::Leave,
            8 => Message::Ping {
                seq: u.arbitrary()?,
                view: u.arbitrary()?,
                fresh_ms: u.arbitrary()?,
                echo: None,
            },
            _ => Message::Ping {
                seq: u.arbitrary()?,
                view: u.arbitrary()?,
                fresh_ms: u.arbitrary()?,
                echo: Some(Echo {
                    seq: u.int_in_range(0..=100)?,
                    held_ms: u.arbitrary()?,
                    stamp_unix_ms: self.time(u)?,
                }),
            },
        })
    }
}
