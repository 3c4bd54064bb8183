"""Task functions for the benchmark, importable by every kind of child.

The same ``noop`` runs under every contender: phalanxd's workers import it
(the benchmark's config allows ``bench.tasks``), and multiprocessing.Pool and
ProcessPoolExecutor children unpickle it by reference. It takes one argument
because ``map`` passes one item per call.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

__all__ = ["noop", "sleep", "stamp_and_sleep", "stamp_and_die", "cpu"]


def noop(x: Any = None) -> None:
    """Do nothing."""


def cpu(n: int) -> int:
    """The seed's CPU-bound function: pure-Python arithmetic over range(n)."""
    return sum(i * i % 7 for i in range(n))


def sleep(seconds: float) -> float:
    """Sleep, then return the seconds slept (a task to kill mid-flight)."""
    time.sleep(seconds)
    return seconds


def _stamp(path: str) -> None:
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {time.time()!r}\n")


def stamp_and_sleep(path: str, seconds: float) -> float:
    """Append "pid wall-clock-time" to ``path``, then sleep like ``sleep``.

    The stamp proves the worker is running the task, not merely holding it.
    """
    _stamp(path)
    time.sleep(seconds)
    return seconds


def stamp_and_die(path: str) -> None:
    """Append "pid wall-clock-time" to ``path``, then SIGKILL this worker.

    ``workers.testing:crash("kill")`` with a trace: it tells when each
    attempt actually started running, which events alone do not.
    """
    _stamp(path)
    os.kill(os.getpid(), signal.SIGKILL)
