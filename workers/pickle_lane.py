"""The pickle lane: how a private Pool's worker runs the caller's callables.

Only a worker whose daemon was built by ``supervisor.Pool`` registers the
task ``PICKLE_TASK`` (the daemon's config ``tasks.accept_pickle``, which no
config file can set; see docs/POOL.md for where pickle is and is not
accepted). The daemon passes the arguments through undecoded, as for every
task; only this module unpickles them, inside the worker.

A call travels as MessagePack values: ``main`` (how the caller's
``__main__`` is imported here, see ``supervisor.pool.lane.main_ref``),
``init`` (the pickled ``(initializer, initargs)`` or nil), ``call``, the
pickled ``(function, kind, items, kwds)``, then the call's large buffers
(numpy arrays) taken out of that pickle (supervisor/payload/oob.py), as
arrays: shared memory from the local caller, so they are mapped here, not
copied. The answer is ``("ok", [(True, value) | (False, exception), ...])``
one outcome per item, or ``("error", exception)`` when nothing could run
(the call did not unpickle, the main script or the initializer raised),
pickled: bytes, or ``[pickle, *buffers]`` when it holds large buffers.

Why the main script is imported the way multiprocessing's spawn does it
(``runpy`` under the name ``__mp_main__``, then aliased as ``__main__``):
a function defined in the caller's script pickles as ``__main__.name``, and
``if __name__ == "__main__":`` keeps the script's own work from running
again here, exactly as with ``multiprocessing``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from multiprocessing import spawn
from multiprocessing.pool import (  # type: ignore[attr-defined]  # not in typeshed
    ExceptionWithTraceback,
    MaybeEncodingError,
)
from typing import Any

from supervisor.payload import oob
from supervisor.protocol import PICKLE_TASK

# What this worker already prepared: the main reference imported and the
# initializer blob run (once per worker, as multiprocessing.Pool does).
_main_done: str | None = None
_init_done: bytes | None = None

# True while the main script is being imported: supervisor.Pool refuses to
# start then (an unguarded script would nest pools without end).
importing_main = False


def _prepare_main(main: str) -> None:
    global _main_done, importing_main
    if main == _main_done:
        return
    kind, _, value = main.partition(":")
    importing_main = True
    try:
        if kind == "module":
            spawn._fixup_main_from_name(value)  # type: ignore[attr-defined]
        elif kind == "path":
            spawn._fixup_main_from_path(value)  # type: ignore[attr-defined]
    finally:
        importing_main = False
    _main_done = main


def _initialize(init: bytes | None) -> None:
    global _init_done
    if not init or init == _init_done:
        return
    initializer, initargs = pickle.loads(init)
    initializer(*initargs)
    _init_done = init


def _wrap(exc: BaseException) -> BaseException:
    """The exception with its traceback as text, so the caller's get()
    raises it with a RemoteTraceback as __cause__ (as multiprocessing)."""
    return ExceptionWithTraceback(exc, exc.__traceback__)  # type: ignore[no-any-return]


def _run_items(fn: Callable[..., Any], kind: str, items: list[Any],
               kwds: dict[str, Any]) -> list[tuple[bool, Any]]:
    out: list[tuple[bool, Any]] = []
    for item in items:
        try:
            if kind == "map":
                out.append((True, fn(item)))
            else:  # "star" (starmap, apply): item is the argument tuple
                out.append((True, fn(*item, **kwds)))
        except Exception as exc:  # noqa: BLE001 - the task's exception is its outcome
            out.append((False, _wrap(exc)))
    return out


def _encodable(ok: bool, value: Any) -> tuple[bool, Any]:
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - as multiprocessing: MaybeEncodingError
        return (False, MaybeEncodingError(exc, value))
    return (ok, value)


def _answer(obj: Any) -> bytes | list[Any]:
    blob, buffers = oob.dumps(obj)
    return [blob, *buffers] if buffers else blob


def _dump(outcomes: list[tuple[bool, Any]]) -> bytes | list[Any]:
    try:
        return _answer(("ok", outcomes))
    except Exception:  # noqa: BLE001 - some outcome cannot be pickled: fail only that one
        safe = [_encodable(ok, value) for ok, value in outcomes]
        return _answer(("ok", safe))


def run(main: str, init: bytes | None, call: bytes, *buffers: Any) -> bytes | list[Any]:
    """The task PICKLE_TASK: run one pickled call, answer pickled outcomes."""
    try:
        _prepare_main(main)
        _initialize(init)
        fn, kind, items, kwds = oob.loads(call, buffers)
    except Exception as exc:  # noqa: BLE001 - nothing ran; every item fails with this
        return pickle.dumps(("error", _wrap(exc)), pickle.HIGHEST_PROTOCOL)
    return _dump(_run_items(fn, kind, items, kwds))


def tasks() -> dict[str, Callable[..., Any]]:
    """What a worker that accepts pickle adds to its task table."""
    return {PICKLE_TASK: run}
