"""Shared-memory segments that carry large arrays past the daemon.

Why our own small layer over /dev/shm instead of
``multiprocessing.shared_memory.SharedMemory``: before Python 3.13 every
process that *attaches* to a segment also registers it with its resource
tracker, which then unlinks it (with a warning) when that process exits, so
a worker would destroy a client's segment. We keep the tracker only where
it helps, for segments a client creates (see below), and reserve the
segment by ``pwrite`` so a full /dev/shm is an error at creation, not a
SIGBUS in the middle of a copy through a mapping.

Lifetimes (docs/PROTOCOL.md, "Shared memory"):

* Argument segments (``phx-a<pid>-<hex>``) are created by the client and
  unlinked by the client when the task settles (its ``TaskOut`` is
  dropped). They are registered with the client's multiprocessing resource
  tracker, a separate process that unlinks them if the client dies, even by
  SIGKILL. Workers map them copy-on-write: a task may write to its argument
  without changing what a retry of the same task reads.
* Result segments (``phx-r<pid>-<hex>``) are created by a worker and
  unlinked by the client the moment it decodes the result (the mapping
  lives on until the array is freed). A result nobody reads (the client
  died first) is unlinked by its worker after RESULT_TTL seconds, or, if
  that worker died too, by the next worker that starts on this host.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import time
from multiprocessing import resource_tracker

SHM_DIR = "/dev/shm"
# Seconds a worker keeps an unread result segment before unlinking it.
RESULT_TTL = float(os.environ.get("PHALANX_SHM_RESULT_TTL", "60"))
# Fault a result's pages in at mmap time, in one kernel call, instead of
# one page fault per 4 KiB as the client first reads it.
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_NAME = re.compile(r"phx-([ar])([0-9]+)-[0-9a-f]{16}")


class ShmError(OSError):
    """A segment could not be created or opened (full /dev/shm, gone, bad name)."""


def _path(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ShmError(f"not a Phalanx shared-memory segment name: {name!r}")
    return os.path.join(SHM_DIR, name)


def available() -> bool:
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def create(kind: str, data: memoryview, track: bool) -> str:
    """A new segment (kind "a" argument, "r" result) holding ``data``.

    Written with pwrite, not through a mapping: the kernel copies straight
    into the segment's pages, and a full /dev/shm is an ENOSPC here rather
    than a SIGBUS in the middle of a copy through a mapping."""
    name = f"phx-{kind}{os.getpid()}-{secrets.token_hex(8)}"
    path = _path(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ShmError(f"cannot create {path}: {exc}") from None
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)
    except OSError as exc:
        os.unlink(path)
        raise ShmError(f"cannot write {len(data)} bytes to {SHM_DIR}: {exc}") from None
    finally:
        os.close(fd)
    if track:
        resource_tracker.register("/" + name, "shared_memory")
    return name


def unlink(name: str, tracked: bool) -> None:
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        pass
    if tracked:
        resource_tracker.unregister("/" + name, "shared_memory")


def open_segment(name: str, nbytes: int, *, take: bool) -> mmap.mmap:
    """Map an existing segment's first ``nbytes``.

    ``take`` (the client, for a result): map it shared and unlink the name at
    once; the memory is freed when the last array using it is. Otherwise (a
    worker, for an argument): a private copy-on-write mapping.
    """
    path = _path(name)
    try:
        fd = os.open(path, os.O_RDWR if take else os.O_RDONLY)
    except OSError as exc:
        raise ShmError(f"cannot open shared-memory segment {name}: {exc}") from None
    try:
        size = os.fstat(fd).st_size
        if size < nbytes:
            raise ShmError(f"segment {name} holds {size} bytes, the array needs {nbytes}")
        # Copy-on-write (MAP_PRIVATE) for a worker: what it writes stays its
        # own. Never MAP_POPULATE there: on a writable private mapping it
        # pre-faults for writing, i.e. copies every page (measured 3x slower).
        flags = mmap.MAP_SHARED | _POPULATE if take else mmap.MAP_PRIVATE
        mm = mmap.mmap(fd, nbytes, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
        if take:
            unlink(name, tracked=False)
    return mm


class ResultSegments:
    """A worker's record of the result segments it created, for RESULT_TTL."""

    def __init__(self) -> None:
        self._made: dict[str, float] = {}

    def add(self, name: str) -> None:
        self._made[name] = time.monotonic()

    def discard(self, names: list[str]) -> None:
        """Unlink at once: the result they were made for is not being sent."""
        for name in names:
            self._made.pop(name, None)
            unlink(name, tracked=False)

    def sweep(self, ttl: float = RESULT_TTL) -> None:
        if not self._made:
            return
        cutoff = time.monotonic() - ttl
        old = [name for name, made in self._made.items() if made <= cutoff]
        self.discard(old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def sweep_orphans(ttl: float = RESULT_TTL) -> list[str]:
    """Unlink our segments whose creator is dead and that are older than
    ``ttl`` (a just-dead worker's result may still be on its way to a
    client). Run when a worker starts; returns the names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(SHM_DIR))
    except OSError:
        return removed
    uid = os.getuid()
    now = time.time()
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is None or _pid_alive(int(match.group(2))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if st.st_uid != uid or now - st.st_mtime < ttl:
                continue
            os.unlink(entry.path)
        except OSError:
            continue  # raced with its owner or another sweeper
        removed.append(entry.name)
    return removed
