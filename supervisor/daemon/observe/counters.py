"""Counts the daemon keeps only so they can be observed (metrics, page).

Everything the task table and the slots already count is read from them
(snapshot.py); this object adds what they do not: why tasks were retried,
why workers restarted, why intake refused, how long tasks ran and waited,
and a short list of recent crashes. Each call is a dict increment or a
bisect: cheap enough for the hot path, and nothing here is ever exported
from inside the loop (snapshot.py copies it once a second at most).

Labels stay bounded: reasons are fixed names (error types, exit kinds),
task names are bounded by ``tasks.allow`` and, past ``MAX_TASK_NAMES``
distinct names, folded into ``OTHER``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from typing import Protocol

# Prometheus-style upper bounds (seconds), +Inf implied: from 100 us (a
# no-op task) to 5 min (a long batch job).
BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
MAX_TASK_NAMES = 1000
OTHER = "(other)"
RECENT = 50  # crashes, retries, quarantines kept for the status page


class HasAcceptedAt(Protocol):
    @property
    def accepted_at(self) -> float: ...


class Histogram:
    """Bucket counts (not cumulative), their sum and count."""

    __slots__ = ("buckets", "sum", "count")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0
        self.count = 0

    def add(self, seconds: float, n: int = 1) -> None:
        self.buckets[bisect_left(BOUNDS, seconds)] += n
        self.sum += seconds * n
        self.count += n


class Counters:
    def __init__(self) -> None:
        self.submitted: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.duration: dict[str, Histogram] = {}
        self.queue_wait = Histogram()
        # (wall time, kind, slot, task name, detail); kind is crash, retry
        # or quarantine.
        self.recent: deque[tuple[float, str, int, str, str]] = deque(maxlen=RECENT)

    def _name(self, table: dict[str, int] | dict[str, Histogram], name: str) -> str:
        return name if name in table or len(table) < MAX_TASK_NAMES else OTHER

    # ------------------------------------------------------------ intake
    def accepted(self, name: str) -> None:
        table = self.submitted
        if name not in table:
            name = self._name(table, name)
        table[name] = table.get(name, 0) + 1

    def refused(self, reason: str, n: int = 1) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + n

    # ------------------------------------------------------------ workers
    def dispatched(self, tasks: Iterable[HasAcceptedAt], now: float) -> None:
        hist = self.queue_wait
        buckets = hist.buckets
        total = 0.0
        n = 0
        for t in tasks:
            wait = now - t.accepted_at
            buckets[bisect_left(BOUNDS, wait)] += 1
            total += wait
            n += 1
        hist.sum += total
        hist.count += n

    def ran(self, names: dict[str, int], seconds: float) -> None:
        """``names[name]`` tasks of that name each held a worker ``seconds``."""
        duration = self.duration
        for name, n in names.items():
            hist = duration.get(name)
            if hist is None:
                key = self._name(duration, name)
                hist = duration.get(key)
                if hist is None:
                    hist = duration[key] = Histogram()
            hist.add(seconds, n)

    def restarted(self, reason: str, slot: int, detail: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1
        if reason != "recycle":
            self.recent.append((time.time(), "crash", slot, "", detail))

    def retried(self, reason: str, slot: int, task: str, detail: str) -> None:
        self.retries[reason] = self.retries.get(reason, 0) + 1
        self.recent.append((time.time(), "retry", slot, task, detail))

    def quarantined(self, slot: int, task: str, detail: str) -> None:
        self.recent.append((time.time(), "quarantine", slot, task, detail))


def restart_reason(exitcode: int | None, timed_out: bool) -> str:
    """A bounded name for why a worker went away unasked."""
    if timed_out:
        return "timeout"
    if exitcode is None:
        return "unknown"
    return "signal" if exitcode < 0 else "exit"
