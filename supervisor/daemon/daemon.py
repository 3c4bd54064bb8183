"""phalanxd: one thread, one poller, everything a file descriptor.

::

    clients (DEALER/REQ) --> [intake ROUTER] ---+
    phalanxctl ------------> [control ROUTER] --+       +--> slot 0: pipe <=> worker
    subscribers (SUB) <----- [XPUB] <-----------+       |    sentinel (death)
                                                |       |
                                zmq.Poller  <---+-------+--> slot 1: pipe <=> worker
                                    |                   |    sentinel
                    signal wakeup fd (SIGTERM, SIGHUP)  +--> ...
                                    |
              TaskTable (pure): accept -> queue -> slot -> result
              policy (pure): restart now | BACKOFF | FATAL

Each turn of the loop: poll (timeout = next timer, task deadline or
watchdog ping), then handle what is ready in this order: intake and
control requests, worker results, worker deaths (after reading whatever
the dead worker managed to write), signals; then timers, task deadlines,
dispatch of queued work, and one flush of replies and publications, so
whatever became ready together leaves together as one message per peer.

Nothing here blocks: worker pipes are non-blocking (see workerproc.py),
sockets are used with NOBLOCK, signal handlers only wake the poller.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
import os
import random
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from supervisor import __version__
from supervisor.config import Config
from supervisor.core.slots import Slot, SlotState
from supervisor.core.stats import LatencyHistogram, RateMeter
from supervisor.core.tasks import TaskTable
from supervisor.daemon import intake, reaper, runtime_dir, zap
from supervisor.daemon.control import dispatch as control
from supervisor.daemon.lifecycle import Lifecycle
from supervisor.daemon.notify import Notifier
from supervisor.daemon.output import RingLog
from supervisor.daemon.publisher import SNDHWM as PUBLISH_SNDHWM
from supervisor.daemon.publisher import Publisher
from supervisor.daemon.recovery import Recovery
from supervisor.daemon.slot_io import SlotIO
from supervisor.daemon.workerproc import stop_forkserver
from supervisor.daemon.zmqio import has_input
from supervisor.errors import StartupError
from supervisor.protocol import (
    Result,
    Results,
    encoder,
)

log = structlog.get_logger("phalanxd")
S = SlotState
INTAKE_SNDHWM = 10_000  # reply messages queued per client, see start()

# Handled signals and what each means; the handlers themselves do nothing
# (Python's C-level handler already wrote the signal number to our fd).
SIGNAL_ACTIONS: dict[int, str] = {
    signal.SIGTERM: "drain",
    signal.SIGINT: "drain",
    signal.SIGHUP: "reload",
    signal.SIGUSR1: "reopen_logs",
}


class Daemon(SlotIO, Recovery, Lifecycle):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.boot = uuid.uuid4().hex[:12]
        self.started_mono = time.monotonic()
        self.table = TaskTable(cfg.tasks.result_cache)
        self.slots = [
            Slot(i, max_window=cfg.workers.max_prefetch) for i in range(cfg.worker_count)
        ]
        self.allow = list(cfg.tasks.allow)
        self.known_tasks: set[str] = set()
        self.rng = random.Random()
        self.notifier = Notifier.from_env()
        self.paused = False
        self.draining = False
        self.drain_deadline = 0.0
        self.stopping_workers = False
        self.finished = False
        self.ready_sent = False
        self.exit_code = 0
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._handlers: dict[Any, Callable[[int], None]] = {}
        self._deaths: list[Slot] = []
        self._replies: dict[bytes, list[Result]] = {}
        self._published: dict[str, list[Result]] = {}
        self.unroutable = 0
        self._maintenance = False  # some slot is waiting to retire or recycle
        self._pool_restarts: deque[float] = deque()
        self._restarts_deferred: list[Slot] | None = None
        self._zmq_drains: dict[zmq.Socket[bytes], Callable[[], bool]] = {}
        self._zmq_recheck: set[zmq.Socket[bytes]] = set()
        self.fs_generation = 0
        self._old_forkservers: dict[int, Any] = {}
        self._pool_crash_loop = False
        self.outputs: dict[int, dict[str, RingLog]] = {}
        self.task_counts: dict[str, list[int]] = {}  # name -> [succeeded, failed]
        self.latency = LatencyHistogram()
        self.rate = RateMeter()
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.mp = multiprocessing.get_context(cfg.workers.start_method)

    # =========================================================== start-up
    def start(self) -> None:
        """Bind everything and start the workers; raises StartupError."""
        self._lock_fd = runtime_dir.prepare(self.cfg.runtime_dir)
        self.ctx = zmq.Context()
        self.poller = zmq.Poller()
        max_bytes = self.cfg.tasks.max_message_bytes
        try:
            self.curve_guard = zap.guard(self.ctx, self.cfg.curve)  # issue 12: CURVE
            self.intake = self.ctx.socket(zmq.ROUTER)
            self.intake.setsockopt(zmq.LINGER, 0)
            self.intake.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.intake.setsockopt(zmq.ROUTER_HANDOVER, 1)
            # Twice our own limit: between the two the client gets a
            # TooLarge reply; beyond it libzmq drops the peer unread.
            self.intake.setsockopt(zmq.MAXMSGSIZE, 2 * max_bytes + 4096)
            # A client that stays connected but stops reading may pin at most
            # this many reply messages; past it, its replies are dropped and
            # counted (stats: unroutable_replies). Nothing is lost for good:
            # every result is also published and kept in the result cache,
            # so resubmitting the id gets the answer again.
            self.intake.setsockopt(zmq.SNDHWM, INTAKE_SNDHWM)
            self.intake.setsockopt(zmq.RCVHWM, 100_000)
            zap.protect(self.curve_guard, self.intake)  # issue 12: CURVE
            self._bind(self.intake, self.cfg.endpoints.intake, "intake")
            self.pub_sock = self.ctx.socket(zmq.XPUB)
            self.pub_sock.setsockopt(zmq.LINGER, 0)
            self.pub_sock.setsockopt(zmq.SNDHWM, PUBLISH_SNDHWM)  # see publisher.py
            self.pub_sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # subscriptions are short
            zap.protect(self.curve_guard, self.pub_sock)  # issue 12: CURVE
            self._bind(self.pub_sock, self.cfg.endpoints.publisher, "publisher")
            self.control = self.ctx.socket(zmq.ROUTER)
            self.control.setsockopt(zmq.LINGER, 0)
            self.control.setsockopt(zmq.MAXMSGSIZE, 1024 * 1024)
            old_umask = os.umask(0o177)  # the ipc socket file is born 0600
            try:
                self._bind(self.control, self.cfg.control_endpoint, "control")
            finally:
                os.umask(old_umask)
        except StartupError:
            self.close_sockets()
            raise
        self.publisher = Publisher(self.pub_sock, self.boot)
        self._watch_zmq(self.intake, lambda: intake.on_readable(self))
        self._watch_zmq(self.control, lambda: control.on_readable(self))
        self._watch_zmq(self.pub_sock, self.publisher.on_readable)
        if self.curve_guard is not None:  # issue 12: ZAP answered in this loop
            self._watch_zmq(self.curve_guard.sock, self.curve_guard.on_readable)
        self._install_signals()
        self.subreaper = reaper.become_subreaper()
        if self.cfg.workers.start_method == "forkserver":
            # Each child re-runs the main script (phalanxd) before its target;
            # without its imports (structlog, asyncio, ssl: ~100 ms) cached
            # here, every worker restart paid for them again.
            self.mp.set_forkserver_preload(self.forkserver_preload())
        log.info(
            "daemon_starting",
            version=__version__,
            workers=len(self.slots),
            intake=self.cfg.endpoints.intake,
            publisher=self.cfg.endpoints.publisher,
            control=self.cfg.control_endpoint,
            config=self.cfg.source,
        )
        for slot in self.slots:
            self.start_slot(slot)
        self.every(1.0, self._report_status)

    def forkserver_preload(self) -> list[str]:
        # Each child re-runs the main script (phalanxd) before its target;
        # without its imports (structlog, asyncio, ssl: ~100 ms) cached in
        # the forkserver, every worker restart paid for them again.
        return ["supervisor.daemon.main", "multiprocessing.sharedctypes", "workers.loop",
                *self.allow, *self.cfg.workers.preload]

    def _bind(self, sock: zmq.Socket[bytes], endpoint: str, what: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise StartupError(f"cannot bind {what} endpoint {endpoint}: {exc}") from None

    def _install_signals(self) -> None:
        self._sig_r, self._sig_w = socket.socketpair()
        self._sig_r.setblocking(False)
        self._sig_w.setblocking(False)
        signal.set_wakeup_fd(self._sig_w.fileno(), warn_on_full_buffer=False)
        for signum in SIGNAL_ACTIONS:
            signal.signal(signum, _wake_only)
        self._watch(self._sig_r.fileno(), lambda ev: self._on_signals())

    def _watch_zmq(self, sock: zmq.Socket[bytes], drain: Callable[[], bool]) -> None:
        """Poll a ZeroMQ socket through its ZMQ_FD, as a plain fd.

        Why: zmq_poll asks every socket it polls for ZMQ_EVENTS before and
        after waiting, each a syscall or two, on every turn of the loop,
        even for the control and publisher sockets that are idle nearly
        always. ZMQ_FD is edge-triggered: it fires when something changed,
        and is re-armed once ZMQ_EVENTS has been read after the last
        operation. So ``drain`` reads until ZMQ_EVENTS shows nothing, and a
        socket we sent on (which can consume the edge) or whose drain
        stopped at its budget is checked again at the end of the turn.
        """
        self._zmq_drains[sock] = drain
        self._watch(sock.getsockopt(zmq.FD), lambda ev: self._drain_zmq(sock))
        self._zmq_recheck.add(sock)  # anything queued before we polled

    def _drain_zmq(self, sock: zmq.Socket[bytes]) -> None:
        if self._zmq_drains[sock]():
            self._zmq_recheck.add(sock)

    def _recheck_zmq(self) -> None:
        recheck = self._zmq_recheck
        if self.publisher.touched:
            self.publisher.touched = False
            recheck.add(self.pub_sock)
        if not recheck:
            return
        sockets = list(recheck)
        recheck.clear()
        for sock in sockets:
            if has_input(sock):
                self._drain_zmq(sock)

    def _watch(self, what: Any, handler: Callable[[int], None], flags: int = zmq.POLLIN) -> None:
        self._handlers[what] = handler
        self.poller.register(what, flags)

    def _unwatch(self, what: Any) -> None:
        self._handlers.pop(what, None)
        try:
            self.poller.unregister(what)
        except KeyError:
            pass

    # ============================================================== timers
    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_ids), fn))

    def every(self, interval: float, fn: Callable[[], None]) -> None:
        def tick() -> None:
            fn()
            self.at(time.monotonic() + interval, tick)

        self.at(time.monotonic() + interval, tick)

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn = heapq.heappop(timers)
            fn()

    def _poll_timeout(self, now: float) -> int | None:
        when = self._timers[0][0] if self._timers else now + 1.0
        for slot in self.slots:
            if slot.inflight:
                head = slot.inflight[0]
                if head.timeout > 0:
                    when = min(when, slot.head_since + head.timeout)
        wd = self.notifier.next_watchdog_at
        if wd is not None:
            when = min(when, wd)
        if self.draining:
            when = min(when, now + 0.05)
        if self._zmq_recheck:
            return 0
        return max(0, int((when - now) * 1000) + 1)

    # ================================================================ loop
    def run(self) -> int:
        poll = self.poller.poll
        handlers = self._handlers
        monotonic = time.monotonic
        while not self.finished:
            events = poll(self._poll_timeout(monotonic()))
            for what, ev in events:
                handler = handlers.get(what)
                if handler is not None:
                    handler(ev)
            now = monotonic()
            if self._deaths:
                self._handle_deaths(now)
            if self._timers and self._timers[0][0] <= now:
                self._run_timers(now)
            self._check_deadlines(now)
            if self.table.queue:
                self._dispatch(now)
            self.flush_output()
            self._recheck_zmq()
            if self._maintenance:
                self._maintain(now)
            if self.draining:
                self._drain_step(now)
            if self.notifier.watchdog_due(now):
                self.notifier.watchdog(now)
        self._shutdown_complete()
        return self.exit_code






















    # ============================================================== output
    def send_reply(self, route: bytes, body: bytes, req: bool = False) -> None:
        frames = (route, b"", body) if req else (route, body)
        self._zmq_recheck.add(self.intake)  # a send may consume the ZMQ_FD edge
        try:
            self.intake.send_multipart(frames, zmq.NOBLOCK, copy=len(body) < 65536)
        except zmq.ZMQError as exc:
            # EHOSTUNREACH: the client is gone; EAGAIN: it stopped reading.
            # Either way the result is still published.
            self.unroutable += 1
            if self.unroutable & (self.unroutable - 1) == 0:  # log 1, 2, 4, 8...
                log.warning("reply_unroutable", error=str(exc), count=self.unroutable)

    def flush_output(self) -> None:
        if self._replies:
            replies, self._replies = self._replies, {}
            for route, results in replies.items():
                self.send_reply(route, encoder.encode(Results(results)))
        if self._published:
            published, self._published = self._published, {}
            for name, results in published.items():
                self.publisher.results(name, results)

    # ============================================================= signals
    def _on_signals(self) -> None:
        try:
            data = self._sig_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            action = SIGNAL_ACTIONS.get(signum)
            log.info("signal_received", signal=signal.Signals(signum).name, action=action)
            if action == "drain":
                if self.draining:
                    self.stop_now()
                else:
                    self.begin_drain()
            elif action == "reload":
                self.reload()
            elif action == "reopen_logs":
                # After logrotate moved the files: reopen on next write.
                for rings in self.outputs.values():
                    for ring in rings.values():
                        ring.reopen()
                log.info("log_files_reopened")

    def _shutdown_complete(self) -> None:
        log.info("daemon_stopped", succeeded=self.table.succeeded, failed=self.table.failed)
        self.publisher.event("supervisor.stopped")
        self.close_sockets()
        # The forkservers would exit on their own when we do; stopping them
        # here means "no child left behind" holds the moment run() returns.
        from multiprocessing import forkserver

        for server in [*self._old_forkservers.values(), forkserver._forkserver]:
            stop_forkserver(server)
        signal.set_wakeup_fd(-1)
        self._sig_r.close()
        self._sig_w.close()
        self.notifier.close()
        os.close(self._lock_fd)

    def close_sockets(self) -> None:
        guard = getattr(self, "curve_guard", None)  # issue 12: CURVE's ZAP socket
        if guard is not None:
            guard.close()
        for name in ("intake", "pub_sock", "control"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None
        endpoint = self.cfg.control_endpoint
        if endpoint.startswith("ipc://"):
            try:
                os.unlink(endpoint[len("ipc://"):])
            except OSError:
                pass

    # ============================================================== status
    def _status_line(self) -> str:
        up = sum(1 for s in self.slots if s.state is S.RUNNING)
        return (
            f"workers {up}/{len(self.slots)} up, queue {self.table.queued}, "
            f"in flight {len(self.table) - self.table.queued}, done {self.table.succeeded + self.table.failed}"
        )

    def _report_status(self) -> None:
        now = time.monotonic()
        self.rate.sample(now, self.table.succeeded + self.table.failed)
        self._check_memory()
        self._reap_orphans()
        self.latency.rotate(now)
        self.notifier.status(self._status_line())


def _wake_only(signum: int, frame: object) -> None:
    """Signal handler: nothing. The wakeup fd already woke the loop."""
