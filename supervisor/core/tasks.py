"""The task table: every accepted task, from acceptance to its one result.

    accept -> queue -> assign(slot) -> running -> done | failed
                ^                         |
                +---- retry (charged) ----+  worker died while running it
                +---- requeue (free) -----+  worker died while it waited

Every state change of a task goes through this table, which is where a
write-ahead journal will hook in. The table is pure: no sockets, no
processes, so its rules are unit-tested in microseconds.

Crash accounting with prefetch: a worker runs its tasks in the order it got
them, so when it dies the oldest unanswered task is the one it was running.
Only that task is charged an attempt; the rest go back to the front of the
queue as they were. A task whose result has arrived is never run again.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from supervisor.core.slots import Slot
from supervisor.protocol import Result

AnySlot = Slot[Any, "Task"]
S = TypeVar("S", bound=AnySlot)


class Task:
    """One accepted task. Slotted and plain: this is on the hot path."""

    __slots__ = (
        "key", "id", "name", "args", "kwargs", "route", "group",
        "attempts", "crashes", "max_attempts", "timeout", "slot", "accepted_at", "extra", "soft_timeout", "size", "chunk", "retry_timeouts", "digest",
    )

    def __init__(
        self,
        key: int,
        id: str,
        name: str,
        args: msgspec.Raw,
        kwargs: msgspec.Raw,
        route: bytes | None,
        max_attempts: int,
        timeout: float,
        group: ReplyGroup | None = None,
        accepted_at: float = 0.0,
        soft_timeout: float = 0.0,
        chunk: bool = False,
        retry_timeouts: bool = False,
    ) -> None:
        self.key = key
        self.id = id
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.route = route  # intake identity to answer, None once it is gone
        self.group = group  # set for request/reply (REQ) submitters
        self.attempts = 0  # runs started and charged (crash or timeout)
        self.crashes = 0
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.slot: int | None = None
        self.accepted_at = accepted_at  # monotonic; for latency statistics
        self.soft_timeout = soft_timeout
        self.chunk = chunk
        self.retry_timeouts = retry_timeouts
        self.size = len(args) + len(kwargs) + len(id)  # bytes held for it
        self.digest = 0  # of name and arguments (digest()), when the client chose the id
        # Further submitters of the same id: (route, group) pairs.
        self.extra: list[tuple[bytes | None, ReplyGroup | None]] | None = None

    def also_notify(self, route: bytes | None, group: ReplyGroup | None) -> bool:
        """Send this task's result to one more submitter; False if that
        peer (a DEALER route) already waits for it: repeats collapse, so no
        request can multiply one result into a huge reply."""
        if group is None and route is not None:
            if route == self.route or (self.extra and (route, None) in self.extra):
                return False
        if self.extra is None:
            self.extra = []
        self.extra.append((route, group))
        return True


class ReplyGroup:
    """Collects a REQ submitter's results: REQ allows one reply per request."""

    __slots__ = ("route", "results", "waiting")

    def __init__(self, route: bytes) -> None:
        self.route = route
        self.results: list[Result] = []
        self.waiting = 0


