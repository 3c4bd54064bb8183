"""What each idle worker was just given, in a file that outlives phalanxd.

Why: a task goes to its worker before the loop turn's commit records it
(the commit then runs while the worker does; see journal.py). If a task
kills phalanxd itself in that moment, the journal never heard of it: the
restarted daemon could not charge it, and a client resubmitting it (it was
never acked) would be killed again and again. So, before the pipe write,
the daemon notes the task an idle worker will run first (the one it runs
at once) here: one fixed-size record per slot, written into a shared file
mapping, with no system call. The page cache keeps it when the process
dies, as it keeps SQLite's WAL at ``synchronous=NORMAL``. A power loss
loses it, but then no task killed the daemon.

A restarted daemon reads the records of the epoch that died
(journal_replay.py). Where the log says what a slot's worker was running,
the log wins. Otherwise a record of the slot's latest worker charges its
task: in the log but its hand-off not committed, the task itself; not in
the log at all, a charge against the task's digest (its name and
arguments), kept in the ``charges`` table until that task is submitted
again (journal.py ``precharge``).

Each record: epoch, key, digest, worker generation, check (five
little-endian u64). ``check`` ties the others together, so a record torn
by the daemon's death mid-write is ignored rather than misread.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

RECORD = struct.Struct("<QQQQQ")
SIZE = RECORD.size  # 40 bytes
MASK = (1 << 64) - 1
MAGIC = 0x9E3779B97F4A7C15  # any odd constant: an all-zero record never checks


def _check(epoch: int, key: int, digest: int, gen: int) -> int:
    return (epoch * MAGIC ^ key * 0xBF58476D1CE4E5B9 ^ gen * 0x94D049BB133111EB
            ^ digest ^ MAGIC) & MASK


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

    def note(self, slot: int, gen: int, epoch: int, key: int, digest: int) -> None:
        if slot >= self._slots:
            self._grow(slot + 1)
        self._pack(self._map, slot * SIZE, epoch, key, digest, gen,
                   _check(epoch, key, digest, gen))

    def _grow(self, slots: int) -> None:
        slots = max(slots, self._slots * 2)
        self._map.resize(slots * SIZE)
        self._slots = slots

    def read(self, epoch: int) -> list[tuple[int, int, int, int]]:
        """(slot, gen, key, digest) of each whole record written in ``epoch``."""
        found = []
        for slot in range(self._slots):
            e, key, digest, gen, check = RECORD.unpack_from(self._map, slot * SIZE)
            if e == epoch and key and check == _check(e, key, digest, gen):
                found.append((slot, gen, key, digest))
        return found

    def clear(self) -> None:
        self._map[:] = bytes(len(self._map))

    def close(self) -> None:
        self._map.close()
