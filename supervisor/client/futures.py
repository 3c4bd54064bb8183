"""The Future the client hands out: a concurrent.futures.Future that is
cheap to create, and answers multiprocessing's AsyncResult methods too."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from supervisor.client.errors import TaskError

if TYPE_CHECKING:
    from supervisor.client.engine import Engine

__all__ = ["AsyncResult", "TaskError"]


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
DONE_STATES = _DONE_STATES = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"})


class AsyncResult(Future[Any]):
    """A concurrent.futures.Future that also answers multiprocessing's
    AsyncResult methods (get, wait, ready, successful)."""

    def __init__(self, engine: Engine | None = None, what: str = "task") -> None:
        # no super().__init__: see above
        self._engine = engine  # lets result() receive on the socket itself
        self._what = what  # named in TimeoutError messages (with task_id if set)
        self._state = "PENDING"
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
        self.task_id: str | None = None  # for Client.result(task_id) later
        self.held: object = None  # shared-memory arguments, kept until the task settles

    def __getattr__(self, name: str) -> Any:
        if name != "_condition":
            raise AttributeError(name)
        with _LAZY:
            cond = self.__dict__.get("_condition")
            if cond is None:
                cond = self.__dict__["_condition"] = threading.Condition()
        # Whoever needs the Condition is about to wait (or cancel): someone
        # must be receiving this future's result (Engine.watch).
        if self._engine is not None:
            self._engine.watch()
        return cond

    def _complete(self, result: Any, exception: BaseException | None) -> bool:
        """Finish, unless already finished or cancelled (then False).

        Never raises: a caller may cancel() while the result is arriving,
        and the thread completing futures must not die of that race."""
        with _LAZY:
            fast = "_condition" not in self.__dict__
            if fast:
                if self._state in _DONE_STATES:
                    return False
                self._result = result
                self._exception = exception
                self._state = "FINISHED"
                self.held = None  # the task settled: its segments may go
        if fast:
            if self._done_callbacks:
                self._invoke_callbacks()
            return True
        with self._condition:  # an RLock: the calls below take it again
            if self._state in _DONE_STATES:
                return False
            if exception is None:
                super().set_result(result)
            else:
                super().set_exception(exception)
            self.held = None
        return True

    def _claim(self) -> bool:
        """PENDING -> RUNNING as the task leaves the client; False if the
        caller cancelled it first (then it is never sent)."""
        with _LAZY:
            if "_condition" not in self.__dict__:
                if self._state == "PENDING":
                    self._state = "RUNNING"
                    return True
                return self._state == "RUNNING"
        with self._condition:
            if self._state in ("PENDING", "CANCELLED"):
                return self.set_running_or_notify_cancel()
            return self._state == "RUNNING"

    def set_result(self, result: Any) -> None:
        self._complete(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._complete(None, exception)

    def result(self, timeout: float | None = None) -> Any:
        if self._state != "FINISHED":
            self._wait(timeout)
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != "FINISHED":
            self._wait(timeout)
        return self._exception

    def _wait(self, timeout: float | None) -> None:
        """Until done or ``timeout``; TimeoutError names the task.

        A lone future whose client is idle is received by this thread on
        the client's socket (Engine.drive): no hop through the I/O thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        engine = self._engine
        if engine is not None and self._state not in _DONE_STATES:
            engine.drive(self, deadline)
            if self._state == "FINISHED":
                return  # no Condition needed: the common case after drive()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            super().exception(left)  # waits; raises CancelledError if cancelled
        except TimeoutError:
            what = self._what if self.task_id is None else f"task {self.task_id} ({self._what})"
            raise TimeoutError(f"{what} did not finish within {timeout}s "
                               "(the task may still run; the future stays usable)") from None

    def done(self) -> bool:
        if self._state in _DONE_STATES:
            return True
        if self._engine is not None:
            self._engine.watch()  # polling done() in a loop must see progress
        return False

    def add_done_callback(self, fn: Any) -> None:
        if self._engine is not None:
            self._engine.watch()
        super().add_done_callback(fn)

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


