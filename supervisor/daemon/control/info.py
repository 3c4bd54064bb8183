"""Commands that report: stats, version, config, avail, snapshot (observe/)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from supervisor import __version__
from supervisor.config import to_dict
from supervisor.daemon import intake

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon


def cmd_stats(d: Daemon, args: dict[str, Any]) -> Any:
    t = d.pool.table
    running = d.pool.workers_running()
    return {
        "accepted": t.accepted,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "retried": t.retried,
        "quarantined": t.quarantined,
        "queued": t.queued,
        "in_flight": len(t) - t.queued,
        "restarts": sum(s.restart_count for s in d.pool.slots),
        "rate": round(d.rate.rate(), 1),
        "latency": {"p50": d.pool.meters.latency.quantile(0.5), "p99": d.pool.meters.latency.quantile(0.99)},
        "per_task": {k: {"succeeded": v[0], "failed": v[1]} for k, v in d.pool.meters.per_task.items()},
        "published": d.publisher.sent,
        "publish_dropped": d.publisher.dropped,
        "unroutable_replies": d.outbox.unroutable,
        "refused": dict(intake.refused),  # refusals by type, requests and tasks
        "uptime": round(time.monotonic() - d.started_mono, 3),
        "paused": d.paused,
        "draining": d.draining,
        "workers": {"running": running, "total": len(d.pool.slots)},
    }


def cmd_version(d: Daemon, args: dict[str, Any]) -> Any:
    return {"version": __version__, "boot": d.boot, "pid": os.getpid()}


def cmd_config(d: Daemon, args: dict[str, Any]) -> Any:
    return to_dict(d.cfg)


def cmd_avail(d: Daemon, args: dict[str, Any]) -> Any:
    return sorted(d.pool.known_tasks)


def cmd_snapshot(d: Daemon, args: dict[str, Any]) -> Any:
    from supervisor.daemon.observe import snapshot

    return snapshot.take(d)
