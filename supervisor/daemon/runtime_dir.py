"""The runtime directory: sockets and the lock that keeps one daemon per directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from supervisor.errors import StartupError


def prepare(path: Path) -> int:
    """Create the runtime dir 0700, refuse one others could tamper with,
    and lock it so two daemons never share (and steal) its sockets.

    Returns the lock's fd; the caller closes it at exit.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
        if info.st_uid != os.getuid():
            raise StartupError(f"runtime directory {path} belongs to uid {info.st_uid}, not us")
        if info.st_mode & 0o022:
            raise StartupError(
                f"runtime directory {path} is writable by others "
                f"(mode {info.st_mode & 0o777:o}); make it 0700"
            )
        lock_fd = os.open(path / "phalanxd.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except FileExistsError:  # mkdir's "File exists" would hide the cause
        raise StartupError(f"runtime directory {path} exists but is not a directory") from None
    except OSError as exc:
        raise StartupError(f"runtime directory {path}: {exc.strerror}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)
        raise StartupError(f"another phalanxd is running with runtime directory {path}") from None
    return lock_fd
