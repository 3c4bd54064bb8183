"""Built-in tasks any user may run: echo, noop, sleep, burn, fail.

The default config allows this module: nothing here can harm the host,
its worker or another user beyond the time and CPU a task is given.
Tasks that crash, sabotage or outlive their worker (for the demo, the
tests and the benchmarks) live in workers.testing, which no config
allows unless it says so.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["echo", "noop", "sleep", "burn", "fail"]


def echo(x: Any = None) -> Any:
    """Return the argument unchanged."""
    return x


def noop() -> None:
    """Do nothing (benchmarks)."""


def sleep(seconds: float) -> float:
    """Sleep, then return the seconds slept."""
    time.sleep(seconds)
    return seconds


def burn(seconds: float) -> int:
    """Spin the CPU for ``seconds``; return the loop count."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return n


class TaskFailure(Exception):
    """What ``fail`` raises."""


def fail(message: str = "task failed on purpose") -> None:
    """Raise ``TaskFailure(message)``: a normal failed result, not a crash."""
    raise TaskFailure(message)
