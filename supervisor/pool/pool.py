"""``supervisor.Pool``: multiprocessing.Pool's API on a private phalanxd.

    Pool.map(f, xs) --chunks--> pickle (lane.py) --> Client --ipc--> private phalanxd
       MapResult <-- unpickle outcomes <-- Client I/O thread <--    (private.py)
                                                                        |
                                            workers run f (workers/pickle_lane.py)

Same methods, arguments, results and exceptions as multiprocessing.Pool
(the task's own exception, re-raised by get(); ValueError "Pool not
running" after close). What differs is what a crash costs: a worker killed
mid-task is replaced and its task runs again elsewhere (at most
``max_attempts`` runs, then TaskError WorkerCrashed), never a hang. Every
submitting method also takes keyword-only ``timeout`` (seconds a call may
run before its worker is killed: TaskError Timeout) and ``max_attempts``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Self

from supervisor.client.client import Client
from supervisor.client.wire import NO_OPTS, Opts
from supervisor.errors import describe_exit
from supervisor.pool import lane, private
from supervisor.pool.private import PrivateDaemon
from supervisor.pool.results import (
    AsyncResult,
    Callback,
    ErrorCallback,
    IMapIterator,
    MapResult,
    Outcome,
)
from supervisor.protocol import PICKLE_TASK

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


def _decode(fut: Future[Any], count: int) -> list[Outcome]:
    """One unit's outcomes: from the worker's pickled answer, or its
    TaskError (WorkerCrashed, Timeout, ...) for every item."""
    exc = fut.exception()
    if exc is not None:
        return [(False, exc)] * count
    try:
        status, payload = lane.loads_answer(fut.result())
    except Exception as err:  # noqa: BLE001 - an answer we cannot load fails its items
        return [(False, err)] * count
    if status == "error":
        return [(False, payload)] * count
    return list(payload)


def _daemon_died(ref: weakref.ref[Pool], code: int) -> None:
    pool = ref()
    client = getattr(pool, "_client", None)
    if pool is None or client is None:
        return  # gone, or still starting: Pool() itself reports the failure
    pool._state = TERMINATE
    client.terminate(
        f"the pool's private phalanxd died ({describe_exit(code)}) before this task finished")


def _start_method(context: object) -> str:
    """The start method multiprocessing.Pool(context=context) would use,
    without fixing multiprocessing's default as get_start_method() would."""
    if context is not None:
        method = getattr(context, "get_start_method", None)
        if callable(method):
            return str(method())
    chosen = multiprocessing.get_start_method(allow_none=True)
    if chosen is None:  # the platform's default is listed first
        chosen = multiprocessing.get_all_start_methods()[0]
    # A daemonic process (a multiprocessing worker) may not fork children
    # that outlive it the way a daemon does: start a fresh one.
    if chosen == "fork" and (multiprocessing.current_process().daemon
                             or not hasattr(os, "pidfd_open")):
        return "forkserver"
    return chosen


def _shutdown(client: Client, daemon: PrivateDaemon) -> None:
    client.terminate()
    daemon.stop()


