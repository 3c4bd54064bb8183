"""Python client for phalanxd, shaped like multiprocessing.Pool and
concurrent.futures.

    from supervisor.client import Client, TaskError

    with Client("tcp://127.0.0.1:7455") as pool:
        fut = pool.submit("workers.builtin:echo", 42)        # a Future
        print(fut.result())                                   # 42
        print(pool.map("workers.builtin:echo", range(10)))   # in order
        for value in pool.imap_unordered("workers.builtin:echo", range(10)):
            ...                                               # as they finish
        slow = pool.with_options(timeout=2.0, max_attempts=1)
        slow.submit("workers.builtin:sleep", 5).result()      # TaskError Timeout

Per-submit options (``timeout``, ``max_attempts``) live on ``with_options``,
never among the task's own keyword arguments, so a task may itself take a
``timeout=`` argument without any collision.

How it stays fast: a ZeroMQ socket is not thread-safe, so one I/O thread
owns the DEALER socket. ``submit`` appends to a deque and wakes that thread
only if it was idle; the thread sends everything queued as one message and
completes futures in batches. ``map`` and ``imap_unordered`` do not create a
Future per item: results land in a shared collector instead.

A daemon restart loses nothing the client waits for: while tasks are
pending the I/O thread pings every HEARTBEAT seconds, and a pong from a new
``boot`` makes it send every pending task again under the same id.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Self

import msgspec
import zmq

from supervisor.client.futures import AsyncResult, TaskError
from supervisor.client.subscriber import DEFAULT_PUBLISHER, Message, Subscriber
from supervisor.client.wire import NO_OPTS, Opts
from supervisor.client.wire import Ack as _Ack
from supervisor.client.wire import Err as _Err
from supervisor.client.wire import ErrorReply as _ErrorReply
from supervisor.client.wire import Pong as _Pong
from supervisor.client.wire import Res as _Res
from supervisor.client.wire import Results as _Results
from supervisor.client.wire import Submit as _Submit
from supervisor.client.wire import TaskOut as _TaskOut
from supervisor.client.wire import decoder as _decoder
from supervisor.client.wire import encoder as _encoder

__all__ = [
    "DEFAULT_ENDPOINT", "DEFAULT_PUBLISHER", "AsyncResult", "Client", "Message",
    "Subscriber", "TaskError", "task_name",
]

DEFAULT_ENDPOINT = os.environ.get("PHALANX_ENDPOINT", "tcp://127.0.0.1:7455")
MAX_BATCH = 1024  # tasks per message, well under the daemon's size limit
STREAM_WINDOW = 65_536  # tasks a map/imap keeps in flight at once
UNACKED_KEPT = 4096  # recent requests whose refusal could still arrive
# While tasks are pending, the I/O thread pings this often. A pong from a
# different ``boot`` means the daemon restarted and forgot what it held:
# every task still pending is sent again, with the same id.
HEARTBEAT = 1.0


def task_name(task: str | Callable[..., Any]) -> str:
    """``"module:function"`` as given, or derived from a function object."""
    if isinstance(task, str):
        return task
    return f"{task.__module__}:{task.__qualname__}"


class _Collector:
    """Where map/imap results land: one queue put per incoming message.

    Each outcome is ``(index, ok, value)``; when not ok, value is the TaskError.
    """

    __slots__ = ("q", "batch")

    def __init__(self) -> None:
        self.q: queue.SimpleQueue[list[tuple[int, bool, Any]]] = queue.SimpleQueue()
        self.batch: list[tuple[int, bool, Any]] | None = None


def _error_of(res: _Res) -> TaskError:
    err = res.error or _Err("Unknown", "no error detail")
    return TaskError(err.type, err.message, err.traceback, res.id)


def _auto_chunksize(iterable: Iterable[Any]) -> int:
    """Like Pool.map: big inputs travel in chunks, small ones item by item.

    Capped at 64 so that a worker crash re-runs little work."""
    try:
        n = len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return 1
    return max(1, min(64, n // 1024))


# ---------------------------------------------------------------- API
class _Api:
    """Submission methods shared by Client and its with_options views."""

    _client: Client
    _opts: Opts

    def submit(self, task: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> AsyncResult:
        """Run ``task(*args, **kwargs)`` on a worker; returns a Future."""
        return self._client._submit_one(task_name(task), args, kwargs or None, self._opts)

    def apply_async(
        self,
        task: str | Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult:
        """multiprocessing.Pool.apply_async, returning an AsyncResult/Future."""
        fut = self._client._submit_one(task_name(task), tuple(args), kwds or None, self._opts)
        if callback is not None or error_callback is not None:
            def done(f: Future[Any]) -> None:
                exc = f.exception()
                if exc is None:
                    if callback is not None:
                        callback(f.result())
                elif error_callback is not None:
                    error_callback(exc)
            fut.add_done_callback(done)
        return fut

    def apply(self, task: str | Callable[..., Any], args: Iterable[Any] = (),
              kwds: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """multiprocessing.Pool.apply: run one task and wait for its result.

        Synchronous calls skip the I/O thread: the calling thread sends and
        receives on a socket of its own (see ``Client._call``), two thread
        hand-offs fewer per round trip."""
        return self._client._call(task_name(task), tuple(args), kwds or None, self._opts, timeout)

    def call(self, task: str | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``apply`` with the task's arguments written inline."""
        return self._client._call(task_name(task), args, kwargs or None, self._opts, None)

    def imap_unordered(self, task: str | Callable[..., Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> Iterator[Any]:
        """Results as they complete; raises TaskError at the first failure."""
        stream = self._client._stream(task_name(task), ((x,) for x in iterable), self._opts,
                                      chunksize)
        for _, ok, value in stream:
            if not ok:
                raise value
            yield value

    def imap(self, task: str | Callable[..., Any], iterable: Iterable[Any],
             chunksize: int = 1) -> Iterator[Any]:
        """Results in submission order, yielded as soon as each is next."""
        held: dict[int, tuple[bool, Any]] = {}
        want = 0
        stream = self._client._stream(task_name(task), ((x,) for x in iterable), self._opts,
                                      chunksize)
        for index, ok, value in stream:
            held[index] = (ok, value)
            while want in held:
                ok_, value_ = held.pop(want)
                want += 1
                if not ok_:
                    raise value_
                yield value_

    def map(self, task: str | Callable[..., Any], iterable: Iterable[Any],
            chunksize: int | None = None) -> list[Any]:
        """All results, in submission order; raises the first failure in order.

        ``chunksize`` items travel and run as one task (default: chosen from
        the input's length, at most 64); a worker crash re-runs its chunk."""
        size = chunksize or _auto_chunksize(iterable)
        return self._gather(task_name(task), ((x,) for x in iterable), size)

    def starmap(self, task: str | Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None) -> list[Any]:
        size = chunksize or _auto_chunksize(iterable)
        return self._gather(task_name(task), (tuple(x) for x in iterable), size)

    def _gather(self, name: str, arg_tuples: Iterable[tuple[Any, ...]], chunksize: int
                ) -> list[Any]:
        out: list[Any] = []
        first_failure: tuple[int, TaskError] | None = None
        for index, ok, value in self._client._stream(name, arg_tuples, self._opts, chunksize):
            if index >= len(out):
                out.extend([None] * (index + 1 - len(out)))
            if ok:
                out[index] = value
            elif first_failure is None or index < first_failure[0]:
                first_failure = (index, value)
        if first_failure is not None:
            raise first_failure[1]
        return out

    def with_options(self, *, timeout: float | None = None, max_attempts: int | None = None,
                     soft_timeout: float | None = None,
                     retry_timeouts: bool | None = None) -> _Options:
        """A view of this client whose submissions carry these options:
        ``timeout`` (seconds before the worker is killed and the task fails
        with Timeout), ``soft_timeout`` (seconds before SoftTimeout is raised
        inside the task), ``max_attempts`` (runs allowed when workers die),
        ``retry_timeouts`` (whether a timed-out task uses its remaining attempts)."""
        return _Options(self._client, (timeout, max_attempts, soft_timeout, retry_timeouts))


class _Options(_Api):
    def __init__(self, client: Client, opts: Opts) -> None:
        self._client = client
        self._opts = opts


class Client(_Api):
    """A connection to one phalanxd (or several: pass a list of endpoints)."""

    def __new__(  # noqa: PYI034 - may return a subclass (FleetClient), not Self
            cls, endpoint: str | list[str] = DEFAULT_ENDPOINT, *args: Any, **kwargs: Any
    ) -> Client:
        # Issue 12 hook: several endpoints (or CURVE keys) make a FleetClient,
        # which routes by each daemon's credit (supervisor/client/fleet.py).
        if cls is Client and ("curve" in kwargs or (
                not isinstance(endpoint, str) and len(endpoint) > 1)):
            from supervisor.client.fleet import FleetClient
            return super().__new__(FleetClient)
        return super().__new__(cls)

    def __init__(self, endpoint: str | list[str] = DEFAULT_ENDPOINT, *,
                 connect_timeout: float | None = None) -> None:
        self._client = self
        self._opts = NO_OPTS
        self._endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._prefix = uuid.uuid4().hex[:12] + "-"
        self._counter = itertools.count()
        self._pending: dict[str, Any] = {}
        self._outq: deque[tuple[str, str, Any, Any, Opts, bool]] = deque()
        # Submitted batches awaiting their ack, by the ref the daemon echoes
        # (with several endpoints, acks from different daemons interleave).
        self._unacked: OrderedDict[int, list[str]] = OrderedDict()
        self._refs = itertools.count(1)
        # Sockets of threads that made synchronous calls (apply/call).
        self._local = threading.local()
        self._thread_sockets: list[zmq.Socket[bytes]] = []
        self._sockets_lock = threading.Lock()
        self._idle = False
        self._closing = False
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pong: Future[_Pong] | None = None
        self._boot: str | None = None  # the daemon run we last heard from
        self._sent: dict[str, _TaskOut] = {}  # pending tasks as sent (I/O thread only)
        self._next_heartbeat = 0.0
        self.resubmitted = 0  # tasks sent again after a daemon restart
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._io_main, name="phalanx-client-io", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------- lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.join()

    def close(self) -> None:
        """No more submissions; what is pending still completes (Pool.close)."""
        self._closing = True
        self._wake()

    def join(self, timeout: float | None = None) -> None:
        """Wait for pending tasks, then release the socket (Pool.join)."""
        self._closing = True
        self._wake()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._release()

    def terminate(self) -> None:
        """Stop now; pending futures fail with ClientClosed."""
        self._closing = True
        self._stop = True
        self._wake()
        self._thread.join()
        self._release()

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
              opts: Opts, timeout: float | None) -> Any:
        """One task, synchronously, on the calling thread's own socket."""
        if self._closing:
            raise RuntimeError("client is closed")
        sock = self._thread_socket()
        task_id = f"{self._prefix}{next(self._counter)}"
        ref = next(self._refs)
        sock.send(_encoder.encode(_Submit([_TaskOut(name, task_id, args, kwargs, *opts)], ref)))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not sock.poll(wait_ms):
                raise TimeoutError(f"no result for {task_id} within {timeout}s")
            msg = _decoder.decode(sock.recv())
            if isinstance(msg, _Results):
                for res in msg.results:
                    if res.id == task_id:
                        if res.ok:
                            return res.value
                        raise _error_of(res)
            elif isinstance(msg, _ErrorReply) and msg.ref == ref:
                raise TaskError(msg.error.type, msg.error.message, task_id=task_id)
            # anything else is a late answer to an earlier call that timed out

    def _thread_socket(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            for ep in self._endpoints:
                sock.connect(ep)
            self._local.sock = sock
            with self._sockets_lock:
                self._thread_sockets.append(sock)
        return sock

    def _release(self) -> None:
        with self._sockets_lock:
            for sock in self._thread_sockets:
                sock.close(linger=0)
            self._thread_sockets.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        if not self._ctx.closed:
            self._ctx.term()

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        """Round trip to the daemon; returns its version, boot id, workers."""
        fut: Future[_Pong] = Future()
        self._pong = fut
        self._outq.append(("", "", None, None, NO_OPTS, False))  # ping marker
        self._wake()
        pong = fut.result(timeout)
        return msgspec.structs.asdict(pong)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---------------------------------------------------------- submission
    def _submit_one(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                    opts: Opts) -> AsyncResult:
        if self._closing:
            raise RuntimeError("client is closed")
        fut = AsyncResult()
        task_id = f"{self._prefix}{next(self._counter)}"
        self._pending[task_id] = fut
        self._outq.append((task_id, name, args, kwargs, opts, False))
        if self._idle:
            self._wake()
        return fut

    def _stream(self, name: str, arg_tuples: Iterable[tuple[Any, ...]], opts: Opts,
                chunksize: int = 1) -> Iterator[tuple[int, bool, Any]]:
        """Feed tasks in a bounded window; yield (index, ok, value) as they come."""
        if self._closing:
            raise RuntimeError("client is closed")
        coll = _Collector()
        it = iter(arg_tuples)
        index = 0
        outstanding = 0
        exhausted = False
        pending = self._pending
        outq = self._outq
        prefix = self._prefix
        counter = self._counter
        chunk = chunksize > 1
        per_message = MAX_BATCH * chunksize
        while True:
            while not exhausted and outstanding < STREAM_WINDOW:
                n = 0
                if chunk:
                    items = list(itertools.islice(it, per_message))
                    for start in range(0, len(items), chunksize):
                        part = items[start:start + chunksize]
                        task_id = f"{prefix}{next(counter)}"
                        pending[task_id] = (coll, index, len(part))
                        outq.append((task_id, name, part, None, opts, True))
                        index += len(part)
                    n = len(items)
                else:
                    for args in itertools.islice(it, MAX_BATCH):
                        task_id = f"{prefix}{next(counter)}"
                        pending[task_id] = (coll, index)
                        outq.append((task_id, name, args, None, opts, False))
                        index += 1
                        n += 1
                if n == 0:
                    exhausted = True
                    break
                outstanding += n
                if self._idle:
                    self._wake()
            if outstanding == 0:
                return
            batch = coll.q.get()
            outstanding -= len(batch)
            yield from batch

    def _wake(self) -> None:
        self._idle = False
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # already has a wake byte pending, or closed

    # ----------------------------------------------------------- I/O thread
    def _io_main(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        # A stable routing id lets the daemon answer us after a reconnect.
        sock.setsockopt(zmq.ROUTING_ID, b"c-" + self._prefix.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        for ep in self._endpoints:
            sock.connect(ep)
        sock.send(_encoder.encode({"op": "ping"}))  # learn the daemon's boot early
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            self._io_loop(sock, poller)
        except BaseException as exc:  # noqa: BLE001 - never leave futures hanging silently
            self._error = exc
            self._fail_all("ClientError", f"client I/O thread failed: {exc!r}")
        finally:
            sock.close(linger=0)

    def _io_loop(self, sock: zmq.Socket[bytes], poller: zmq.Poller) -> None:
        outq = self._outq
        while True:
            if self._stop:
                self._fail_all("ClientClosed", "client terminated before this task finished")
                return
            if outq:
                self._send_queued(sock)
            self._recv_all(sock)
            if self._closing and not self._pending and not outq:
                return
            if self._pending and len(self._endpoints) == 1:
                now = time.monotonic()
                if now >= self._next_heartbeat:
                    self._next_heartbeat = now + HEARTBEAT
                    sock.send(_encoder.encode({"op": "ping"}))
            self._idle = True
            if outq:
                self._idle = False
                continue
            for what, _ in poller.poll(1000):
                if what == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except (BlockingIOError, OSError):
                        pass
            self._idle = False

    def _send_queued(self, sock: zmq.Socket[bytes]) -> None:
        outq = self._outq
        while outq:
            items: list[_TaskOut] = []
            ids: list[str] = []
            while outq and len(items) < MAX_BATCH:
                task_id, name, args, kwargs, opts, chunk = outq.popleft()
                if not name:
                    sock.send(_encoder.encode({"op": "ping"}))
                    continue
                items.append(_TaskOut(name, task_id, args, kwargs, *opts, chunk))
                ids.append(task_id)
            if not items:
                continue
            ref = next(self._refs)
            try:
                body = _encoder.encode(_Submit(items, ref))
            except (TypeError, ValueError, OverflowError):
                items, ids = self._drop_unencodable(items, ids)
                if not items:
                    continue
                body = _encoder.encode(_Submit(items, ref))
            self._sent.update(zip(ids, items, strict=True))
            unacked = self._unacked
            unacked[ref] = ids
            # Without acks nothing confirms a request; only a refusal (which
            # the daemon sends at once) needs the ids, so keep the recent.
            if len(unacked) > UNACKED_KEPT:
                unacked.popitem(last=False)
            sock.send(body, 0, copy=len(body) < 65536)

    def _drop_unencodable(self, items: list[_TaskOut], ids: list[str]
                          ) -> tuple[list[_TaskOut], list[str]]:
        keep: list[_TaskOut] = []
        keep_ids: list[str] = []
        for item, task_id in zip(items, ids, strict=True):
            try:
                _encoder.encode(item)
            except (TypeError, ValueError, OverflowError) as exc:
                self._complete_error(task_id, TaskError(
                    "Unserializable", f"arguments are not MessagePack-serializable: {exc}",
                    task_id=task_id))
                continue
            keep.append(item)
            keep_ids.append(task_id)
        return keep, keep_ids

    def _recv_all(self, sock: zmq.Socket[bytes]) -> None:
        while True:
            try:
                body = sock.recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                msg = _decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not something we understand; the daemon is newer?
            if isinstance(msg, _Results):
                self._on_results(msg.results)
            elif isinstance(msg, _Ack):
                self._unacked.pop(msg.ref, None)  # type: ignore[arg-type]
                for rej in msg.rejected:
                    if rej.id is not None:
                        self._complete_error(rej.id, TaskError(
                            rej.error.type, rej.error.message, task_id=rej.id))
            elif isinstance(msg, _ErrorReply):
                ids = self._unacked.pop(msg.ref, [])  # type: ignore[arg-type]
                for task_id in ids:
                    self._complete_error(task_id, TaskError(
                        msg.error.type, msg.error.message, task_id=task_id))
            elif isinstance(msg, _Pong):
                # With several daemons on one socket, boots differ by design.
                if len(self._endpoints) == 1:
                    if self._boot is not None and msg.boot != self._boot:
                        self._resubmit(sock)
                    self._boot = msg.boot
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(msg)

    def _resubmit(self, sock: zmq.Socket[bytes]) -> None:
        """The daemon restarted: send every task still pending again, same
        ids (a task the old daemon finished but whose result we missed may
        run twice; one result reaches the caller)."""
        again = [item for task_id, item in self._sent.items() if task_id in self._pending]
        self._sent = {item.id: item for item in again}
        self.resubmitted += len(again)
        for start in range(0, len(again), MAX_BATCH):
            batch = again[start:start + MAX_BATCH]
            ref = next(self._refs)
            self._unacked[ref] = [item.id for item in batch]
            sock.send(_encoder.encode(_Submit(batch, ref)))

    def _on_results(self, results: list[_Res]) -> None:
        pending = self._pending
        sent = self._sent
        touched: list[_Collector] = []
        for res in results:
            sent.pop(res.id, None)  # type: ignore[arg-type]
            sink = pending.pop(res.id, None)  # type: ignore[arg-type]
            if sink is None:
                continue  # a duplicate answer for an id already settled
            if sink.__class__ is tuple:
                coll = sink[0]
                batch = coll.batch
                if batch is None:
                    batch = coll.batch = []
                    touched.append(coll)
                if len(sink) == 2:
                    index = sink[1]
                    if res.ok:
                        batch.append((index, True, res.value))
                    else:
                        batch.append((index, False, _error_of(res)))
                else:
                    self._chunk_outcomes(batch, sink[1], sink[2], res)
            elif sink.done():
                continue  # cancelled by the caller meanwhile
            elif res.ok:
                sink.set_result(res.value)
            else:
                sink.set_exception(_error_of(res))
        for coll in touched:
            done, coll.batch = coll.batch, None
            coll.q.put(done)  # type: ignore[arg-type]

    @staticmethod
    def _chunk_outcomes(batch: list[tuple[int, bool, Any]], start: int, count: int,
                        res: _Res) -> None:
        """Spread a chunk's result ([ok, value-or-error] per item) over its items."""
        outcomes = res.value if res.ok else None
        if not isinstance(outcomes, list) or len(outcomes) != count:
            err = _error_of(res) if not res.ok else TaskError(
                "BadResponse", "chunk result does not match the chunk", task_id=res.id)
            batch.extend((start + j, False, err) for j in range(count))
            return
        for j, outcome in enumerate(outcomes):
            if outcome[0]:
                batch.append((start + j, True, outcome[1]))
            else:
                e = outcome[1] if isinstance(outcome[1], dict) else {}
                batch.append((start + j, False, TaskError(
                    str(e.get("type", "Unknown")), str(e.get("message", "")),
                    e.get("traceback"), res.id)))

    def _complete_error(self, task_id: str, err: TaskError) -> None:
        self._sent.pop(task_id, None)
        sink = self._pending.pop(task_id, None)
        if sink is None:
            return
        if sink.__class__ is tuple:
            count = sink[2] if len(sink) == 3 else 1
            sink[0].q.put([(sink[1] + j, False, err) for j in range(count)])
        elif not sink.done():
            sink.set_exception(err)

    def _fail_all(self, type_: str, message: str) -> None:
        for task_id in list(self._pending):
            self._complete_error(task_id, TaskError(type_, message, task_id=task_id))
        self._outq.clear()


