"""A ``concurrent.futures.Executor`` whose calls run on a phalanxd's workers.

    ex = ClientExecutor("ipc:///run/user/1000/px/intake")
    ex.submit(fn, *args).result()   # fn ran in a supervised worker process

Each call travels pickled to ``workers.pickled:call``, which a daemon runs
only if its ``tasks.allow`` lists ``workers.pickled``: allow that ONLY on a
daemon private to one user (ipc in a 0700 directory). If the worker
segfaults or is OOM-killed, the daemon runs the call again on a fresh
worker (``max_attempts``); only when every attempt crashed does the future
fail, with a TaskError naming the signal. The calling process never dies.

The private Pool (``from supervisor import Pool``) will offer the same
through its own executor; this one serves any daemon you point it at.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from supervisor.client import Client

try:  # closures and lambdas travel too when cloudpickle is there
    import cloudpickle as _pickler  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _pickler = pickle

CALL = "workers.pickled:call"
P = ParamSpec("P")
T = TypeVar("T")


class ClientExecutor(Executor):
    def __init__(self, endpoint: str | list[str], *, max_attempts: int | None = None,
                 timeout: float | None = None, shutdown_timeout: float = 30.0) -> None:
        self.client = Client(endpoint)
        # shutdown(wait=True) waits this long for unfinished calls, then
        # fails them (ClientClosed) rather than hang.
        self.shutdown_timeout = shutdown_timeout
        self._api = self.client.with_options(max_attempts=max_attempts, timeout=timeout)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        blob = _pickler.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        inner = self._api.submit(CALL, blob)
        outer: Future[T] = Future()

        def done(f: Future[Any]) -> None:
            if not outer.set_running_or_notify_cancel():
                return
            exc = f.exception()
            if exc is not None:
                outer.set_exception(exc)
                return
            ok, value = pickle.loads(f.result())  # written by our own worker
            if ok:
                outer.set_result(value)
            else:
                outer.set_exception(value)

        inner.add_done_callback(done)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures or not wait:
            self.client.terminate()
        else:
            self.client.close()
            self.client.join(self.shutdown_timeout)
            self.client.terminate()  # fails what is left; a no-op after a full join
