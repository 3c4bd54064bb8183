"""The submit window: how much of a client's work may sit in the daemon.

A client that submits 200 000 tasks at once would otherwise park all of
them (and their arguments) in the daemon, whose memory would then track
the client's backlog instead of its own work. The client holds the excess
itself and sends more as results come back. Both bounds apply: a count
(tasks the daemon holds for us) and bytes (their encoded size).
"""

from __future__ import annotations

# Enough to keep two workers' prefetch windows and the daemon's batching
# busy at full speed (~100k tasks/s), small against the daemon's limits.
MAX_IN_FLIGHT = 20_000
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024


class Window:
    __slots__ = ("max_tasks", "max_bytes", "tasks", "bytes")

    def __init__(self, max_tasks: int = MAX_IN_FLIGHT,
                 max_bytes: int = MAX_IN_FLIGHT_BYTES) -> None:
        if max_tasks < 1 or max_bytes < 1:
            raise ValueError("the submit window must allow at least one task and one byte")
        self.max_tasks = max_tasks
        self.max_bytes = max_bytes
        self.tasks = 0
        self.bytes = 0

    def has_room(self) -> bool:
        """Whether one more task may go; a task bigger than the whole byte
        bound still goes when nothing else is in flight."""
        return self.tasks < self.max_tasks and (self.bytes < self.max_bytes or self.tasks == 0)

    def take(self, size: int) -> None:
        self.tasks += 1
        self.bytes += size

    def give(self, size: int) -> None:
        self.tasks -= 1
        self.bytes -= size
