"""The one place that reads the daemon's state for observation.

``take(daemon)`` copies what the metrics, the status page and the
supervisorctl bridge show into a frozen ``Snapshot``. It runs inside the
loop, as the ``snapshot`` control command, at most about once a second
(the observers' sampler asks for no more). Nothing else in ``observe/``
touches a daemon field: when the daemon's insides change shape, this
adapter is the only file to repoint.
"""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING

import msgspec

from supervisor import __version__
from supervisor.daemon.observe.counters import BOUNDS, Histogram

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon


class Worker(msgspec.Struct, frozen=True):
    slot: int
    state: str
    pid: int | None
    uptime: float
    restarts: int
    done: int
    failed: int
    held: int
    rss: int | None
    cpu: float | None
    last_exit: str | None


class Hist(msgspec.Struct, frozen=True):
    buckets: list[int]  # per bucket (not cumulative); the last is +Inf
    sum: float
    count: int


class TaskCounts(msgspec.Struct, frozen=True):
    submitted: int
    succeeded: int
    failed: int


class Recent(msgspec.Struct, frozen=True):
    at: float  # wall-clock seconds
    kind: str  # crash | retry | quarantine
    slot: int
    task: str
    detail: str


class Summary(msgspec.Struct, frozen=True):
    """The configuration an operator wants at a glance (no secrets)."""

    workers: int
    start_method: str
    intake: str
    publisher: str
    allow: list[str]
    timeout: float
    max_attempts: int
    max_pending: int
    max_prefetch: int
    source: str


class Snapshot(msgspec.Struct, frozen=True):
    taken_at: float  # wall-clock seconds
    version: str
    python: str
    boot: str
    pid: int
    uptime: float
    paused: bool
    draining: bool
    queued: int
    in_flight: int
    accepted: int
    succeeded: int
    failed: int
    retried: int
    quarantined: int
    latency_p50: float | None
    latency_p99: float | None
    tasks: dict[str, TaskCounts]
    retries: dict[str, int]
    restarts: dict[str, int]
    refusals: dict[str, int]
    bounds: list[float]
    duration: dict[str, Hist]
    queue_wait: Hist
    workers: list[Worker]
    recent: list[Recent]
    config: Summary


def _hist(h: Histogram) -> Hist:
    return Hist(list(h.buckets), h.sum, h.count)


def take(d: Daemon) -> Snapshot:
    # commands.slot_info is the control protocol's own view of a slot (and
    # samples its RSS and CPU); reusing it keeps `phalanxctl status`, the
    # page and supervisorctl showing the same thing.
    from supervisor.daemon.control.slots import slot_info

    now = time.monotonic()
    pool = d.pool
    t = pool.table
    c = pool.counters
    per_task = pool.meters.per_task
    names = set(c.submitted) | set(per_task)
    tasks = {
        name: TaskCounts(c.submitted.get(name, 0), *per_task.get(name, (0, 0)))
        for name in sorted(names)
    }
    cfg = d.cfg
    return Snapshot(
        taken_at=time.time(),
        version=__version__,
        python=platform.python_version(),
        boot=d.boot,
        pid=os.getpid(),
        uptime=round(now - d.started_mono, 3),
        paused=d.paused,
        draining=d.draining,
        queued=t.queued,
        in_flight=len(t) - t.queued,
        accepted=t.accepted,
        succeeded=t.succeeded,
        failed=t.failed,
        retried=t.retried,
        quarantined=t.quarantined,
        latency_p50=pool.meters.latency.quantile(0.5),
        latency_p99=pool.meters.latency.quantile(0.99),
        tasks=tasks,
        retries=dict(c.retries),
        restarts=dict(c.restarts),
        refusals=dict(c.refusals),
        bounds=list(BOUNDS),
        duration={name: _hist(h) for name, h in c.duration.items()},
        queue_wait=_hist(c.queue_wait),
        workers=[msgspec.convert(slot_info(d, s), Worker, strict=False) for s in pool.slots],
        recent=[Recent(*r) for r in c.recent],
        config=Summary(
            workers=cfg.worker_count,
            start_method=cfg.workers.start_method,
            intake=cfg.endpoints.intake,
            publisher=cfg.endpoints.publisher,
            allow=list(cfg.tasks.allow),
            timeout=cfg.tasks.timeout,
            max_attempts=cfg.tasks.max_attempts,
            max_pending=cfg.tasks.max_pending,
            max_prefetch=cfg.workers.max_prefetch,
            source=cfg.source,
        ),
    )
