"""Start-up: rebuild what the journal knows and rewrite it compactly.

Reads every row once: the results (into the id index), the accepted tasks,
their latest hand-off to a worker, and which worker generation each slot
ran when the daemon died. What was accepted and has no result is pending;
of the pending tasks handed to a slot's last live worker, the oldest is
the one that worker was running (workers run what they hold in order), so
it is charged an attempt, as if its worker had crashed under it. Then one
transaction replaces the log by the pending tasks under this start's keys
(a new epoch), so keys never collide across restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

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
    for n, at, nbytes, body in db.execute("SELECT n, at, bytes, body FROM finished ORDER BY n"):
        ids = []
        for fin in store.finishes_decoder.decode(body):
            tid = fin.result.id or ""
            j._index[tid] = n << 32 | fin.digest
            ids.append(tid)
        j._retained.append((n, at, nbytes, ids))
        j._retained_bytes += nbytes
    accepted: dict[tuple[int, int], store.TaskRecord] = {}
    for e, body in db.execute("SELECT epoch, body FROM accepted ORDER BY n"):
        for rec in store.tasks_decoder.decode(body):
            accepted[(e, rec.key)] = rec
    last_start: dict[tuple[int, int], tuple[int, int, int, int]] = {}  # -> slot, epoch, gen, order
    order = 0
    for e, body in db.execute("SELECT epoch, body FROM started ORDER BY n"):
        for start in store.starts_decoder.decode(body):
            for key in start.keys:
                order += 1
                last_start[(e, key)] = (start.slot, e, start.gen, order)
            for key, attempts, crashes in start.charged:
                charged = accepted.get((e, key))
                if charged is not None:
                    charged.attempts, charged.crashes = attempts, crashes
    live = {slot: (e, gen) for slot, e, gen in db.execute("SELECT slot, epoch, gen FROM worker")}
    pending: dict[str, tuple[tuple[int, int], store.TaskRecord]] = {}
    for ek, rec in accepted.items():
        if rec.id in j._index or rec.id in pending:  # finished, or a duplicate
            continue
        pending[rec.id] = (ek, rec)
    # The task each slot's last live worker was running: its oldest pending hand-off.
    running: dict[int, tuple[int, store.TaskRecord]] = {}
    for ek, rec in pending.values():
        started = last_start.get(ek)
        if started is None:
            continue
        slot, e, gen, seq = started
        if gen and live.get(slot) == (e, gen):
            best = running.get(slot)
            if best is None or seq < best[0]:
                running[slot] = (seq, rec)
    for _, rec in running.values():
        rec.attempts += 1
        rec.crashes += 1
    tasks: list[Task] = []
    failed: list[Result] = []
    failed_recs: list[tuple[int, float, Result]] = []
    wall = time.time()
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
        j._index[rec.id] = rec.digest  # pending
        tasks.append(task)
    # Rewrite: this start's epoch, its keys, nothing stale.
    j._epoch = epoch + 1
    db.execute("BEGIN")
    db.execute("DELETE FROM accepted")
    db.execute("DELETE FROM started")
    db.execute("DELETE FROM worker")
    db.execute("INSERT OR REPLACE INTO meta VALUES('epoch', ?)", (j._epoch,))
    body = encoder.encode([j._record(t, wall, now_mono) for t in tasks])
    db.execute("INSERT INTO accepted(epoch, body) VALUES(?, ?)", (j._epoch, body))
    j._snapshot_bytes = len(body)
    if failed_recs:
        fbody = encoder.encode(failed_recs)
        cur = db.execute("INSERT INTO finished(at, bytes, body) VALUES(?, ?, ?)",
                         (wall, len(fbody), fbody))
        n = int(cur.lastrowid or 0)
        for dg, _, result in failed_recs:
            j._index[result.id or ""] = n << 32 | dg
        j._retained.append((n, wall, len(fbody), [r.id or "" for _, _, r in failed_recs]))
        j._retained_bytes += len(fbody)
    db.execute("COMMIT")
    log.info("journal_replayed", path=str(j.path), pending=len(tasks), failed=len(failed),
             retained=len(j._index) - len(tasks), charged=len(running))
    return tasks, failed
