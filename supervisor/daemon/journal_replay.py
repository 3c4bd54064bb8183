"""Start-up: rebuild what the journal knows and rewrite it compactly.

Reads every row once: the log (the accepted tasks, their latest hand-off to
a worker, and which worker generation each slot ran when the daemon died),
then the results (into the id index). What was accepted and has no result is pending;
of the pending tasks handed to a slot's last live worker, the oldest is
the one that worker was running (workers run what they hold in order), so
it is charged an attempt, as if its worker had crashed under it. Then one
transaction replaces the log by the pending tasks under this start's keys
(a new epoch), so keys never collide across restarts.

The hand-off file (journal_handoff.py) says what each slot's worker last
started, which the log cannot when the daemon died before the turn's
commit: it overrules the log's guess for that slot. Unfinished in the
log, that task is charged; finished, none is (the worker was idle); not
in the log at all (its acceptance was not committed either), it becomes a
charge against its digest, used when the task is submitted again
(Journal.precharge).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
import structlog

from supervisor.core.tasks import Task
from supervisor.daemon import journal_store as store
from supervisor.errors import WORKER_CRASHED
from supervisor.protocol import Result, encoder, error_raw

if TYPE_CHECKING:
    from supervisor.daemon.journal import Journal

log = structlog.get_logger("phalanxd")


def replay(j: Journal, next_key: Callable[[], int], now_mono: float
           ) -> tuple[list[Task], list[Result]]:
    db = j.db
    row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
    epoch = int(row[0]) if row else 0
    accepted: dict[tuple[int, int], store.TaskRecord] = {}
    last_start: dict[tuple[int, int], tuple[int, int, int, int]] = {}  # -> slot, epoch, gen, order
    live: dict[int, tuple[int, int]] = {}  # slot -> (epoch, gen) of its last worker
    order = 0
    for e, acc, started, workers in db.execute(
            "SELECT epoch, accepted, started, workers FROM log ORDER BY n"):
        if acc is not None:
            for rec in store.tasks_decoder.decode(acc):
                accepted[(e, rec.key)] = rec
        if started is not None:
            for start in store.starts_decoder.decode(started):
                for key in start.keys:
                    order += 1
                    last_start[(e, key)] = (start.slot, e, start.gen, order)
                for key, attempts, crashes in start.charged:
                    charged = accepted.get((e, key))
                    if charged is not None:
                        charged.attempts, charged.crashes = attempts, crashes
        if workers is not None:
            live = {w.slot: (e, w.gen) for w in store.workers_decoder.decode(workers)}
    # Results: retained (indexed), and which logged ids they finish. The
    # set is of the log's ids only, so its size is the log's, not retention's.
    logged = {rec.id for rec in accepted.values()}
    finished: set[str] = set()
    for n, at, nbytes, body in db.execute("SELECT n, at, bytes, body FROM finished ORDER BY n"):
        ids = [fin.result.id or "" for fin in store.finishes_decoder.decode(body)]
        finished.update(i for i in ids if i in logged)
        j._retain(n, nbytes, ids, at)
    pending: dict[str, tuple[tuple[int, int], store.TaskRecord]] = {}
    for ek, rec in accepted.items():
        if rec.id in finished or rec.id in pending:  # finished, or a duplicate
            continue
        pending[rec.id] = (ek, rec)
    # The task each slot's last live worker was running: its oldest pending hand-off.
    running: dict[int, tuple[int, store.TaskRecord]] = {}
    for ek, rec in pending.values():
        started_on = last_start.get(ek)
        if started_on is None:
            continue
        slot, e, gen, seq = started_on
        if gen and live.get(slot) == (e, gen):
            best = running.get(slot)
            if best is None or seq < best[0]:
                running[slot] = (seq, rec)
    # What each slot's worker last started, noted by the worker itself.
    wall = time.time()
    charges = {store.unsigned(dg): (a, c, at) for dg, a, c, at in
               db.execute("SELECT digest, attempts, crashes, at FROM charges")}
    new_charges: list[int] = []
    row = db.execute("SELECT value FROM meta WHERE key='compacted'").fetchone()
    compacted = tuple(msgspec.msgpack.decode(row[0])) if row else (0, 0)
    for slot, key, dg in j._handoff.read(epoch):
        running.pop(slot, None)
        given = accepted.get((epoch, key))
        if given is None and compacted[0] == epoch and key <= compacted[1]:
            continue  # recorded, finished, compacted away: the worker was idle
        if given is None:  # its acceptance was not committed either
            if dg and dg not in new_charges:
                a, c, _at = charges.get(dg, (0, 0, wall))
                charges[dg] = (a + 1, c + 1, wall)
                new_charges.append(dg)
            continue
        found = pending.get(given.id)
        if found is not None and found[1] is given and all(
                r is not given for _, r in running.values()):
            running[slot] = (0, given)
    for _, rec in running.values():
        rec.attempts += 1
        rec.crashes += 1
    tasks: list[Task] = []
    failed: list[Result] = []
    failed_recs: list[tuple[int, float, Result]] = []
    for _, rec in pending.values():
        if rec.attempts >= rec.max_attempts:
            message = (f"phalanxd died while this task was running (attempt {rec.attempts} of "
                       f"{rec.max_attempts})")
            if rec.crashes >= 2:
                message += f"; quarantined after killing {rec.crashes} workers or daemons"
            result = Result(rec.id, rec.task, False, rec.attempts,
                            error=error_raw(WORKER_CRASHED, message))
            failed.append(result)
            failed_recs.append((rec.digest, rec.accepted, result))
            log.warning("task_quarantined_on_replay", id=rec.id, task=rec.task,
                        attempts=rec.attempts)
            continue
        task = Task(next_key(), rec.id, rec.task, rec.args, rec.kwargs, None, rec.max_attempts,
                    rec.timeout, None, now_mono - max(0.0, wall - rec.accepted), rec.soft_timeout,
                    rec.chunk, rec.retry_timeouts)
        task.attempts, task.crashes = rec.attempts, rec.crashes
        task.digest = rec.digest  # a resubmission of its id is checked as before the restart
        tasks.append(task)
    # Rewrite: this start's epoch, its keys, nothing stale.
    j._epoch = epoch + 1
    j._high = tasks[-1].key if tasks else 0  # recorded below, with this epoch's keys
    db.execute("BEGIN")
    db.execute("DELETE FROM log")
    db.execute("INSERT OR REPLACE INTO meta VALUES('epoch', ?)", (j._epoch,))
    body = encoder.encode([j._record(t, wall, now_mono) for t in tasks])
    db.execute("INSERT INTO log(epoch, accepted) VALUES(?, ?)", (j._epoch, body))
    j._snapshot_bytes = len(body)
    fin_row = None
    if failed_recs:
        fbody = encoder.encode(failed_recs)
        cur = db.execute("INSERT INTO finished(at, bytes, body) VALUES(?, ?, ?)",
                         (wall, len(fbody), fbody))
        fin_row = (int(cur.lastrowid or 0), len(fbody), [r.id or "" for _, _, r in failed_recs])
    db.executemany("INSERT OR REPLACE INTO charges VALUES(?, ?, ?, ?)",
                   [(store.signed(dg), *charges[dg]) for dg in new_charges])
    db.execute("COMMIT")
    j._handoff.clear()  # read: what is in it now is this epoch's
    j.charges = charges
    if fin_row is not None:
        j._retain(*fin_row, wall)
    log.info("journal_replayed", path=str(j.path), pending=len(tasks), failed=len(failed),
             retained=len(j._index), charged=len(running) + len(new_charges),
             charged_unrecorded=len(new_charges))
    return tasks, failed
