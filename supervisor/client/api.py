"""The methods a user calls, shaped like multiprocessing.Pool and
concurrent.futures, shared by Client and its ``with_options`` views.

Every method that waits takes a ``timeout`` (seconds) and raises a
TimeoutError naming what it waited for when it runs out; without one, a
wait still ends: tasks whose daemon stops answering fail with
DaemonUnreachable after the client's ``unreachable_after``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from supervisor.client.futures import AsyncResult, TaskError
from supervisor.client.wire import Opts

if TYPE_CHECKING:
    from supervisor.client.client import Client


def task_name(task: str | Callable[..., Any]) -> str:
    """``"module:function"`` as given, or derived from a function object."""
    if isinstance(task, str):
        return task
    return f"{task.__module__}:{task.__qualname__}"


def _auto_chunksize(iterable: Iterable[Any]) -> int:
    """Like Pool.map: big inputs travel in chunks, small ones item by item.

    Capped at 64 so that a worker crash re-runs little work."""
    try:
        n = len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return 1
    return max(1, min(64, n // 1024))


class Api:
    """Submission methods shared by Client and its with_options views."""

    _client: Client
    _opts: Opts

    def submit(self, task: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> AsyncResult:
        """Run ``task(*args, **kwargs)`` on a worker; returns a Future.

        Raises TypeError at once for an argument that would not arrive as
        itself (see supervisor.client.types) and TooLarge for a task over
        the message limit."""
        return self._client._submit_one(task_name(task), args, kwargs or None, self._opts)

    def apply_async(
        self,
        task: str | Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult:
        """multiprocessing.Pool.apply_async, returning an AsyncResult/Future."""
        fut = self._client._submit_one(task_name(task), tuple(args), kwds or None, self._opts)
        if callback is not None or error_callback is not None:
            def done(f: Future[Any]) -> None:
                if f.cancelled():
                    return
                exc = f.exception()
                if exc is None:
                    if callback is not None:
                        callback(f.result())
                elif error_callback is not None:
                    error_callback(exc)
            fut.add_done_callback(done)
        return fut

    def apply(self, task: str | Callable[..., Any], args: Iterable[Any] = (),
              kwds: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """multiprocessing.Pool.apply: run one task and wait for its result.

        Goes through the same heartbeat and resubmission as ``submit``; an
        idle client receives the result on the calling thread itself."""
        return self.apply_async(task, args, kwds).result(timeout)

    def call(self, task: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``apply`` with the task's arguments written inline (no timeout:
        use ``apply`` for one; a silent daemon still ends the wait)."""
        return self.submit(task, *args, **kwargs).result()

    def imap_unordered(self, task: str | Callable[..., Any], iterable: Iterable[Any],
                       chunksize: int = 1, timeout: float | None = None) -> Iterator[Any]:
        """Results as they complete; raises TaskError at the first failure.
        ``timeout`` bounds the whole iteration."""
        stream = self._client._stream(task_name(task), ((x,) for x in iterable), self._opts,
                                      chunksize, timeout)
        for _, ok, value in stream:
            if not ok:
                raise value
            yield value

    def imap(self, task: str | Callable[..., Any], iterable: Iterable[Any],
             chunksize: int = 1, timeout: float | None = None) -> Iterator[Any]:
        """Results in submission order, yielded as soon as each is next."""
        held: dict[int, tuple[bool, Any]] = {}
        want = 0
        stream = self._client._stream(task_name(task), ((x,) for x in iterable), self._opts,
                                      chunksize, timeout)
        for index, ok, value in stream:
            held[index] = (ok, value)
            while want in held:
                ok_, value_ = held.pop(want)
                want += 1
                if not ok_:
                    raise value_
                yield value_

    def map(self, task: str | Callable[..., Any], iterable: Iterable[Any],
            chunksize: int | None = None, timeout: float | None = None) -> list[Any]:
        """All results, in submission order; raises the first failure in order.

        ``chunksize`` items travel and run as one task (default: chosen from
        the input's length, at most 64); a worker crash re-runs its chunk."""
        size = chunksize or _auto_chunksize(iterable)
        return self._gather(task_name(task), ((x,) for x in iterable), size, timeout)

    def starmap(self, task: str | Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, timeout: float | None = None) -> list[Any]:
        size = chunksize or _auto_chunksize(iterable)
        return self._gather(task_name(task), (tuple(x) for x in iterable), size, timeout)

    def _gather(self, name: str, arg_tuples: Iterable[tuple[Any, ...]], chunksize: int,
                timeout: float | None) -> list[Any]:
        out: list[Any] = []
        first_failure: tuple[int, TaskError] | None = None
        stream = self._client._stream(name, arg_tuples, self._opts, chunksize, timeout)
        for index, ok, value in stream:
            if index >= len(out):
                out.extend([None] * (index + 1 - len(out)))
            if ok:
                out[index] = value
            elif first_failure is None or index < first_failure[0]:
                first_failure = (index, value)
        if first_failure is not None:
            raise first_failure[1]
        return out

    def with_options(self, *, timeout: float | None = None, max_attempts: int | None = None,
                     soft_timeout: float | None = None,
                     retry_timeouts: bool | None = None) -> Options:
        """A view of this client whose submissions carry these options:
        ``timeout`` (seconds before the worker is killed and the task fails
        with Timeout), ``soft_timeout`` (seconds before SoftTimeout is raised
        inside the task), ``max_attempts`` (runs allowed when workers die),
        ``retry_timeouts`` (whether a timed-out task uses its remaining attempts)."""
        return Options(self._client, (timeout, max_attempts, soft_timeout, retry_timeouts))


class Options(Api):
    def __init__(self, client: Client, opts: Opts) -> None:
        self._client = client
        self._opts = opts
