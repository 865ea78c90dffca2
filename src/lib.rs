//! bossd: a small daemon that elects one master among equal servers.
//!
//! Everything that decides is sans-IO: the election [`core`], one
//! connection's [`link`] state and the [`endpoint`] that joins them. The
//! mio loop in [`net`] only moves bytes, reads the clock and runs the
//! [`hooks`]. `ARCHITECTURE.md` maps every module and its invariants.
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
pub mod endpoint;
pub mod event;
pub mod hooks;
pub mod http;
pub mod link;
pub mod log;
pub mod net;
pub mod notify;
pub mod protocol;
pub mod rule;
pub mod state;
pub mod time;
pub mod watch;
