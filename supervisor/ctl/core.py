"""What every phalanxctl command shares: the connection, exit codes, errors.

Exit codes follow supervisorctl for ``status`` and the LSB init-script
convention otherwise, so scripts written for either keep working::

    0  ok
    1  the daemon refused or failed the command (an error reply)
    2  usage error (bad option or argument), unusable config file
    3  status: some slot is not RUNNING
    4  status: unknown slot, or the daemon cannot be reached
    7  any other command: the daemon cannot be reached (LSB "not running")

Errors, as the commands raise them and ``ctl.main`` turns them into one
line on stderr plus an exit code::

    CtlFailure
    ├── UsageError      bad arguments (2)
    ├── CommandFailed   an error reply {type, message} from the daemon (1)
    └── NotReachable    no daemon at the endpoint, or no reply in time (7)
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Self, TextIO

from supervisor.ctl import connection as ctlclient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NO_SUCH = 4
EXIT_UNREACHABLE = 7
EXIT_INTERRUPTED = 130

Slots = list[int] | str  # a list of slot numbers, or "all"
Run = Callable[["Ctl", argparse.Namespace], int]  # a command's handler


class CtlFailure(Exception):
    code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CtlFailure):
    code = EXIT_USAGE

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class CommandFailed(CtlFailure):
    code = EXIT_FAILED

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}" if message else type_)
        self.type = type_


class NotReachable(CtlFailure):
    code = EXIT_UNREACHABLE


class HelpShown(Exception):
    """argparse printed --help; the command is done (exit 0)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so the shell survives."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", self.format_usage())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip(), self.format_usage())
        raise HelpShown()


def unix_socket_problem(endpoint: str, timeout: float) -> str | None:
    """Why an ``ipc://`` endpoint certainly has no daemon behind it, or None.

    ZeroMQ connects in the background and retries forever, so without this
    a missing daemon would only show as a timeout. A plain connect() names
    the cause at once: no socket file, a stale one, or one we may not use.
    """
    if not endpoint.startswith("ipc://"):
        return None
    path = endpoint[len("ipc://"):]
    if path.startswith("@"):  # Linux abstract namespace: nothing to stat
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except FileNotFoundError:
        return "no such socket"
    except PermissionError:
        return "permission denied"
    except ConnectionRefusedError:
        return "connection refused (stale socket)"
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        probe.close()
    return None


@dataclass
class Ctl:
    """One session with one daemon: where it is, how to print, how long to wait."""

    endpoint: str
    timeout: float = 5.0
    json: bool = False
    interactive: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def call(self, cmd: str, args: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """Send one control command; raise CommandFailed or NotReachable."""
        wait = self.timeout if timeout is None else timeout
        problem = unix_socket_problem(self.endpoint, wait)
        if problem == "permission denied":
            raise NotReachable(
                f"cannot connect to {self.endpoint}: permission denied "
                "(the control socket belongs to the user phalanxd runs as)"
            )
        if problem:
            raise NotReachable(
                f"cannot connect to {self.endpoint}: is phalanxd running? ({problem})"
            )
        try:
            return ctlclient.call(self.endpoint, cmd, args, timeout=wait)
        except ctlclient.Unreachable:
            raise NotReachable(
                f"no reply from {self.endpoint} within {wait:g}s: is phalanxd running?"
            ) from None
        except ctlclient.ControlError as exc:
            raise CommandFailed(exc.type, exc.message) from None

    def say(self, text: str) -> None:
        if text:
            print(text, file=self.out, flush=True)

    def show(self, result: Any, text: Callable[[Any], str]) -> None:
        """Print ``result`` as JSON with ``--json``, else as ``text(result)``."""
        if self.json:
            self.dump(result)
        else:
            self.say(text(result))

    def dump(self, result: Any) -> None:
        """The result as one JSON document (``--json``)."""
        print(json.dumps(result, default=str), file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(f"phalanxctl: {text}", file=self.err, flush=True)


class Interrupt:
    """Ctrl-C as a flag for the commands that keep running (tail -f, top, events).

    A KeyboardInterrupt raised in the middle of a ZeroMQ call can leave a
    socket half closed and the process hanging at exit, so while one of
    these commands runs the SIGINT handler only sets ``requested``; the
    loop checks it between requests and leaves cleanly. An inherited
    SIG_IGN (a background job of a script) is respected, as tail(1) does.
    """

    def __init__(self) -> None:
        self.requested = False
        self._installed = False
        self._old: Any = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            if self._old is not signal.SIG_IGN:
                signal.signal(signal.SIGINT, self._on_sigint)
                self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old if self._old is not None else signal.SIG_DFL)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.requested = True

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if Ctrl-C came (at once)."""
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        return self.requested


def parse_slots(values: list[str], *, required: bool) -> Slots | None:
    """``["0", "2"]`` -> ``[0, 2]``; ``["all"]`` -> ``"all"``; ``[]`` -> None."""
    if not values:
        if required:
            raise UsageError("give slot numbers or 'all'")
        return None
    if "all" in values:
        return "all"
    slots = []
    for value in values:
        try:
            n = int(value)
        except ValueError:
            raise UsageError(f"{value!r} is not a slot number (or 'all')") from None
        if n < 0:
            raise UsageError(f"{value!r} is not a slot number (or 'all')")
        slots.append(n)
    return slots
