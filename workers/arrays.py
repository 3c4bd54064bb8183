"""numpy tasks for the tests and the benchmark (allow ``workers.arrays``).

The tasks need numpy (the ``numpy`` extra); importing the module does not,
so a wheel installed without the extra still imports every module.
"""

from __future__ import annotations

import os
from typing import Any


def roundtrip(arr: Any) -> Any:
    """The argument as received: dtype, shape and bytes must all survive."""
    return arr


def double(arr: Any) -> Any:
    """A new array of twice each element (in place on the argument: a retry
    of this task must still see the original, see supervisor/payload/shm.py)."""
    arr *= 2
    return arr


def total(arr: Any) -> float:
    """Sum of a numeric array, as a Python float."""
    return float(arr.sum())


def describe(arr: Any) -> list[Any]:
    """What the worker saw: [dtype str, shape, C-contiguous, writable]."""
    return [arr.dtype.str, list(arr.shape), bool(arr.flags.c_contiguous),
            bool(arr.flags.writeable)]


def zeros(n: int, dtype: str = "<f8") -> Any:
    """A fresh array made in the worker (a result bigger than its arguments)."""
    import numpy as np

    return np.zeros(n, dtype=np.dtype(dtype))


def scalar(x: float) -> Any:
    """A numpy scalar, not an array."""
    import numpy as np

    return np.float32(x)


def double_then_die(arr: Any, marker: str) -> Any:
    """Double in place, then SIGKILL this worker the first time (``marker``
    names a file that exists after the first attempt): the retry must get
    the original argument, not the doubled one."""
    arr *= 2
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), 9)
    return arr


def hold(arr: Any, seconds: float) -> int:
    """Keep the argument mapped for ``seconds``; its size in bytes."""
    import time

    time.sleep(seconds)
    return int(arr.nbytes)
