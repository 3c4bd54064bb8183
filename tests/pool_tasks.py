"""Functions the Pool tests run in workers (importable by both pools)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

_state: dict[str, Any] = {}


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, c: int = 0) -> int:
    return a + b + c


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def raise_keyerror(key: str) -> None:
    raise KeyError(key)


def pid(_: object = None) -> int:
    return os.getpid()


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def remember(key: str, value: Any) -> None:
    _state[key] = value


def recall(key: str) -> Any:
    return _state.get(key)


def unpicklable(_: object = None) -> Any:
    return lambda: None  # a lambda result: plain pickle refuses it


def kill_self_once(marker: str, x: int) -> int:
    """SIGKILL this worker the first time ``marker`` is seen (a file)."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def echo_all(*args: Any, **kwds: Any) -> Any:
    """What the worker received, returned whole: (args, kwds)."""
    return args, kwds


def twice(x: Any) -> Any:
    return x * 2


def double_in_place(arr: Any) -> Any:
    arr *= 2  # writes to the argument itself
    return arr
