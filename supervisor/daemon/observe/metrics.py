"""Prometheus metrics, computed from the newest snapshot at scrape time.

A custom collector rather than live Counter objects: the loop never calls
into prometheus_client (no lock, no allocation on the hot path); it keeps
plain counts (counters.py) and the scrape turns the latest snapshot (at
most a second old) into metric families. Names follow the Prometheus
conventions: ``phalanx_`` prefix, base units (seconds, bytes), ``_total``
for counters, labels only from bounded sets (task names from the
allowlist, fixed reason names, slot numbers); never a task id or a pid.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from supervisor.daemon.observe.snapshot import Hist, Snapshot
from supervisor.daemon.observe.source import SnapshotSource

# Every state a slot can be in, so `phalanx_workers{state="FATAL"} 0` is
# there to alert on before the first worker ever goes FATAL.
STATES = ("STARTING", "RUNNING", "BACKOFF", "STOPPING", "STOPPED", "EXITED", "FATAL")


def _buckets(bounds: list[float], hist: Hist) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip([*map(repr, bounds), "+Inf"], hist.buckets, strict=True):
        total += n
        out.append((bound, total))
    return out


def families(s: Snapshot) -> Iterator[Metric]:
    info = InfoMetricFamily("phalanx_build", "phalanxd version and Python version")
    info.add_metric([], {"version": s.version, "python": s.python})
    yield info
    yield GaugeMetricFamily("phalanx_uptime_seconds", "Seconds since phalanxd started",
                            value=s.uptime)
    submitted = CounterMetricFamily("phalanx_tasks_submitted", "Tasks accepted by intake",
                                    labels=["task"])
    completed = CounterMetricFamily("phalanx_tasks_completed",
                                    "Tasks finished, by outcome (one per accepted task)",
                                    labels=["task", "outcome"])
    for name, c in s.tasks.items():
        submitted.add_metric([name], c.submitted)
        completed.add_metric([name, "succeeded"], c.succeeded)
        completed.add_metric([name, "failed"], c.failed)
    yield submitted
    yield completed
    retries = CounterMetricFamily("phalanx_task_retries", "Task attempts retried, by reason",
                                  labels=["reason"])
    for reason in sorted({"WorkerCrashed", "Timeout", *s.retries}):
        retries.add_metric([reason], s.retries.get(reason, 0))
    yield retries
    yield CounterMetricFamily("phalanx_tasks_quarantined",
                              "Tasks failed for killing workers repeatedly", value=s.quarantined)
    duration = HistogramMetricFamily(
        "phalanx_task_duration_seconds",
        "Time a task held its worker (averaged over a batch of results)", labels=["task"])
    for name, hist in s.duration.items():
        duration.add_metric([name], _buckets(s.bounds, hist), hist.sum)
    yield duration
    wait = HistogramMetricFamily("phalanx_task_queue_wait_seconds",
                                 "Time from acceptance to dispatch to a worker")
    wait.add_metric([], _buckets(s.bounds, s.queue_wait), s.queue_wait.sum)
    yield wait
    yield GaugeMetricFamily("phalanx_queue_depth", "Tasks accepted and waiting for a worker",
                            value=s.queued)
    yield GaugeMetricFamily("phalanx_tasks_in_flight", "Tasks held by workers", value=s.in_flight)
    workers = GaugeMetricFamily("phalanx_workers", "Worker slots by state", labels=["state"])
    for state in STATES:
        workers.add_metric([state], sum(1 for w in s.workers if w.state == state))
    yield workers
    restarts = CounterMetricFamily("phalanx_worker_restarts",
                                   "Workers replaced, by reason (signal, exit, timeout, recycle, spawn_failed)",
                                   labels=["reason"])
    for reason in sorted({"signal", "exit", "timeout", "recycle", "spawn_failed", *s.restarts}):
        restarts.add_metric([reason], s.restarts.get(reason, 0))
    yield restarts
    rss = GaugeMetricFamily("phalanx_worker_resident_memory_bytes",
                            "Resident set size of each slot's worker", labels=["slot"])
    for w in s.workers:
        if w.rss is not None:
            rss.add_metric([str(w.slot)], w.rss)
    yield rss
    refusals = CounterMetricFamily("phalanx_intake_refusals",
                                   "Tasks or requests refused by intake, by error type",
                                   labels=["reason"])
    for reason in sorted(s.refusals):
        refusals.add_metric([reason], s.refusals[reason])
    yield refusals


class SnapshotCollector(Collector):
    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        snap = self._source.latest()
        if snap is not None:
            yield from families(snap)


def registry(source: SnapshotSource) -> CollectorRegistry:
    """A registry of our own: the process's default one would add the
    observer's own Python GC metrics under names we do not promise."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(source))
    return reg
