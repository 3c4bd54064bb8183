"""Decisions: pure functions of a slot's history, a task's record and the config.

Nothing here changes a slot or a task: each function returns a value (a
``Decision`` for the slot, a ``Verdict`` for the task, a deadline) and the
Pool applies it. That keeps every rule unit-testable in microseconds.

Restarts follow OTP's restart intensity: a slot may restart at most
``max_restarts`` times in any ``period`` seconds. Past that, it waits in
BACKOFF for an exponentially growing, jittered delay (jitter so that slots
broken by the same cause do not retry in lockstep). After ``max_backoffs``
consecutive backoffs the slot is FATAL; it tries again after
``fatal_cooldown``. The whole pool has an intensity too: past it, a slot
that would restart at once waits ``backoff_max`` instead.

Why a death caused by a task is not counted: a poison task that kills every
worker it touches would otherwise spend the slots' restart budget, send
healthy workers to BACKOFF and FATAL, and stall healthy work behind it. The
task pays instead (its attempts, then quarantine) and the replacement starts
at once. Restart intensity is for workers that die on their own (at start-up,
while idle), which no task can explain.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from supervisor.config import RestartSection
from supervisor.core.tasks import AnySlot, Task
from supervisor.errors import TIMEOUT, WORKER_CRASHED

# A task that used up its attempts having killed at least this many workers
# is quarantined: its failure says so and a task.quarantined event names it.
QUARANTINE_AFTER = 2


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a slot whose worker just died."""

    action: Literal["restart", "backoff", "fatal"]
    delay: float = 0.0
    # The slot's restart times to keep (this death included when counted).
    history: tuple[float, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a worker's death means for the task it was running."""

    action: Literal["retry", "fail", "quarantine"]
    kind: str  # the error type if it fails: TIMEOUT or WORKER_CRASHED
    message: str  # the failure's message (unused for a retry)


def recent(history: Iterable[float], now: float, period: float) -> tuple[float, ...]:
    return tuple(t for t in history if now - t <= period)


def decide(
    slot: AnySlot, now: float, policy: RestartSection, rng: random.Random,
    *, caused_by_task: bool = False,
) -> Decision:
    """Restart at once, BACKOFF or FATAL, for a slot whose worker died."""
    if caused_by_task:
        return Decision("restart", history=recent(slot.restarts, now, policy.period))
    history = (*recent(slot.restarts, now, policy.period), now)
    if len(history) <= policy.max_restarts:
        return Decision("restart", history=history)
    if slot.backoffs >= policy.max_backoffs:
        return Decision("fatal", policy.fatal_cooldown, history)
    # Cap the exponent: with a huge max_backoffs, 2**backoffs outgrows a
    # float (OverflowError) long after the delay has reached backoff_max.
    base = min(policy.backoff_max, policy.backoff_initial * 2.0 ** min(slot.backoffs, 1000))
    spread = base * policy.backoff_jitter
    delay = max(0.0, base + rng.uniform(-spread, spread))
    return Decision("backoff", delay, history)


def pool_history(history: Iterable[float], now: float, policy: RestartSection) -> tuple[float, ...]:
    """The pool's restart times within its period, this restart included."""
    return (*(t for t in history if now - t <= policy.daemon_period), now)


def pool_crash_loop(history: tuple[float, ...], policy: RestartSection) -> bool:
    """True if the whole pool restarts more often than its intensity allows."""
    return policy.daemon_max_restarts > 0 and len(history) > policy.daemon_max_restarts


def brake(decision: Decision, crash_loop: bool, policy: RestartSection) -> Decision:
    """While the pool crash-loops, an immediate restart waits backoff_max."""
    if crash_loop and decision.action == "restart":
        return Decision("backoff", policy.backoff_max, decision.history)
    return decision


def stable(slot: AnySlot, now: float, policy: RestartSection) -> bool:
    """A worker that has run a whole period without dying resets backoff."""
    return slot.running_since > 0 and now - slot.running_since >= policy.period


def judge(task: Task, timed_out: bool, detail: str) -> Verdict:
    """Retry, fail or quarantine a task whose worker died running it.

    ``task.attempts`` and ``task.crashes`` already count this death.
    ``detail`` says how the worker died, for the failure message.
    """
    if timed_out:
        if task.attempts < task.max_attempts and task.retry_timeouts:
            return Verdict("retry", TIMEOUT, detail)
        why = ("(timeouts are not retried: tasks.retry_timeouts)"
               if task.attempts < task.max_attempts
               else f"(attempt {task.attempts} of {task.max_attempts})")
        return Verdict("fail", TIMEOUT, f"{detail} {why}")
    if task.attempts < task.max_attempts:
        return Verdict("retry", WORKER_CRASHED, detail)
    message = f"{detail} (attempt {task.attempts} of {task.max_attempts})"
    if task.crashes >= QUARANTINE_AFTER:
        return Verdict("quarantine", WORKER_CRASHED,
                       f"{message}; quarantined after killing {task.crashes} workers")
    return Verdict("fail", WORKER_CRASHED, message)


def deadline(task: Task, started: float) -> float | None:
    """When the running ``task`` (started at ``started``) must be killed."""
    return started + task.timeout if task.timeout > 0 else None
