"""The Future the client hands out: a concurrent.futures.Future that is
cheap to create, and answers multiprocessing's AsyncResult methods too."""

from __future__ import annotations

import threading
from concurrent.futures import Future, InvalidStateError
from typing import Any


class TaskError(Exception):
    """A task did not succeed: it raised, its worker died, it timed out, or
    the daemon refused it. ``type`` is the stable name (``UnknownTask``,
    ``WorkerCrashed``, ``Timeout``, or the task's exception class name)."""

    def __init__(self, type: str, message: str, traceback: str | None = None,
                 task_id: str | None = None) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback
        self.task_id = task_id


# Why a lazily built Condition: concurrent.futures.Future.__init__ builds a
# threading.Condition (an RLock plus bound methods), which is most of the
# ~4 us a Future costs and most of the garbage a million of them make. A
# Future that nobody waits on before it completes never needs one. So the
# Condition is created on first use (under one module lock), and completion
# takes a fast path while no Condition exists: no thread can be waiting
# then, because waiting (result(), wait(), as_completed()) always goes
# through ``_condition`` first, which creates it under the same lock. Once
# it exists, every method behaves exactly as the standard Future's.
_LAZY = threading.Lock()
_DONE_STATES = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"})


class AsyncResult(Future[Any]):
    """A concurrent.futures.Future that also answers multiprocessing's
    AsyncResult methods (get, wait, ready, successful)."""

    def __init__(self) -> None:  # no super().__init__: see above
        self._state = "PENDING"
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
        self.task_id: str | None = None  # for Client.result(task_id) later

    def __getattr__(self, name: str) -> Any:
        if name != "_condition":
            raise AttributeError(name)
        with _LAZY:
            cond = self.__dict__.get("_condition")
            if cond is None:
                cond = self.__dict__["_condition"] = threading.Condition()
        return cond

    def _complete(self, result: Any, exception: BaseException | None) -> None:
        already = None
        with _LAZY:
            fast = "_condition" not in self.__dict__
            if fast:
                if self._state in _DONE_STATES:
                    already = self._state
                else:
                    self._result = result
                    self._exception = exception
                    self._state = "FINISHED"
        if already is not None:  # raised outside the lock: repr() takes it
            raise InvalidStateError(f"{already}: {self!r}")
        if fast:
            if self._done_callbacks:
                self._invoke_callbacks()
        elif exception is None:
            super().set_result(result)
        else:
            super().set_exception(exception)

    def set_result(self, result: Any) -> None:
        self._complete(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._complete(None, exception)

    def result(self, timeout: float | None = None) -> Any:
        if self._state == "FINISHED":  # final: no lock needed to read it
            if self._exception is not None:
                raise self._exception
            return self._result
        return super().result(timeout)

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def get(self, timeout: float | None = None) -> Any:
        return self.result(timeout)

    def wait(self, timeout: float | None = None) -> None:
        try:
            self.exception(timeout)
        except TimeoutError:
            pass

    def ready(self) -> bool:
        return self.done()

    def successful(self) -> bool:
        if not self.done():
            raise ValueError("result is not ready")
        return self.exception() is None


