//! The durable epoch of `--state-dir` (guarantee 12, docs/GUARANTEES.md):
//! the highest epoch this node has seen, kept in one small file so that
//! epochs never go back, even when every node of a cluster restarts.
//!
//! It owns the file's format and its atomic replacement: a temporary file
//! written and synced, renamed over the old one, then the directory
//! synced, so a crash or power loss at any moment leaves either the old
//! file or the new one, never a mix. It never decides when to write: the
//! caller persists an epoch before it claims it or reports it, and a write
//! happens only when the epoch grows, once per new epoch, never per
//! heartbeat. It is the only module that touches the state directory.
//!
//! The file, `DIR/bossd.state`, is four lines of text an operator can read:
//!
//! ```text
//! bossd-state 1
//! id 10.0.0.1:7000
//! epoch 42
//! sha256 <64 hex digits: SHA-256 of the three lines above, line ends included>
//! ```
//!
//! The checksum catches a torn or truncated write (a file system that
//! loses the rename's ordering) and a hand edit; the id catches a state
//! directory copied from, or shared with, another node. Either stops the
//! node at start with one line: a state file is never silently reset.

use std::fmt::Write as _;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};

use crate::core::MAX_EPOCH;

/// The state file's name inside `--state-dir`.
pub const STATE_FILE: &str = "bossd.state";

/// The file written before the rename; a leftover from a crash is
/// overwritten by the next write.
const TEMP_FILE: &str = "bossd.state.tmp";

/// The first line: the format's name and version. A later bossd that
/// changes the format writes another version, and this one refuses it
/// rather than guess.
const MAGIC: &str = "bossd-state";
const VERSION: u32 = 1;

/// The most bytes read from a state file. A valid one is under 150 bytes
/// (an IPv6 id, a 16-digit epoch); anything far larger is not one, and
/// must not be read into memory whole.
const MAX_STATE_BYTES: u64 = 4096;

/// What a valid state file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The node the file belongs to, as its `-s` line writes `id=`.
    pub id: String,
    /// The highest epoch that node had seen.
    pub epoch: u64,
}

/// The state file's text for `state`: the exact inverse of [`parse`].
pub fn format(state: &State) -> String {
    let mut text = String::with_capacity(160);
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "{MAGIC} {VERSION}\nid {}\nepoch {}\n",
        state.id, state.epoch
    );
    let sum = checksum(&text);
    let _ = writeln!(text, "sha256 {sum}");
    text
}

/// Reads a state file's text; `Err` says what is wrong in words an
/// operator can act on.
pub fn parse(text: &str) -> Result<State, String> {
    let magic = text.split('\n').next().unwrap_or_default();
    match magic.split_once(' ') {
        Some((MAGIC, v)) if v == VERSION.to_string() => {}
        Some((MAGIC, v)) => {
            return Err(format!(
                "it is in format version {v:?}, and this bossd reads version {VERSION} only"
            ));
        }
        _ => return Err(format!("it is not a bossd state file (no {MAGIC:?} line)")),
    }
    let Some(body) = text.strip_suffix('\n') else {
        return Err("it is truncated (no line end at the end)".into());
    };
    let lines: Vec<&str> = body.split('\n').collect();
    let [_, id, epoch, sum] = lines[..] else {
        return Err(format!(
            "it has {} lines, not 4 (truncated or edited)",
            lines.len()
        ));
    };
    let covered = &text[..text.len() - sum.len() - 1];
    match sum.strip_prefix("sha256 ") {
        Some(sum) if sum == checksum(covered) => {}
        Some(_) => {
            return Err(
                "its checksum does not match its contents (a torn write, or edited by hand)".into(),
            );
        }
        None => return Err("its last line is not \"sha256 <hex>\"".into()),
    }
    let id = id
        .strip_prefix("id ")
        .ok_or("its second line is not \"id <ip:port>\"")?;
    let epoch = epoch
        .strip_prefix("epoch ")
        .and_then(|e| e.parse::<u64>().ok())
        .ok_or("its third line is not \"epoch <number>\"")?;
    if epoch > MAX_EPOCH {
        return Err(format!(
            "its epoch {epoch} is above the largest an epoch can be, {MAX_EPOCH}"
        ));
    }
    Ok(State {
        id: id.to_owned(),
        epoch,
    })
}

