"""The runtime directory: sockets and the lock that keeps one daemon per directory.

Why so suspicious: the last-resort default is /tmp/phalanx-<uid>, a name
any local user can create first. A directory another user owns, or a
symlink they planted there (pointing at a directory of theirs, or at one of
ours they want us to write into), would hand them our control socket. So
the last path component is never followed: it is opened with O_NOFOLLOW
and checked through that fd (owner, mode), and the lock file is opened
relative to that fd, O_NOFOLLOW too. /tmp's sticky bit then keeps anyone
else from renaming or replacing the directory once we hold it.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
from pathlib import Path

from supervisor.errors import StartupError

LOCK_NAME = "phalanxd.lock"
_FIX = ("set daemon.runtime_dir (or $PHALANX_RUNTIME_DIR, $XDG_RUNTIME_DIR) "
        "to a directory only you can write")


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid} (no such user)"


def _refuse_link(path: Path) -> None:
    """StartupError if the last component of ``path`` is a symlink."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise StartupError(
            f"runtime directory {path} is a symbolic link (to {target}, created by "
            f"{_user(info.st_uid)}); phalanxd never follows one there. Remove the link, "
            f"or {_FIX}"
        )


def _open_dir(path: Path) -> int:
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        _refuse_link(path)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except NotADirectoryError:
        raise StartupError(f"runtime directory {path} exists but is not a directory") from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: a link appeared between lstat and open
            _refuse_link(path)
        raise StartupError(f"runtime directory {path}: {exc.strerror}") from None


def _check_owner_and_mode(path: Path, fd: int) -> None:
    info = os.fstat(fd)
    me = os.getuid()
    if info.st_uid != me:
        raise StartupError(
            f"runtime directory {path} belongs to {_user(info.st_uid)}, not to "
            f"{_user(me)} who runs phalanxd (mode {info.st_mode & 0o777:04o}): another "
            f"user created it first. Remove it (as that user or root), or {_FIX}"
        )
    if info.st_mode & 0o022:
        raise StartupError(
            f"runtime directory {path} is writable by others (mode "
            f"{info.st_mode & 0o777:04o}, owner {_user(info.st_uid)}): run "
            f"`chmod 700 {path}`, or {_FIX}"
        )


def prepare(path: Path) -> int:
    """Create the runtime dir 0700, refuse one others could tamper with,
    and lock it so two daemons never share (and steal) its sockets.

    Returns the lock's fd; the caller closes it at exit.
    """
    dir_fd = _open_dir(path)
    try:
        _check_owner_and_mode(path, dir_fd)
        try:
            lock_fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=dir_fd)
        except OSError as exc:
            what = "is a symbolic link" if exc.errno == 40 else exc.strerror
            raise StartupError(f"lock file {path / LOCK_NAME}: {what}; remove it") from None
    finally:
        os.close(dir_fd)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock_fd)
        raise StartupError(f"another phalanxd is running with runtime directory {path}") from None
    return lock_fd
