"""The write-ahead journal: nothing accepted is lost when phalanxd dies.

::

    intake ---accept(task)----+                      +--> acks, replies,
    dispatch --started(...)---+--> this turn's  ---> |    publications
    _deliver --finish(...)----+    buffers      commit()  (only after it
                                      |         once a     succeeded)
                                      v         loop turn
                           SQLite (WAL, journal_store.py)

The daemon calls ``commit()`` once per loop turn, before it flushes
replies: what that turn accepted, handed off and finished goes into one
transaction (group commit). So an ack, a reply or a result's publication
only ever tells of something recorded. A turn writes at most one ``log``
row and one ``finished`` row; when it is one row (a lone round trip's two
commits), it is one autocommit INSERT.

Hand-offs go to the workers before the turn's commit records them, and
the commit runs while the workers do: a lone call waits for one commit,
not two (40-100 us here), and a burst's workers do not wait for SQLite.
The price is a window of that loop turn in which a worker runs a task the
journal does not hold yet. If the daemon dies in it, nothing was acked, so
the client sends the task again and it runs again (at least once). And if
the task itself killed the daemon, the hand-off file (journal_handoff.py),
where each worker notes what it starts before it starts it, names it: the
restart charges it (by its digest when the log does not have it; the
resubmission starts with that charge, ``precharge``), so it is
quarantined all the same. A retry (a task already charged) is recorded
first, as every hand-off was before: its charge must not wait on a commit
it could kill.

On start, ``replay()`` rebuilds the unfinished tasks (they are queued
again) and the index of retained results. The task a worker was running
when the daemon died (what it noted last in the hand-off file; without a
note, the oldest one handed to a live worker and not finished) is charged
an attempt, so a task that kills the daemon itself is eventually failed,
quarantined, instead of killing every restart.

The id is the idempotency key, checked with one digest of the task's name
and arguments (``supervisor.core.tasks.digest``, kept on the task and in its
records). A pending id is the task table's to answer; ``lookup()`` answers
an id whose result is retained: the journaled result, or IdConflict if the
digest differs.

The id index is compact (journal_index.py): a 60-bit hash of each retained
id maps to its ``finished`` row; no id strings, no object per row. A hit is
confirmed against the row itself (read from SQLite, a few rows cached), so
a hash collision never answers the wrong id. Its memory (about 96 bytes per
retained result and 72 per row) counts against ``retention_bytes`` with the
results' bytes on disk.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog

from supervisor.config import JournalSection
from supervisor.core.tasks import Task, TaskTable
from supervisor.daemon import journal_store as store
from supervisor.daemon import journal_upkeep as upkeep
from supervisor.daemon.journal_handoff import HandoffFile, path_for
from supervisor.daemon.journal_index import KEY_MASK, RetainedIndex
from supervisor.errors import (
    WORKER_CRASHED,
    IdConflict,
    JournalError,
    JournalFull,
    RequestError,
)
from supervisor.protocol import Result, encoder, error_raw

log = structlog.get_logger("phalanxd")
SHUTTING_DOWN = b"ShuttingDown"
RETRY_AFTER = 0.2  # seconds between attempts when commits fail (disk full)
LRU_ROWS = 8  # decoded result rows kept for lookups (resubmissions come in runs)
# (slot, worker generation or 0 when it has none, tasks it holds in order)
Workers = Callable[[], Iterable[tuple[int, int, Sequence[Task]]]]
# ((slot, worker generation or 0), ...): which worker each slot runs
Identity = Callable[[], tuple[tuple[int, int], ...]]


class Journal:
    enabled = True

    def __init__(self, db: sqlite3.Connection, path: Path, cfg: JournalSection,
                 handoff: HandoffFile) -> None:
        self.db = db
        self._handoff = handoff
        # digest -> (attempts, crashes, wall time): tasks that killed the
        # daemon before their acceptance was recorded (journal_handoff.py)
        self.charges: dict[int, tuple[int, int, float]] = {}
        self._uncharge: list[int] = []  # charges used: deleted with the next commit
        # id -> (digest, result) of tasks quarantined at submission, until
        # the commit that retains them: a repeat in the same turn gets it.
        self._answered: dict[str, tuple[int, Result]] = {}
        self._ledgered: set[int] = set()  # slots whose workers note what they start
        self._charged: list[Task] = []  # worker-crash charges to record this turn
        self._high = 0  # the highest key accepted in this epoch (compaction notes it)
        self._cur = db.cursor()  # one cursor for the hot path's statements
        self.path = path
        self.cfg = cfg
        self.full = False  # new work is refused (JournalFull) while set
        self.failing = False  # the last commit failed; replies are held
        self._retry_at = 0.0
        self._acc: list[Task] = []
        self._starts: list[tuple[int, int, list[Task]]] = []
        self._fin: list[tuple[Task, Result]] = []
        self._held: list[tuple[bytes, bytes, bool]] = []
        # retained results: id -> finished row, compact (journal_index.py)
        self._retained = RetainedIndex()
        self._index = self._retained.keys
        self._rows: OrderedDict[int, dict[str, store.FinishRecord]] = OrderedDict()
        self._identity: tuple[tuple[int, int], ...] | None = None  # as last written
        self._identity_due = False  # the upkeep timer saw a worker change
        self._epoch = 0
        self._log_bytes = 0  # log bytes written since the last compaction
        self._snapshot_bytes = 0
        self._compact_due = False
        self._since_check = 0  # bytes written since the last look at free space
        # Look again after this many bytes, not only once a second: a burst
        # must not write through min_free_bytes (a full disk stops even the
        # checkpoint that would give space back) before intake refuses.
        self._check_every = max(64 * 1024, min(cfg.max_bytes // 64 or 1 << 62,
                                               cfg.min_free_bytes // 8 or 1 << 62))
        self._table: TaskTable | None = None
        self._workers: Workers = lambda: ()
        self._identify: Identity = lambda: ()
        self.commits = 0

    @classmethod
    def open(cls, path: Path, cfg: JournalSection) -> Journal:
        db = store.connect(path, cfg.synchronous, cfg.max_bytes)
        try:
            handoff = HandoffFile(path_for(path))
        except (OSError, ValueError) as exc:
            db.close()
            raise JournalError(f"journal hand-off file {path_for(path)}: {exc}") from None
        return cls(db, path, cfg, handoff)

    def bind(self, table: TaskTable, workers: Workers, identity: Identity) -> None:
        self._table = table
        self._workers = workers
        self._identify = identity

    # ------------------------------------------------------- the hot path
    def accept(self, task: Task) -> None:
        self._acc.append(task)

    def started(self, slot: int, gen: int, tasks: list[Task]) -> bool:
        """Called before the pipe write. True: it may go before this turn's
        commit (its worker notes what it starts); False: commit first."""
        self._starts.append((slot, gen, tasks))
        if slot not in self._ledgered:
            return False
        for t in tasks:
            if t.attempts:
                return False
        return True

    def ledger_for(self, slot: int) -> tuple[str, int, int] | None:
        """For a worker about to start in ``slot``: (hand-off file, slot,
        epoch), what it notes its tasks in; None: it notes nothing."""
        try:
            self._handoff.reserve(slot)
        except (OSError, ValueError) as exc:
            log.warning("journal_handoff_unavailable", path=str(self._handoff.path),
                        error=str(exc))
            self._ledgered.discard(slot)
            return None
        self._ledgered.add(slot)
        return str(self._handoff.path), slot, self._epoch

    def worker_gone(self, slot: int) -> None:
        """Its death is charged as a worker crash: its record says no more."""
        self._handoff.forget(slot)

    def charged(self, task: Task) -> None:
        """A worker died running ``task`` and it will run again: its new
        attempt count is recorded this turn (a restart must not forget it
        until the retry's hand-off is committed)."""
        self._charged.append(task)

    def cannot_note(self, slot: int) -> None:
        """Its worker could not map the file: record its hand-offs first."""
        self._ledgered.discard(slot)
        log.warning("journal_handoff_unavailable", slot=slot, path=str(self._handoff.path))

    def precharge(self, task: Task) -> Result | None:
        """A new task's charges, if it killed phalanxd before its acceptance
        was recorded (only called while ``charges`` has any): its attempts
        so far, or, out of attempts, its failed result (recorded)."""
        dg = task.digest  # intake computes it for every task
        found = self.charges.pop(dg, None)
        if found is None:
            return None
        self._uncharge.append(dg)
        task.attempts, task.crashes = found[0], found[1]
        if task.attempts < task.max_attempts:
            return None
        result = Result(task.id, task.name, False, task.attempts, error=error_raw(
            WORKER_CRASHED, f"phalanxd died while this task was running (attempt "
            f"{task.attempts} of {task.max_attempts}); quarantined after killing "
            f"{task.crashes} workers or daemons"))
        log.warning("task_quarantined_on_submit", id=task.id, task=task.name,
                    attempts=task.attempts)
        self._fin.append((task, result))
        self._answered[task.id] = (dg, result)
        return result

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

    def lookup(self, tid: str | None, dg: int) -> RequestError | Result | None:
        """What a submission's id says when its result is retained: the
        journaled Result, or IdConflict if ``dg`` (its digest) differs; None
        otherwise (new, or pending: the task table's), or JournalFull."""
        if tid is not None:
            found = self._find(tid)
            if found is not None:
                known, answer = found
                if dg and known and known != dg:
                    return IdConflict(
                        f"id {tid!r} was accepted with another task name or arguments")
                return answer
        if self.full and (tid is None or self._table is None or tid not in self._table.by_id):
            return self._full_error()
        return None

    def _full_error(self) -> JournalFull:
        return JournalFull(f"the journal {self.path} cannot record more work (disk or "
                           "journal.max_bytes full); nothing new is accepted until it can")

    # ------------------------------------------------------------ commit
    def commit(self) -> bool:
        """Write this turn's records in one transaction; False if they could
        not be written (they are kept and retried; replies wait)."""
        if not (self._acc or self._starts or self._fin or self._compact_due
                or self._identity_due or self._uncharge or self._charged):
            return not self.failing
        now_mono = time.monotonic()
        if self.failing and now_mono < self._retry_at:
            return False
        # Which worker each slot runs: written with any record (a worker that
        # died holding tasks must not look alive to a replay), and at the
        # latest a second after a change (upkeep), not looked at otherwise.
        identity = self._identify()
        now = time.time()
        try:
            fin_row = self._write(identity, now, now_mono, lean=False)
        except sqlite3.Error as exc:
            self._rollback()
            if "full" not in str(exc):
                return self._failed(exc, now_mono)
            # No room: make some (compact the log; keep a stub instead of a
            # large result: the result is delivered, but not kept for later).
            self._compact_due = True
            try:
                fin_row = self._write(identity, now, now_mono, lean=True)
            except sqlite3.Error as again:
                self._rollback()
                return self._failed(again, now_mono)
        if self.failing:
            log.info("journal_commit_recovered", path=str(self.path))
            self.failing = False
            self._check_space()
        self.commits += 1
        self._identity = identity
        self._identity_due = self._compact_due = False
        if self._acc:
            self._acc = []
        if self._starts:
            self._starts = []
        if self._charged:
            self._charged = []
        if fin_row is not None:
            self._fin = []
            self._retain(*fin_row, now)
            if self._answered:
                self._answered = {}
        if self._since_check > self._check_every:
            self._check_space()
        return True

    def _retain(self, row: int, nbytes: int, ids: list[str], at: float) -> None:
        """Index a finished row's ids (their results are retained)."""
        self._retained.add(row, at, nbytes, ids)

    def _write(self, identity: tuple[tuple[int, int], ...], now: float, now_mono: float,
               lean: bool) -> tuple[int, int, list[str]] | None:
        """This turn's records: one log row and one finished row at most, in
        one transaction (autocommit when it is one row); the finished row's
        facts. Written plainly, in one function: it runs twice per lone round
        trip, on its critical path."""
        cur = self._cur
        fin = self._fin
        skew = now - now_mono  # monotonic acceptance times to wall clock
        workers = None if identity == self._identity else encoder.encode(identity)
        together = bool(self._compact_due or self._uncharge)
        written = 0
        if self._acc:
            self._high = self._acc[-1].key  # keys grow in acceptance order
        if together:
            cur.execute("BEGIN")
            if self._uncharge:  # in the transaction of the acceptance they charged
                cur.executemany("DELETE FROM charges WHERE digest=?",
                                [(store.signed(dg),) for dg in self._uncharge])
        if self._compact_due:
            self._write_snapshot(identity, now, now_mono)
        else:
            accepted = started = None
            if self._acc:
                accepted = encoder.encode([
                    (t.key, t.id, t.name, t.args, t.kwargs, t.max_attempts, t.timeout,
                     t.soft_timeout, t.chunk, t.retry_timeouts, t.attempts, t.crashes,
                     t.digest, skew + t.accepted_at) for t in self._acc])
            if self._starts or self._charged:
                started = encoder.encode([
                    (slot, gen, [t.key for t in tasks],
                     [(t.key, t.attempts, t.crashes) for t in tasks if t.attempts])
                    for slot, gen, tasks in self._starts] + (
                    # slot -1: a charge with no hand-off (replay reads only ``charged``)
                    [(-1, 0, [], [(t.key, t.attempts, t.crashes) for t in self._charged])]
                    if self._charged else []))
            if accepted is not None or started is not None or workers is not None:
                written = (0 if accepted is None else len(accepted)) + (
                    0 if started is None else len(started))
                if fin and not together:
                    together = True
                    cur.execute("BEGIN")
                cur.execute("INSERT INTO log(epoch, accepted, started, workers) VALUES(?, ?, ?, ?)",
                            (self._epoch, accepted, started, workers))
                self._log_bytes += written
        fin_row = None
        if fin:
            body = encoder.encode([(t.digest, skew + t.accepted_at, _stub(r) if lean else r)
                                   for t, r in fin])
            cur.execute("INSERT INTO finished(at, bytes, body) VALUES(?, ?, ?)",
                        (now, len(body), body))
            fin_row = (cur.lastrowid or 0, len(body), [t.id for t, _ in fin])
            written += len(body)
        if together:
            cur.execute("COMMIT")
            if self._uncharge:
                self._uncharge = []
        self._since_check += written
        return fin_row

    def _rollback(self) -> None:
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite had rolled it back itself (or it was one autocommit INSERT)

    def _failed(self, exc: sqlite3.Error, now_mono: float) -> bool:
        if not self.failing:
            log.error("journal_commit_failed", path=str(self.path), error=str(exc))
        self.failing = self.full = True
        self._retry_at = now_mono + RETRY_AFTER
        return False

    def _record(self, t: Task, now: float, now_mono: float) -> tuple[Any, ...]:
        """A TaskRecord (_write builds the same tuple inline)."""
        return (t.key, t.id, t.name, t.args, t.kwargs, t.max_attempts, t.timeout,
                t.soft_timeout, t.chunk, t.retry_timeouts, t.attempts, t.crashes,
                t.digest, now - (now_mono - t.accepted_at))

    def _write_snapshot(self, identity: tuple[tuple[int, int], ...], now: float,
                        now_mono: float) -> None:
        """Replace the log by one row: what is unfinished right now."""
        db = self.db
        db.execute("DELETE FROM log")
        tasks = list(self._table.by_key.values()) if self._table is not None else []
        body = encoder.encode([self._record(t, now, now_mono) for t in tasks])
        starts = [(slot, gen, [t.key for t in held],
                   [(t.key, t.attempts, t.crashes) for t in held if t.attempts])
                  for slot, gen, held in self._workers() if held and gen]
        db.execute("INSERT INTO log(epoch, accepted, started, workers) VALUES(?, ?, ?, ?)",
                   (self._epoch, body, encoder.encode(starts) if starts else None,
                    encoder.encode(identity)))
        # Tasks of this epoch up to _high were recorded: one that is not in
        # the log any more finished (a hand-off note of it charges nothing).
        db.execute("INSERT OR REPLACE INTO meta VALUES('compacted', ?)",
                   (encoder.encode([self._epoch, self._high]),))
        self._snapshot_bytes = len(body)
        self._log_bytes = 0

    # ------------------------------------------------------------ reading
    def _load(self, row: int, tid: str) -> store.FinishRecord | None:
        records = self._rows.get(row)
        if records is None:
            try:
                found = self.db.execute("SELECT body FROM finished WHERE n=?", (row,)).fetchone()
            except sqlite3.Error as exc:
                log.error("journal_read_failed", path=str(self.path), error=str(exc))
                return None
            if found is None:
                return None
            records = {f.result.id or "": f for f in store.finishes_decoder.decode(found[0])}
            self._rows[row] = records
            if len(self._rows) > LRU_ROWS:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(row)
        return records.get(tid)

    def result(self, tid: str) -> Result | None:
        """The retained result for ``tid``, if it finished."""
        found = self._find(tid)
        return None if found is None else found[1]

    def _find(self, tid: str) -> tuple[int, Result] | None:
        """(digest, result) of ``tid`` if its result is retained, or was
        answered at submission this turn (``precharge``: not retained until
        the commit)."""
        if self._answered and tid in self._answered:
            return self._answered[tid]
        row = self._index.get(hash(tid) & KEY_MASK)
        rec = None if row is None else self._load(row, tid)
        return None if rec is None else (rec.digest, rec.result)

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
        self._identity_due = self._identify() != self._identity
        self.commit()
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.db.close()
        self._handoff.clear()  # every worker is reaped: no note says anything now
        self._handoff.close()

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
