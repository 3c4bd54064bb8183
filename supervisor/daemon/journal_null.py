"""``[journal] enabled = false``: the journal's calls, recording nothing.

Replies are still held until the end of the loop turn, so they leave in
the order requests came whether or not there is a journal."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisor.core.tasks import Task, TaskTable
from supervisor.protocol import Result

if TYPE_CHECKING:
    from supervisor.daemon.journal import Identity, Workers
    from supervisor.errors import RequestError


class NullJournal:
    """``[journal] enabled = false``: the same calls, recording nothing."""

    enabled = False
    full = False
    failing = False

    def __init__(self) -> None:
        self._held: list[tuple[bytes, bytes, bool]] = []
        self.charges: dict[int, tuple[int, int, float]] = {}  # never any

    def bind(self, table: TaskTable, workers: Workers, identity: Identity) -> None:
        pass

    def accept(self, task: Task) -> None:
        pass

    def started(self, slot: int, gen: int, tasks: list[Task]) -> bool:
        return True

    def ledger_for(self, slot: int) -> tuple[str, int, int] | None:
        return None

    def worker_gone(self, slot: int) -> None:
        pass

    def cannot_note(self, slot: int) -> None:
        pass

    def charged(self, task: Task) -> None:
        pass

    def precharge(self, task: Task) -> Result | None:
        return None

    def finish(self, task: Task, result: Result) -> None:
        pass

    def hold(self, route: bytes, body: bytes, req: bool = False) -> None:
        self._held.append((route, body, req))

    def release(self) -> list[tuple[bytes, bytes, bool]]:
        held, self._held = self._held, []
        return held

    def lookup(self, tid: str | None, dg: int) -> RequestError | Result | None:
        return None

    def commit(self) -> bool:
        return True

    def result(self, tid: str) -> Result | None:
        return None

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return []

    def stats(self) -> dict[str, Any]:
        return {"path": None}

    def prune(self, now: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def replay(self, next_key: Callable[[], int], defaults_now: float
               ) -> tuple[list[Task], list[Result]]:
        return [], []
