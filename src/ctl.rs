//! `bossd ctl`: sends one console command to a node and prints the answer.
//!
//! A plain blocking client: connect, write one line, read lines until `OK`
//! or `ERR`. It shares nothing with the loop but the console's framing.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::config::CtlArgs;

/// How long ctl waits to connect and for each answer line: a live node
/// answers in microseconds; a wedged one should not hang a script.
const CTL_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's answer: its lines, and `Err(reason)` for an `ERR` line.
pub struct Answer {
    pub lines: Vec<String>,
    pub result: std::result::Result<(), String>,
}

/// An open console connection that asks one command after another, for
/// callers that poll a node (`bossd demo`) and should not pay a connect
/// per question. It does not authenticate: enough for read-only commands.
pub struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects to the node's console; waits at most `CTL_TIMEOUT`.
    pub fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, CTL_TIMEOUT)
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_read_timeout(Some(CTL_TIMEOUT))?;
        // Questions are small and answered at once; Nagle must not hold one back.
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(Client {
            addr,
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// The node this client talks to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one command line and reads its answer up to `OK` or `ERR`.
    pub fn ask(&mut self, command: &str) -> Result<Answer> {
        let addr = self.addr;
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .with_context(|| format!("cannot send to {addr}"))?;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .with_context(|| format!("no answer from {addr}"))?;
            if n == 0 {
                bail!("{addr} closed the connection without an answer");
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line == "OK" {
                return Ok(Answer {
                    lines,
                    result: Ok(()),
                });
            }
            if let Some(reason) = line.strip_prefix("ERR") {
                return Ok(Answer {
                    lines,
                    result: Err(reason.trim_start().to_owned()),
                });
            }
            lines.push(line.to_owned());
        }
    }
}

/// Runs the command; `Ok` carries the node's answer, `Err` a failure to ask.
pub fn run(args: &CtlArgs) -> Result<Answer> {
    if args.secret_file.is_some() {
        bail!("--secret-file is not supported by this build yet");
    }
    let addr = SocketAddr::new(args.ip, args.port);
    let line = args.command.join(" ");
    ask(addr, &line)
}

/// Sends one command line to the node at `addr` and reads its framed answer.
pub fn ask(addr: SocketAddr, command: &str) -> Result<Answer> {
    let stream = TcpStream::connect_timeout(&addr, CTL_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(CTL_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    writer
        .write_all(format!("{command}\n").as_bytes())
        .with_context(|| format!("cannot send to {addr}"))?;
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("no answer from {addr}"))?;
        if n == 0 {
            bail!("{addr} closed the connection without an answer");
        }
        let line = line.trim_end_matches(['\n', '\r']).to_owned();
        if line == "OK" {
            return Ok(Answer {
                lines,
                result: Ok(()),
            });
        }
        if let Some(reason) = line.strip_prefix("ERR") {
            return Ok(Answer {
                lines,
                result: Err(reason.trim_start().to_owned()),
            });
        }
        lines.push(line);
    }
}
