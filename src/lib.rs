//! bossd: a small daemon that elects one master among equal servers.
//!
//! The crate is a pure election [`core`] inside a thin mio [`net`] loop;
//! [`protocol`] frames and parses the peer lines, [`console`] the operator
//! commands, [`config`] the command line, [`hooks`] the `--notify` hook, [`notify`] systemd's readiness and watchdog, [`state`] the
//! durable epoch of `--state-dir`, [`watch`] the `-w` and `/events` streams. `ARCHITECTURE.md` maps it.
//!
//! No `println!` or `eprintln!`: they panic on a closed pipe, and the
//! release build aborts on a panic. Output goes through [`log`].

#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod auth;
pub mod config;
pub mod console;
pub mod core;
pub mod ctl;
pub mod demo;
pub mod hooks;
pub mod http;
pub mod log;
pub mod net;
pub mod notify;
pub mod protocol;
pub mod rule;
pub mod state;
pub mod watch;