/// An open `--state-dir`: where the file is, and the highest epoch on
/// disk, which only grows.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    id: String,
    /// The epoch in the file now.
    highest: u64,
    /// Files written since [`StateDir::open`], the one at open included.
    writes: u64,
}

impl StateDir {
    /// Opens `dir` for the node `id` at start: creates the directory if it
    /// is missing (mode 700, as systemd's `StateDirectory=` would), reads
    /// the state file, and writes it back at once, so that a directory
    /// this node cannot write stops it now rather than at its first claim.
    ///
    /// Returns the highest epoch on disk, `None` when there was no state
    /// file (a first start). An unreadable, corrupt, truncated or foreign
    /// file (another node's, another format) is an error of one line that
    /// names the file and says why; the caller prints it and exits 1. The
    /// node is never started with the file silently reset.
    pub fn open(dir: &Path, id: SocketAddr) -> Result<(StateDir, Option<u64>)> {
        let id = id.to_string();
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("--state-dir {}: not a directory", dir.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("--state-dir {}: cannot create it", dir.display()))?,
            Err(e) => bail!("--state-dir {}: {e}", dir.display()),
        }
        let path = dir.join(STATE_FILE);
        let found = read(&path)?;
        if let Some(state) = &found
            && state.id != id
        {
            bail!(
                "state file {} belongs to node {}, not to {id}: give this node its own --state-dir \
                 (if this node was renamed, move the file away; its epoch floor is then lost)",
                path.display(),
                state.id
            );
        }
        let highest = found.as_ref().map(|s| s.epoch);
        let mut state_dir = StateDir {
            dir: dir.to_owned(),
            id,
            highest: highest.unwrap_or(0),
            writes: 0,
        };
        state_dir
            .write(state_dir.highest)
            .with_context(|| format!("--state-dir {}: cannot write in it", dir.display()))?;
        Ok((state_dir, highest))
    }

    /// Makes `epoch` durable if it is above the highest on disk; an epoch
    /// not above it writes nothing. When this returns `Ok`, the epoch
    /// survives a crash or a power loss. On an error the file still holds
    /// the old epoch, and the caller must not claim or report the new one.
    pub fn persist(&mut self, epoch: u64) -> io::Result<()> {
        if epoch <= self.highest {
            return Ok(());
        }
        self.write(epoch)
    }

    /// The highest epoch on disk.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Files written since [`StateDir::open`], the one at open included:
    /// one more per new epoch, none per heartbeat.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The state file's path, for log lines.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Replaces the file with one holding `epoch`: temp file, fsync,
    /// rename, fsync of the directory (the rename is durable only then).
    fn write(&mut self, epoch: u64) -> io::Result<()> {
        let text = format(&State {
            id: self.id.clone(),
            epoch,
        });
        let temp = self.dir.join(TEMP_FILE);
        let at = |what: &str, path: &Path| {
            let path = path.display().to_string();
            let what = what.to_owned();
            move |e: io::Error| io::Error::new(e.kind(), format!("{what} {path}: {e}"))
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(at("cannot create", &temp))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(at("cannot write", &temp))?;
        drop(file);
        let path = self.path();
        fs::rename(&temp, &path).map_err(at("cannot rename over", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(at("cannot sync the directory", &self.dir))?;
        self.highest = epoch;
        self.writes += 1;
        Ok(())
    }
}

/// The state file at `path`, `None` if there is none.
fn read(path: &Path) -> Result<Option<State>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("state file {} is unreadable: {e}", path.display()),
    };
    let mut bytes = Vec::with_capacity(256);
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("state file {} is unreadable", path.display()))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        bail!(
            "state file {} is corrupt: it is larger than {MAX_STATE_BYTES} bytes, far more than a state file holds",
            path.display()
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("state file {} is corrupt: not UTF-8 text", path.display()))?;
    parse(&text)
        .map(Some)
        .map_err(|why| anyhow::anyhow!("state file {} is corrupt: {why}", path.display()))
}

