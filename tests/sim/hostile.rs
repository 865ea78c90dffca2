//! A hostile member for the simulator (issue 10): it follows the handshake,
//! then sends well-formed messages chosen from a seed, true or not.
//!
//! It is pure, like a core: the cluster tells it what arrived
//! ([`Hostile::on_line`], [`Hostile::on_closed`]) and when its timer is due
//! ([`Hostile::on_tick`]), and carries out what it returns ([`Out`]). It
//! speaks only in [`Message`]s, so it moves with the simulator onto bytes.
//!
//! What it sends: extreme epochs (0, the top of the range and past it, a
//! day ahead of the wall clock and one more, random) and start times,
//! claims for masters that do not exist, its own, honest and made-up
//! addresses in HELLO, MEET, REDIRECT and STATE, floods of MEETs naming
//! thousands of addresses, LEAVE under another member's name, HELLO,
//! REFUSE and REDIRECT after the handshake, PINGs with absurd echoes,
//! numbers, and MSG text full of control characters.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bossd::core::{LinkId, MAX_EPOCH, MAX_EPOCH_LEAD_MS};

use super::Millis;
use bossd::protocol::{Echo, Health, Hello, LinkKind, Message, Role, State};
use bossd::rule::Rule;

/// What the hostile member does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Anything, from the seed.
    Chaos,
    /// A well-formed HELLO, then at once a STATE with an epoch past the
    /// top of the range, on every link; redials whoever drops it a few ms
    /// later, for ever.
    ViolateEveryLink,
}

/// What the cluster must do for the hostile member.
#[derive(Clone, Debug)]
pub enum Out {
    Send(LinkId, Message),
    Close(LinkId),
    /// Open a link to this member and send `Message` (a HELLO) on it.
    Dial(SocketAddr, Message),
}

/// Settings the hostile member copies to get through the handshake.
#[derive(Clone, Debug)]
pub struct Cover {
    pub addr: SocketAddr,
    pub quorum: u32,
    pub strict: bool,
    pub rule: Rule,
    pub no_preempt: bool,
    pub preempt_delay_ms: u64,
    /// Wall clock of the honest nodes at virtual time 0, unix ms.
    pub wall_at_zero_ms: u64,
}

pub struct Hostile {
    mode: Mode,
    cover: Cover,
    rng: u64,
    /// Honest members it knows of.
    members: Vec<SocketAddr>,
    /// Its links: whether the handshake finished on each.
    links: BTreeMap<LinkId, bool>,
    /// When its timer is due.
    next_ms: Millis,
    /// Instances honest members announced, to impersonate them.
    instances: Vec<u64>,
    /// The highest epoch it heard, to lie just above it.
    heard_epoch: u64,
    /// Lines it sent, by name.
    pub sent: BTreeMap<&'static str, u64>,
}

