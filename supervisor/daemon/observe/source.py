"""Snapshots for the observers: one sampler, once a second, shared by all.

However many scrapers and browsers are connected, the loop is asked for
at most one snapshot a second: the sampler thread takes it, keeps the
newest, and keeps a short history (throughput, latency, queue depth) for
the page's plots, so a browser opened now still sees the last minutes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import msgspec
import structlog

from supervisor.daemon.observe.link import ControlLink, ControlUnavailable
from supervisor.daemon.observe.snapshot import Snapshot

log = structlog.get_logger("phalanxd")
INTERVAL = 1.0
HISTORY = 600  # points: ten minutes at one a second


class _Reply(msgspec.Struct):
    ok: bool
    result: Snapshot | None = None
    error: dict[str, Any] | None = None


_decoder = msgspec.msgpack.Decoder(_Reply)


class Point(msgspec.Struct, frozen=True, array_like=True):
    at: float  # wall-clock seconds
    throughput: float  # tasks finished per second since the previous point
    p50: float | None
    p99: float | None
    queued: int
    in_flight: int


class SnapshotSource:
    def __init__(self, link: ControlLink) -> None:
        self._link = link
        self._cond = threading.Condition()
        self._latest: Snapshot | None = None
        self._seq = 0
        self.history: deque[Point] = deque(maxlen=HISTORY)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phalanx-observe-sampler",
                                         daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 7.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def latest(self) -> Snapshot | None:
        with self._cond:
            return self._latest

    def wait_next(self, after: int, timeout: float) -> tuple[int, Snapshot | None]:
        """The first snapshot newer than sequence ``after`` (or the latest
        after ``timeout``), with its sequence number."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._stop.is_set(), timeout)
            return self._seq, self._latest

    def _run(self) -> None:
        next_at = time.monotonic()  # the first page or scrape need not wait a second
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = max(next_at + INTERVAL, time.monotonic())
            self._sample()

    def _sample(self) -> None:
        try:
            reply = _decoder.decode(self._link.call("snapshot", raw=True))
        except ControlUnavailable as exc:
            log.debug("observe_snapshot_missed", error=exc.message)
            return
        except msgspec.DecodeError as exc:  # a daemon of another version
            log.warning("observe_snapshot_unreadable", error=str(exc))
            return
        snap = reply.result
        if snap is None:
            log.warning("observe_snapshot_refused", error=reply.error)
            return
        with self._cond:
            prev = self._latest
            done = snap.succeeded + snap.failed
            rate = 0.0
            if prev is not None and snap.taken_at > prev.taken_at and prev.boot == snap.boot:
                rate = max(0.0, (done - prev.succeeded - prev.failed)
                           / (snap.taken_at - prev.taken_at))
            self.history.append(Point(round(snap.taken_at, 3), round(rate, 2), snap.latency_p50,
                                      snap.latency_p99, snap.queued, snap.in_flight))
            self._latest = snap
            self._seq += 1
            self._cond.notify_all()