/// SHA-256 of `text`, in lowercase hex.
fn checksum(text: &str) -> String {
    crate::auth::hex(&Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: u64) -> State {
        State {
            id: "127.0.0.1:7000".into(),
            epoch,
        }
    }

    fn id() -> SocketAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    /// A fresh directory under the system's temp dir, removed on drop.
    struct Temp(PathBuf);

    impl Temp {
        fn new(tag: &str) -> Temp {
            let dir = std::env::temp_dir().join(format!(
                "bossd-state-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Temp(dir)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn open_err(dir: &Path) -> String {
        format!("{:#}", StateDir::open(dir, id()).unwrap_err())
    }

    #[test]
    fn format_and_parse_are_inverse() {
        for epoch in [0, 1, 42, MAX_EPOCH] {
            assert_eq!(parse(&format(&state(epoch))), Ok(state(epoch)));
        }
        let v6 = State {
            id: "[::1]:7000".into(),
            epoch: 7,
        };
        assert_eq!(parse(&format(&v6)), Ok(v6));
        let text = format(&state(42));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..3],
            ["bossd-state 1", "id 127.0.0.1:7000", "epoch 42"]
        );
        assert_eq!(lines[3].len(), "sha256 ".len() + 64);
    }

    // A torn, truncated or edited file is refused, never read as another epoch.
    #[test]
    fn damage_is_detected() {
        let text = format(&state(42));
        for cut in 0..text.len() {
            assert!(parse(&text[..cut]).is_err(), "cut at {cut}");
        }
        let edited = text.replace("epoch 42", "epoch 43");
        assert!(parse(&edited).unwrap_err().contains("checksum"));
        let mut flipped = text.clone().into_bytes();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x01;
            if let Ok(t) = std::str::from_utf8(&flipped) {
                assert!(parse(t).is_err(), "bit flipped at {i}");
            }
            flipped[i] ^= 0x01;
        }
        assert!(parse(&format!("{text}extra\n")).is_err());
        assert!(parse("").unwrap_err().contains("not a bossd state file"));
        assert!(
            parse("42\n")
                .unwrap_err()
                .contains("not a bossd state file")
        );
        let v2 = text.replace("bossd-state 1", "bossd-state 2");
        assert!(parse(&v2).unwrap_err().contains("version \"2\""));
    }

    #[test]
    fn a_checksummed_epoch_above_the_largest_is_refused() {
        let text = format(&state(MAX_EPOCH + 1));
        assert!(parse(&text).unwrap_err().contains("largest"));
        let text = format(&state(0)).replace("epoch 0", "epoch x");
        assert!(parse(&text).is_err());
    }

    // Guarantee 12: what is persisted is read back at the next start; a
    // missing directory is created and starts with no floor.
    #[test]
    fn epochs_survive_a_restart() {
        let t = Temp::new("restart");
        let dir = t.0.join("missing/state");
        let (mut s, highest) = StateDir::open(&dir, id()).unwrap();
        assert_eq!(highest, None);
        assert_eq!((s.highest(), s.writes()), (0, 1));
        s.persist(5).unwrap();
        s.persist(5).unwrap();
        s.persist(3).unwrap();
        assert_eq!((s.highest(), s.writes()), (5, 2));
        s.persist(6).unwrap();
        assert_eq!(s.writes(), 3);
        drop(s);
        let (s, highest) = StateDir::open(&dir, id()).unwrap();
        assert_eq!((highest, s.highest()), (Some(6), 6));
        assert!(!dir.join(TEMP_FILE).exists());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&s.path()), 0o600);
    }

    // A temp file left by a crash between write and rename changes nothing.
    #[test]
    fn a_leftover_temp_file_is_ignored() {
        let t = Temp::new("leftover");
        StateDir::open(&t.0, id()).unwrap().0.persist(9).unwrap();
        fs::write(t.0.join(TEMP_FILE), "bossd-state 1\nid 127.0.0.1:7000\nep").unwrap();
        let (mut s, highest) = StateDir::open(&t.0, id()).unwrap();
        assert_eq!(highest, Some(9));
        s.persist(10).unwrap();
        assert_eq!(StateDir::open(&t.0, id()).unwrap().1, Some(10));
    }

    // Guarantee 12: a corrupt file stops the node with one line naming it.
    #[test]
    fn corrupt_and_foreign_files_are_refused() {
        let t = Temp::new("refused");
        let file = t.0.join(STATE_FILE);
        let cases = [
            (String::new(), "not a bossd state file"),
            (format(&state(7))[..30].to_owned(), "truncated"),
            (format(&state(7)).replace("7\n", "8\n"), "checksum"),
            (
                format(&State {
                    id: "127.0.0.1:7001".into(),
                    epoch: 7,
                }),
                "belongs to node 127.0.0.1:7001, not to 127.0.0.1:7000",
            ),
            (
                format(&state(7)).replace("bossd-state 1", "bossd-state 9"),
                "version",
            ),
            ("x".repeat(5000), "larger than"),
        ];
        for (text, why) in cases {
            fs::write(&file, &text).unwrap();
            let e = open_err(&t.0);
            assert!(e.contains(why), "{e:?} lacks {why:?}");
            assert!(e.contains(&file.display().to_string()), "{e:?}");
            assert!(!e.contains('\n'), "{e:?}");
            assert_eq!(fs::read_to_string(&file).unwrap(), text, "left as it was");
        }
        fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(open_err(&t.0).contains("not UTF-8"));
    }

    #[test]
    fn unreadable_and_unwritable_places_are_refused() {
        let t = Temp::new("places");
        // A state file that is a directory cannot be read.
        fs::create_dir(t.0.join(STATE_FILE)).unwrap();
        assert!(open_err(&t.0).contains("unreadable"), "{}", open_err(&t.0));
        // A --state-dir that is a file, or below one.
        let file = t.0.join("plain");
        fs::write(&file, "").unwrap();
        assert!(open_err(&file).contains("not a directory"));
        let below = file.join("sub");
        let e = open_err(&below);
        assert!(
            e.contains(&below.display().to_string()) && e.contains("Not a directory"),
            "{e}"
        );
        // Permissions bind only a user other than root.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt as _;
            let ro = t.0.join("ro");
            fs::create_dir(&ro).unwrap();
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
            assert!(open_err(&ro).contains("cannot write in it"));
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o700)).unwrap();
            StateDir::open(&ro, id()).unwrap();
            fs::set_permissions(ro.join(STATE_FILE), fs::Permissions::from_mode(0o000)).unwrap();
            assert!(open_err(&ro).contains("unreadable"));
        }
    }

    // A failed write leaves the old epoch on disk and in `highest`, so the
    // caller does not claim the new one.
    #[test]
    fn a_failed_persist_keeps_the_old_epoch() {
        let t = Temp::new("failed");
        let (mut s, _) = StateDir::open(&t.0, id()).unwrap();
        s.persist(3).unwrap();
        fs::create_dir(t.0.join(TEMP_FILE)).unwrap();
        let e = s.persist(4).unwrap_err();
        assert!(e.to_string().contains(TEMP_FILE), "{e}");
        assert_eq!((s.highest(), s.writes()), (3, 2));
        fs::remove_dir(t.0.join(TEMP_FILE)).unwrap();
        assert_eq!(StateDir::open(&t.0, id()).unwrap().1, Some(3));
    }
}
