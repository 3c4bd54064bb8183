"""The journal's upkeep (once a second) and the operator's views of it.

Retention: finished results older than ``retention_seconds``, or beyond
``retention_bytes`` (their bytes on disk plus the id index's memory for
them, journal_index.py), are dropped oldest first (one range
DELETE: result rows are in time order). The log (accepted tasks, hand-offs) is compacted once it
outweighs what is unfinished. The WAL is checkpointed once it passes 4 MiB
(a checkpoint fsyncs; see journal_store.connect). Free space is checked
here and every max_bytes/64 bytes written: near full, new work is refused
(``Journal.full``) and retained results are dropped to make room.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from supervisor.daemon import journal_store as store

if TYPE_CHECKING:
    from supervisor.daemon.journal import Journal

log = structlog.get_logger("phalanxd")
CHECKPOINT_WAL_BYTES = 4 << 20


def recent(self: Journal, limit: int) -> list[dict[str, Any]]:
    """The newest retained results, newest first (for `phalanxctl tasks`)."""
    out: list[dict[str, Any]] = []
    for n in self._retained.newest_rows():
        try:
            found = self.db.execute("SELECT body FROM finished WHERE n=?", (n,)).fetchone()
        except sqlite3.Error:
            break
        if found is None:
            continue
        for rec in reversed(store.finishes_decoder.decode(found[0])):
            r = rec.result
            out.append({"id": r.id, "task": r.task, "ok": r.ok, "attempts": r.attempts,
                        "accepted": rec.accepted})
            if len(out) >= limit:
                return out
    return out

def stats(self: Journal) -> dict[str, Any]:
    return {"path": str(self.path), "retained": len(self._index),
            "retained_bytes": self._retained.bytes, "full": self.full,
            "failing": self.failing, "commits": self.commits, "charges": len(self.charges),
            "file_bytes": _size(self.path) + _size(Path(f"{self.path}-wal"))}

# ---------------------------------------------------------- upkeep
def prune(self: Journal, now: float | None = None) -> None:
    """Drop results past retention, checkpoint, check for space (1/s)."""
    now = time.time() if now is None else now
    expire(self, now - self.cfg.retention_seconds, self.cfg.retention_bytes)
    # A worker started or stopped with nothing else to record: say so now
    # (commits look at the workers only when they write anyway).
    if self._identify() != self._identity:
        self._identity_due = True
    short = self.full or self.failing
    try:
        # A checkpoint fsyncs (even with synchronous=NORMAL): only when
        # the WAL has grown, not every second (journal_store.connect).
        if short or _size(Path(f"{self.path}-wal")) > CHECKPOINT_WAL_BYTES:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        if free > 256:
            # Each step frees one page and execute() steps once: executescript
            # steps it to the end (else one page a second is given back).
            self.db.executescript("PRAGMA incremental_vacuum;")
        if short:
            # Short of room: give the blocks of the file's free pages and of
            # the WAL back (the WAL keeps its size otherwise, journal_store).
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.warning("journal_upkeep_failed", path=str(self.path), error=str(exc))
    # Compact once the log outweighs what is
    # unfinished (amortised: its cost is O(unfinished)), or to make room.
    cap = self.cfg.max_bytes // 4 if self.cfg.max_bytes else 1 << 20
    if self._log_bytes > max(cap, 2 * self._snapshot_bytes) or self.full or self.failing:
        self._compact_due = True
    check_space(self)

def expire(self: Journal, cutoff: float, max_bytes: int) -> None:
    if self.charges:  # never resubmitted: kept as long as a result would be
        old = [dg for dg, (_a, _c, at) in self.charges.items() if at < cutoff]
        for dg in old:
            del self.charges[dg]
        self._uncharge.extend(old)
    last = self._retained.expire(cutoff, max_bytes)
    if last:
        for n in [n for n in self._rows if n <= last]:
            del self._rows[n]
        try:
            self.db.execute("DELETE FROM finished WHERE n <= ?", (last,))
        except sqlite3.Error as exc:
            log.warning("journal_prune_failed", path=str(self.path), error=str(exc))

def check_space(self: Journal) -> None:
    self._since_check = 0
    full = False
    try:
        if self.cfg.max_bytes:
            page = self.db.execute("PRAGMA page_size").fetchone()[0]
            used = (self.db.execute("PRAGMA page_count").fetchone()[0]
                    - self.db.execute("PRAGMA freelist_count").fetchone()[0]) * page
            full = used > 0.9 * self.cfg.max_bytes
        st = os.statvfs(self.path.parent)
        full = full or st.f_bavail * st.f_frsize < self.cfg.min_free_bytes
    except (sqlite3.Error, OSError):
        full = True
    if full and len(self._retained):
        # Retained results are the one thing we may drop to make room.
        expire(self, 0.0, self._retained.bytes // 2)
    if full != self.full and not self.failing:
        self.full = full
        log.warning("journal_full" if full else "journal_has_room", path=str(self.path))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