class TaskTable:
    def __init__(self, result_cache: int = 100_000, cache_bytes: int = 64 << 20) -> None:
        self.by_key: dict[int, Task] = {}
        self.by_id: dict[str, Task] = {}
        self.queue: deque[Task] = deque()
        self._keys = itertools.count(1)
        # id -> (result, digest of the task, bytes the result holds)
        self._cache: OrderedDict[str, tuple[Result, int, int]] = OrderedDict()
        self._cache_size = result_cache
        self._cache_bytes_limit = cache_bytes
        self.cache_bytes = 0
        self.accepted = 0
        self.pending_bytes = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.quarantined = 0

    def __len__(self) -> int:
        return len(self.by_key)

    @property
    def queued(self) -> int:
        return len(self.queue)

    def next_key(self) -> int:
        return next(self._keys)

    def add(self, task: Task) -> None:
        self.by_key[task.key] = task
        self.by_id[task.id] = task
        self.queue.append(task)
        self.accepted += 1
        self.pending_bytes += task.size

    def resize_cache(self, size: int, nbytes: int | None = None) -> None:
        self._cache_size = size
        if nbytes is not None:
            self._cache_bytes_limit = nbytes
        self._trim_cache()

    def _trim_cache(self) -> None:
        cache = self._cache
        while cache and (len(cache) > self._cache_size
                         or self.cache_bytes > self._cache_bytes_limit):
            _, (_, _, nbytes) = cache.popitem(last=False)
            self.cache_bytes -= nbytes

    def cached_result(self, task_id: str) -> Result | None:
        entry = self._cache.get(task_id)
        return entry[0] if entry is not None else None

    def cached(self, task_id: str) -> tuple[Result, int] | None:
        """The remembered result of ``task_id`` and its task's digest."""
        entry = self._cache.get(task_id)
        return None if entry is None else (entry[0], entry[1])

    def assign(self, slot: AnySlot, n: int) -> list[Task]:
        """Move up to ``n`` queued tasks onto ``slot``; return them."""
        queue = self.queue
        n = min(n, len(queue))
        taken = [queue.popleft() for _ in range(n)]
        index = slot.index
        for task in taken:
            task.slot = index
        slot.inflight.extend(taken)
        slot.assigned += n
        return taken

    def finish(self, task: Task, ok: bool, result: Result | None = None) -> None:
        """The task's one result is out: forget it (remember the answer)."""
        del self.by_key[task.key]
        self.pending_bytes -= task.size
        if self.by_id.get(task.id) is task:
            del self.by_id[task.id]
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        if result is not None and self._cache_size:
            cache = self._cache
            previous = cache.pop(task.id, None)
            if previous is not None:
                self.cache_bytes -= previous[2]
            nbytes = result_bytes(result)
            cache[task.id] = (result, task.digest, nbytes)
            self.cache_bytes += nbytes
            if len(cache) > self._cache_size or self.cache_bytes > self._cache_bytes_limit:
                self._trim_cache()

    def charge_death(self, slot: AnySlot, running_key: int | None = None) -> Task | None:
        """A slot's worker died: charge its running task, requeue the rest.

        ``running_key`` is the task the worker said it started last (0: it
        started none); tasks held before it finished but their results died
        with the worker, so they run again, uncharged. If it is not held,
        the worker had answered it and started nothing it holds (it died
        idle, or before reading the batch in its pipe): nobody is charged.
        Without it (None: unknown), the oldest held task is taken to be the
        one that was running.
        Returns the running task, charged one attempt and one crash and in
        no queue: the caller retries it (``retry``) or finishes it.
        """
        held = slot.inflight
        if not held:
            return None
        index = 0
        if running_key is not None:
            for i, task in enumerate(held):
                if task.key == running_key:
                    index = i
                    break
            else:
                self.requeue(slot)
                return None
        slot.inflight = deque()
        running = held[index]
        del held[index]
        for task in held:
            task.slot = None
        # Uncharged tasks keep their place at the front, in their order.
        self.queue.extendleft(reversed(held))
        running.slot = None
        running.attempts += 1
        running.crashes += 1
        return running

    def retry(self, task: Task) -> None:
        """Run a charged task again, before anything else queued."""
        self.queue.appendleft(task)
        self.retried += 1

    def requeue(self, slot: AnySlot) -> int:
        """Hand every task a slot holds back to the queue, uncharged."""
        held = slot.inflight
        slot.inflight = deque()
        for task in held:
            task.slot = None
        self.queue.extendleft(reversed(held))
        return len(held)

    def drop_route(self, route: bytes) -> None:
        for task in self.by_key.values():
            if task.route == route:
                task.route = None

    def unfinished(self) -> Iterable[Task]:
        return list(self.by_key.values())


def digest(name: str, args: bytes, kwargs: bytes) -> int:
    """What makes a task the task it is: its name and its argument bytes,
    as a 64-bit integer (never 0: 0 means "not known", a task migrated from
    a schema-1 journal's results).

    The task id is the idempotency key; the same id with another digest is
    another task, refused instead of answered with the wrong result. One
    digest serves the task table, the result cache and the journal (which
    keeps it with each record, so a replayed task is checked the same way)."""
    h = hashlib.blake2b(name.encode(), digest_size=8)
    h.update(b"\0%d\0" % len(args))
    h.update(args)
    h.update(kwargs)
    return int.from_bytes(h.digest(), "little") or 1


def result_bytes(result: Result) -> int:
    """What a cached result holds, in bytes (its value or its error)."""
    return len(result.id or "") + len(result.value) + len(result.error)


def plan(queued: int, slots: list[S]) -> list[tuple[S, int]]:
    """How many queued tasks to hand to each slot right now.

    Each slot takes up to its free window, but no more than a fair share of
    the queue, so ten slow tasks and two idle workers split five and five
    instead of ten and zero.
    """
    ready = [s for s in slots if s.free > 0]
    if not ready or not queued:
        return []
    share = -(-queued // len(ready))  # ceil
    out = []
    for slot in ready:
        n = min(slot.free, share, queued)
        if n <= 0:
            break
        out.append((slot, n))
        queued -= n
    return out