impl Hostile {
    pub fn new(seed: u64, mode: Mode, cover: Cover, members: Vec<SocketAddr>) -> Hostile {
        Hostile {
            mode,
            cover,
            rng: seed ^ 0x4057_11e0,
            members,
            links: BTreeMap::new(),
            next_ms: 0,
            instances: Vec::new(),
            heard_epoch: 0,
            sent: BTreeMap::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.cover.addr
    }

    /// When [`Hostile::on_tick`] is due.
    pub fn next_deadline(&self) -> Millis {
        self.next_ms
    }

    /// The cluster opened `link` for a [`Out::Dial`] of ours.
    pub fn on_dialed(&mut self, link: LinkId) {
        self.links.insert(link, false);
    }

    /// A line arrived on `link` (a new link when it is an honest dial).
    pub fn on_line(&mut self, link: LinkId, msg: Message, now: Millis) -> Vec<Out> {
        let mut out = Vec::new();
        let established = self.links.get(&link).copied();
        match msg {
            Message::Hello(h) => {
                self.instances.push(h.instance);
                if !self.members.contains(&h.addr) {
                    self.members.push(h.addr);
                }
                if established == Some(false) {
                    // Its own dial answered.
                    self.links.insert(link, true);
                } else if established.is_none() {
                    // An honest dial: answer, usually as itself.
                    self.links.insert(link, true);
                    let hello = match self.mode {
                        Mode::Chaos => self.hello(h.kind, now),
                        Mode::ViolateEveryLink => self.hello_as(h.kind, self.cover.addr, now),
                    };
                    out.push(Out::Send(link, hello));
                }
                if self.mode == Mode::ViolateEveryLink {
                    out.push(Out::Send(link, self.past_the_top()));
                } else if self.below(2) == 0 {
                    let state = self.state(now);
                    out.push(Out::Send(link, state));
                }
            }
            Message::State(s) => self.heard_epoch = self.heard_epoch.max(s.epoch),
            Message::Ping { seq, .. } if self.mode == Mode::Chaos => {
                let replied_unix_ms = match self.below(4) {
                    0 => self.extreme_time(now),
                    _ => self.cover.wall_at_zero_ms.saturating_add(now),
                };
                let seq = if self.below(4) == 0 {
                    self.any_u64()
                } else {
                    seq
                };
                let held_ms = match self.below(4) {
                    0 => self.any_u64(),
                    _ => self.below(100),
                };
                out.push(Out::Send(
                    link,
                    Message::Ping {
                        seq: self.any_u64(),
                        view: self.any_u64(),
                        fresh_ms: self.any_u64(),
                        echo: Some(Echo {
                            seq,
                            held_ms,
                            stamp_unix_ms: replied_unix_ms,
                        }),
                    },
                ));
            }
            _ => {}
        }
        out.iter().for_each(|o| self.count(o));
        out
    }

    /// The far end closed `link`.
    pub fn on_closed(&mut self, link: LinkId, now: Millis) {
        self.links.remove(&link);
        if self.mode == Mode::ViolateEveryLink {
            // Back at once, well almost.
            let soon = now + 1 + self.below(5);
            self.next_ms = self.next_ms.min(soon);
        }
    }

    /// Its timer: says or does the next thing.
    pub fn on_tick(&mut self, now: Millis) -> Vec<Out> {
        let mut out = Vec::new();
        match self.mode {
            Mode::ViolateEveryLink => {
                // Keep a link to every member it knows.
                let members = self.members.clone();
                for m in members {
                    let hello = self.hello_as(LinkKind::Mesh, self.cover.addr, now);
                    out.push(Out::Dial(m, hello));
                }
                self.next_ms = now + 200 + self.below(300);
            }
            Mode::Chaos => {
                self.chaos(now, &mut out);
                self.next_ms = now + 5 + self.below(300);
            }
        }
        out.iter().for_each(|o| self.count(o));
        out
    }

    fn chaos(&mut self, now: Millis, out: &mut Vec<Out>) {
        let established: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, e)| **e)
            .map(|(l, _)| *l)
            .collect();
        let roll = self.below(100);
        if established.is_empty() || roll < 12 {
            if let Some(m) = self.pick(&self.members.clone()) {
                let kind = if self.below(2) == 0 {
                    LinkKind::Join
                } else {
                    LinkKind::Mesh
                };
                let hello = self.hello(kind, now);
                out.push(Out::Dial(m, hello));
            }
            return;
        }
        let link = established[self.below(established.len() as u64) as usize];
        match roll {
            12..=15 => {
                self.links.remove(&link);
                out.push(Out::Close(link));
            }
            16 | 17 => {
                // A flood of introductions of addresses nobody holds, up
                // to past the bound on one peer's (MAX_INTRODUCED_PER_PEER).
                let n = 1 + self.below(1200);
                for _ in 0..n {
                    let a = self.fake_addr();
                    out.push(Out::Send(link, Message::Meet(a)));
                }
            }
            18 | 19 => {
                // The same address, over and over.
                let a = self.any_addr();
                for _ in 0..self.below(200) {
                    out.push(Out::Send(link, Message::Meet(a)));
                }
            }
            _ => {
                let msg = self.message(now);
                out.push(Out::Send(link, msg));
            }
        }
    }

    /// One well-formed message, anything but a flood.
    fn message(&mut self, now: Millis) -> Message {
        match self.below(13) {
            0..=2 => self.state(now),
            11 => Message::Rank {
                health: self.health(),
                priority: self.any_u64() as i32,
            },
            12 => Message::Release {
                epoch: self.epoch(now),
                next: match self.below(3) {
                    0 => None,
                    1 => Some(self.cover.addr),
                    _ => Some(self.any_addr()),
                },
            },
            3 => Message::Meet(self.any_addr()),
            4 => Message::Msg(self.text()),
            5 => Message::Leave,
            6 => Message::Ping {
                seq: self.any_u64(),
                view: self.any_u64(),
                fresh_ms: self.any_u64(),
                echo: None,
            },
            7 => Message::Ping {
                seq: self.any_u64(),
                view: self.any_u64(),
                fresh_ms: self.any_u64(),
                echo: Some(Echo {
                    seq: self.below(200),
                    held_ms: self.below(200),
                    stamp_unix_ms: self.extreme_time(now),
                }),
            },
            8 => {
                let kind = if self.below(2) == 0 {
                    LinkKind::Join
                } else {
                    LinkKind::Mesh
                };
                self.hello(kind, now)
            }
            9 => Message::Redirect(self.any_addr()),
            _ => Message::Refuse(self.text()),
        }
    }

    fn state(&mut self, now: Millis) -> Message {
        let role = match self.below(3) {
            0 => Role::Master,
            1 => Role::Follower,
            _ => Role::None,
        };
        let epoch = self.epoch(now);
        let epoch_master = match self.below(4) {
            0 => None,
            1 => Some(self.cover.addr),
            _ => Some(self.any_addr()),
        };
        Message::State(State {
            role,
            epoch,
            epoch_master,
        })
    }

    fn health(&mut self) -> Health {
        match self.below(3) {
            0 => Health::Ok,
            1 => Health::Failing,
            _ => Health::Standby,
        }
    }

    fn past_the_top(&self) -> Message {
        Message::State(State {
            role: Role::Follower,
            epoch: u64::MAX - 1,
            epoch_master: self.members.first().copied(),
        })
    }

    /// An epoch at the edges: of the range, of the jump bound, of what
    /// it heard.
    fn epoch(&mut self, now: Millis) -> u64 {
        let ahead = self
            .cover
            .wall_at_zero_ms
            .saturating_add(now)
            .saturating_add(MAX_EPOCH_LEAD_MS);
        match self.below(12) {
            0 => 0,
            1 => self.heard_epoch,
            2 => self.heard_epoch.saturating_add(1 + self.below(3)),
            3 => ahead,
            4 => ahead + 1,
            5 => MAX_EPOCH - 1,
            6 => MAX_EPOCH,
            7 => MAX_EPOCH + 1,
            8 => u64::MAX - 1,
            9 => u64::MAX,
            10 => self.below(ahead),
            _ => self.any_u64(),
        }
    }

    fn extreme_time(&mut self, now: Millis) -> u64 {
        match self.below(5) {
            0 => 0,
            1 => u64::MAX,
            2 => i64::MAX as u64 + self.below(3),
            3 => self.cover.wall_at_zero_ms.saturating_add(now) + self.below(1 << 40),
            _ => self.any_u64(),
        }
    }

    fn hello(&mut self, kind: LinkKind, now: Millis) -> Message {
        // Mostly as itself; sometimes as an honest member or a stranger.
        let addr = match self.below(8) {
            0 => self.pick(&self.members.clone()).unwrap_or(self.cover.addr),
            1 => self.fake_addr(),
            _ => self.cover.addr,
        };
        self.hello_as(kind, addr, now)
    }

    fn hello_as(&mut self, kind: LinkKind, addr: SocketAddr, now: Millis) -> Message {
        let chaos = self.mode == Mode::Chaos;
        let started_unix_ms = match self.below(if chaos { 6 } else { 1 }) {
            0 => self.cover.wall_at_zero_ms.saturating_add(now),
            1 => 0,
            2 => u64::MAX,
            3 => 253_402_300_800_000 + self.below(1000),
            _ => self.any_u64(),
        };
        let priority = match self.below(if chaos { 4 } else { 1 }) {
            0 => 0,
            1 => i32::MIN,
            2 => i32::MAX,
            _ => self.any_u64() as i32,
        };
        let instance = match (chaos, self.pick_u64(&self.instances.clone())) {
            (true, Some(i)) if self.below(6) == 0 => i,
            _ => self.any_u64(),
        };
        // A mismatch now and then, which is refused.
        let quorum = if chaos && self.below(20) == 0 {
            self.cover.quorum + 1
        } else {
            self.cover.quorum
        };
        Message::Hello(Hello {
            kind,
            addr,
            started_unix_ms,
            instance,
            priority,
            quorum,
            strict: self.cover.strict,
            rule: self.cover.rule.clone(),
            no_preempt: self.cover.no_preempt,
            preempt_delay_ms: self.cover.preempt_delay_ms,
            health: self.health(),
        })
    }

    fn text(&mut self) -> String {
        const PIECES: [&str; 10] = [
            "\u{1b}[2J",
            "\u{7}",
            "\0",
            "\r",
            "\u{7f}",
            "\u{9b}31m",
            "\u{202e}",
            "message from 127.0.0.1:7000: ",
            "ok",
            " ",
        ];
        (0..self.below(8))
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn any_addr(&mut self) -> SocketAddr {
        match self.below(4) {
            0 => self.cover.addr,
            1 => self.fake_addr(),
            _ => self.pick(&self.members.clone()).unwrap_or(self.cover.addr),
        }
    }

    /// An address no simulated node holds.
    fn fake_addr(&mut self) -> SocketAddr {
        let port = 20_000 + self.below(40_000) as u16;
        SocketAddr::from(([127, 0, 5, 1 + self.below(250) as u8], port))
    }

    fn pick(&mut self, from: &[SocketAddr]) -> Option<SocketAddr> {
        (!from.is_empty()).then(|| from[self.below(from.len() as u64) as usize])
    }

    fn pick_u64(&mut self, from: &[u64]) -> Option<u64> {
        (!from.is_empty()).then(|| from[self.below(from.len() as u64) as usize])
    }

    fn count(&mut self, out: &Out) {
        let name = match out {
            Out::Send(_, m) | Out::Dial(_, m) => m.name(),
            Out::Close(_) => "close",
        };
        *self.sent.entry(name).or_insert(0) += 1;
    }

    fn any_u64(&mut self) -> u64 {
        self.next()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn next(&mut self) -> u64 {
        super::splitmix(&mut self.rng)
    }
}
