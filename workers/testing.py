"""Hostile and test-only tasks: for the demo, the tests and the benchmarks.

Not allowed by the default config, and never to be allowed where users
you do not trust can submit: these tasks kill their worker, attack its
pipe, allocate without bound, leave processes behind and ignore signals.
A config that wants them lists ``workers.testing`` in ``tasks.allow``
(the demo's config/demo.toml, the test suite and the benchmarks do).

``crash`` ends its worker the ways real code does: an exit, a SIGKILL from
the OOM killer, a segfault in a C extension, an abort in a C library.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Any

from workers.builtin import TaskFailure

__all__ = ["say", "crash", "alloc", "sabotage", "pid", "spawn_child", "stubborn",
           "nested", "bad_str", "as_tuples"]


def say(text: str, stream: str = "stdout") -> str:
    """Print ``text`` to the worker's stdout or stderr; return it."""
    print(text, file=sys.stderr if stream == "stderr" else sys.stdout, flush=True)
    return text


def crash(mode: str = "exit") -> None:
    """End this worker process: mode is ``exit``, ``kill``, ``segv`` or ``abort``."""
    if mode == "exit":
        os._exit(13)
    elif mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "segv":
        ctypes.string_at(0)  # a real invalid read, not a raised signal
    elif mode == "abort":
        os.abort()
    elif mode == "raise_base":
        # Escapes ``except Exception`` in the worker loop.
        raise SystemExit(7)
    raise ValueError(f"unknown crash mode {mode!r} (exit, kill, segv, abort)")


def alloc(mb: int, hold: float = 0.0) -> int:
    """Allocate and touch ``mb`` MiB, hold it ``hold`` seconds; return bytes."""
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    if hold:
        time.sleep(hold)
    return len(block)


def sabotage(mode: str = "garbage", linger: float = 5.0) -> None:
    """Attack this worker's own pipe to the supervisor: ``close_pipe`` closes
    it and keeps running for ``linger`` seconds; ``garbage`` writes bytes
    that are not a valid frame."""
    from workers import loop

    if mode == "close_pipe":
        os.close(loop.PIPE_FD)
        time.sleep(linger)
    elif mode == "garbage":
        os.write(loop.PIPE_FD, b"\xff\xff\xff\x7fnot a frame at all")
        time.sleep(linger)
    else:
        raise ValueError(f"unknown sabotage mode {mode!r} (close_pipe, garbage)")


def pid() -> int:
    """The worker's process id (tests use it to aim signals)."""
    return os.getpid()


def spawn_child(seconds: float = 60.0, new_session: bool = False) -> int:
    """Start a grandchild process that ignores SIGTERM; return its pid.
    With ``new_session`` it also calls setsid(), leaving the worker's
    process group (so only the daemon's subreaper can catch it)."""
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the grandchild
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if new_session:
            os.setsid()
        time.sleep(seconds)
        os._exit(0)
    return child


def stubborn(seconds: float) -> float:
    """Ignore SIGTERM (for this worker, from now on) and swallow every
    SoftTimeout; sleep ``seconds`` in all. Only SIGKILL stops it early."""
    from workers.loop import SoftTimeout

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except SoftTimeout:
            continue
    return seconds


def nested(depth: int, leaf: Any = 0) -> Any:
    """A value nested ``depth`` arrays deep around ``leaf``."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


class UnprintableFailure(TaskFailure):
    """A failure whose ``str()`` raises, as buggy exception classes do."""

    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be shown")


def as_tuples(value: Any) -> Any:
    """``value`` with every list in it made a tuple, at any depth (a result
    holding tuples, which MessagePack alone cannot tell from lists)."""
    if isinstance(value, list):
        return tuple(as_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: as_tuples(v) for k, v in value.items()}
    return value


def bad_str() -> None:
    """Raise an exception whose ``str()`` itself raises."""
    raise UnprintableFailure()


def crash_once(marker: str, mode: str = "segv", value: Any = None) -> Any:
    """Crash (as ``crash``) the first time, when ``marker`` does not exist
    yet; return ``value`` on any later run. The marker is created first,
    so the retry after the crash succeeds."""
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return value
    os.close(fd)
    crash(mode)
    return value  # not reached
