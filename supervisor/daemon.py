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

import fcntl
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
from pathlib import Path
from typing import Any

import structlog
import zmq

from supervisor import __version__, control, intake, logs, policy, reaper, reconfig
from supervisor import config as config_mod
from supervisor.config import Config
from supervisor.errors import TIMEOUT, WORKER_CRASHED, ConfigError, StartupError, describe_exit
from supervisor.notify import Notifier
from supervisor.protocol import (
    Batch,
    Hello,
    Result,
    Results,
    encoder,
    error_raw,
    worker_decoder,
)
from supervisor.publisher import SNDHWM as PUBLISH_SNDHWM
from supervisor.publisher import Publisher
from supervisor.output import RingLog
from supervisor.slots import Slot, SlotState
from supervisor.stats import LatencyHistogram, RateMeter
from supervisor.tasks import ReplyGroup, Task, TaskTable, plan
from supervisor.workerproc import PipeBroken, WorkerHandle, reap_group

log = structlog.get_logger("phalanxd")
# Plain ints: zmq's IntFlag members are slow to combine on the hot path.
POLLIN, POLLOUT, POLLERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)
S = SlotState

# Handled signals and what each means; the handlers themselves do nothing
# (Python's C-level handler already wrote the signal number to our fd).
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
        self.started_wall = time.time()
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
        self._prepare_runtime_dir()
        self.ctx = zmq.Context()
        self.poller = zmq.Poller()
        max_bytes = self.cfg.tasks.max_message_bytes
        try:
            self.intake = self.ctx.socket(zmq.ROUTER)
            self.intake.setsockopt(zmq.LINGER, 0)
            self.intake.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.intake.setsockopt(zmq.ROUTER_HANDOVER, 1)
            # Twice our own limit: between the two the client gets a
            # TooLarge reply; beyond it libzmq drops the peer unread.
            self.intake.setsockopt(zmq.MAXMSGSIZE, 2 * max_bytes + 4096)
            self.intake.setsockopt(zmq.SNDHWM, 1_000_000)
            self.intake.setsockopt(zmq.RCVHWM, 1_000_000)
            self._bind(self.intake, self.cfg.endpoints.intake, "intake")
            self.pub_sock = self.ctx.socket(zmq.XPUB)
            self.pub_sock.setsockopt(zmq.LINGER, 0)
            self.pub_sock.setsockopt(zmq.SNDHWM, PUBLISH_SNDHWM)  # see publisher.py
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
        self._watch(self.intake, lambda ev: intake.on_readable(self))
        self._watch(self.control, lambda ev: control.on_readable(self))
        self._watch(self.pub_sock, lambda ev: self.publisher.on_readable())
        self._install_signals()
        self.subreaper = reaper.become_subreaper()
        if self.cfg.workers.start_method == "forkserver":
            # Each child re-runs the main script (phalanxd) before its target;
            # without its imports (structlog, asyncio, ssl: ~100 ms) cached
            # here, every worker restart paid for them again.
            preload = ["supervisor.daemon_main", "multiprocessing.sharedctypes", "workers.loop",
                       *self.allow, *self.cfg.workers.preload]
            self.mp.set_forkserver_preload(preload)
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

    def _prepare_runtime_dir(self) -> None:
        """Create the runtime dir 0700, refuse one others could tamper with,
        and lock it so two daemons never share (and steal) its sockets."""
        path = self.cfg.runtime_dir
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = path.stat()
            if info.st_uid != os.getuid():
                raise StartupError(
                    f"runtime directory {path} belongs to uid {info.st_uid}, not us"
                )
            if info.st_mode & 0o022:
                raise StartupError(
                    f"runtime directory {path} is writable by others "
                    f"(mode {info.st_mode & 0o777:o}); make it 0700"
                )
            self._lock_fd = os.open(path / "phalanxd.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileExistsError:  # mkdir's "File exists" would hide the cause
            raise StartupError(f"runtime directory {path} exists but is not a directory") from None
        except OSError as exc:
            raise StartupError(f"runtime directory {path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise StartupError(
                f"another phalanxd is running with runtime directory {path}"
            ) from None

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
            if self._maintenance:
                self._maintain(now)
            if self.draining:
                self._drain_step(now)
            if self.notifier.watchdog_due(now):
                self.notifier.watchdog(now)
        self._shutdown_complete()
        return self.exit_code

    # ========================================================= worker slots
    def start_slot(self, slot: Slot) -> None:
        now = time.monotonic()
        slot.move(S.STARTING)
        slot.generation += 1
        slot.started_at = now
        slot.running_since = 0.0
        slot.assigned = 0
        limit = self.cfg.workers.max_tasks_per_worker
        if limit:
            limit += int(limit * self.rng.uniform(0, self.cfg.workers.recycle_jitter))
        slot.task_limit = limit
        try:
            handle = WorkerHandle.spawn(
                self.mp, slot.index, self.allow, self.cfg.tasks.max_message_bytes
            )
        except OSError as exc:
            log.error("worker_spawn_failed", slot=slot.index, error=str(exc))
            slot.move(S.EXITED)
            slot.last_exit = f"spawn failed: {exc}"
            self._after_exit(slot, now)
            return
        slot.handle = handle
        slot.pid = handle.pid
        self.publisher.event(
            "worker.spawned", slot=slot.index, pid=handle.pid, generation=slot.generation
        )
        self._watch(handle.fd, lambda ev: self._on_pipe(slot, ev))
        self._watch(handle.sentinel, lambda ev: self._deaths.append(slot))
        for name, conn in handle.streams.items():
            self._watch_stream(slot, handle, name, conn.fileno())
        generation = slot.generation
        self.at(now + self.cfg.restart.start_timeout, lambda: self._start_timeout(slot, generation))

    def output_of(self, index: int) -> dict[str, RingLog]:
        logs_ = self.outputs.get(index)
        if logs_ is None:
            out = self.cfg.output
            folder = Path(out.dir) if out.dir else None
            logs_ = {
                name: RingLog(
                    out.ring_bytes,
                    folder / f"worker-{index}.{name}.log" if folder else None,
                    out.max_bytes,
                    out.backups,
                )
                for name in ("stdout", "stderr")
            }
            self.outputs[index] = logs_
        return logs_

    def _watch_stream(self, slot: Slot, handle: WorkerHandle, name: str, fd: int) -> None:
        self._watch(fd, lambda ev: self._on_stream(slot, handle, name, fd))

    def _on_stream(self, slot: Slot, handle: WorkerHandle, name: str, fd: int) -> None:
        data = handle.read_stream(name)
        if data:
            self.output_of(slot.index)[name].write(data)
        if data is None or handle.streams[name].closed:
            self._unwatch(fd)

    def _start_timeout(self, slot: Slot, generation: int) -> None:
        if slot.generation == generation and slot.state is S.STARTING and slot.handle:
            log.warning("worker_start_timeout", slot=slot.index, pid=slot.pid)
            slot.handle.signal_group(signal.SIGKILL)

    def _on_pipe(self, slot: Slot, ev: int) -> None:
        handle: WorkerHandle = slot.handle
        if ev & POLLOUT:
            handle.flush()
            self._update_interest(slot)
        if not ev & (POLLIN | POLLERR):
            return
        self._read_worker(slot)

    def _read_worker(self, slot: Slot) -> None:
        handle: WorkerHandle = slot.handle
        try:
            frames = handle.read_frames()
        except PipeBroken as exc:
            self._pipe_broken(slot, str(exc))
            return
        now = time.monotonic()
        for frame in frames:
            try:
                msg = worker_decoder.decode(frame)
            except Exception as exc:  # garbage on the pipe: the worker is unusable
                self._pipe_broken(slot, f"undecodable message: {exc}")
                return
            if isinstance(msg, Batch):
                if not self._on_results(slot, msg, now):
                    return
            elif isinstance(msg, Hello):
                self._on_hello(slot, msg, now)

    def _pipe_broken(self, slot: Slot, why: str) -> None:
        """The pipe is at EOF or carried garbage; the sentinel reports the death.

        EOF is what a dying worker normally looks like, and its sentinel
        fires a moment later. A worker that closed its pipe but lives on,
        or wrote garbage, is unusable: it is killed (its held tasks are then
        accounted as for any crash).
        """
        handle: WorkerHandle = slot.handle
        self._unwatch(handle.fd)
        if not handle.eof:
            log.warning("worker_pipe_garbage", slot=slot.index, pid=slot.pid, why=why)
            handle.signal_group(signal.SIGKILL)
            return
        generation = slot.generation

        def still_alive() -> None:
            if slot.generation == generation and slot.handle is handle and handle.alive():
                log.warning("worker_pipe_closed_but_alive", slot=slot.index, pid=slot.pid)
                handle.signal_group(signal.SIGKILL)

        self.at(time.monotonic() + 0.5, still_alive)

    def _on_hello(self, slot: Slot, hello: Hello, now: float) -> None:
        if slot.state is not S.STARTING:
            return
        slot.move(S.RUNNING)
        slot.running_since = now
        self.known_tasks.update(hello.tasks)
        for error in hello.errors:
            log.error("task_module_import_failed", slot=slot.index, error=error)
        log.info("worker_started", slot=slot.index, pid=hello.pid, generation=slot.generation)
        self.publisher.event(
            "worker.started", slot=slot.index, pid=hello.pid, generation=slot.generation
        )
        if not self.ready_sent and all(s.state is S.RUNNING for s in self.slots):
            self.ready_sent = True
            log.info("daemon_ready", workers=len(self.slots), boot=self.boot)
            self.notifier.ready(self._status_line())
            self.publisher.event("supervisor.ready", workers=len(self.slots))

    def _on_results(self, slot: Slot, batch: Batch, now: float) -> bool:
        inflight = slot.inflight
        replies = self._replies
        published = self._published
        done = batch.done
        if len(done) > len(inflight):
            self._pipe_broken(slot, "more results than tasks held")
            return False
        slot.observe(now, len(done))
        latency = self.latency
        counts = self.task_counts
        for d in done:
            task = inflight.popleft()
            if task.key != d.key:
                inflight.appendleft(task)
                self._pipe_broken(slot, f"result for task {d.key}, expected {task.key}")
                return False
            latency.add(now - task.accepted_at)
            count = counts.get(task.name)
            if count is None:
                count = counts[task.name] = [0, 0]
            if d.ok:
                result = Result(task.id, task.name, True, task.attempts + 1, value=d.value)
                slot.tasks_done += 1
                count[0] += 1
            else:
                result = Result(task.id, task.name, False, task.attempts + 1, error=d.value)
                slot.tasks_failed += 1
                count[1] += 1
            self._deliver(task, result)
        slot.head_since = now
        if slot.task_limit and slot.assigned >= slot.task_limit and not slot.recycle:
            self.recycle_slot(slot, "max_tasks_per_worker")
        return True

    def _deliver(self, task: Task, result: Result) -> None:
        """Queue a task's one result for its submitter(s) and subscribers."""
        self.table.finish(task, result.ok, result)
        self._reply_to(task.route, task.group, result)
        if task.extra:
            for route, group in task.extra:
                self._reply_to(route, group, result)
        bucket = self._published.get(task.name)
        if bucket is None:
            self._published[task.name] = [result]
        else:
            bucket.append(result)

    def _reply_to(self, route: bytes | None, group: ReplyGroup | None, result: Result) -> None:
        if group is not None:
            group.results.append(result)
            group.waiting -= 1
            if group.waiting == 0:
                self.send_reply(group.route, encoder.encode(Results(group.results)), req=True)
        elif route is not None:
            bucket = self._replies.get(route)
            if bucket is None:
                self._replies[route] = [result]
            else:
                bucket.append(result)

    def fail_task(self, task: Task, type_: str, message: str) -> None:
        count = self.task_counts.setdefault(task.name, [0, 0])
        count[1] += 1
        result = Result(task.id, task.name, False, task.attempts, error=error_raw(type_, message))
        self._deliver(task, result)

    def _on_death(self, slot: Slot, now: float) -> None:
        handle: WorkerHandle | None = slot.handle
        if handle is None:
            return
        if not handle.conn.closed and handle.fd in self._handlers:
            self._read_worker(slot)  # results written before dying still count
        for name, conn in handle.streams.items():
            if not conn.closed:
                fd = conn.fileno()
                self._on_stream(slot, handle, name, fd)
                self._unwatch(fd)
        exitcode = handle.exitcode()
        how = describe_exit(exitcode)
        running_key = handle.running_key()
        if not handle.conn.closed:  # once closed, its fd number may be another worker's
            self._unwatch(handle.fd)
        self._unwatch(handle.sentinel)
        handle.release()
        reap_group(handle.pid)  # grandchildren the task left behind
        self.at(now + 0.01, self._reap_orphans)  # and those that left the group
        slot.handle = None
        pid, slot.pid = slot.pid, None
        slot.last_exit = how
        timed_out, slot.timed_out = slot.timed_out, None
        if slot.state is S.STOPPING:
            self.table.requeue(slot)
            slot.move(S.STOPPED)
            log.info("worker_stopped", slot=slot.index, pid=pid, exit=how)
            self.publisher.event("worker.stopped", slot=slot.index, pid=pid, exit=how)
            if slot.recycle and not self.stopping_workers:
                slot.recycle = False
                self.start_slot(slot)
            return
        slot.move(S.EXITED)
        log.warning("worker_exited", slot=slot.index, pid=pid, exit=how, exitcode=exitcode)
        self.publisher.event(
            "worker.exited", slot=slot.index, pid=pid, exit=how, exitcode=exitcode
        )
        charge = self.table.charge_death(slot, running_key)
        if charge is not None:
            task = charge.task
            if timed_out is not None and timed_out == task.key:
                reason, kind = f"task ran past its {task.timeout:g}s timeout", TIMEOUT
                crash_detail = f"{reason}; worker {slot.index} (pid {pid}) was killed"
            else:
                kind = WORKER_CRASHED
                crash_detail = (
                    f"worker {slot.index} (pid {pid}) died with {how} while running this task"
                )
            retry = charge.retry and (kind != TIMEOUT or self.cfg.tasks.retry_timeouts)
            if retry:
                log.info("task_retried", id=task.id, task=task.name, attempt=task.attempts, why=crash_detail)
                self.publisher.event(
                    "task.retried", id=task.id, task=task.name, attempts=task.attempts,
                    reason=kind, exit=how, slot=slot.index,
                )
            else:
                if charge.retry:  # a timeout that we chose not to retry
                    self.table.queue.remove(task)
                    self.table.retried -= 1
                if kind == TIMEOUT and charge.retry:
                    message = f"{crash_detail} (timeouts are not retried: tasks.retry_timeouts)"
                else:
                    message = f"{crash_detail} (attempt {task.attempts} of {task.max_attempts})"
                if kind == WORKER_CRASHED and task.crashes >= 2:
                    self.table.quarantined += 1
                    log.warning("task_quarantined", id=task.id, task=task.name, crashes=task.crashes)
                    self.publisher.event(
                        "task.quarantined", id=task.id, task=task.name, crashes=task.crashes, exit=how
                    )
                    message += f"; quarantined after killing {task.crashes} workers"
                self.fail_task(task, kind, message)
        self._after_exit(slot, now)

    def _handle_deaths(self, now: float) -> None:
        """Account for dead workers, re-dispatch their tasks, then respawn.

        Re-dispatch comes first: a retried task goes to a live idle worker at
        once instead of waiting behind the fork of the replacement.
        """
        deaths, self._deaths = self._deaths, []
        self._restarts_deferred = []
        try:
            for slot in deaths:
                self._on_death(slot, now)
            if self.table.queue:
                self._dispatch(now)
        finally:
            restarts, self._restarts_deferred = self._restarts_deferred, None
        for slot in restarts:
            if slot.state is S.EXITED:
                self.start_slot(slot)

    def _after_exit(self, slot: Slot, now: float) -> None:
        if self.stopping_workers:
            slot.move(S.STOPPED)
            return
        if policy.stable(slot, now, self.cfg.restart):
            slot.backoffs = 0
        decision = policy.decide(slot, now, self.cfg.restart, self.rng)
        slot.restart_count += 1
        if policy.pool_crash_loop(self._pool_restarts, now, self.cfg.restart):
            if not self._pool_crash_loop:
                self._pool_crash_loop = True
                log.error("pool_crash_loop", restarts=len(self._pool_restarts),
                          period=self.cfg.restart.daemon_period)
                self.publisher.event("supervisor.crash_loop", restarts=len(self._pool_restarts))
            if decision.action == "restart":
                decision = policy.Decision("backoff", self.cfg.restart.backoff_max)
        elif self._pool_crash_loop:
            self._pool_crash_loop = False
            log.info("pool_crash_loop_over")
            self.publisher.event("supervisor.crash_loop_over")
        if decision.action == "restart":
            if self._restarts_deferred is not None:
                self._restarts_deferred.append(slot)
            else:
                self.start_slot(slot)
        elif decision.action == "backoff":
            slot.move(S.BACKOFF)
            slot.backoffs += 1
            log.warning("worker_backoff", slot=slot.index, delay=round(decision.delay, 3), backoffs=slot.backoffs)
            self.publisher.event("worker.backoff", slot=slot.index, delay=decision.delay, backoffs=slot.backoffs)
            self.at(now + decision.delay, lambda: self._leave_backoff(slot))
        else:
            slot.move(S.FATAL)
            log.error("worker_fatal", slot=slot.index, cooldown=decision.delay)
            self.publisher.event("worker.fatal", slot=slot.index, cooldown=decision.delay)
            if decision.delay > 0:
                self.at(now + decision.delay, lambda: self._leave_fatal(slot))

    def _leave_backoff(self, slot: Slot) -> None:
        if slot.state is S.BACKOFF and not self.stopping_workers:
            self.start_slot(slot)

    def _leave_fatal(self, slot: Slot) -> None:
        if slot.state is S.FATAL and not self.stopping_workers:
            slot.backoffs = 0
            slot.restarts.clear()
            log.info("worker_fatal_cooldown_over", slot=slot.index)
            self.start_slot(slot)

    def _check_deadlines(self, now: float) -> None:
        for slot in self.slots:
            if not slot.inflight or slot.handle is None:
                continue
            head = slot.inflight[0]
            if head.timeout > 0 and now >= slot.head_since + head.timeout:
                if slot.timed_out == head.key:
                    continue  # already killed; waiting for its sentinel
                slot.timed_out = head.key
                log.warning("task_timeout", id=head.id, task=head.name, slot=slot.index, timeout=head.timeout)
                slot.handle.signal_group(signal.SIGKILL)

    # ============================================================ dispatch
    def _dispatch(self, now: float) -> None:
        table = self.table
        for slot, n in plan(len(table.queue), self.slots):
            was_idle = not slot.inflight
            tasks = table.assign(slot, n)
            if was_idle:
                slot.head_since = now
            handle: WorkerHandle = slot.handle
            handle.write(
                encoder.encode(
                    [(t.key, t.name, t.args, t.kwargs, t.soft_timeout, t.chunk) for t in tasks]
                )
            )
            if handle.wants_write:
                self._update_interest(slot)

    def _update_interest(self, slot: Slot) -> None:
        handle: WorkerHandle | None = slot.handle
        if handle is None or handle.fd not in self._handlers:
            return
        flags = POLLIN | (POLLOUT if handle.wants_write else 0)
        self.poller.modify(handle.fd, flags)

    # ============================================================== output
    def send_reply(self, route: bytes, body: bytes, req: bool = False) -> None:
        frames = (route, b"", body) if req else (route, body)
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

    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply it (as phalanxctl update)."""
        if self.draining:
            # READY=1 after STOPPING=1 would tell systemd we are up again,
            # and a grown pool would start workers the drain never stops.
            log.warning("reload_ignored_while_stopping")
            return
        # Before the first READY=1 systemd still waits for start-up: a
        # reload's READY=1 would report us up while workers are starting.
        # _on_hello sends it once every slot (added ones too) is RUNNING.
        announce = self.ready_sent
        if announce:
            self.notifier.reloading()
        self.publisher.event("supervisor.reloading")
        try:
            changes = self.update_from_file()
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc))
            self.publisher.event("supervisor.reload_failed", error=str(exc))
        else:
            log.info("reload_done", changes=[c.key for c in changes])
        if announce:
            self.notifier.ready(self._status_line())

    def reread(self) -> tuple[Config, list[reconfig.Change]]:
        source = self.cfg.source
        if not source or source.startswith("<"):
            raise ConfigError("the daemon was started without --config; nothing to re-read")
        new = config_mod.load(source)
        return new, reconfig.diff(self.cfg, new)

    def update_from_file(self) -> list[reconfig.Change]:
        new, _ = self.reread()
        return self.apply_config(new)

    def apply_config(self, new: Config) -> list[reconfig.Change]:
        """Apply a new configuration without dropping an accepted task."""
        if self.draining:  # new workers now would outlive the drain
            raise ConfigError("the daemon is stopping; configuration not applied")
        old = self.cfg
        changes = reconfig.diff(old, new)
        self.cfg = reconfig.effective(old, new)
        for change in changes:
            if change.how == "daemon":
                log.warning("config_change_needs_restart", key=change.key, new=change.new)
        if (old.daemon.log_level, old.daemon.log_format) != (
            self.cfg.daemon.log_level, self.cfg.daemon.log_format
        ):
            logs.configure(self.cfg.daemon.log_level, self.cfg.daemon.log_format)
        self.table.resize_cache(self.cfg.tasks.result_cache)
        self._apply_output_config()
        for slot in self.slots:
            slot.max_window = self.cfg.workers.max_prefetch
        if list(self.cfg.tasks.allow) != self.allow:
            self.allow = list(self.cfg.tasks.allow)
            self.known_tasks = set()  # refilled by the new workers' hellos
            self.recycle_all()
        self.resize(self.cfg.worker_count)
        if changes:
            self.publisher.event("supervisor.updated", changes=[c.as_dict() for c in changes])
        return changes

    def _apply_output_config(self) -> None:
        out = self.cfg.output
        folder = Path(out.dir) if out.dir else None
        for index, rings in self.outputs.items():
            for name, ring in rings.items():
                path = folder / f"worker-{index}.{name}.log" if folder else None
                if path != ring.path:
                    ring.close()
                    ring.path = path
                ring.capacity, ring.max_bytes, ring.backups = out.ring_bytes, out.max_bytes, out.backups
                ring.write(b"")  # trims to a smaller capacity

    def resize(self, target: int) -> None:
        active = [s for s in self.slots if not s.retire]
        for slot in self.slots:  # growing again: keep slots still on their way out
            if slot.retire and len(active) < target:
                slot.retire = False
                active.append(slot)
        while len(active) < target:
            slot = Slot(len(self.slots), max_window=self.cfg.workers.max_prefetch)
            self.slots.append(slot)
            active.append(slot)
            self.start_slot(slot)
        for slot in sorted(active, key=lambda s: s.index)[target:]:
            slot.retire = True
            self._maintenance = True

    def _reap_orphans(self) -> None:
        if not self.subreaper:
            return
        keep = reaper.multiprocessing_helpers()
        keep.update(s.handle.pid for s in self.slots if s.handle is not None)
        found = reaper.reap_orphans(keep)
        if found:
            log.info("orphans_reaped", count=found)
            # Killed ones become zombies a moment later: reap them soon.
            self.at(time.monotonic() + 0.05, self._reap_orphans)

    def recycle_slot(self, slot: Slot, reason: str) -> None:
        """Replace this slot's worker once it has finished what it holds."""
        slot.recycle = True
        self._maintenance = True
        log.info("worker_recycling", slot=slot.index, pid=slot.pid, reason=reason)
        self.publisher.event("worker.recycling", slot=slot.index, pid=slot.pid, reason=reason)

    def _check_memory(self) -> None:
        limit = self.cfg.workers.max_memory_mb * 1024 * 1024
        if not limit:
            return
        for slot in self.slots:
            if slot.state is S.RUNNING and not slot.recycle and slot.handle is not None:
                rss, _ = slot.handle.usage()
                if rss is not None and rss > limit:
                    self.recycle_slot(slot, f"max_memory_mb: rss {rss // (1024 * 1024)} MiB")

    def recycle_all(self) -> None:
        """Rolling restart: every slot gets a fresh worker, one at a time."""
        for slot in self.slots:
            if not slot.retire:
                slot.recycle = True
        self._maintenance = True

    # ------------------------------------------------ operator slot control
    def stop_slot(self, slot: Slot) -> None:
        """Operator stop: the slot stays STOPPED; its tasks go to the others."""
        slot.recycle = False
        if slot.handle is not None:
            if slot.state is not S.STOPPING:
                self._stop_slot(slot, time.monotonic())
        elif slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
            slot.move(S.STOPPED)

    def start_slot_by_operator(self, slot: Slot) -> None:
        if slot.state in (S.STOPPED, S.BACKOFF, S.FATAL):
            slot.backoffs = 0
            slot.restarts.clear()
            self.start_slot(slot)

    def restart_slot(self, slot: Slot) -> None:
        if slot.handle is None:
            self.start_slot_by_operator(slot)
            return
        slot.recycle = True
        if slot.state is not S.STOPPING:
            self._stop_slot(slot, time.monotonic())

    def _maintain(self, now: float) -> None:
        """Carry out retire/recycle intentions, never more than one slot down."""
        pending = False
        for slot in list(self.slots):
            if not (slot.retire or slot.recycle):
                continue
            pending = True
            if slot.handle is None:  # BACKOFF, FATAL or STOPPED: nothing to stop
                if slot.retire and slot.state is not S.STARTING:
                    if slot.state is not S.STOPPED:
                        slot.move(S.STOPPED)
                    self.slots.remove(slot)
                    self.publisher.event("worker.removed", slot=slot.index)
                elif slot.recycle:
                    slot.recycle = False
                continue
            if slot.state is not S.RUNNING or slot.inflight:
                continue  # let it finish what it holds
            if slot.recycle and not slot.retire:
                # One worker in transition at a time (a slot parked in
                # BACKOFF/FATAL/STOPPED does not hold the others back).
                others_down = any(
                    s is not slot and not s.retire and s.state in (S.STARTING, S.STOPPING)
                    for s in self.slots
                )
                if others_down:
                    continue
            self._stop_slot(slot, now)
        self._maintenance = pending
        if not self.slots and not self.stopping_workers:
            self._maintenance = False

    # ============================================================ shutdown
    def begin_drain(self) -> None:
        """Stop intake, let queued and running work finish within the grace."""
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.cfg.shutdown.grace
        self.notifier.stopping()
        log.info("drain_started", unfinished=len(self.table), grace=self.cfg.shutdown.grace)
        self.publisher.event("supervisor.stopping", unfinished=len(self.table))

    def _drain_step(self, now: float) -> None:
        if self.stopping_workers:
            if all(s.handle is None for s in self.slots):
                self.finished = True
            return
        if len(self.table) and now < self.drain_deadline:
            return
        self._fail_unfinished("daemon stopped before this task finished; resubmit it")
        self._stop_workers(now)

    def _fail_unfinished(self, why: str) -> None:
        from supervisor.errors import ShuttingDown

        for slot in self.slots:
            self.table.requeue(slot)
        self.table.queue.clear()
        for task in self.table.unfinished():
            self.fail_task(task, ShuttingDown.type, why)
        self.flush_output()

    def _stop_workers(self, now: float) -> None:
        self.stopping_workers = True
        for slot in self.slots:
            if slot.handle is None:
                if slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
                    slot.move(S.STOPPED)
                continue
            if slot.state is not S.STOPPING:
                self._stop_slot(slot, now)

    def _stop_slot(self, slot: Slot, now: float) -> None:
        """SIGTERM the worker's group, SIGKILL it after shutdown.stop_timeout."""
        handle: WorkerHandle = slot.handle
        slot.move(S.STOPPING)
        # Read what is still in the pipe first: results that already
        # arrived must count, or their tasks would run twice.
        if handle.fd in self._handlers:
            self._read_worker(slot)
        # Unwatch before closing: a closed fd's number is soon reused by
        # another worker's pipe, which must stay watched.
        self._unwatch(handle.fd)
        handle.close_pipe()  # a healthy idle worker exits on EOF
        handle.signal_tree(signal.SIGTERM)
        generation = slot.generation
        self.at(now + self.cfg.shutdown.stop_timeout, lambda: self._kill_late(slot, generation))

    def _kill_late(self, slot: Slot, generation: int) -> None:
        if slot.handle is not None and slot.generation == generation:
            log.warning("worker_stop_timeout_sigkill", slot=slot.index, pid=slot.pid)
            slot.handle.signal_tree(signal.SIGKILL)

    def stop_now(self) -> None:
        """Second SIGTERM: no more grace."""
        log.warning("stop_immediately")
        self.draining = True
        self._fail_unfinished("daemon stopped immediately; resubmit this task")
        self.stopping_workers = True
        for slot in self.slots:
            if slot.handle is not None:
                slot.handle.signal_group(signal.SIGKILL)
                if slot.state is not S.STOPPING:
                    slot.move(S.STOPPING)
            elif slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
                slot.move(S.STOPPED)

    def _shutdown_complete(self) -> None:
        log.info("daemon_stopped", succeeded=self.table.succeeded, failed=self.table.failed)
        self.publisher.event("supervisor.stopped")
        self.close_sockets()
        _stop_forkserver()
        signal.set_wakeup_fd(-1)
        self._sig_r.close()
        self._sig_w.close()
        self.notifier.close()
        os.close(self._lock_fd)

    def close_sockets(self) -> None:
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


def _stop_forkserver() -> None:
    # The forkserver would exit on its own when we do; stopping it here
    # means "no child left behind" holds the moment run() returns.
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        try:
            stop()
        except Exception:
            pass
