"""Run a pickled call: the lane for private daemons only.

``call(blob)`` unpickles ``(function, args, kwargs)``, runs it, and returns
the pickled result. Unpickling runs arbitrary code, so this module must be
in ``tasks.allow`` ONLY of a daemon whose intake is private to one user (an
ipc socket in a 0700 directory, as a Dask worker's own daemon or the
private Pool has): the same trust as multiprocessing's own pipes. Never
allow it on a daemon other users or hosts can reach.

Exceptions raised by the function are pickled too (``(False, exc)``), so
the caller re-raises the original exception; a crash of the worker is the
daemon's business (retried, then ``WorkerCrashed``).
"""

from __future__ import annotations

import pickle
from typing import Any


def call(blob: bytes) -> bytes:
    fn, args, kwargs = pickle.loads(blob)  # private daemons only: see above
    try:
        value: Any = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - handed back to the caller as is
        return _dumps((False, exc))
    return _dumps((True, value))


def _dumps(obj: object) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        return pickle.dumps((False, TypeError(f"result is not picklable: {exc!r}")))
