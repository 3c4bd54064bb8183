"""The client's heartbeat: pinging each daemon that holds our tasks,
noticing silence, and sending a daemon's tasks again (re-attaching), to
the same daemon or to another. When to re-attach is links.py's decision
(Link.on_pong); these functions do it with the engine's sockets and books.
All run with Engine.lock held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from supervisor.client.errors import DaemonUnreachable
from supervisor.client.links import Link

if TYPE_CHECKING:
    from supervisor.client.engine import Engine

MAX_BATCH = 1024  # tasks per message (the engine's too)
HEARTBEAT = 1.0  # seconds between pings to a daemon holding our tasks


def reattach(engine: Engine, src: Link, dst: Link) -> None:
    """Send every task ``src`` holds again, same ids, on ``dst``."""
    ids = [i for i in src.ids if i in engine.pending and i in engine.sent]
    src.ids.clear()
    engine.resubmitted += len(ids)
    sent = engine.sent
    raws: list[msgspec.Raw] = []
    part: list[str] = []
    size = 0
    for task_id in ids:  # batches bounded by count and bytes, as send_queued's
        raw, n, _ = sent[task_id]
        if raws and (len(raws) >= MAX_BATCH or size + n > engine.batch_bytes):
            engine._send(dst, raws, part, size)
            raws, part, size = [], [], 0
        sent[task_id] = (raw, n, dst)
        dst.ids.add(task_id)
        raws.append(raw)
        part.append(task_id)
        size += n
    if raws:
        engine._send(dst, raws, part, size)

def resend_alone(engine: Engine, link: Link, ids: list[str]) -> None:
    """A batch was too large for the daemon (its limit is below ours):
    send each of its tasks as a request of its own, so that only the
    task that is too large by itself is refused."""
    for task_id in ids:
        rec = engine.sent.get(task_id)
        if rec is not None and task_id in engine.pending:
            engine._send(link, [rec[0]], [task_id], rec[1])

def tend(engine: Engine, now: float) -> float | None:
    """Heartbeats, silence, and when to look again."""
    wait: float | None = None
    after = engine.unreachable_after
    for link in engine.links:
        if link.silent(now, after):
            link.forget_pings()
            if link.ids:
                others = [o for o in engine.links if o is not link and not o.down]
                if others:
                    reattach(engine, link, others[0])
                else:
                    engine._fail_ids(list(link.ids), lambda i, ep=link.endpoint: (
                        DaemonUnreachable("DaemonUnreachable",
                                          f"no answer from {ep} for {after:g}s "
                                          "(heartbeat pings unanswered)", task_id=i)))
        busy = bool(link.ids) or bool(engine.pong_waiters)
        if (busy and now >= link.next_ping) or (link.boot is None and not link.pings):
            link.ping(now)
            link.next_ping = now + HEARTBEAT
        if busy:
            wait = _min(wait, link.next_ping - now)
        if link.awaiting_since is not None and busy:
            wait = _min(wait, link.awaiting_since + after - now)
    return None if wait is None else max(wait, 0.0)


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
