"""Credit: how much work this daemon advertises it would take now.

A client connected to several daemons sends a task only where there is
credit (supervisor/client/router.py), so a busy or slow host never holds
work an idle one could start. Credit rides on every ``pong``::

    capacity = running workers x (1 + workers.credit_prefetch)
    held     = tasks accepted and not yet finished (queued or running)
    credit   = max(0, capacity - held), and 0 while paused or draining

The prefetch keeps each worker's pipe from running dry between a result
and the client's next send; anything beyond it waits at the client, where
it can still go to whichever daemon frees up first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.core.slots import SlotState

if TYPE_CHECKING:
    from supervisor.daemon.state import DaemonState


def advertised(d: DaemonState) -> tuple[int, int, int]:
    """``(credit, capacity, held)`` as a pong reports them."""
    held = len(d.table)
    if d.draining or d.paused:
        return 0, 0, held
    running = sum(1 for slot in d.slots if slot.state is SlotState.RUNNING)
    capacity = running * (1 + d.cfg.workers.credit_prefetch)
    return max(0, capacity - held), capacity, held
