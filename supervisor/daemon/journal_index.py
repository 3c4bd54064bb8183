"""The journal's in-memory index of retained results: id -> finished row.

What the hot path needs is only "is this id's result retained, and in
which row": intake asks it of every submission that names an id. So the
index keeps no id strings and no object per row:

* ``keys``: a dict from a 60-bit hash of each id to its row number (the
  row's int is one object shared by all of that row's ids);
* the rows, oldest first, in flat arrays (row number, wall time, bytes
  charged, how many ids) and every row's id hashes, in order, in one more
  array, so expiring the oldest rows walks their hashes without a tuple or
  a list per row.

A hash is not the id: a hit is confirmed against the row itself (journal.py
reads it), so a collision never answers the wrong id; two retained ids with
one hash (odds 2**-60 a pair) leave the older forgotten, as if expired.

Memory, measured (CPython 3.11, 64-bit): about ``BYTES_PER_ID`` per id and
``BYTES_PER_ROW`` per row, both counted against ``retention_bytes``.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

KEY_MASK = (1 << 60) - 1  # keys under 2**60: each is a 32-byte int
BYTES_PER_ID = 96  # dict entry (~50 amortised over resizes), key int 32, its hash 8
BYTES_PER_ROW = 72  # four array slots (32) and the row number's int (32), rounded up


def id_key(tid: str) -> int:
    """The index key of an id. ``hash()`` is salted per process: the index
    is rebuilt at every start, so it never has to agree across restarts."""
    return hash(tid) & KEY_MASK


class RetainedIndex:
    def __init__(self) -> None:
        self.keys: dict[int, int] = {}
        self._row = array("q")
        self._at = array("d")
        self._charged = array("q")
        self._count = array("q")
        self._hashes = array("q")
        self._head = 0  # first live row
        self._hash_head = 0  # first live hash
        self.bytes = 0  # charged to retention_bytes: results on disk + this index

    def __len__(self) -> int:
        return len(self._row) - self._head

    def find(self, tid: str) -> int | None:
        return self.keys.get(hash(tid) & KEY_MASK)

    def add(self, row: int, at: float, nbytes: int, ids: list[str]) -> None:
        keys = self.keys
        hashes = self._hashes
        for i in ids:
            k = hash(i) & KEY_MASK
            keys[k] = row
            hashes.append(k)
        charged = nbytes + BYTES_PER_ROW + BYTES_PER_ID * len(ids)
        self._row.append(row)
        self._at.append(at)
        self._charged.append(charged)
        self._count.append(len(ids))
        self.bytes += charged

    def expire(self, cutoff: float, max_bytes: int) -> int:
        """Forget rows older than ``cutoff`` (wall time) or beyond
        ``max_bytes``, oldest first; the newest row forgotten, 0 if none."""
        head, hh = self._head, self._hash_head
        end = len(self._row)
        keys, hashes = self.keys, self._hashes
        last = 0
        while head < end and (self._at[head] < cutoff or self.bytes > max_bytes):
            row = self._row[head]
            for k in hashes[hh:hh + self._count[head]]:
                if keys.get(k) == row:
                    del keys[k]
            hh += self._count[head]
            self.bytes -= self._charged[head]
            last = row
            head += 1
        self._head, self._hash_head = head, hh
        if head > 1024 and head * 2 > end:  # drop the dead front now and then: O(1) amortised
            for a in (self._row, self._at, self._charged, self._count):
                del a[:head]
            del hashes[:hh]
            self._head = self._hash_head = 0
        return last

    def newest_rows(self) -> Iterator[int]:
        row = self._row
        for i in range(len(row) - 1, self._head - 1, -1):
            yield row[i]
