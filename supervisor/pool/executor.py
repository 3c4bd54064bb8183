"""A real ``concurrent.futures.Executor`` over a Pool or a Client.

    ex = PhalanxExecutor(max_workers=4)          # owns a private Pool
    ex = PhalanxExecutor(pool)                   # any callable, pickle lane
    ex = PhalanxExecutor(client=Client(...))     # "module:function" tasks of a
                                                 # configured daemon (MessagePack)
    fut = ex.submit(fn, *args, **kwargs)         # a concurrent.futures.Future
    ex.map(fn, xs, ys, timeout=5, chunksize=16)  # lazy, in order
    await loop.run_in_executor(ex, fn, arg)      # asyncio
    dask.compute(graph, scheduler=ex)            # dask

``shutdown(wait, cancel_futures)`` as the standard library's: no more
submissions; ``cancel_futures`` cancels what has not finished (its task may
still run; its result is dropped); ``wait`` waits for the rest. The executor
stops a Pool it created itself, never one it was given (nor a Client).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from supervisor.client.client import Client, task_name
from supervisor.pool.pool import Pool
from supervisor.pool.results import IMapIterator


class PhalanxExecutor(concurrent.futures.Executor):
    def __init__(self, pool: Pool | None = None, *, client: Client | None = None,
                 max_workers: int | None = None) -> None:
        if pool is not None and client is not None:
            raise ValueError("give a Pool or a Client, not both")
        self._owned = pool is None and client is None
        self._pool = Pool(max_workers) if self._owned else pool
        self._client = client
        self._lock = threading.Lock()
        self._shutdown = False
        self._futures: set[concurrent.futures.Future[Any]] = set()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool is not None:
                fut = self._pool.apply_async(fn, args, kwargs).future
            else:
                assert self._client is not None
                fut = self._client.submit(task_name(fn), *args, **kwargs)
            self._futures.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(fut)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """Results in order; every call is submitted before this returns.
        ``timeout`` bounds the whole iteration (TimeoutError), as the
        standard library's; ``chunksize`` calls travel and run as one task."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else time.monotonic() + timeout
        items = list(zip(*iterables, strict=False))
        results = IMapIterator(ordered=True)
        if self._pool is not None:
            self._pool._chunks(fn, "star", items, chunksize, results, Pool._opts(None, None))
        else:
            self._feed_from_client(task_name(fn), items, chunksize, results)
        results._set_length(len(items))
        return self._iterate(results, len(items), deadline)

    def _feed_from_client(self, name: str, items: list[tuple[Any, ...]], chunksize: int,
                          results: IMapIterator) -> None:
        assert self._client is not None
        stream = self._client._stream(name, items, self._client._opts, chunksize)

        def pump() -> None:  # the client yields in completion order
            for index, ok, value in stream:
                results._set_unit(index, [(ok, value)])

        threading.Thread(target=pump, name="phalanx-executor-map", daemon=True).start()

    @staticmethod
    def _iterate(results: IMapIterator, count: int, deadline: float | None) -> Iterator[Any]:
        for _ in range(count):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                yield results.next(left)
            except multiprocessing.TimeoutError:
                raise TimeoutError("map results not ready within the timeout") from None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = list(self._futures)
        if cancel_futures:
            for fut in pending:
                # CANCELLED_AND_NOTIFIED, as a standard executor leaves it,
                # or concurrent.futures.wait() would not count it as done.
                if fut.cancel():
                    fut.set_running_or_notify_cancel()
        if wait:
            concurrent.futures.wait(pending)
        if self._owned and self._pool is not None:
            if wait:
                self._pool.close()
                self._pool.join()
            else:
                self._pool.terminate()
