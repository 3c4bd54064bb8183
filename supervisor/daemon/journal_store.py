"""The journal's file: where it lives, its schema, opening it, its records.

One SQLite database in WAL mode, written by the daemon's loop thread only.
``locking_mode=EXCLUSIVE`` takes the write lock at open and keeps it: a
second phalanxd pointed at the same file is refused at start-up instead of
replaying (and running) the first one's tasks, and SQLite keeps the WAL
index in private memory (no ``-shm`` file, fewer system calls per commit).

Why batches of records, not one row per task: a row per task costs three
statements per task (accept, hand-off, result), ~6 us in Python, as much as
the whole daemon spends on a task. So each commit writes at most one row per
table, whose body is a MessagePack array of that loop turn's records.

Why one ``log`` row for a turn's acceptances, hand-offs and worker changes,
not a table each: every row a commit writes dirties a B-tree page, and every
dirty page is a WAL frame (two ``pwrite`` calls and a 4 KiB copy). A lone
round trip is two commits (the acceptance with its hand-off, then the
result); at one statement and one page each, SQLite runs them in autocommit,
and the journal adds two page writes per round trip, not five.

Tables (``n`` grows with time; ``epoch`` counts daemon starts)::

    log(n, epoch, accepted, started, workers)
                              a turn's records, each column NULL or
                              TaskRecord[] / StartRecord[] / WorkerRecord[]
                              (the generation each slot runs; 0: none)
    finished(n, at, bytes, body)
                              results: FinishRecord[]; ``at`` is wall time
    charges(digest, attempts, crashes, at)
                              tasks that killed the daemon before their
                              acceptance was recorded (journal_handoff.py),
                              by digest (signed: SQLite's integers are)
    meta(key, value)          schema version, epoch
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import msgspec

from supervisor.core.tasks import digest
from supervisor.errors import JournalError
from supervisor.protocol import Result

SCHEMA_VERSION = 2  # 1: accepted, started and worker tables; 32-bit digests


class TaskRecord(msgspec.Struct, array_like=True):
    key: int  # the task's key in its epoch (TaskTable key)
    id: str
    task: str
    args: msgspec.Raw
    kwargs: msgspec.Raw
    max_attempts: int
    timeout: float
    soft_timeout: float
    chunk: bool
    retry_timeouts: bool
    attempts: int
    crashes: int
    digest: int  # supervisor.core.tasks.digest
    accepted: float  # wall clock


class StartRecord(msgspec.Struct, array_like=True):
    slot: int
    gen: int
    keys: list[int]  # in the order the worker got them (it runs them so)
    charged: list[tuple[int, int, int]]  # (key, attempts, crashes) when not 0


class WorkerRecord(msgspec.Struct, array_like=True):
    slot: int
    gen: int  # 0: the slot has no worker


class FinishRecord(msgspec.Struct, array_like=True):
    digest: int
    accepted: float
    result: Result


tasks_decoder = msgspec.msgpack.Decoder(list[TaskRecord])
starts_decoder = msgspec.msgpack.Decoder(list[StartRecord])
finishes_decoder = msgspec.msgpack.Decoder(list[FinishRecord])
workers_decoder = msgspec.msgpack.Decoder(list[WorkerRecord])

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log(n INTEGER PRIMARY KEY, epoch INTEGER NOT NULL,
                               accepted BLOB, started BLOB, workers BLOB);
CREATE TABLE IF NOT EXISTS finished(n INTEGER PRIMARY KEY, at REAL NOT NULL,
                                    bytes INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS charges(digest INTEGER PRIMARY KEY, attempts INTEGER NOT NULL,
                                   crashes INTEGER NOT NULL, at REAL NOT NULL);
"""


def signed(digest: int) -> int:
    """A 64-bit digest as SQLite's signed INTEGER (``unsigned`` undoes it)."""
    return digest - (1 << 64) if digest >> 63 else digest


def unsigned(value: int) -> int:
    return value & ((1 << 64) - 1)


def _aside(path: Path) -> str:
    return (f"move it aside (mv {path} {path}.bad) and start again, or set "
            "[journal] enabled = false; docs/OPERATIONS.md")


