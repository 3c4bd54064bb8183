"""What Pool's methods return, with multiprocessing.pool's semantics.

``AsyncResult`` (apply_async), ``MapResult`` (map_async, starmap_async) and
``IMapIterator`` (imap, imap_unordered) behave as their namesakes: get()
with a timeout raises ``multiprocessing.TimeoutError``; successful() before
ready() raises ValueError; callbacks run before get() returns; a map result
is ready, failed, at its first failing item. Each also holds a
``concurrent.futures.Future`` (``.future``), which is what makes an
AsyncResult awaitable in asyncio and what the Executor hands out.

Outcomes arrive per unit (one call, or one chunk of a map) as a list of
``(ok, value-or-exception)``, on the client's I/O thread.
"""

from __future__ import annotations

import collections
import multiprocessing
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future, InvalidStateError
from typing import Any

Outcome = tuple[bool, Any]
Callback = Callable[[Any], object] | None
ErrorCallback = Callable[[BaseException], object] | None


class AsyncResult:
    """multiprocessing.pool.AsyncResult; also ``await``-able."""

    def __init__(self, callback: Callback = None, error_callback: ErrorCallback = None) -> None:
        self.future: Future[Any] = Future()
        self._callback = callback
        self._error_callback = error_callback

    def ready(self) -> bool:
        return self.future.done()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self.future.exception() is None

    def wait(self, timeout: float | None = None) -> None:
        try:
            self.future.exception(timeout)
        except TimeoutError:
            pass

    def get(self, timeout: float | None = None) -> Any:
        try:
            return self.future.result(timeout)
        except TimeoutError:
            if self.future.done():
                raise  # the task's own TimeoutError
            raise multiprocessing.TimeoutError from None

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio  # here: asyncio costs ~30 ms to import, most callers never await

        return asyncio.wrap_future(self.future).__await__()

    def _set(self, ok: bool, value: Any) -> None:
        if self.future.done():
            return
        # As multiprocessing: callbacks run before the result is ready.
        if ok and self._callback is not None:
            self._callback(value)
        if not ok and self._error_callback is not None:
            self._error_callback(value)
        try:
            if ok:
                self.future.set_result(value)
            else:
                self.future.set_exception(value)
        except InvalidStateError:
            pass  # cancelled meanwhile (Executor.shutdown(cancel_futures=True))

    def _set_unit(self, start: int, outcomes: list[Outcome]) -> None:
        self._set(*outcomes[0])


class MapResult(AsyncResult):
    """The result of map_async/starmap_async: a list, in input order."""

    def __init__(self, length: int, callback: Callback = None,
                 error_callback: ErrorCallback = None) -> None:
        super().__init__(callback, error_callback)
        self._values: list[Any] = [None] * length
        self._left = length
        self._lock = threading.Lock()
        if length == 0:
            self._set(True, [])

    def _set_unit(self, start: int, outcomes: list[Outcome]) -> None:
        with self._lock:
            if self.future.done():
                return
            for j, (ok, value) in enumerate(outcomes):
                if not ok:
                    failure = value
                    break
                self._values[start + j] = value
            else:
                self._left -= len(outcomes)
                if self._left:
                    return
                self._set(True, self._values)
                return
        self._set(False, failure)


class IMapIterator:
    """The iterator imap/imap_unordered return; ``next(timeout)`` as
    multiprocessing's (TimeoutError when nothing came in time). A failed
    item raises its exception from next(); iteration may go on after it."""

    def __init__(self, ordered: bool) -> None:
        self._ordered = ordered
        self._cond = threading.Condition()
        self._ready: collections.deque[Outcome] = collections.deque()
        self._held: dict[int, Outcome] = {}
        self._next_index = 0  # ordered: the index to yield next
        self._length: int | None = None  # known once every item was submitted
        self._yielded = 0

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(self._has_next, timeout):
                raise multiprocessing.TimeoutError
            if not self._ready:
                raise StopIteration
            ok, value = self._ready.popleft()
            self._yielded += 1
        if ok:
            return value
        raise value

    __next__ = next

    def _has_next(self) -> bool:
        return bool(self._ready) or self._yielded == self._length

    def _set_length(self, length: int) -> None:
        with self._cond:
            self._length = length
            self._cond.notify_all()

    def _set_unit(self, start: int, outcomes: list[Outcome]) -> None:
        with self._cond:
            if not self._ordered:
                self._ready.extend(outcomes)
            else:
                for j, outcome in enumerate(outcomes):
                    self._held[start + j] = outcome
                while self._next_index in self._held:
                    self._ready.append(self._held.pop(self._next_index))
                    self._next_index += 1
            self._cond.notify_all()
