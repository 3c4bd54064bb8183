"""Captured output: each worker's stdout/stderr, and the daemon's own log.

A ``RingLog`` keeps the newest ``capacity`` bytes in memory, addressed by
absolute offsets that only grow, so ``tail -f`` can ask "everything after
offset N" and learn whether it fell behind (``overflow``). It belongs to a
slot, not to a worker process: a crash or restart never loses what the old
worker wrote, and a follower simply keeps reading. Optionally each log is
also appended to a file, rotated at ``max_bytes`` with ``backups`` old
copies, like supervisord's ``stdout_logfile_maxbytes``/``_backups``.
"""

from __future__ import annotations

import os
from pathlib import Path


class RingLog:
    def __init__(self, capacity: int, path: Path | None = None,
                 max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> None:
        self.capacity = capacity
        self._buf = bytearray()
        self.start = 0  # absolute offset of _buf[0]
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: int | None = None
        self._file_size = 0

    @property
    def end(self) -> int:
        return self.start + len(self._buf)

    def write(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        excess = len(buf) - self.capacity
        if excess > 0:
            del buf[:excess]
            self.start += excess
        if self.path is not None and data:
            self._write_file(data)

    def read(self, offset: int | None, nbytes: int) -> tuple[bytes, int, bool]:
        """Bytes from ``offset`` (or the last ``nbytes`` if None).

        Returns (data, new end offset, overflow) where overflow means some
        bytes after ``offset`` were already discarded from memory.
        """
        end = self.end
        if offset is None or offset > end:
            offset = max(self.start, end - nbytes)
        overflow = offset < self.start
        offset = max(offset, self.start)
        stop = min(end, offset + max(nbytes, 0)) if nbytes > 0 else end
        lo = offset - self.start
        return bytes(self._buf[lo:lo + (stop - offset)]), stop, overflow

    def clear(self) -> None:
        self.start = self.end
        self._buf.clear()

    # -------------------------------------------------------------- files
    def _write_file(self, data: bytes) -> None:
        try:
            if self._file is None:
                self._open()
            assert self._file is not None
            os.write(self._file, data)
            self._file_size += len(data)
            if self._file_size >= self.max_bytes:
                self._rotate()
        except OSError:
            # A full disk must not take the daemon down; memory keeps it.
            self.close()

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._file_size = os.fstat(self._file).st_size

    def _rotate(self) -> None:
        assert self.path is not None
        self.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def reopen(self) -> None:
        """SIGUSR1: close and reopen the file (after an external logrotate)."""
        self.close()

    def close(self) -> None:
        if self._file is not None:
            try:
                os.close(self._file)
            except OSError:
                pass
            self._file = None


class Outputs:
    """Each slot's stdout/stderr rings, by slot index; they outlive workers."""

    STREAMS = ("stdout", "stderr")

    def __init__(self, ring_bytes: int, folder: Path | None, max_bytes: int,
                 backups: int) -> None:
        self.ring_bytes, self.folder = ring_bytes, folder
        self.max_bytes, self.backups = max_bytes, backups
        self._rings: dict[int, dict[str, RingLog]] = {}

    def of(self, index: int) -> dict[str, RingLog]:
        rings = self._rings.get(index)
        if rings is None:
            rings = self._rings[index] = {
                name: RingLog(self.ring_bytes, self._path(index, name), self.max_bytes,
                              self.backups)
                for name in self.STREAMS
            }
        return rings

    def _path(self, index: int, name: str) -> Path | None:
        return self.folder / f"worker-{index}.{name}.log" if self.folder else None

    def configure(self, ring_bytes: int, folder: Path | None, max_bytes: int,
                  backups: int) -> None:
        """Apply a new [output] section to every ring, existing ones too."""
        self.ring_bytes, self.folder = ring_bytes, folder
        self.max_bytes, self.backups = max_bytes, backups
        for index, rings in self._rings.items():
            for name, ring in rings.items():
                path = self._path(index, name)
                if path != ring.path:
                    ring.close()
                    ring.path = path
                ring.capacity, ring.max_bytes, ring.backups = ring_bytes, max_bytes, backups
                ring.write(b"")  # trims to a smaller capacity

    def reopen(self) -> None:
        """After logrotate moved the files: reopen on next write."""
        for rings in self._rings.values():
            for ring in rings.values():
                ring.reopen()
