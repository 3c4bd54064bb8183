"""Credit: how much work this daemon advertises it would take now.

A client connected to several daemons sends a task only where there is
credit (supervisor/client/routing.py), so a busy or slow host never holds
work an idle one could start. Credit rides on every ``pong``::

    capacity = sum over running workers of 1 + max(credit_prefetch, fast)
    held     = tasks accepted and not yet finished (queued or running)
    credit   = max(0, capacity - held), and 0 while paused or draining

``fast`` is how many tasks that worker finishes in CREDIT_HOLD seconds,
from the same service-time estimate that sizes its prefetch window
(core/slots.py), capped by workers.max_prefetch. Why: a client gets
credit back one result at a time, a network round trip after the work
was done, so a fixed small credit would leave workers idle on tasks much
shorter than that round trip. Measured in time, the backlog a daemon
takes on stays about CREDIT_HOLD of work whatever the task size. It is 0
(the floor applies) for a worker that has finished nothing yet (speed
unknown: pessimistic, as the window) and for one whose current task has
run longer than CREDIT_HOLD (slow work: hold nothing extra behind it).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from supervisor.core.slots import SlotState

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon as DaemonState

# About a LAN round trip plus the client's reaction, with margin.
CREDIT_HOLD = 0.02


def advertised(d: DaemonState) -> tuple[int, int, int]:
    """``(credit, capacity, held)`` as a pong reports them."""
    held = len(d.pool.table)
    if d.draining or d.paused:
        return 0, 0, held
    floor = d.cfg.workers.credit_prefetch
    cap = d.cfg.workers.max_prefetch
    now = time.monotonic()
    capacity = 0
    for slot in d.pool.slots:
        if slot.state is not SlotState.RUNNING:
            continue
        fast = 0
        busy_long = bool(slot.inflight) and now - slot.head_since > CREDIT_HOLD
        if slot.tasks_done and not busy_long and slot.service_estimate > 0:
            fast = min(cap, int(CREDIT_HOLD / slot.service_estimate))
        capacity += 1 + max(floor, fast)
    return max(0, capacity - held), capacity, held
