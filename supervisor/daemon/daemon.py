"""phalanxd: one thread, one poller, everything a file descriptor.

::

    clients (DEALER/REQ) --> [intake ROUTER] -- intake.py --+
    phalanxctl ------------> [control ROUTER] - control/ ---+--> Pool (pool/)
    subscribers (SUB) <----- [XPUB] <-- publisher.py        |     slots, task table,
             ^                  ^                           |     worker handles
             |                  +---- outbox.py <-----------+     |
             +-- results, events (one flush per turn)             +-- slot 0: pipe <=> worker
                                                                  |   sentinel (death)
    EventLoop (loop.py): one epoll over all of the above,         +-- slot 1: ...
    timers, the signal wakeup fd (SIGTERM, SIGHUP, SIGUSR1)
    admission.py: what refuses a task (intake applies it per task)
    journal.py (durability.py): a turn's accepts, hand-offs and results
                  committed once, before any reply or publication leaves
    core/ (pure): tasks.py accept -> queue -> slot -> result;
                  policy.py restart | backoff | fatal, retry | fail | quarantine

Who owns what: the EventLoop owns the poller, fds, timers and the wakeup fd;
the Pool owns slots, the task table and worker handles (pool/state.py); the
Daemon owns the sockets, the Outbox (replies, publications), the notifier
and the operator's switches (paused, draining). Edges call the Pool's
methods; none writes its fields.

Each turn of the loop: poll (timeout = next timer, the running tasks'
deadlines, the watchdog ping), run ready handlers (intake and control
requests, worker results, deaths noted, signals), then ``_turn``: deaths
accounted (re-dispatch before respawn), timers, deadlines and dispatch, the
journal's commit, then one flush of replies and publications, slot
maintenance, drain, watchdog.

Nothing here blocks: worker pipes are non-blocking (workerproc.py), sockets
are used with NOBLOCK, signal handlers only wake the poller.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
import zmq

from supervisor import __version__
from supervisor.config import Config
from supervisor.core.stats import RateMeter
from supervisor.core.tasks import Task
from supervisor.daemon import autoreload, durability, intake, reload, runtime_dir, shutdown, zap
from supervisor.daemon.control import dispatch as control
from supervisor.daemon.journal import AnyJournal
from supervisor.daemon.journal_null import NullJournal
from supervisor.daemon.loop import EventLoop
from supervisor.daemon.notify import Notifier
from supervisor.daemon.observe.counters import Counters
from supervisor.daemon.outbox import Outbox
from supervisor.daemon.output import Outputs
from supervisor.daemon.pool import Pool
from supervisor.daemon.pool.spawner import ProcessSpawner
from supervisor.daemon.publisher import HEARTBEAT_INTERVAL, Publisher
from supervisor.daemon.publisher import SNDHWM as PUBLISH_SNDHWM
from supervisor.errors import StartupError
from supervisor.protocol import Result

log = structlog.get_logger("phalanxd")
# Replies still queued in ZeroMQ at exit get this long to leave (within grace).
EXIT_LINGER_MS = 1000

# Handled signals and what each means; the handlers themselves do nothing.
SIGNAL_ACTIONS: dict[int, str] = {
    signal.SIGTERM: "drain",
    signal.SIGINT: "drain",
    signal.SIGHUP: "reload",
    signal.SIGUSR1: "reopen_logs",
}


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.boot = uuid.uuid4().hex[:12]
        self.started_mono = time.monotonic()
        self.notifier = Notifier.from_env()
        self.loop = EventLoop()
        out = cfg.output
        self.outputs = Outputs(out.ring_bytes, Path(out.dir) if out.dir else None,
                               out.max_bytes, out.backups)
        self.spawner = ProcessSpawner(cfg)
        self.pool = Pool(cfg, self.spawner, self.loop, self, self.outputs)
        self.rate = RateMeter()
        # What was accepted, handed off and finished (journal.py); the real
        # one opens in start(), after the sockets are bound.
        self.journal: AnyJournal = NullJournal()
        self.paused = False
        self.draining = False
        self.drain_deadline = 0.0
        self.ready_sent = False
        self.exit_code = 0
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._lock_fd = -1
        self._local_paths: list[str] = []

    # =========================================================== start-up
    def start(self) -> None:
        """Bind everything and start the workers; raises StartupError."""
        self._lock_fd = runtime_dir.prepare(self.cfg.runtime_dir)
        self._bind_sockets()
        self.publisher = Publisher(self.pub_sock, self.boot)
        self.outbox = Outbox(self.intake, self.publisher, self.loop,
                             self.cfg.tasks.max_message_bytes)
        durability.attach(self)  # open the journal (JournalError), replay, prune timer
        self.outbox.hold = self.journal.hold
        self.loop.watch_zmq(self.intake, lambda: intake.on_readable(self))
        self.loop.watch_zmq(self.control, lambda: control.on_readable(self))
        self.loop.watch_zmq(self.pub_sock, self.publisher.on_readable)
        if self.curve_guard is not None:  # ZAP answered in this loop
            self.loop.watch_zmq(self.curve_guard.sock, self.curve_guard.on_readable)
        self.loop.install_signals(SIGNAL_ACTIONS, self._on_signal)
        self.spawner.start(self.pool.allow)
        log.info(
            "daemon_starting", version=__version__, workers=len(self.pool.slots),
            intake=self.cfg.endpoints.intake, publisher=self.cfg.endpoints.publisher,
            control=self.cfg.control_endpoint, config=self.cfg.source,
        )
        self.pool.start()
        self.loop.every(1.0, self._every_second)
        self.loop.every(HEARTBEAT_INTERVAL, self.publisher.heartbeat)  # tail loss is visible
        autoreload.install(self)  # workers.reload_on_change

    def _bind_sockets(self) -> None:
        self.ctx = zmq.Context()
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
            # counted (stats: unroutable_replies). Every result is also
            # published and kept in the result cache, so resubmitting the id
            # gets the answer again.
            self.intake.setsockopt(zmq.SNDHWM, self.cfg.tasks.max_queued_replies)
            self.intake.setsockopt(zmq.RCVHWM, 100_000)
            zap.protect(self.curve_guard, self.intake)
            zap.protect(self.curve_guard, self.intake)  # issue 12: CURVE
            self._bind(self.intake, self.cfg.endpoints.intake, "intake")
            self._bind_local(self.intake, self.cfg.local_intake, "local intake")
            self.pub_sock = self.ctx.socket(zmq.XPUB)
            self.pub_sock.setsockopt(zmq.LINGER, 0)
            self.pub_sock.setsockopt(zmq.SNDHWM, PUBLISH_SNDHWM)  # see publisher.py
            self.pub_sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # subscriptions are short
            zap.protect(self.curve_guard, self.pub_sock)
            zap.protect(self.curve_guard, self.pub_sock)  # issue 12: CURVE
            self._bind(self.pub_sock, self.cfg.endpoints.publisher, "publisher")
            self._bind_local(self.pub_sock, self.cfg.local_publisher, "local publisher")
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

    def _bind_local(self, sock: zmq.Socket[bytes], endpoint: str | None, what: str) -> None:
        """The same socket also on ipc in the runtime dir (0700: only our
        user reaches it); what clients on this host use by default."""
        if endpoint is None:
            return
        old_umask = os.umask(0o177)
        try:
            self._bind(sock, endpoint, what)
        finally:
            os.umask(old_umask)
        self._local_paths.append(endpoint[len("ipc://"):])

    def _bind(self, sock: zmq.Socket[bytes], endpoint: str, what: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise StartupError(f"cannot bind {what} endpoint {endpoint}: {exc}") from None

    # ================================================================ loop
    def run(self) -> int:
        self.loop.run(self._turn, self._wake_by)
        self._shutdown_complete()
        return self.exit_code

    def _turn(self, now: float) -> None:
        pool = self.pool
        pool.handle_deaths(now)
        self.loop.run_due(now)
        pool.work(now)
        # Nothing leaves before it is recorded: this turn's accepts and
        # results are committed (one transaction), then the replies held for
        # it go, acks first, then results and publications.
        if self.journal.commit():
            for route, body, req in self.journal.release():
                self.outbox.send(route, body, req)
            self.outbox.flush()
        pool.maintain(now)
        if self.draining:
            shutdown.drain_step(self, now)
        if self.notifier.watchdog_due(now):
            self.notifier.watchdog(now)

    def _wake_by(self, now: float) -> float | None:
        when = self.pool.next_deadline()
        wd = self.notifier.next_watchdog_at
        if wd is not None and (when is None or wd < when):
            when = wd
        if self.draining:
            when = now + 0.05 if when is None else min(when, now + 0.05)
        return when

    # ===================================================== the Pool's ears
    def deliver(self, task: Task, result: Result) -> None:
        self.journal.finish(task, result)  # recorded before it is sent
        self.outbox.deliver(task, result)

    def handed_off(self, slot: int, generation: int, tasks: list[Task]) -> bool:
        """Recorded with this turn's commit; True if it may go before it."""
        return self.journal.started(slot, generation, tasks)

    def worker_gone(self, slot: int) -> None:
        self.journal.worker_gone(slot)

    def cannot_note(self, slot: int) -> None:
        self.journal.cannot_note(slot)

    def charged(self, task: Task) -> None:
        self.journal.charged(task)

    def commit(self) -> bool:
        return self.journal.commit()

    def event(self, kind: str, **fields: Any) -> None:
        self.publisher.event(kind, **fields)

    def wants_event(self, kind: str) -> bool:
        return self.publisher.wants_event(kind)

    def all_running(self) -> None:
        if not self.ready_sent:
            self.ready_sent = True
            log.info("daemon_ready", workers=len(self.pool.slots), boot=self.boot)
            self.notifier.ready(self.status_line())
            self.publisher.event("supervisor.ready", workers=len(self.pool.slots))

    @property
    def counters(self) -> Counters:
        """What observe/ counts (kept by the Pool; intake counts refusals)."""
        return self.pool.counters

    # ========================================================== operator
    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.publisher.event("supervisor.paused" if paused else "supervisor.resumed")

    # ============================================================= signals
    def _on_signal(self, signum: int) -> None:
        action = SIGNAL_ACTIONS.get(signum)
        log.info("signal_received", signal=signal.Signals(signum).name, action=action)
        if action == "drain":
            if self.draining:
                shutdown.stop_now(self)
            else:
                shutdown.begin_drain(self)
        elif action == "reload":
            reload.on_sighup(self)
        elif action == "reopen_logs":
            self.outputs.reopen()
            log.info("log_files_reopened")

    def _shutdown_complete(self) -> None:
        log.info("daemon_stopped", succeeded=self.pool.table.succeeded,
                 failed=self.pool.table.failed)
        self.publisher.event("supervisor.stopped")
        self.close_sockets(linger_ms=EXIT_LINGER_MS)
        # The forkservers would exit on their own when we do; stopping them
        # here means "no child left behind" holds the moment run() returns.
        shutdown.reap_everything(self)
        self.spawner.close()
        self.loop.close()
        self.notifier.close()
        self.journal.close()  # journal: last commit, checkpoint
        os.close(self._lock_fd)

    def close_sockets(self, linger_ms: int = 0) -> None:
        guard = getattr(self, "curve_guard", None)  # CURVE's ZAP socket
        if guard is not None:
            guard.close()
        for name in ("intake", "pub_sock", "control"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=linger_ms)
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None
        paths = list(self._local_paths)
        if self.cfg.control_endpoint.startswith("ipc://"):
            paths.append(self.cfg.control_endpoint[len("ipc://"):])
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                pass

    # ============================================================== status
    def status_line(self) -> str:
        table = self.pool.table
        return (
            f"workers {self.pool.workers_running()}/{len(self.pool.slots)} up, "
            f"queue {table.queued}, in flight {len(table) - table.queued}, "
            f"done {table.succeeded + table.failed}"
        )

    def _every_second(self) -> None:
        now = time.monotonic()
        table = self.pool.table
        self.rate.sample(now, table.succeeded + table.failed)
        self.pool.every_second()
        self.pool.meters.latency.rotate(now)
        self.notifier.status(self.status_line())
