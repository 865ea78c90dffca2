#!/usr/bin/env python3
"""Fenced writes to SQLite with bossd's epoch (BOSSD_EPOCH) as the token.

Every master bossd elects gets a larger epoch than any before it. A store
that remembers the highest epoch it has accepted and refuses a write that
carries a lower one turns that into fencing: a master that was deposed
while it was frozen (a long GC pause, a suspended VM, SIGSTOP) and writes
when it wakes up carries its old epoch, and its late write is rejected,
even though it still believes it is the master.

The check must happen in the store, atomically with the write: here one
SQLite transaction raises the fence (UPDATE fence ... WHERE epoch < ? OR
(epoch = ? AND holder = ?)) and writes only if that matched. Asking bossd "am I master?"
first and then writing is not fencing: the answer can be stale by the
time the write lands.

    fenced_sqlite.py --db PATH write KEY VALUE   token from BOSSD_EPOCH, BOSSD_ID
    fenced_sqlite.py --db PATH show              the fence and the rows

Exit codes: 0 written, 3 rejected by the fence, 2 usage, 1 another error.
A write is accepted when its epoch is above the highest the store has
seen, or equal to it and from the same holder (BOSSD_ID): one master
writes many times. Without --strict, two sides of a cut network can each
elect a master with the same epoch (only the pair epoch, master is
unique); the first to write holds that epoch, and the other is refused.

From a --notify hook, where bossd sets BOSSD_EPOCH:

    bossd 10.0.0.1 7000 --notify \
      '[ "$BOSSD_ROLE" = master ] && fenced_sqlite.py --db /srv/app.db write owner "$BOSSD_ID"'

A service wrapper keeps the BOSSD_EPOCH its hook was given and passes it
with every write. Standard library only (sqlite3).
"""

import argparse
import os
import sqlite3
import sys

SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  INTEGER NOT NULL,
    holder TEXT NOT NULL
);
INSERT OR IGNORE INTO fence (id, epoch, holder) VALUES (1, 0, '-');
CREATE TABLE IF NOT EXISTS data (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    epoch INTEGER NOT NULL
);
"""

# bossd's largest epoch, 2^53 - 1: fits SQLite's INTEGER and JSON.
MAX_EPOCH = (1 << 53) - 1

EXIT_REJECTED = 3


class Rejected(Exception):
    pass


def connect(path):
    # isolation_level=None: transactions are ours (BEGIN IMMEDIATE below);
    # timeout: wait for another writer's lock instead of failing at once.
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    db.executescript(SCHEMA)
    return db


def write(db, epoch, holder, key, value):
    """Writes KEY = VALUE if (EPOCH, HOLDER) passes the fence, and raises
    the fence to it, in one transaction; else raises Rejected."""
    # IMMEDIATE takes the write lock before the check, so no other writer
    # can raise the fence between the check and the write.
    db.execute("BEGIN IMMEDIATE")
    try:
        raised = db.execute(
            "UPDATE fence SET epoch = ?, holder = ? "
            "WHERE id = 1 AND (epoch < ? OR (epoch = ? AND holder = ?))",
            (epoch, holder, epoch, epoch, holder),
        ).rowcount
        if raised != 1:
            highest, by = db.execute("SELECT epoch, holder FROM fence WHERE id = 1").fetchone()
            if epoch == highest:
                raise Rejected(f"epoch {epoch} is held by {by}, not {holder}")
            raise Rejected(f"epoch {epoch} is below {highest}, the highest this store has seen")
        db.execute(
            "INSERT INTO data (key, value, epoch) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, epoch = excluded.epoch",
            (key, value, epoch),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def show(db):
    highest, by = db.execute("SELECT epoch, holder FROM fence WHERE id = 1").fetchone()
    print(f"fence epoch={highest} holder={by}")
    for key, value, epoch in db.execute("SELECT key, value, epoch FROM data ORDER BY key"):
        print(f"{key}={value} epoch={epoch}")


def epoch_from_env():
    text = os.environ.get("BOSSD_EPOCH")
    if text is None:
        raise ValueError("BOSSD_EPOCH is not set (bossd sets it for --notify hooks)")
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"BOSSD_EPOCH is not a number: {text!r}")
    epoch = int(text)
    if not 1 <= epoch <= MAX_EPOCH:
        raise ValueError(f"BOSSD_EPOCH {epoch} is not between 1 and {MAX_EPOCH}")
    return epoch


def holder_from_env():
    holder = os.environ.get("BOSSD_ID", "")
    if not holder or holder == "-":
        raise ValueError("BOSSD_ID is not set (bossd sets it for --notify hooks)")
    return holder


def main(argv):
    parser = argparse.ArgumentParser(
        description="Fenced writes to SQLite with BOSSD_EPOCH as the fencing token."
    )
    parser.add_argument("--db", required=True, help="the SQLite database file")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser(
        "write", help="write KEY=VALUE with the token in BOSSD_EPOCH and BOSSD_ID"
    )
    w.add_argument("key")
    w.add_argument("value")
    sub.add_parser("show", help="print the fence's epoch and every row")
    args = parser.parse_args(argv)
    try:
        db = connect(args.db)
        if args.command == "show":
            show(db)
            return 0
        epoch, holder = epoch_from_env(), holder_from_env()
        write(db, epoch, holder, args.key, args.value)
        print(f"wrote {args.key}={args.value} epoch={epoch}")
        return 0
    except Rejected as e:
        print(f"fenced_sqlite: rejected: {e}", file=sys.stderr)
        return EXIT_REJECTED
    except ValueError as e:
        print(f"fenced_sqlite: {e}", file=sys.stderr)
        return 2
    except sqlite3.Error as e:
        print(f"fenced_sqlite: {args.db}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
