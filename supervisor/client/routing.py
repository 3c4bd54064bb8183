"""Several daemons: where each batch goes, and what happens to the tasks
of a daemon that dies. Run with Engine.lock held, only when the client
has more than one endpoint; one endpoint keeps heartbeat.py's path, so
a single daemon costs exactly what it did.

::

    pong(capacity, held) ----> Link.base   room = base - tasks we hold there
    batch to send -----------> the live link with the most room, at most
                               its room (and its share of the queue)
    no room anywhere --------> tasks wait in the client's queue; a link
                               out of room is pinged (at most one ping in
                               flight, at most every CREDIT_REFRESH) so
                               its credit is fresh when work frees up
    silent for dead_after ---> dead: its tasks back to the front of the
                               queue, same ids, same bytes; a new socket
    answers again / new boot > alive; gets work again after its pong
    none alive with capacity for unreachable_after
                          --> pending tasks fail (DaemonUnreachable)

Why the queue rather than handing a dead daemon's tasks to one chosen
survivor: they then go where there is room, like any other task, so a
busy survivor is not handed work an idle one could start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from supervisor.client.errors import DaemonUnreachable
from supervisor.client.heartbeat import MAX_BATCH, reattach
from supervisor.client.links import RESTARTED, Link

if TYPE_CHECKING:
    from supervisor.client.engine import Engine

HEARTBEAT = 1.0  # at most this between pings, while we have work
DEAD_AFTER = 3.0  # default seconds of silence before a daemon is dead to us
# A link out of room while tasks wait is pinged again at most this often:
# its credit changes with other clients' work and its workers' speed, which
# our own results do not tell us. About the daemon's CREDIT_HOLD.
CREDIT_REFRESH = 0.02


def heartbeat_of(dead_after: float) -> float:
    """Ping interval: three pings within dead_after, at most HEARTBEAT."""
    return min(HEARTBEAT, dead_after / 3)


def pick(links: list[Link], queued: int) -> tuple[Link, int] | None:
    """The live link with the most room and how many tasks it may take
    now (its room, at most its share of ``queued``), or None: no room."""
    best: Link | None = None
    most = 0
    open_links = 0
    for link in links:
        room = link.room()
        if room > 0:
            open_links += 1
            if room > most:
                best, most = link, room
    if best is None:
        return None
    share = -(-queued // open_links)
    return best, max(1, min(MAX_BATCH, most, share))


def can_send(links: list[Link]) -> bool:
    return any(link.room() > 0 for link in links)


def requeue(engine: Engine, link: Link) -> None:
    """Put every task ``link`` holds back at the front of the queue (same
    id, same bytes): sent again wherever there is room."""
    sent, pending, window = engine.sent, engine.pending, engine.window
    back: list[tuple[str, bytes | msgspec.Raw, int]] = []
    for task_id in link.ids:
        rec = sent.pop(task_id, None)
        if rec is None:
            continue
        window.give(rec[1])
        if task_id in pending:
            back.append((task_id, rec[0], rec[1]))
    link.ids.clear()
    engine.resubmitted += len(back)
    engine.outq.extendleft(reversed(back))


def elsewhere(engine: Engine, task_id: str, link: Link) -> bool:
    """A daemon refused a task for draining or pausing: requeue it if
    another live daemon takes work (capacity > 0), and give the refusing
    one no room until its next pong. False: fail it with that refusal."""
    if not any(o is not link and not o.down and o.capacity > 0 for o in engine.links):
        return False
    rec = engine.sent.pop(task_id)
    engine.window.give(rec[1])
    link.ids.discard(task_id)
    link.stall()
    engine.resubmitted += 1
    engine.outq.appendleft((task_id, rec[0], rec[1]))
    return True


def after_pong(engine: Engine, link: Link, action: int) -> None:
    """What a pong asked of this link's tasks (links.Link.on_pong)."""
    if action == RESTARTED:
        requeue(engine, link)  # the new run holds none of them: go where there is room
    else:
        reattach(engine, link, link)  # it may hold them: send again, same place


def tend(engine: Engine, now: float) -> float | None:
    """Heartbeats, credit refreshes, deaths, and when to look again."""
    after, every = engine.dead_after, engine.heartbeat
    busy = bool(engine.pending) or bool(engine.pong_waiters)
    queued = bool(engine.outq)
    wait: float | None = None
    live = False
    for link in engine.links:
        if not link.down and link.silent(now, after):
            engine.relink(link)  # a new socket: nothing stale reaches its next run
            requeue(engine, link)
            engine.send_queued()  # to the others now, not a poll later
            queued = bool(engine.outq)
        starved = (queued and not link.pings and link.room() <= 0 and not link.down
                   and link.boot is not None)
        if ((busy and now >= link.next_ping) or (link.boot is None and not link.pings)
                or (starved and now - link.last_ping >= CREDIT_REFRESH)):
            link.ping(now)
            link.next_ping = now + every
        elif starved:
            wait = _min(wait, link.last_ping + CREDIT_REFRESH - now)
        if busy:
            wait = _min(wait, link.next_ping - now)
            if link.awaiting_since is not None and not link.down:
                wait = _min(wait, link.awaiting_since + after - now)
        live = live or (link.boot is not None and not link.down and link.capacity > 0)
    if live or not busy:
        engine.none_live_since = None
    elif engine.none_live_since is None:
        engine.none_live_since = now
    elif now - engine.none_live_since >= engine.unreachable_after:
        engine.none_live_since = None
        _unreachable(engine)
    if engine.none_live_since is not None:
        wait = _min(wait, engine.none_live_since + engine.unreachable_after - now)
    return None if wait is None else max(wait, 0.0)


def _unreachable(engine: Engine) -> None:
    """No daemon took work for unreachable_after: fail what is pending."""
    states = ", ".join(
        f"{link.endpoint} ({'silent' if link.down or link.boot is None else 'paused or draining'})"
        for link in engine.links)
    message = f"no daemon answered and took work for {engine.unreachable_after:g}s: {states}"
    engine._fail_ids(list(engine.pending), lambda i: DaemonUnreachable(
        "DaemonUnreachable", message, task_id=i))


def _min(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
