"""What each worker last started, in a file that outlives phalanxd.

Why: tasks go to their worker before the loop turn's commit records the
hand-off; the commit then runs while the worker does (journal.py). If a
task kills phalanxd itself in that moment, the log cannot say what ran,
and may not even hold the task (its acceptance commits in the same turn):
the restarted daemon could not charge it, and a client resubmitting it
(it was never acked) would be killed again and again. So each worker
writes, before it runs a task, that task's key and digest into its slot's
record here: a shared file mapping, no system call (``worker_note``). The
page cache keeps it when the processes die, as it keeps SQLite's WAL at
``synchronous=NORMAL``. A power loss loses it, but then no task killed
the daemon. The daemon zeroes a slot's record when its worker dies or is
stopped (a death is charged as a worker crash; a stopped worker's tasks
are given back) and clears them all when it stops cleanly; it reads them
at start.

So a record a restarted daemon finds (journal_replay.py) names exactly
what that slot's worker was running, or last ran: in the log and
unfinished, that task is charged; finished, nothing is; not in the log at
all, a charge against the task's digest (its name and arguments) is kept
in the ``charges`` table until the task is submitted again (journal.py
``precharge``).

Each record: epoch, key, digest, check (four little-endian u64). ``check``
ties the others together, so a record torn by a death mid-write is
ignored rather than misread.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path

RECORD = struct.Struct("<QQQQ")
SIZE = RECORD.size  # 32 bytes
ZERO = bytes(SIZE)
MASK = (1 << 64) - 1
MAGIC = 0x9E3779B97F4A7C15  # any odd constant: an all-zero record never checks


def _check(epoch: int, key: int, digest: int) -> int:
    return ((epoch * MAGIC ^ MAGIC) & MASK ^ key * 0xBF58476D1CE4E5B9 ^ digest) & MASK


def path_for(journal: Path) -> Path:
    return journal.with_name(journal.name + "-handoff")


def worker_note(path: str, slot: int, epoch: int) -> Callable[[int, int], None] | None:
    """A worker's side: ``note(key, digest)`` writes its slot's record. None
    if the file cannot be mapped: the worker says so on stderr and in its
    hello, and the daemon records its hand-offs before it gets them."""
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            view = mmap.mmap(fd, (slot + 1) * SIZE)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    at = slot * SIZE
    pack = RECORD.pack_into
    seed = (epoch * MAGIC ^ MAGIC) & MASK  # _check's part that never changes

    def note(key: int, digest: int) -> None:
        pack(view, at, epoch, key, digest, (seed ^ key * 0xBF58476D1CE4E5B9 ^ digest) & MASK)

    return note


class HandoffFile:
    """The daemon's side: sized for the slots, read at start, a slot's
    record zeroed when its worker dies."""

    def __init__(self, path: Path, slots: int = 64) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = max(os.fstat(fd).st_size, slots * SIZE)
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the mapping keeps the file
        self._slots = size // SIZE

    def reserve(self, slot: int) -> None:
        """Room for ``slot``'s record; OSError or ValueError if the file cannot grow."""
        if slot >= self._slots:
            self._grow(slot + 1)

    def forget(self, slot: int) -> None:
        if slot < self._slots:  # else reserve() failed: its worker noted nothing
            self._map[slot * SIZE:(slot + 1) * SIZE] = ZERO

    def _grow(self, slots: int) -> None:
        slots = max(slots, self._slots * 2)
        self._map.resize(slots * SIZE)
        self._slots = slots

    def read(self, epoch: int) -> list[tuple[int, int, int]]:
        """(slot, key, digest) of each whole record written in ``epoch``."""
        found = []
        for slot in range(self._slots):
            e, key, digest, check = RECORD.unpack_from(self._map, slot * SIZE)
            if e == epoch and key and check == _check(e, key, digest):
                found.append((slot, key, digest))
        return found

    def clear(self) -> None:
        self._map[:] = bytes(len(self._map))

    def close(self) -> None:
        self._map.close()
