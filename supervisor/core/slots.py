"""Worker slots: one per worker the daemon keeps alive, with explicit states.

A slot outlives its worker processes: when a worker dies the slot stays and
gets a new one. The states are supervisord's vocabulary; unlike supervisord,
the legal transitions live in one table and ``Slot.move`` enforces it::

    STOPPED --> STARTING --> RUNNING --> STOPPING --> STOPPED
                  |  ^          |           |
                  v  |          v           v
                 EXITED <-------+-----------+
                  |   \\
                  v    v
               BACKOFF  FATAL --(cool-down or operator)--> STARTING

A slot is EXITED only for the instant between noticing a death and the
restart policy's decision (restart at once, BACKOFF, or FATAL).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# A slot is generic in what it holds, so this module needs neither the task
# table nor the I/O shell (no import cycle, not even a type-only one).
H = TypeVar("H")  # the I/O shell's worker handle; the core never looks inside it
T = TypeVar("T")  # a task (core.tasks.Task)


class SlotState(enum.Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


S = SlotState
TRANSITIONS: dict[SlotState, frozenset[SlotState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.EXITED, S.STOPPING}),
    S.RUNNING: frozenset({S.EXITED, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED, S.EXITED}),
    S.EXITED: frozenset({S.STARTING, S.BACKOFF, S.FATAL, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED}),
    S.FATAL: frozenset({S.STARTING, S.STOPPED}),
}


class IllegalTransition(RuntimeError):
    pass


# Prefetch window sizing: a worker may hold as many tasks as it can finish
# in about TARGET_HOLD seconds, so fast tasks travel in big batches while a
# slow task never sits behind another slow task that an idle worker could
# have taken. The service-time estimate starts pessimistic (window 1) and
# falls quickly as fast results come back, like TCP slow start.
TARGET_HOLD = 0.002
EWMA = 0.3


@dataclass(eq=False)
class Slot(Generic[H, T]):
    index: int
    max_window: int = 256
    state: SlotState = SlotState.STOPPED
    pid: int | None = None
    generation: int = 0  # how many workers this slot has started
    running_since: float = 0.0  # monotonic, when it said hello
    inflight: deque[T] = field(default_factory=deque)
    head_since: float = 0.0  # when the oldest in-flight task started running
    service_estimate: float = TARGET_HOLD
    restarts: deque[float] = field(default_factory=deque)  # monotonic times
    backoffs: int = 0  # consecutive, reset once the slot is stable
    restart_count: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    last_exit: str = ""
    # Operator/reload intentions, carried out by the daemon once the slot
    # holds no task: retire = stop and remove; recycle = stop and restart.
    retire: bool = False
    recycle: bool = False
    task_limit: int = 0  # tasks the current worker may take before recycling
    assigned: int = 0  # tasks handed to the current worker
    timed_out: int | None = None  # key of the task whose deadline killed the worker
    handle: H | None = None  # the I/O shell's process/pipe object

    def move(self, new: SlotState) -> SlotState:
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"slot {self.index}: {self.state.name} -> {new.name}")
        old, self.state = self.state, new
        return old

    @property
    def window(self) -> int:
        est = self.service_estimate
        if est <= 0:
            return self.max_window
        return max(1, min(self.max_window, int(TARGET_HOLD / est)))

    @property
    def free(self) -> int:
        if self.state is not SlotState.RUNNING or self.retire or self.recycle:
            return 0
        free = self.window - len(self.inflight)
        if self.task_limit:
            free = min(free, self.task_limit - self.assigned)
        return max(0, free)

    def observe(self, now: float, finished: int) -> None:
        """Update the service-time estimate after ``finished`` results arrive."""
        if finished <= 0:
            return  # an empty batch says nothing about service time
        elapsed = max(now - self.head_since, 0.0)
        sample = elapsed / finished
        self.service_estimate += EWMA * (sample - self.service_estimate)