class Pool:
    """A process pool that survives its workers: ``multiprocessing.Pool``'s
    interface, a private phalanxd underneath."""

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: Iterable[Any] = (), maxtasksperchild: int | None = None,
                 context: object = None) -> None:
        # ``context`` (or multiprocessing's start method) says how the private
        # daemon and its workers start: "fork" forks them, as multiprocessing
        # would; otherwise fresh interpreters (supervisor/pool/private.py).
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if lane.importing_main_in_worker():
            raise RuntimeError(
                "a Pool was started while a worker imported the main script: protect "
                "the script's entry point with `if __name__ == '__main__':`")
        self._processes = processes
        self._state = RUN
        self._main = lane.main_ref()
        self._init = lane.dumps((initializer, tuple(initargs))) if initializer else None
        this = weakref.ref(self)
        self._daemon = PrivateDaemon(processes, maxtasksperchild, _start_method(context),
                                     on_death=lambda code: _daemon_died(this, code))
        try:
            # The private daemon's own limit (a pickled call may be big),
            # not the 16 MiB a client assumes of a configured daemon.
            self._client = Client(self._daemon.intake,
                                  max_message_bytes=private.MAX_MESSAGE_BYTES)
        except BaseException:
            self._daemon.stop()
            raise
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self._client, self._daemon)

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self._state} pool_size={self._processes}>"

    # ------------------------------------------------------------ plumbing
    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    @staticmethod
    def _opts(timeout: float | None, max_attempts: int | None) -> Opts:
        if timeout is None and max_attempts is None:
            return NO_OPTS
        return (timeout, max_attempts, None, None)

    def _submit(self, func: Callable[..., Any], kind: str, items: list[Any],
                kwds: dict[str, Any], start: int, sink: Any, opts: Opts) -> None:
        """Send one unit (a call or a chunk); its outcomes go to ``sink``."""
        try:
            blob, buffers = lane.dumps_call((func, kind, items, kwds))
        except Exception as exc:  # noqa: BLE001 - as multiprocessing: get() raises it
            sink._set_unit(start, [(False, exc)] * len(items))
            return
        count = len(items)
        # Callbacks run on the client's I/O thread, never inside apply_async
        # (as multiprocessing's run on its result thread). Large arrays are
        # arguments of their own after the pickle: shared memory, not pickle.
        self._client._submit_one(PICKLE_TASK, (self._main, self._init, blob, *buffers), None,
                                 opts,
                                 lambda f: sink._set_unit(start, _decode(f, count)))

    def _chunks(self, func: Callable[..., Any], kind: str, items: list[Any],
                chunksize: int, sink: Any, opts: Opts) -> None:
        for start in range(0, len(items), chunksize):
            self._submit(func, kind, items[start:start + chunksize], {}, start, sink, opts)

    def _default_chunksize(self, length: int) -> int:
        chunksize, extra = divmod(length, self._processes * 4)
        return chunksize + 1 if extra else chunksize

    # ---------------------------------------------------------------- apply
    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: dict[str, Any] | None = None, *, timeout: float | None = None,
              max_attempts: int | None = None) -> Any:
        """``func(*args, **kwds)`` on a worker; its result (or its exception)."""
        return self.apply_async(func, args, kwds, timeout=timeout,
                                max_attempts=max_attempts).get()

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: dict[str, Any] | None = None, callback: Callback = None,
                    error_callback: ErrorCallback = None, *, timeout: float | None = None,
                    max_attempts: int | None = None) -> AsyncResult:
        self._check_running()
        result = AsyncResult(callback, error_callback)
        self._submit(func, "star", [tuple(args)], dict(kwds or {}), 0, result,
                     self._opts(timeout, max_attempts))
        return result

    # ------------------------------------------------------------------ map
    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: int | None = None, *, timeout: float | None = None,
            max_attempts: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]`` across the workers, in order."""
        result: list[Any] = self._map_async(func, iterable, "map", chunksize, None, None,
                                            self._opts(timeout, max_attempts)).get()
        return result

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: int | None = None, callback: Callback = None,
                  error_callback: ErrorCallback = None, *, timeout: float | None = None,
                  max_attempts: int | None = None) -> MapResult:
        return self._map_async(func, iterable, "map", chunksize, callback, error_callback,
                               self._opts(timeout, max_attempts))

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, timeout: float | None = None,
                max_attempts: int | None = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, in order."""
        result: list[Any] = self._map_async(func, iterable, "star", chunksize, None, None,
                                            self._opts(timeout, max_attempts)).get()
        return result

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None, callback: Callback = None,
                      error_callback: ErrorCallback = None, *, timeout: float | None = None,
                      max_attempts: int | None = None) -> MapResult:
        return self._map_async(func, iterable, "star", chunksize, callback, error_callback,
                               self._opts(timeout, max_attempts))

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any], kind: str,
                   chunksize: int | None, callback: Callback, error_callback: ErrorCallback,
                   opts: Opts) -> MapResult:
        self._check_running()
        items = list(iterable)
        if kind == "star":
            items = [tuple(args) for args in items]
        if chunksize is None:
            chunksize = self._default_chunksize(len(items))
        result = MapResult(len(items), callback, error_callback)
        if items:
            self._chunks(func, kind, items, max(1, chunksize), result, opts)
        return result

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1,
             *, timeout: float | None = None, max_attempts: int | None = None) -> IMapIterator:
        """Results in input order, each as soon as it and those before it are in."""
        return self._imap(func, iterable, chunksize, True, self._opts(timeout, max_attempts))

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int = 1, *, timeout: float | None = None,
                       max_attempts: int | None = None) -> IMapIterator:
        """Results in the order they complete."""
        return self._imap(func, iterable, chunksize, False, self._opts(timeout, max_attempts))

    def _imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int,
              ordered: bool, opts: Opts) -> IMapIterator:
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        result = IMapIterator(ordered)
        if isinstance(iterable, list | tuple | range):
            self._chunks(func, "map", list(iterable), chunksize, result, opts)
            result._set_length(len(iterable))
        else:  # a generator may be long or slow: read it while results flow
            threading.Thread(target=self._feed, args=(func, iter(iterable), chunksize, result,
                             opts), name="phalanx-pool-imap", daemon=True).start()
        return result

    def _feed(self, func: Callable[[Any], Any], it: Iterator[Any], chunksize: int,
              result: IMapIterator, opts: Opts) -> None:
        """Submit an imap's input chunk by chunk, as multiprocessing's task
        thread does. If the input raises, next() raises that at its place."""
        count = 0
        try:
            while chunk := list(itertools.islice(it, chunksize)):
                self._submit(func, "map", chunk, {}, count, result, opts)
                count += len(chunk)
        except Exception as exc:  # noqa: BLE001 - the caller's generator failed: its outcome
            result._set_unit(count, [(False, exc)])
            count += 1
        finally:
            result._set_length(count)

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """No more submissions; what was submitted still completes."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self) -> None:
        """Stop now: workers and the private daemon go; what was pending
        fails with TaskError ClientClosed (multiprocessing leaves it hanging)."""
        self._state = TERMINATE
        self._finalizer()

    def join(self) -> None:
        """Wait for what was submitted, then stop the private daemon."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        with self._lock:
            if self._finalizer.alive:
                self._client.join()
                self._finalizer()

    def __enter__(self) -> Self:
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()  # as multiprocessing.Pool

    # ------------------------------------------------------- Phalanx extras
    @property
    def daemon_pid(self) -> int:
        """The private phalanxd's pid (its workers are its children)."""
        return self._daemon.pid

    @property
    def control_endpoint(self) -> str:
        """Where ``phalanxctl --endpoint`` reaches the private daemon."""
        return self._daemon.control

    def workers(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Each worker slot as ``phalanxctl status`` shows it (state, pid,
        current task...), from the private daemon's control socket."""
        from supervisor.ctl import connection

        slots: list[dict[str, Any]] = connection.call(self._daemon.control, "status",
                                                      timeout=timeout)
        return slots

    def worker_pids(self) -> list[int]:
        """Pids of the workers running now (they change as workers are replaced)."""
        return [s["pid"] for s in self.workers() if s["state"] == "RUNNING" and s["pid"]]
