"""Python client for phalanxd, shaped like multiprocessing.Pool and
concurrent.futures.

    from supervisor.client import Client, TaskError

    with Client("tcp://127.0.0.1:7455") as pool:
        fut = pool.submit("workers.builtin:echo", 42)        # a Future
        print(fut.result(timeout=5))                          # 42
        print(pool.map("workers.builtin:echo", range(10)))   # in order
        for value in pool.imap_unordered("workers.builtin:echo", range(10)):
            ...                                               # as they finish
        slow = pool.with_options(timeout=2.0, max_attempts=1)
        slow.submit("workers.builtin:sleep", 5).result()      # TaskError Timeout

Per-submit options (``timeout``, ``max_attempts``) live on ``with_options``,
never among the task's own keyword arguments, so a task may itself take a
``timeout=`` argument without any collision.

The parts: api.py (the methods above), engine.py (sockets, the window,
completion; its docstring draws the flow), links.py and heartbeat.py (one
daemon: pings, silence, re-attachment), routing.py (several daemons: credit,
failover), window.py (how much work may sit in the daemons),
types.py (which values travel), errors.py (what is raised), results.py.

What the client promises: every wait ends, in a result or a named error
(errors.py); a daemon that restarts, drops our replies or goes silent
costs no task (re-sent by id, to another daemon when there is one); a
value either arrives as itself or is refused at submit.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, Self

import msgspec
import zmq

from supervisor.client.api import Api, Options, task_name
from supervisor.client.engine import UNREACHABLE_AFTER, Engine
from supervisor.client.errors import ClientBroken, TooLarge
from supervisor.client.fetch import fetch_result
from supervisor.client.futures import AsyncResult, TaskError
from supervisor.client.results import Collector
from supervisor.client.subscriber import DEFAULT_PUBLISHER, Message, Subscriber
from supervisor.client.types import encode_chunk, encode_task
from supervisor.client.window import MAX_IN_FLIGHT, MAX_IN_FLIGHT_BYTES, Window
from supervisor.client.wire import NO_OPTS, Opts, TaskOut
from supervisor.config import LOCAL_INTAKE, local_endpoint
from supervisor.curve import ClientKeys, keys_by_endpoint
from supervisor.payload import ClientPayload

__all__ = [
    "DEFAULT_ENDPOINT", "DEFAULT_PUBLISHER", "AsyncResult", "Client", "Message", "Options",
    "Subscriber", "TaskError", "task_name",
]

DEFAULT_ENDPOINT = os.environ.get("PHALANX_ENDPOINT", "tcp://127.0.0.1:7455")
STREAM_WINDOW = 65_536  # items a map/imap reads ahead of its results
# The daemon's default tasks.max_message_bytes; a request that carries one
# task has ~100 bytes of envelope around it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_ENVELOPE = 128
_TRANSPORTS = ("tcp://", "ipc://", "inproc://", "ws://", "wss://", "tipc://", "vmci://")


def default_endpoint() -> str:
    """$PHALANX_ENDPOINT; else this user's local phalanxd over ipc (its
    runtime dir's intake.sock: no TCP stack on the way); else loopback TCP."""
    return os.environ.get("PHALANX_ENDPOINT") or local_endpoint(LOCAL_INTAKE) or DEFAULT_ENDPOINT


def _endpoints(endpoint: str | list[str]) -> list[str]:
    """Validate in the caller: a bad endpoint is a ValueError here, not a
    traceback in a background thread."""
    eps = [endpoint] if isinstance(endpoint, str) else list(endpoint)
    if not eps:
        raise ValueError("no endpoint given")
    for ep in eps:
        if not isinstance(ep, str) or not ep.startswith(_TRANSPORTS) or ep.endswith("://"):
            raise ValueError(f"{ep!r} is not a ZeroMQ endpoint such as "
                             "'tcp://127.0.0.1:7455' or 'ipc:///run/phalanx/intake'")
    return eps


