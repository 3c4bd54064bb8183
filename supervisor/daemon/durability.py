"""The journal's edge of the daemon: open and replay it at start, answer
``fetch`` requests. The loop's own calls into the journal are one line
each (see journal.py for the list)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from supervisor.core.tasks import ReplyGroup
from supervisor.daemon.journal import open_journal
from supervisor.errors import JournalError, UnknownId
from supervisor.protocol import Fetch, Result, Results, encoder, error_raw

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon


def attach(d: Daemon) -> None:
    """Open the journal (JournalError: one line for the operator), queue
    again what it holds unfinished, and prune it once a second."""
    try:
        d.journal = journal = open_journal(d.cfg.journal, d.cfg.journal_path)
    except JournalError:
        d.close_sockets()
        raise
    pool = d.pool
    journal.bind(pool.table, lambda: [
        (s.index, s.generation if s.handle is not None else 0, s.inflight) for s in pool.slots],
        lambda: tuple([(s.index, s.generation if s.handle is not None else 0)
                       for s in pool.slots]))
    # Tasks failed here (they kept killing the daemon) are journaled results.
    tasks, _ = journal.replay(d.pool.table.next_key, time.monotonic())
    d.spawner.ledger_for = journal.ledger_for  # workers note what they start
    for task in tasks:
        d.pool.table.add(task)
    d.loop.every(1.0, journal.prune)


def fetch(d: Daemon, route: bytes, req: bool, request: Fetch) -> None:
    """Answer each id: its result if retained; if pending, it comes when done."""
    group = ReplyGroup(route) if req else None
    ready: list[Result] = []
    for tid in request.ids:
        task = d.pool.table.by_id.get(tid)
        if task is not None:
            task.also_notify(None if req else route, group)
            if group is not None:
                group.waiting += 1
            continue
        found = d.pool.table.cached_result(tid)
        if not isinstance(found, Result):
            found = d.journal.result(tid)
        if found is None:
            err = UnknownId(f"no pending or retained task has id {tid!r}")
            found = Result(tid, "", False, 0, error=error_raw(err.type, err.message))
        ready.append(found)
    if group is not None:
        group.results.extend(ready)
        if group.waiting == 0:
            d.journal.hold(route, encoder.encode(Results(group.results)), True)
    elif ready:
        d.journal.hold(route, encoder.encode(Results(ready)))
