"""The caller's side of the pickle lane (the worker's side is
workers/pickle_lane.py; docs/POOL.md says where pickle is accepted).

With cloudpickle installed (the ``pool`` extra) callables pickle the way
cloudpickle does: functions of ``__main__``, lambdas, closures and notebook
functions by value, so workers need not import the main script. Without
it, the standard pickle sends functions by reference, and workers import
the caller's main script under ``__mp_main__`` as multiprocessing's spawn
does (``main_ref`` says which).
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any

try:  # optional: pip install 'phalanx[pool]'
    import cloudpickle as _cloudpickle  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _cloudpickle = None

HAVE_CLOUDPICKLE = _cloudpickle is not None


def dumps(obj: Any) -> bytes:
    if _cloudpickle is not None:
        return bytes(_cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def dumps_call(obj: Any) -> tuple[bytes, list[Any]]:
    """``dumps`` with large buffers (numpy arrays) left out of the pickle
    (supervisor/payload/oob.py): they travel as task arguments of their
    own, through shared memory, and come back as views, never copied into
    pickle bytes."""
    from supervisor.payload import oob

    if _cloudpickle is not None:
        return oob.dumps(obj, _cloudpickle.dumps)
    return oob.dumps(obj)


def loads_answer(value: Any) -> Any:
    """A worker's answer (workers/pickle_lane.py): pickled bytes, or
    ``[pickle, *buffers]`` when it held large buffers."""
    if isinstance(value, list):
        from supervisor.payload import oob

        return oob.loads(value[0], value[1:])
    return pickle.loads(value)


def main_ref() -> str:
    """How a worker imports this process's ``__main__``: ``module:NAME``
    (started with ``python -m NAME``), ``path:FILE`` (a script), or ``""``
    (an interactive session, or cloudpickle sends ``__main__``'s functions
    by value). The same choice as multiprocessing.spawn.get_preparation_data."""
    if HAVE_CLOUDPICKLE:
        return ""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name:
        return f"module:{name}"
    path = getattr(main, "__file__", None)
    if path:
        return f"path:{os.path.abspath(path)}"
    return ""


def importing_main_in_worker() -> bool:
    """True while a private pool's worker imports the caller's main script:
    a Pool created then would start pools without end (the script lacks
    ``if __name__ == "__main__":``), so Pool refuses, as multiprocessing."""
    lane = sys.modules.get("workers.pickle_lane")
    return bool(getattr(lane, "importing_main", False))