class Client(Api):
    """A connection to one phalanxd (or several: pass a list of endpoints).

    ``unreachable_after`` (s): how long tasks wait on a daemon that answers
    nothing before they fail with DaemonUnreachable; ``connect_timeout`` is
    its older name. With several endpoints, tasks go only where a daemon
    advertised room (credit), and ``dead_after`` (s, default 3, at most
    ``unreachable_after``) is how long one may stay silent before its tasks
    move to the others (routing.py); they fail only when no daemon took
    work for ``unreachable_after``. ``max_in_flight`` and
    ``max_in_flight_bytes``: the submit window (window.py).
    ``max_message_bytes``: the daemons' ``tasks.max_message_bytes``; a
    bigger task is refused at once with TooLarge. ``curve``: keys for
    daemons beyond loopback (one ClientKeys, or one per endpoint)."""

    def __init__(self, endpoint: str | list[str] | None = None, *,
                 connect_timeout: float | None = None,
                 unreachable_after: float | None = None,
                 max_in_flight: int = MAX_IN_FLIGHT,
                 max_in_flight_bytes: int = MAX_IN_FLIGHT_BYTES,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 curve: ClientKeys | Mapping[str, ClientKeys] | None = None,
                 dead_after: float | None = None) -> None:
        self._client = self
        self._opts = NO_OPTS
        self._endpoints = _endpoints(default_endpoint() if endpoint is None else endpoint)
        self._payload = ClientPayload(self._endpoints)  # numpy: shared memory if local
        after = unreachable_after if unreachable_after is not None else connect_timeout
        after = UNREACHABLE_AFTER if after is None else float(after)
        if not after > 0:
            raise ValueError(f"unreachable_after must be > 0 seconds, got {after!r}")
        if dead_after is not None and not dead_after > 0:
            raise ValueError(f"dead_after must be > 0 seconds, got {dead_after!r}")
        self._max_task_bytes = max_message_bytes - _ENVELOPE
        self._prefix = uuid.uuid4().hex[:12] + "-"  # task ids; routing ids are unrelated
        self._counter = itertools.count()
        self._closing = False
        self._terminate_lock = threading.Lock()
        self._keys = keys_by_endpoint(curve, self._endpoints)
        try:
            self._engine = Engine(self._endpoints, Window(max_in_flight, max_in_flight_bytes),
                                  after, max_message_bytes, self._keys, dead_after)
        except zmq.ZMQError as exc:
            raise ValueError(f"cannot connect to {self._endpoints}: {exc}") from None

    # ---------------------------------------------------------- lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.join()

    def close(self) -> None:
        """No more submissions; what is pending still completes (Pool.close)."""
        self._closing = True
        self._engine.closing = True
        self._engine.wake()

    def join(self, timeout: float | None = None) -> None:
        """Wait for pending tasks, then release the sockets (Pool.join).
        Bounded without a timeout too: silent daemons fail their tasks."""
        self.close()
        self._engine.thread.join(timeout)
        if not self._engine.thread.is_alive():
            self._engine.close()

    def terminate(self, reason: str = "client terminated before this task finished") -> None:
        """Stop now; pending futures fail with ClientClosed (message: ``reason``).

        Safe to call twice and from two threads at once (a private Pool's
        watcher and its owner may both): the second call waits for the
        first, so the context is terminated once (libzmq aborts otherwise)."""
        with self._terminate_lock:
            self._closing = True
            if self._engine.stop and self._engine.wake_r < 0:
                return  # already terminated
            self._engine.stop_reason = reason
            self._engine.stop = True
            self._engine.wake()
            if threading.current_thread() is not self._engine.thread:
                self._engine.thread.join()
                self._engine.close()

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        """Round trip to the daemon(s); the first pong's version, boot, workers."""
        self._check_open()
        fut = AsyncResult(self._engine, f"a pong from {', '.join(self._endpoints)}")
        self._engine.request_ping(fut)
        pong = fut.result(timeout)
        out = msgspec.structs.asdict(pong)
        for key in ("ref", "dropped"):
            out.pop(key, None)
        return out

    @property
    def pending(self) -> int:
        return len(self._engine.pending)

    def daemons(self) -> list[dict[str, Any]]:
        """Each daemon as this client sees it, for logs and tests: ``alive``
        (answered, not silent since), ``boot``, ``capacity`` (its last pong),
        ``room`` (tasks we may still send there; several daemons only),
        ``holding`` (our tasks it holds), ``sent`` (tasks ever sent there,
        re-sends too), ``deaths`` (times declared dead). Read without
        stopping the client: a moment's view, not a consistent snapshot."""
        return [{"endpoint": link.endpoint, "alive": link.boot is not None and not link.down,
                 "boot": link.boot, "capacity": link.capacity,
                 "room": max(0, link.room()) if self._engine.many else None,
                 "holding": len(link.ids), "sent": link.sent, "deaths": link.deaths}
                for link in list(self._engine.links)]

    @property
    def resubmitted(self) -> int:
        """Tasks sent again (daemon restart, lost replies, a silent daemon,
        a draining one)."""
        return self._engine.resubmitted

    def _check_open(self) -> None:
        broken = self._engine.broken
        if broken is not None:
            raise ClientBroken("ClientBroken", f"client I/O failed: {broken!r}") from broken
        if self._closing or self._engine.stop:  # stop: the I/O thread ended, however
            raise RuntimeError("client is closed")

    # ---------------------------------------------------------- submission
    def _encode(self, task: TaskOut) -> bytes:
        body = encode_chunk(task) if task.chunk else encode_task(task)
        if len(body) > self._max_task_bytes:
            raise TooLarge("TooLarge", f"task {task.id} ({task.task}) is {len(body)} bytes "
                           f"encoded, a message may carry at most {self._max_task_bytes}",
                           task_id=task.id)
        return body

    def _submit_one(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                    opts: Opts, on_done: Callable[[Future[Any]], object] | None = None
                    ) -> AsyncResult:
        self._check_open()
        task_id = f"{self._prefix}{next(self._counter)}"
        made = self._payload.segments
        args, kwargs = self._payload.prepare(args, kwargs, False)  # numpy: big ones to shm
        shared = self._payload.segments != made
        body = self._encode(TaskOut(name, task_id, args, kwargs, *opts))
        fut = AsyncResult(self._engine, name)
        fut.task_id = task_id
        if on_done is not None:  # before it is sent: then it always runs on the I/O thread
            fut.add_done_callback(on_done)
        if shared:
            # Shared-memory arguments live as long as their ShmArg objects:
            # the future keeps them (not a done callback: one of those costs
            # every future a Condition and a wake of the I/O thread).
            fut.held = (args, kwargs)
        self._engine.enqueue(task_id, body, fut)
        if on_done is not None:  # nobody may ever wait on it: the I/O thread receives
            self._engine.watch()
        return fut

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The result of the task with this id, submitted by anyone, at any
        time within the daemon's journal retention: returned at once if it
        finished, or when it does; raises TaskError (``UnknownId`` if no
        daemon holds or retains it), TimeoutError after ``timeout``.

        With several daemons each is asked in turn (with its CURVE keys),
        within the one ``timeout``: a daemon that neither holds nor retains
        the id answers UnknownId at once, and the next is asked."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unknown: TaskError | None = None
        for endpoint in self._endpoints:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return fetch_result(endpoint, task_id, left, self._keys.get(endpoint))
            except TaskError as err:
                if err.type != "UnknownId":
                    raise
                unknown = err
        assert unknown is not None  # at least one endpoint, each said UnknownId
        raise unknown

    def _stream(self, name: str, arg_tuples: Iterable[tuple[Any, ...]], opts: Opts,
                chunksize: int = 1, timeout: float | None = None
                ) -> Iterator[tuple[int, bool, Any]]:
        """Feed tasks in a bounded window; yield (index, ok, value) as they come."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        coll = Collector()
        it = iter(arg_tuples)
        index = outstanding = 0
        engine = self._engine
        prefix, counter = self._prefix, self._counter
        held: list[Any] = []  # shared-memory arguments, kept until the stream ends
        while True:
            while outstanding < STREAM_WINDOW:
                part = list(itertools.islice(it, chunksize))
                if not part:
                    break
                task_id = f"{prefix}{next(counter)}"
                if chunksize > 1:
                    items = self._payload.prepare(part, None, True)[0]  # + the local token
                    if self._payload.local:
                        held.append(items)
                    body = self._encode(TaskOut(name, task_id, items, None, *opts, True))
                    engine.enqueue(task_id, body, (coll, index, len(part)))
                else:
                    args1 = self._payload.prepare(part[0], None, False)[0]
                    if self._payload.local:
                        held.append(args1)
                    body = self._encode(TaskOut(name, task_id, args1, None, *opts))
                    engine.enqueue(task_id, body, (coll, index))
                index += len(part)
                outstanding += len(part)
            if outstanding == 0:
                del held
                return
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                batch = coll.q.get(timeout=left)
            except queue.Empty:
                raise TimeoutError(f"{name}: {outstanding} of {index} results not in within "
                                   f"{timeout}s (the tasks may still run)") from None
            outstanding -= len(batch)
            yield from batch

