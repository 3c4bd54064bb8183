"""The write-ahead journal: nothing accepted is lost when phalanxd dies.

::

    intake ---accept(task)----+                      +--> acks, replies,
    dispatch --started(...)---+--> this turn's  ---> |    publications
    _deliver --finish(...)----+    buffers      commit()  (only after it
                                      |         once a     succeeded)
                                      v         loop turn
                           SQLite (WAL, journal_store.py)

The daemon calls ``commit()`` once per loop turn, just before it hands
tasks to workers and before it flushes replies: what that turn accepted,
handed off and finished goes into one transaction (group commit). So an
ack, a reply or a publication only ever tells of something recorded, and a
task is recorded as handed to a worker before the worker can start it.

On start, ``replay()`` rebuilds the unfinished tasks (they are queued
again) and the index of retained results. The task a worker was running
when the daemon died (the oldest one handed to a live worker and not
finished) is charged an attempt, so a task that kills the daemon itself is
eventually failed, quarantined, instead of killing every restart.

The id is the idempotency key: ``lookup()`` answers a submission whose id
is known with its journaled result, refuses it if its task name or
arguments differ (a CRC-32 of them is kept per id), or lets intake attach
it to the pending task. Results are kept ``retention_seconds`` and at most
``retention_bytes``; the index costs ~150 bytes of memory per retained id.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog

from supervisor.config import JournalSection
from supervisor.core.tasks import Task, TaskTable
from supervisor.daemon import journal_store as store
from supervisor.daemon import journal_upkeep as upkeep
from supervisor.errors import IdConflict, JournalError, JournalFull, RequestError
from supervisor.protocol import NO_ARGS, NO_KWARGS, Result, TaskIn, encoder, error_raw

log = structlog.get_logger("phalanxd")
MASK = 0xFFFFFFFF
SHUTTING_DOWN = b"ShuttingDown"
RETRY_AFTER = 0.2  # seconds between attempts when commits fail (disk full)
LRU_ROWS = 8  # decoded result rows kept for lookups (resubmissions come in runs)
# (slot, worker generation or 0 when it has none, tasks it holds in order)
Workers = Callable[[], Iterable[tuple[int, int, Sequence[Task]]]]


_NAME_CRC: dict[str, int] = {}


def digest(name: str, args: bytes, kwargs: bytes) -> int:
    """CRC-32 of name, args and kwargs (absent ones as the empty array/map)."""
    seed = _NAME_CRC.get(name)
    if seed is None:
        seed = zlib.crc32(name.encode())
        if len(_NAME_CRC) < 4096:  # task names are few; a flood of bad ones is not cached
            _NAME_CRC[name] = seed
    return zlib.crc32(kwargs or NO_KWARGS, zlib.crc32(args or NO_ARGS, seed))


class Journal:
    enabled = True

    def __init__(self, db: sqlite3.Connection, path: Path, cfg: JournalSection) -> None:
        self.db = db
        self.path = path
        self.cfg = cfg
        self.full = False  # new work is refused (JournalFull) while set
        self.failing = False  # the last commit failed; replies are held
        self._retry_at = 0.0
        self._acc: list[Task] = []
        self._starts: list[tuple[int, int, list[Task]]] = []
        self._fin: list[tuple[Task, Result]] = []
        self._held: list[tuple[bytes, bytes, bool]] = []
        # id -> (finished row << 32) | digest; row 0: still pending
        self._index: dict[str, int] = {}
        self._retained: deque[tuple[int, float, int, list[str]]] = deque()
        self._retained_bytes = 0
        self._rows: OrderedDict[int, dict[str, Result]] = OrderedDict()
        self._identity: dict[int, int] = {}
        self._epoch = 0
        self._log_bytes = 0  # accepted/started bytes written since the last compaction
        self._snapshot_bytes = 0
        self._compact_due = False
        self._since_check = 0  # bytes written since the last look at free space
        self._table: TaskTable | None = None
        self._workers: Workers = lambda: ()
        self.commits = 0

    @classmethod
    def open(cls, path: Path, cfg: JournalSection) -> Journal:
        return cls(store.connect(path, cfg.synchronous, cfg.max_bytes), path, cfg)

    def bind(self, table: TaskTable, workers: Workers) -> None:
        self._table = table
        self._workers = workers

    # ------------------------------------------------------- the hot path
    def accept(self, task: Task) -> None:
        self._index[task.id] = digest(task.name, task.args, task.kwargs)
        self._acc.append(task)

    def started(self, slot: int, gen: int, tasks: list[Task]) -> None:
        self._starts.append((slot, gen, tasks))

    def finish(self, task: Task, result: Result) -> None:
        if not result.ok and result.error and SHUTTING_DOWN in bytes(result.error):
            return  # given back at shutdown: stays accepted, runs after the restart
        self._fin.append((task, result))

    def hold(self, route: bytes, body: bytes, req: bool = False) -> None:
        """A reply that must wait for this turn's commit."""
        self._held.append((route, body, req))

    def release(self) -> list[tuple[bytes, bytes, bool]]:
        held, self._held = self._held, []
        return held

    def lookup(self, spec: TaskIn) -> RequestError | Result | None:
        """What a submission's id says: None (new, or pending: attach), the
        journaled Result, or the error that refuses it."""
        tid = spec.id
        packed = None if tid is None else self._index.get(tid)
        if packed is None:
            return self._full_error() if self.full else None
        if packed & MASK != digest(spec.task, spec.args, spec.kwargs):
            return IdConflict(f"id {tid!r} was accepted with another task name or arguments")
        row = packed >> 32
        return self._load(row, tid) if row else None  # type: ignore[arg-type]

    def _full_error(self) -> JournalFull:
        return JournalFull(f"the journal {self.path} cannot record more work (disk or "
                           "journal.max_bytes full); nothing new is accepted until it can")

    # ------------------------------------------------------------ commit
    def commit(self) -> bool:
        """Write this turn's records in one transaction; False if they could
        not be written (they are kept and retried; replies wait)."""
        workers = list(self._workers())
        identity = {slot: gen for slot, gen, _ in workers}
        changed = identity != self._identity
        if not (self._acc or self._starts or self._fin or changed or self._compact_due):
            return not self.failing
        now_mono = time.monotonic()
        if self.failing and now_mono < self._retry_at:
            return False
        now = time.time()
        try:
            fin_row = self._write(workers, identity, changed, now, now_mono, lean=False)
        except sqlite3.Error as exc:
            self._rollback()
            if "full" not in str(exc):
                return self._failed(exc, now_mono)
            # No room: make some (compact the log; keep a stub instead of a
            # large result: the result is delivered, but not kept for later).
            self._compact_due = True
            try:
                fin_row = self._write(workers, identity, changed, now, now_mono, lean=True)
            except sqlite3.Error as again:
                self._rollback()
                return self._failed(again, now_mono)
        if self.failing:
            log.info("journal_commit_recovered", path=str(self.path))
            self.failing = False
            self._check_space()
        self.commits += 1
        self._identity = identity
        self._compact_due = False
        self._acc.clear()
        self._starts.clear()
        self._fin.clear()
        if self.cfg.max_bytes and self._since_check > self.cfg.max_bytes // 64:
            self._check_space()
        if fin_row is not None:
            n, size, ids, digests = fin_row
            for i, dg in zip(ids, digests, strict=True):
                self._index[i] = n << 32 | dg
            self._retained.append((n, now, size, ids))
            self._retained_bytes += size
        return True

    def _write(self, workers: list[tuple[int, int, Sequence[Task]]], identity: dict[int, int],
               changed: bool, now: float, now_mono: float, lean: bool
               ) -> tuple[int, int, list[str], list[int]] | None:
        """One transaction with this turn's records; the finished row's facts."""
        db = self.db
        fin_row = None
        written = 0
        db.execute("BEGIN")
        if self._compact_due:
            self._write_snapshot(workers, now, now_mono)
        else:
            if self._acc:
                body = encoder.encode([self._record(t, now, now_mono) for t in self._acc])
                db.execute("INSERT INTO accepted(epoch, body) VALUES(?, ?)", (self._epoch, body))
                self._log_bytes += len(body)
                written += len(body)
            if self._starts:
                body = encoder.encode([
                    (slot, gen, [t.key for t in tasks],
                     [(t.key, t.attempts, t.crashes) for t in tasks if t.attempts])
                    for slot, gen, tasks in self._starts])
                db.execute("INSERT INTO started(epoch, body) VALUES(?, ?)", (self._epoch, body))
                self._log_bytes += len(body)
        if changed:
            db.executemany("INSERT OR REPLACE INTO worker VALUES(?, ?, ?)",
                           [(s, self._epoch, g) for s, g in identity.items()])
        if self._fin:
            index = self._index
            ids = [t.id for t, _ in self._fin]
            digests = [index.get(i, 0) & MASK for i in ids]
            body = encoder.encode([
                (dg, now - (now_mono - t.accepted_at), _stub(r) if lean else r)
                for dg, (t, r) in zip(digests, self._fin, strict=True)])
            cur = db.execute("INSERT INTO finished(at, bytes, body) VALUES(?, ?, ?)",
                             (now, len(body), body))
            fin_row = (int(cur.lastrowid or 0), len(body), ids, digests)
            written += len(body)
        db.execute("COMMIT")
        self._since_check += written
        return fin_row

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite had rolled it back itself

    def _failed(self, exc: sqlite3.Error, now_mono: float) -> bool:
        if not self.failing:
            log.error("journal_commit_failed", path=str(self.path), error=str(exc))
        self.failing = self.full = True
        self._retry_at = now_mono + RETRY_AFTER
        return False

    def _record(self, t: Task, now: float, now_mono: float) -> tuple[Any, ...]:
        return (t.key, t.id, t.name, t.args, t.kwargs, t.max_attempts, t.timeout,
                t.soft_timeout, t.chunk, t.retry_timeouts, t.attempts, t.crashes,
                self._index.get(t.id, 0) & MASK, now - (now_mono - t.accepted_at))

    def _write_snapshot(self, workers: Iterable[tuple[int, int, Sequence[Task]]],
                        now: float, now_mono: float) -> None:
        """Replace the accepted/started log by what is unfinished right now."""
        db = self.db
        db.execute("DELETE FROM accepted")
        db.execute("DELETE FROM started")
        tasks = list(self._table.by_key.values()) if self._table is not None else []
        body = encoder.encode([self._record(t, now, now_mono) for t in tasks])
        db.execute("INSERT INTO accepted(epoch, body) VALUES(?, ?)", (self._epoch, body))
        starts = [(slot, gen, [t.key for t in held],
                   [(t.key, t.attempts, t.crashes) for t in held if t.attempts])
                  for slot, gen, held in workers if held and gen]
        if starts:
            db.execute("INSERT INTO started(epoch, body) VALUES(?, ?)",
                       (self._epoch, encoder.encode(starts)))
        self._snapshot_bytes = len(body)
        self._log_bytes = 0

    # ------------------------------------------------------------ reading
    def _load(self, row: int, tid: str) -> Result | None:
        results = self._rows.get(row)
        if results is None:
            try:
                found = self.db.execute("SELECT body FROM finished WHERE n=?", (row,)).fetchone()
            except sqlite3.Error as exc:
                log.error("journal_read_failed", path=str(self.path), error=str(exc))
                return None
            if found is None:
                return None
            results = {f.result.id or "": f.result for f in store.finishes_decoder.decode(found[0])}
            self._rows[row] = results
            if len(self._rows) > LRU_ROWS:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(row)
        return results.get(tid)

    def result(self, tid: str) -> Result | None:
        """The retained result for ``tid``, if it finished."""
        packed = self._index.get(tid)
        if packed is None or not packed >> 32:
            return None
        return self._load(packed >> 32, tid)

    # Operator views and upkeep: journal_upkeep.py.
    def recent(self, limit: int) -> list[dict[str, Any]]:
        return upkeep.recent(self, limit)

    def stats(self) -> dict[str, Any]:
        return upkeep.stats(self)

    def prune(self, now: float | None = None) -> None:
        upkeep.prune(self, now)

    def _check_space(self) -> None:
        upkeep.check_space(self)

    def close(self) -> None:
        self.commit()
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.db.close()

    # ------------------------------------------------------------ replay
    def replay(self, next_key: Callable[[], int], defaults_now: float
               ) -> tuple[list[Task], list[Result]]:
        from supervisor.daemon.journal_replay import replay

        try:
            return replay(self, next_key, defaults_now)
        except sqlite3.DatabaseError as exc:
            raise store.corrupt(self.path, exc) from None


STUB_OVER = 256  # bytes: results larger than this are not kept when the journal is full


def _stub(r: Result) -> Result:
    if len(r.value) + len(r.error) <= STUB_OVER:
        return r
    return Result(r.id, r.task, False, r.attempts, error=error_raw(
        "ResultNotKept", "the journal was full when this task finished: its result was "
        "delivered then, but not kept"))


from supervisor.daemon.journal_null import NullJournal  # noqa: E402 - it needs Workers

AnyJournal = Journal | NullJournal


def open_journal(cfg: JournalSection, path: Path) -> AnyJournal:
    """The configured journal; raises JournalError with one clear line."""
    if not cfg.enabled:
        return NullJournal()
    try:
        return Journal.open(path, cfg)
    except JournalError:
        raise
