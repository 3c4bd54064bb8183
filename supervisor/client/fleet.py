"""A client for several daemons: work goes where there is room, and the
tasks of a daemon that goes silent are sent to the others.

    from supervisor.client import Client

    with Client(["tcp://10.0.0.1:7455", "tcp://10.0.0.2:7455"],
                curve=ClientKeys.load("server.key", "me.key_secret")) as pool:
        pool.map("workers.builtin:echo", range(1000))

``Client`` with more than one endpoint (or with ``curve=``) is a
FleetClient: the same API (submit, map, imap_unordered, apply, ...), with
one DEALER socket per daemon instead of one for all. Decisions live in the
pure Router (router.py); this file moves bytes::

    submit() --> Client._outq --> I/O thread: _waiting (ids, in order)
                                      |  Router.assign: most credit first
                                      v
              DEALER per daemon --> daemon A / daemon B / ...
              results, acks, pongs <--+  Router.on_result / on_pong
              every heartbeat: ping each daemon; silent past dead_after:
              Router.expire -> its tasks back to the front of _waiting,
              its socket reopened (nothing stale is delivered when it
              returns); a pong again -> it gets work again

A task refused because its daemon is draining, paused or overloaded is
not failed: it waits for another daemon's credit. Each task keeps its id
wherever it goes, so a daemon that still finishes a moved task only sends
a duplicate result, which the client drops.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import zmq

from supervisor.client.client import MAX_BATCH, Client
from supervisor.client.futures import TaskError
from supervisor.client.router import DEAD_AFTER, HEARTBEAT, Router
from supervisor.client.wire import Ack, ErrorReply, Pong, Res, Results, Submit, TaskOut
from supervisor.client.wire import decoder as _decoder
from supervisor.client.wire import encoder as _encoder
from supervisor.curve import ClientKeys, keys_by_endpoint
from supervisor.errors import PhalanxError

# Seconds with no daemon alive before pending tasks fail with Unreachable.
UNREACHABLE_AFTER = 60.0
# Refusals that say "not here, not now" rather than "never": the task
# waits for credit elsewhere instead of failing.
ELSEWHERE = frozenset({"ShuttingDown", "Paused", "Overloaded"})
_PING = _encoder.encode({"op": "ping"})


class FleetClient(Client):
    """A client of several phalanxd daemons, routing by advertised credit."""

    def __init__(self, endpoint: str | list[str], *, heartbeat: float = HEARTBEAT,
                 dead_after: float = DEAD_AFTER,
                 curve: ClientKeys | Mapping[str, ClientKeys] | None = None,
                 connect_timeout: float | None = None,
                 unreachable_after: float = UNREACHABLE_AFTER) -> None:
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("an endpoint is listed twice")
        # Set before Client.__init__ starts the I/O thread, which reads them.
        self._router = Router(endpoints, heartbeat=heartbeat, dead_after=dead_after)
        self._curve = keys_by_endpoint(curve, endpoints)
        self._waiting: deque[str] = deque()  # ids waiting for credit (I/O thread)
        self._unreachable_after = unreachable_after
        self._none_alive_since: float | None = None
        self._socks: dict[str, zmq.Socket[bytes]] = {}
        # A TCP connect to a host that is down waits on SYN retransmits
        # (1, 3, 7, 15 s...): a host back after a partition would stay
        # unreachable for that long. Give up each attempt after this (by
        # default dead_after) and let libzmq retry every RECONNECT_IVL.
        self._connect_ms = int(1000 * (connect_timeout or dead_after))
        super().__init__(endpoints, connect_timeout=connect_timeout)

    # ------------------------------------------------------------ public
    def daemons(self) -> list[dict[str, object]]:
        """Each daemon as the router sees it: alive, credit, what it holds."""
        return [peer.snapshot() for peer in list(self._router.peers.values())]

    @property
    def moved(self) -> int:
        """Tasks sent to another daemon because theirs went silent or restarted."""
        return self._router.moved

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
              opts: Any, timeout: float | None) -> Any:
        # Through the I/O thread: only it knows where there is credit.
        fut = self._submit_one(name, args, kwargs, opts)
        try:
            return fut.result(timeout)
        except TimeoutError:
            raise TimeoutError(f"no result within {timeout}s") from None

    def _thread_socket(self) -> zmq.Socket[bytes]:
        raise PhalanxError("FleetClient sends only through its I/O thread")

    # --------------------------------------------------------- I/O thread
    def _open(self, ep: str) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.DEALER)
        # A stable routing id lets the daemon answer us after a reconnect.
        sock.setsockopt(zmq.ROUTING_ID, b"c-" + self._prefix.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        # Queue nothing for a daemon we are not connected to: a send then
        # fails at once (zmq.Again) and the tasks stay with us.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, self._connect_ms)
        # Likewise a peer that accepts TCP but never completes the ZMTP
        # handshake (a wrong host, a middlebox) would hold the socket for
        # libzmq's default 30 s before it tries again.
        sock.setsockopt(zmq.HANDSHAKE_IVL, self._connect_ms)
        keys = self._curve.get(ep)
        if keys is not None:
            keys.apply(sock)
        sock.connect(ep)
        self._socks[ep] = sock
        self._poller.register(sock, zmq.POLLIN)
        return sock

    def _reopen(self, ep: str) -> None:
        """Drop whatever was queued for a daemon declared dead."""
        old = self._socks.pop(ep)
        self._poller.unregister(old)
        old.close(linger=0)
        self._open(ep)

    def _io_main(self) -> None:
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        try:
            for ep in self._endpoints:
                self._open(ep)
            self._fleet_loop()
        except BaseException as exc:  # noqa: BLE001 - never leave futures hanging silently
            self._error = exc
            self._fail_all("ClientError", f"client I/O thread failed: {exc!r}")
        finally:
            for sock in self._socks.values():
                sock.close(linger=0)
            self._socks.clear()

    def _fleet_loop(self) -> None:
        router = self._router
        monotonic = time.monotonic
        while True:
            if self._stop:
                self._fail_all("ClientClosed", "client terminated before this task finished")
                return
            self._take_queued()
            if self._waiting:
                self._send_assigned()
            now = monotonic()
            for ep, sock in list(self._socks.items()):
                self._recv_from(ep, sock, now)
            dead, back = router.expire(now)
            for ep in dead:
                self._reopen(ep)
            self._requeue(back)
            self._check_reachable(now)
            for ep in router.pings_due(now):
                self._send(ep, _PING)
            if self._closing and not self._pending and not self._outq:
                return
            if self._waiting and router.credit() > 0:
                continue
            self._idle = True
            if self._outq:
                self._idle = False
                continue
            wait = router.next_deadline(now) - monotonic()
            for what, _ in self._poller.poll(max(0, int(wait * 1000)) + 1):
                if what == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except (BlockingIOError, OSError):
                        pass
            self._idle = False

    def _check_reachable(self, now: float) -> None:
        """With no daemon alive for unreachable_after, fail what is pending
        (named: Unreachable) rather than let callers wait forever."""
        if any(p.alive for p in self._router.peers.values()):
            self._none_alive_since = None
            return
        if self._none_alive_since is None:
            self._none_alive_since = now
        elif self._pending and now - self._none_alive_since > self._unreachable_after:
            self._none_alive_since = now
            self._waiting.clear()
            self._fail_all("Unreachable", (
                f"no daemon answered for {self._unreachable_after:g}s: "
                + ", ".join(self._endpoints)))

    def _take_queued(self) -> None:
        outq = self._outq
        while outq:
            task_id, name, args, kwargs, opts, chunk = outq.popleft()
            if not name:  # ping() marker: ask everyone now
                for ep in self._endpoints:
                    self._send(ep, _PING)
                continue
            self._sent[task_id] = TaskOut(name, task_id, args, kwargs, *opts, chunk)
            self._waiting.append(task_id)

    def _send_assigned(self) -> None:
        budget = self._router.credit()
        pending = self._pending
        take: list[str] = []
        while self._waiting and len(take) < budget:
            task_id = self._waiting.popleft()
            if task_id in pending:  # else settled meanwhile (a late result)
                take.append(task_id)
        for ep, ids in self._router.assign(take).items():
            for start in range(0, len(ids), MAX_BATCH):
                self._send_batch(ep, ids[start:start + MAX_BATCH])

    def _send_batch(self, ep: str, ids: list[str]) -> None:
        items = [self._sent[i] for i in ids]
        ref = next(self._refs)
        try:
            body = _encoder.encode(Submit(items, ref))
        except (TypeError, ValueError, OverflowError):
            kept, kept_ids = self._drop_unencodable(items, ids)
            for task_id in set(ids) - set(kept_ids):
                self._router.forget(task_id)
            if not kept:
                return
            items, ids = kept, kept_ids
            body = _encoder.encode(Submit(items, ref))
        self._unacked[ref] = ids
        if not self._send(ep, body):
            # Not connected right now (its pong came, the link then broke):
            # no credit there until it answers again, or we would spin.
            self._unacked.pop(ref, None)
            for task_id in ids:
                self._router.forget(task_id)
            self._router.stall(ep)
            self._requeue(ids)

    def _send(self, ep: str, body: bytes) -> bool:
        try:
            self._socks[ep].send(body, zmq.NOBLOCK, copy=len(body) < 65536)
        except zmq.Again:
            return False  # not connected (IMMEDIATE): nothing was queued
        return True

    def _requeue(self, ids: Iterable[str]) -> None:
        """Back to the front of the line, in their order, still pending only."""
        live = [i for i in ids if i in self._pending]
        self._waiting.extendleft(reversed(live))

    def _recv_from(self, ep: str, sock: zmq.Socket[bytes], now: float) -> None:
        router = self._router
        while True:
            try:
                body = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            router.heard(ep, now)
            try:
                msg = _decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not something we understand; the daemon is newer?
            if isinstance(msg, Results):
                self._on_fleet_results(msg.results)
            elif isinstance(msg, Pong):
                self._requeue(router.on_pong(ep, now, msg.boot, msg.capacity, msg.held))
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(msg)
            elif isinstance(msg, Ack):
                self._unacked.pop(msg.ref, None)  # type: ignore[arg-type]
                for rej in msg.rejected:
                    if rej.id is not None:
                        router.forget(rej.id)
                        self._complete_error(rej.id, _task_error(rej.error.type,
                                                                 rej.error.message, rej.id))
            elif isinstance(msg, ErrorReply):
                ids = self._unacked.pop(msg.ref, [])  # type: ignore[arg-type]
                for task_id in ids:
                    router.forget(task_id)
                    if msg.error.type in ELSEWHERE:
                        self._requeue([task_id])
                    else:
                        self._complete_error(task_id, _task_error(
                            msg.error.type, msg.error.message, task_id))

    def _on_fleet_results(self, results: list[Res]) -> None:
        router = self._router
        final: list[Res] = []
        for res in results:
            if res.id is None:
                continue
            router.on_result(res.id)
            if not res.ok and res.error is not None and (
                    res.error.type == "ShuttingDown"  # refused, or cut off by a drain
                    or (res.attempts == 0 and res.error.type in ELSEWHERE)):
                self._requeue([res.id])  # not here; another daemon will do
                continue
            final.append(res)
        if final:
            self._on_results(final)


def _task_error(type_: str, message: str, task_id: str) -> TaskError:
    return TaskError(type_, message, task_id=task_id)
