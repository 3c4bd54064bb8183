"""What the client raises, as one small tree::

    Exception
    ├── TaskError               a task did not succeed (``type``, ``message``,
    │   │                       ``traceback``, ``task_id``); ``type`` is the
    │   │                       stable wire name or the task's exception class
    │   ├── <TaskError+builtin>  the task raised a built-in exception, e.g.
    │   │                       ValueError: the raised object is *also* a
    │   │                       ValueError, so ``except ValueError`` catches it
    │   ├── TooLarge            one task is bigger than a message may be
    │   │                       (raised by submit/map at once, never sent)
    │   ├── DaemonUnreachable   no daemon answered for ``unreachable_after`` s
    │   ├── ClientClosed        terminate() ended the client before the result
    │   └── ClientBroken        the client's I/O failed; ``__cause__`` says why
    └── TimeoutError            (built-in) a wait with a ``timeout`` ran out;
                                the message names what was waited for

Every future fails with a TaskError of some kind or completes: no wait in
the client lasts longer than its timeout or ``unreachable_after``.

Why the builtin subclasses (as Ray does): a caller who wrote ``except
ValueError`` around ``pool.apply(f)`` keeps working. Only exception classes
found in ``builtins`` are used, looked up by name: a type name received
over the wire never makes the client import anything.
"""

from __future__ import annotations

import builtins
import threading


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

    def __str__(self) -> str:  # not the mirrored builtin's (KeyError quotes)
        return f"{self.type}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        return (task_error, (self.type, self.message, self.traceback, self.task_id))


class TooLarge(TaskError):
    """A single task's encoded size is over the message limit."""


class DaemonUnreachable(TaskError):
    """No daemon answered a heartbeat for ``unreachable_after`` seconds."""


class ClientClosed(TaskError):
    """The client was terminated before this task finished."""


class ClientBroken(TaskError):
    """The client's I/O stopped on an unexpected error (see ``__cause__``);
    every pending and every later call fails with it."""


# Built-in exceptions whose constructor takes one message argument and
# whose meaning survives the trip. BaseException-only classes
# (KeyboardInterrupt, SystemExit, GeneratorExit) are left out on purpose:
# a remote task's SystemExit must not stop the caller.
_NOT_MIRRORED = frozenset({"UnicodeDecodeError", "UnicodeEncodeError",
                           "UnicodeTranslateError", "BaseExceptionGroup", "ExceptionGroup"})
_classes: dict[str, type[TaskError]] = {}
_classes_lock = threading.Lock()


def _mirror(name: str) -> type[TaskError]:
    """TaskError, or a cached subclass of TaskError and builtins.<name>."""
    cls = _classes.get(name)
    if cls is not None:
        return cls
    base = getattr(builtins, name, None) if name not in _NOT_MIRRORED else None
    cls = TaskError
    if isinstance(base, type) and issubclass(base, Exception) and base is not Exception:
        try:
            cls = type(name, (TaskError, base), {"__module__": __name__,
                                                  "__qualname__": f"TaskError[{name}]"})
        except TypeError:  # an instance layout that cannot be combined
            cls = TaskError
    with _classes_lock:
        return _classes.setdefault(name, cls)


def task_error(type_: str, message: str, traceback: str | None = None,
               task_id: str | None = None) -> TaskError:
    """The exception for a failed task: also an instance of the built-in
    exception named ``type_`` when there is one (``except KeyError`` works)."""
    return _mirror(type_)(type_, message, traceback, task_id)
