"""The client's I/O: sockets, the submit window, heartbeats, completion.

    caller threads                          whoever holds Engine.lock
    submit/map: encode, -> outq ---------> step(): send batches (window, bytes;
                                             several daemons: credit, routing.py)
                 register sink in pending          receive: results -> sinks
    fut.result(): lock free (client idle)?         heartbeat each daemon,
        yes -> drive(): step + poll itself         re-attach, give up
        no  -> wait on the Future; the I/O thread steps and polls

Why the lock instead of an I/O thread that always owns the sockets: a
ZeroMQ socket may move between threads, never be used by two at once. The
I/O thread holds the lock while anything is pending; when the client is
idle it lets go and sleeps on its wake pipe. A caller that then waits on
its one future takes the lock and receives the result itself, which saves
the two thread hand-offs (~100 us) a round trip through the I/O thread
costs. A task a caller sent itself this way does not wake the I/O thread
either (that switch would cost as much); instead the future wakes it
(``watch``) as soon as anyone waits on it without receiving: result()
that cannot take the lock, wait(), as_completed(), add_done_callback(),
done(). Whoever releases the lock with work left wakes the I/O thread, so
work someone waits for is never left unwatched; anything unexpected raised
while holding it breaks the client for everyone at once (ClientBroken),
never silently.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import msgspec
import zmq

from supervisor.client import heartbeat, routing
from supervisor.client import results as _results
from supervisor.client.errors import ClientBroken, ClientClosed
from supervisor.client.futures import DONE_STATES, AsyncResult
from supervisor.client.heartbeat import MAX_BATCH
from supervisor.client.links import Link
from supervisor.client.types import ext_hook
from supervisor.client.window import Window
from supervisor.client.wire import Reply, Submit, encoder
from supervisor.curve import ClientKeys

BATCH_BYTES = 1024 * 1024  # a batch closes past this many bytes of tasks
UNACKED_KEPT = 4096  # recent requests whose refusal could still arrive
UNREACHABLE_AFTER = 10.0  # seconds of silence before pending tasks fail
# A caller receiving for its own future looks up at least this often (s),
# so work other threads queue meanwhile never waits longer for its turn.
DRIVE_SLICE = 0.05

POLLIN, EVENTS = int(zmq.POLLIN), int(zmq.EVENTS)
# The backend's getsockopt returns a plain int; the sugar one builds an
# enum member per call, which is most of an idle check's cost.
_events = zmq.backend.Socket.get
Sent = tuple[msgspec.Raw, int, Link]  # a task as sent: bytes, size, where
# A task waiting to be sent: id, encoded bytes (Raw once sent and moved back
# to the queue by routing.requeue), size.
Queued = tuple[str, bytes | msgspec.Raw, int]


class Engine:
    def __init__(self, endpoints: list[str], window: Window, unreachable_after: float,
                 max_message_bytes: int, curve: dict[str, ClientKeys] | None = None,
                 dead_after: float | None = None) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        # Several daemons: routing by credit, deaths after dead_after
        # (routing.py). One: heartbeat.py's path, unchanged.
        self.many = len(endpoints) > 1
        self.dead_after = min(unreachable_after, routing.DEAD_AFTER if dead_after is None
                              else dead_after)
        self.heartbeat = routing.heartbeat_of(self.dead_after)
        self.connect_ms = max(1, int(self.dead_after * 1000)) if self.many else 0
        self.none_live_since: float | None = None
        self._tend = routing.tend if self.many else heartbeat.tend
        self.links = [Link(self.ctx, ep, (curve or {}).get(ep), self.connect_ms)
                      for ep in endpoints]
        self.window = window
        # A batch closes before it could pass the daemon's message limit.
        self.batch_bytes = min(BATCH_BYTES, max_message_bytes // 2)
        self.unreachable_after = unreachable_after
        self.lock = threading.Lock()
        self.outq: deque[Queued] = deque()
        self.pending: dict[str, Any] = {}  # id -> AsyncResult or collector tuple
        self.sent: dict[str, Sent] = {}
        self.unacked: OrderedDict[int, list[str]] = OrderedDict()
        self.refs = itertools.count(1)
        self.pong_waiters: list[AsyncResult] = []  # ping() calls awaiting a pong
        self.ping_requests: deque[AsyncResult] = deque()
        self.idle = False  # the I/O thread is (about to be) asleep: wake it
        self.parked = False  # ...and holds no lock: a caller may drive
        self.driving = False  # a caller holds the lock in drive()
        self.unwatched = False  # sent by a caller, nobody receiving yet
        self.closing = False
        self.stop = False
        self.stop_reason = "client terminated before this task finished"
        self.broken: BaseException | None = None
        self.resubmitted = 0
        self.decoder = msgspec.msgpack.Decoder(Reply, ext_hook=ext_hook)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.poller = zmq.Poller()
        self.link_of: dict[Any, Link] = {}
        for link in self.links:
            self.poller.register(link.sock, zmq.POLLIN)
            self.link_of[link.sock] = link
        self.poller.register(self.wake_r, zmq.POLLIN)
        self.thread = threading.Thread(target=self._io_main, name="phalanx-client-io",
                                       daemon=True)
        self.thread.start()

    # ------------------------------------------------------ from callers
    def wake(self) -> None:
        self.idle = False
        try:
            os.write(self.wake_w, b"\0")
        except OSError:
            pass  # a wake byte is already pending, or the client is closed

    def enqueue(self, task_id: str, body: bytes, sink: Any) -> None:
        """Hand one encoded task over; sent at once if it is the client's
        only task (a lone call), else batched by the I/O thread: a burst of
        submits sent one message each from the caller would cost a send
        per task and leave nobody receiving."""
        pending = self.pending
        pending[task_id] = sink
        self.outq.append((task_id, body, len(body)))
        if len(pending) == 1 and self.parked and self.lock.acquire(False):
            try:  # send from this thread: the I/O thread is asleep
                self.send_queued()
            except BaseException as exc:  # noqa: BLE001 - every future fails with it
                self._break(exc)
            finally:
                self.lock.release()
            if sink.__class__ is AsyncResult:
                # Nobody watches the socket yet. Waking the I/O thread now
                # would cost a thread switch per call; the future wakes it
                # (watch()) the moment anyone waits on it without driving:
                # result() that cannot drive, wait(), as_completed(),
                # add_done_callback(), done().
                self.unwatched = True
            else:
                self.wake()  # a map's collector has no such hook
        elif self.idle:
            self.wake()

    def watch(self) -> None:
        """Make sure someone receives: called by futures before waiting."""
        if self.unwatched:
            self.unwatched = False
            self.wake()

    def request_ping(self, fut: AsyncResult) -> None:
        self.ping_requests.append(fut)
        if self.idle:
            self.wake()

    def drive(self, fut: AsyncResult, deadline: float | None) -> None:
        """Receive on the sockets in this thread until ``fut`` is done or
        the deadline, if the I/O thread is parked; otherwise return at once."""
        if not self.parked or not self.lock.acquire(False):
            return
        self.driving = True
        try:
            # The task was sent by enqueue(): wait first, then receive only
            # what the poll reported (the lone-future path is this loop).
            wait: float | None = DRIVE_SLICE
            while not self.stop and self.broken is None:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(wait, left) if wait is not None else left
                try:
                    readable = self._poll(DRIVE_SLICE if wait is None else min(wait, DRIVE_SLICE))
                except BaseException as exc:  # noqa: BLE001 - as in _guarded_step: ClientBroken
                    self._break(exc)
                    break
                wait = self._guarded_step(readable)
                if fut._state in DONE_STATES:
                    break
        finally:
            self.driving = False
            self.lock.release()
            if self.pending or self.outq or self.ping_requests or self.closing or self.stop:
                self.unwatched = False
                self.wake()

    # ---------------------------------------------------------- I/O thread
    def _io_main(self) -> None:
        try:
            while True:
                with self.lock:
                    self.parked = False
                    self.unwatched = False
                    done = self._serve()
                    if not done:
                        self.parked = True
                if done:
                    return
                self._park()
        except BaseException as exc:  # noqa: BLE001 - fail everything, loudly, never hang
            self._break(exc)
        finally:
            with self.lock:  # a driving caller lets go within one poll slice
                self.parked = False
                self.stop = True
                # Nothing may outlive this thread unfinished: a terminate()
                # that set ``stop`` while step() ran past its check would
                # otherwise end the loop with futures still pending.
                self._fail_closed()
                for link in self.links:
                    link.close()

    def _serve(self) -> bool:
        """Step and poll while there is work; True when the client is done."""
        readable: list[Link] | None = None  # None: look at every link
        while True:
            wait = self.step(readable)
            if self.stop or self.broken is not None:
                return True
            if not (self.pending or self.outq or self.pong_waiters or self.ping_requests):
                return self.closing
            self.idle = True
            # Re-check after announcing sleep: a caller that queued before
            # seeing ``idle`` did not wake us.
            # (Several daemons: tasks wait here for credit; a step then
            # sets the timers, pings, that bring it, if none is set yet.)
            if (self.outq and self.window.has_room()
                    and (not self.many or wait is None or routing.can_send(self.links))
                    ) or self.ping_requests:
                self.idle = False
                readable = []
                continue
            readable = self._poll(wait)
            self.idle = False

    def _park(self) -> None:
        self.idle = True
        if not (self.outq or self.ping_requests or self.closing or self.stop):
            self._poll_fd(self.wake_r, -1)
        self.idle = False
        if not self.driving:  # else the driving caller reads the byte and acts on it
            self._drain_wake()

    def _poll(self, wait: float | None) -> list[Link]:
        """Wait for input or a wake; the links that have input."""
        ms = -1 if wait is None else max(0, int(wait * 1000) + 1)
        out = []
        for what, _ in self.poller.poll(ms):
            if what == self.wake_r:
                self._drain_wake()
            else:
                out.append(self.link_of[what])
        return out

    @staticmethod
    def _poll_fd(fd: int, ms: int) -> None:
        poller = zmq.Poller()
        poller.register(fd, zmq.POLLIN)
        poller.poll(ms)

    def _drain_wake(self) -> None:
        try:
            os.read(self.wake_r, 4096)
        except OSError:
            pass  # nothing to read (non-blocking)

    def _break(self, exc: BaseException) -> None:
        self.broken = exc
        err = ClientBroken("ClientBroken", f"client I/O failed: {exc!r}")
        err.__cause__ = exc
        self.fail_all(lambda task_id: err)

    def _guarded_step(self, readable: list[Link] | None = None) -> float | None:
        try:
            return self.step(readable)
        except BaseException as exc:  # noqa: BLE001 - every future fails with it (ClientBroken)
            self._break(exc)
            return None

    # ---------------------------------------------------------------- step
    def step(self, readable: list[Link] | None = None) -> float | None:
        """One pass (lock held): send, receive (from ``readable``, else
        every link), heartbeat. Returns seconds until the next timer (None:
        nothing timed is due)."""
        if self.stop:
            self._fail_closed()
            return None
        now = time.monotonic()
        while self.ping_requests:
            self.pong_waiters.append(self.ping_requests.popleft())
            for link in self.links:
                link.next_ping = 0.0  # ping every daemon now
        if self.outq:
            self.send_queued()
        for link in self.links if readable is None else readable:
            _results.receive(self, link, now)
        if self.many and self.outq:
            self.send_queued()  # into the room the results and pongs just gave
        return self._tend(self, now)

    def _pick(self) -> tuple[Link, int] | None:
        """Where the next batch goes and how many tasks it may hold; None:
        no daemon has room for us (several daemons only: routing.pick)."""
        if self.many:
            return routing.pick(self.links, len(self.outq))
        return self.links[0], MAX_BATCH

    def relink(self, link: Link) -> None:
        """Declare ``link`` dead: a new socket, polled in the old one's place."""
        self.poller.unregister(link.sock)
        del self.link_of[link.sock]
        link.die(self.ctx, self.connect_ms)
        self.poller.register(link.sock, zmq.POLLIN)
        self.link_of[link.sock] = link

    def send_queued(self) -> None:
        outq, win, pending = self.outq, self.window, self.pending
        while outq and win.has_room():
            picked = self._pick()
            if picked is None:  # no room anywhere: they wait here (routing.py)
                while outq and outq[0][0] not in pending:
                    outq.popleft()  # settled meanwhile: not waiting for anything
                return
            link, most = picked
            raws: list[msgspec.Raw] = []
            ids: list[str] = []
            size = 0
            while outq and len(raws) < most and win.has_room():
                if raws and size + outq[0][2] > self.batch_bytes:
                    break
                task_id, body, n = outq.popleft()
                sink = pending.get(task_id)
                if sink is None:
                    continue  # failed meanwhile
                if sink.__class__ is AsyncResult and not sink._claim():
                    del pending[task_id]  # cancelled before it left: never sent
                    continue
                raw = msgspec.Raw(body)
                raws.append(raw)
                ids.append(task_id)
                self.sent[task_id] = (raw, n, link)
                link.ids.add(task_id)
                win.take(n)
                size += n
            if raws:
                self._send(link, raws, ids, size)

    def _send(self, link: Link, raws: list[msgspec.Raw], ids: list[str], size: int) -> None:
        ref = next(self.refs)
        unacked = self.unacked
        unacked[ref] = ids
        # Refusals come at once; only the recent requests need their ids.
        if len(unacked) > UNACKED_KEPT:
            unacked.popitem(last=False)
        body = encoder.encode(Submit(raws, ref))
        link.sent += len(ids)
        link.sock.send(body, zmq.NOBLOCK, copy=size < 65536)

    # ---------------------------------------------------------- completion
    def complete_error(self, task_id: str, err: BaseException) -> None:
        rec = self.sent.pop(task_id, None)
        if rec is not None:
            self.window.give(rec[1])
            rec[2].ids.discard(task_id)
        sink = self.pending.pop(task_id, None)
        if sink is None:
            return
        if sink.__class__ is tuple:
            count = sink[2] if len(sink) == 3 else 1
            sink[0].q.put([(sink[1] + j, False, err) for j in range(count)])
        else:
            sink._complete(None, err)

    def _fail_ids(self, ids: list[str], make: Any) -> None:
        for task_id in ids:
            self.complete_error(task_id, make(task_id))

    def _fail_closed(self) -> None:
        """Everything still pending ends in ClientClosed (the stop reason)."""
        reason = self.stop_reason
        self.fail_all(lambda i: ClientClosed("ClientClosed", reason, task_id=i))

    def fail_all(self, make: Any) -> None:
        self.outq.clear()
        self._fail_ids(list(self.pending), make)
        self.pong_waiters.extend(self.ping_requests)
        self.ping_requests.clear()
        for fut in self.pong_waiters:
            fut._complete(None, make(None))
        self.pong_waiters = []

    def close(self) -> None:
        """After the I/O thread ended: release the pipe and the context."""
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.wake_r = self.wake_w = -1
        if not self.ctx.closed:
            self.ctx.term()
