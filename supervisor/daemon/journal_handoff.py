"""A lone task given to an idle worker before its commit, in a file that
outlives phalanxd.

Why: a lone task (one task for an idle worker, not a retry) goes to its
worker before the loop turn's commit records it; the commit then runs
while the worker does (journal.py). If the task kills phalanxd itself in
that moment, the journal never heard of it: the restarted daemon could not
charge it, and a client resubmitting it (it was never acked) would be
killed again and again. So, before the pipe write, the daemon notes it
here: one fixed-size record per slot, written into a shared file mapping,
with no system call, and zeroed once the turn's commit has recorded it.
The page cache keeps it when the process dies, as it keeps SQLite's WAL
at ``synchronous=NORMAL``. A power loss loses it, but then no task killed
the daemon.

So a record a restarted daemon finds (journal_replay.py) is a hand-off
whose commit never happened, the last thing given to that slot's worker:
what it was running. In the log (its acceptance committed earlier), that
task is charged; not in the log at all, a charge against the task's
digest (its name and arguments) is kept in the ``charges`` table until the
task is submitted again (journal.py ``precharge``).

Each record: epoch, key, digest, check (four little-endian u64). ``check``
ties the others together, so a record torn by the daemon's death
mid-write is ignored rather than misread.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

RECORD = struct.Struct("<QQQQ")
SIZE = RECORD.size  # 32 bytes
ZERO = bytes(SIZE)
MASK = (1 << 64) - 1
MAGIC = 0x9E3779B97F4A7C15  # any odd constant: an all-zero record never checks


def _check(epoch: int, key: int, digest: int) -> int:
    return (epoch * MAGIC ^ key * 0xBF58476D1CE4E5B9 ^ digest ^ MAGIC) & MASK


def path_for(journal: Path) -> Path:
    return journal.with_name(journal.name + "-handoff")


class HandoffFile:
    """The daemon's side: one record per slot, grown as slots are added."""

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
        self._pack = RECORD.pack_into

    def note(self, slot: int, epoch: int, key: int, digest: int) -> None:
        """OSError or ValueError if the file cannot grow to ``slot``."""
        if slot >= self._slots:
            self._grow(slot + 1)
        self._pack(self._map, slot * SIZE, epoch, key, digest, _check(epoch, key, digest))

    def forget(self, slot: int) -> None:
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
