"""Restart decisions: pure functions of a slot's history and the config.

OTP's restart intensity: a slot may restart at most ``max_restarts`` times
in any ``period`` seconds. Past that, it waits in BACKOFF for an
exponentially growing, jittered delay (jitter so that slots broken by the
same cause do not retry in lockstep). After ``max_backoffs`` consecutive
backoffs the slot is FATAL; it tries again after ``fatal_cooldown``.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

from supervisor.config import RestartSection
from supervisor.core.slots import Slot


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["restart", "backoff", "fatal"]
    delay: float = 0.0


def record_restart(slot: Slot, now: float, period: float) -> None:
    slot.restarts.append(now)
    while slot.restarts and now - slot.restarts[0] > period:
        slot.restarts.popleft()


def decide(slot: Slot, now: float, policy: RestartSection, rng: random.Random) -> Decision:
    """What to do with a slot whose worker just died."""
    record_restart(slot, now, policy.period)
    if len(slot.restarts) <= policy.max_restarts:
        return Decision("restart")
    if slot.backoffs >= policy.max_backoffs:
        return Decision("fatal", policy.fatal_cooldown)
    # Cap the exponent: with a huge max_backoffs, 2**backoffs outgrows a
    # float (OverflowError) long after the delay has reached backoff_max.
    base = min(policy.backoff_max, policy.backoff_initial * 2.0 ** min(slot.backoffs, 1000))
    spread = base * policy.backoff_jitter
    delay = max(0.0, base + rng.uniform(-spread, spread))
    return Decision("backoff", delay)


def pool_crash_loop(history: deque[float], now: float, policy: RestartSection) -> bool:
    """Record a restart of any slot; True if the whole pool is crash-looping."""
    history.append(now)
    while history and now - history[0] > policy.daemon_period:
        history.popleft()
    return policy.daemon_max_restarts > 0 and len(history) > policy.daemon_max_restarts


def stable(slot: Slot, now: float, policy: RestartSection) -> bool:
    """A worker that has run a whole period without dying resets backoff."""
    return slot.running_since > 0 and now - slot.running_since >= policy.period
