"""Errors, as exceptions inside the daemon and as data on the wire.

Every error that reaches a client travels as ``{type, message, traceback?}``
where ``type`` is one of the stable names below; clients in any language
switch on it. The Python-side classes mirror the names one to one::

    PhalanxError
    ├── ConfigError            config file missing, unreadable or invalid
    ├── StartupError           cannot bind an endpoint, runtime dir unusable
    ├── JournalError           the journal file is corrupt, locked or unwritable
    ├── CurveKeyError          a CURVE key file missing, malformed or too open
    └── RequestError           a client's request was refused (wire: type)
        ├── BadRequest         garbage frames, wrong types, missing fields
        ├── TooLarge           message over tasks.max_message_bytes
        ├── LimitExceeded      an option over its configured maximum
                               (max_attempts over tasks.max_attempts_limit)
        ├── UnknownTask        task name not in any allowed module
        ├── NotAllowed         task's module is not in tasks.allow
        ├── Overloaded         pending queue full, try later
        ├── Paused             intake paused by the operator
        ├── ShuttingDown       daemon is draining
        ├── JournalFull        the journal cannot record new work (disk full)
        ├── IdConflict         a known task id sent with another task or arguments
        ├── UnknownId          fetch: no pending or retained task has that id
        ├── UnknownCommand     control command not known
        ├── UnknownSlot        control: no worker slot with that number
        └── ConfigInvalid      control: reread/update found the file invalid
                               (wire type "ConfigError")

A control command that fails on a bug answers ``InternalError`` and the
daemon carries on.

Task outcomes that are not successes use the same shape:

    TaskFailed      the task raised (type is then the exception's class name)
    WorkerCrashed   the worker running it died (message names code/signal)
    Timeout         the task ran past its deadline; its worker was replaced
    Unserializable  the arguments or return value are not MessagePack-able
"""

from __future__ import annotations

import signal


class PhalanxError(Exception):
    """Root of everything Phalanx raises on purpose."""


class ConfigError(PhalanxError):
    """The configuration cannot be used; the message names file and key."""


class StartupError(PhalanxError):
    """The daemon cannot start (endpoint in use, runtime dir unusable)."""


class JournalError(PhalanxError):
    """The journal cannot be used; the message says what to do."""


class CurveKeyError(PhalanxError):
    """A CURVE key file is missing, unreadable, malformed or too open."""


class RequestError(PhalanxError):
    """A request refused; ``type`` is the stable wire name."""

    type = "BadRequest"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    type = "BadRequest"


class TooLarge(RequestError):
    type = "TooLarge"


class LimitExceeded(RequestError):
    type = "LimitExceeded"


class UnknownTask(RequestError):
    type = "UnknownTask"


class NotAllowed(RequestError):
    type = "NotAllowed"


class Overloaded(RequestError):
    type = "Overloaded"


class Paused(RequestError):
    type = "Paused"


class ShuttingDown(RequestError):
    type = "ShuttingDown"


class JournalFull(RequestError):
    type = "JournalFull"


class IdConflict(RequestError):
    type = "IdConflict"


class UnknownId(RequestError):
    type = "UnknownId"


class UnknownCommand(RequestError):
    type = "UnknownCommand"


# Task outcome type names (wire values; no exception class needed daemon-side).
WORKER_CRASHED = "WorkerCrashed"
TIMEOUT = "Timeout"
UNSERIALIZABLE = "Unserializable"


def describe_exit(exitcode: int | None) -> str:
    """Name how a process ended: ``exit code 3`` or ``signal SIGKILL (9)``."""
    if exitcode is None:
        return "unknown exit status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"signal {name} ({-exitcode})"
    return f"exit code {exitcode}"
