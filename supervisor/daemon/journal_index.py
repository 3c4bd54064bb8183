"""The journal's in-memory index of retained results: id -> finished row.

What the hot path needs is only "is this id's result retained, and in
which row": intake asks it of every submission that names an id. So the
index keeps no id strings and no object per row:

* ``keys``: a dict from a 60-bit hash of each id to its row number (the
  row's int is one object shared by all of that row's ids);
* the rows, oldest first, in one flat array (row number, wall time, bytes
  charged, how many ids) and every row's id hashes, in order, in another,
  so expiring the oldest rows walks their hashes without a tuple or a list
  per row.

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
        # Per row, oldest first: row number, wall time (ms), bytes charged,
        # how many ids. One array, four slots a row: one extend() per row.
        self._rows = array("q")
        self._hashes = array("q")  # every row's id hashes, in row order
        self._head = 0  # first live row's slot in _rows
        self._hash_head = 0  # first live hash
        self.bytes = 0  # charged to retention_bytes: results on disk + this index

    def __len__(self) -> int:
        return (len(self._rows) - self._head) // 4

    def find(self, tid: str) -> int | None:
        return self.keys.get(hash(tid) & KEY_MASK)

    def add(self, row: int, at: float, nbytes: int, ids: list[str]) -> None:
        keys = self.keys
        if len(ids) == 1:  # a lone round trip's row
            k = hash(ids[0]) & KEY_MASK
            keys[k] = row
            self._hashes.append(k)
        else:
            hashes = [hash(i) & KEY_MASK for i in ids]
            keys.update(dict.fromkeys(hashes, row))
            self._hashes.extend(hashes)
        charged = nbytes + BYTES_PER_ROW + BYTES_PER_ID * len(ids)
        self._rows.extend((row, int(at * 1000), charged, len(ids)))
        self.bytes += charged

    def expire(self, cutoff: float, max_bytes: int) -> int:
        """Forget rows older than ``cutoff`` (wall time) or beyond
        ``max_bytes``, oldest first; the newest row forgotten, 0 if none."""
        rows, keys, hashes = self._rows, self.keys, self._hashes
        head, hh, end = self._head, self._hash_head, len(self._rows)
        cutoff_ms = cutoff * 1000
        last = 0
        while head < end and (rows[head + 1] < cutoff_ms or self.bytes > max_bytes):
            row, _, charged, count = rows[head:head + 4]
            for k in hashes[hh:hh + count]:
                if keys.get(k) == row:
                    del keys[k]
            hh += count
            self.bytes -= charged
            last = row
            head += 4
        self._head, self._hash_head = head, hh
        if head > 4096 and head * 2 > end:  # drop the dead front now and then: O(1) amortised
            del rows[:head]
            del hashes[:hh]
            self._head = self._hash_head = 0
        return last

    def newest_rows(self) -> Iterator[int]:
        rows = self._rows
        for i in range(len(rows) - 4, self._head - 1, -4):
            yield rows[i]