def connect(path: Path, synchronous: str, max_bytes: int) -> sqlite3.Connection:
    """Open (creating if need be) and lock the journal; JournalError says why not."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise JournalError(f"journal directory {path.parent} exists but is not a directory") from None
    except OSError as exc:
        raise JournalError(f"journal directory {path.parent}: {exc.strerror}") from None
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise JournalError(f"journal {path} is not readable and writable by this user")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise JournalError(f"journal directory {path.parent} is not writable by this user")
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path}: cannot open: {exc}") from None
    try:
        db.execute("PRAGMA busy_timeout=0")
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise JournalError(f"journal {path}: SQLite refused WAL mode (got {mode})")
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        # A checkpoint fsyncs the database, even with synchronous=NORMAL: on a
        # busy disk that is milliseconds, which SQLite's automatic checkpoint
        # (every 1000 pages, in some unlucky commit) would add to that loop
        # turn. So the daemon checkpoints on its 1 s upkeep timer, once the
        # WAL passes 4 MiB; the automatic one stays only as a bound (64 MiB
        # of WAL). After a checkpoint the WAL starts again at its beginning,
        # overwriting the file: a write into blocks the file already has
        # costs the kernel half of one that extends it, so the file is cut
        # back only past 16 MiB (a burst), not to the 4 MiB it reaches.
        db.execute("PRAGMA wal_autocheckpoint=16384")
        db.execute("PRAGMA journal_size_limit=16777216")
        if max_bytes:
            page = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={max(8, max_bytes // page)}")
        db.execute("BEGIN IMMEDIATE")  # takes (and, EXCLUSIVE, keeps) the write lock
        db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)")
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is not None and row[0] == 1:
            _migrate_v1(db)
            row = (SCHEMA_VERSION,)
        if row is not None and row[0] != SCHEMA_VERSION:
            raise JournalError(  # rolled back when db closes: the file is left as it was
                f"journal {path} has schema version {row[0]}, this phalanxd reads "
                f"{SCHEMA_VERSION}; {_aside(path)}")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        if row is None:
            db.execute("INSERT INTO meta VALUES('schema', ?)", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" in str(exc):
            raise JournalError(f"journal {path} is in use by another phalanxd") from None
        if "readonly" in str(exc) or "read-only" in str(exc):
            raise JournalError(f"journal {path} is read-only: {exc}") from None
        raise JournalError(f"journal {path} is unusable ({exc}); {_aside(path)}") from None
    except sqlite3.DatabaseError as exc:
        db.close()
        raise JournalError(f"journal {path} is corrupt ({exc}); {_aside(path)}") from None
    except JournalError:
        db.close()
        raise
    return db


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Schema 1 (a table each for accepted, started and worker; CRC-32
    digests) to 2, inside the opening transaction: the same records as log
    rows, each accepted task's digest computed again from its name and
    arguments; a result's becomes 0, unknown (its arguments are not kept)."""
    encode = msgspec.msgpack.encode
    db.execute(_SCHEMA.split(";")[0])
    for epoch, body in db.execute("SELECT epoch, body FROM accepted ORDER BY n").fetchall():
        tasks = tasks_decoder.decode(body)
        for t in tasks:
            t.digest = digest(t.task, t.args, t.kwargs)
        db.execute("INSERT INTO log(epoch, accepted) VALUES(?, ?)", (epoch, encode(tasks)))
    for epoch, body in db.execute("SELECT epoch, body FROM started ORDER BY n").fetchall():
        db.execute("INSERT INTO log(epoch, started) VALUES(?, ?)", (epoch, body))
    # Each start rewrote the worker table: every row is of the last epoch.
    workers = db.execute("SELECT slot, epoch, gen FROM worker").fetchall()
    if workers:
        db.execute("INSERT INTO log(epoch, workers) VALUES(?, ?)",
                   (max(e for _, e, _ in workers), encode([(s, g) for s, _, g in workers])))
    for n, body in db.execute("SELECT n, body FROM finished").fetchall():
        finishes = finishes_decoder.decode(body)
        for f in finishes:
            f.digest = 0
        new = encode(finishes)
        db.execute("UPDATE finished SET body=?, bytes=? WHERE n=?", (new, len(new), n))
    for table in ("accepted", "started", "worker"):
        db.execute(f"DROP TABLE {table}")
    db.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))


def corrupt(path: Path, exc: BaseException) -> JournalError:
    return JournalError(f"journal {path} is corrupt ({exc}); {_aside(path)}")
