"""Stopping: drain within the grace, then stop workers, then leave nothing.

SIGTERM (or ``phalanxctl shutdown``) starts a drain: intake refuses new
work, queued and running tasks get ``shutdown.grace`` seconds to finish,
what is left fails with ShuttingDown, then every worker gets SIGTERM and,
after ``stop_timeout``, SIGKILL to its whole tree. A second SIGTERM skips
the grace. The loop ends once every worker is gone; ``reap_everything``
then kills what tasks left behind (setsid'ed grandchildren that ignore
SIGTERM, which would otherwise keep the forkserver's alive pipe open and
the daemon from exiting). Every step has a deadline.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

import structlog

from supervisor.daemon import reaper
from supervisor.errors import ShuttingDown

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon

log = structlog.get_logger("phalanxd")
REAP_DEADLINE = 1.0  # seconds to kill and reap what tasks left behind


def begin_drain(d: Daemon) -> None:
    """Stop intake, let queued and running work finish within the grace."""
    if d.draining:
        return
    d.draining = True
    d.drain_deadline = time.monotonic() + d.cfg.shutdown.grace
    d.notifier.stopping()
    unfinished = len(d.pool.table)
    log.info("drain_started", unfinished=unfinished, grace=d.cfg.shutdown.grace)
    d.publisher.event("supervisor.stopping", unfinished=unfinished)


def drain_step(d: Daemon, now: float) -> None:
    pool = d.pool
    if pool.stopping:
        if pool.all_stopped():
            d.loop.stopped = True
        return
    if len(pool.table) and now < d.drain_deadline:
        return
    pool.fail_unfinished(ShuttingDown.type, "daemon stopped before this task finished; resubmit it")
    d.outbox.flush()
    pool.stop_all(now)


def stop_now(d: Daemon) -> None:
    """Second SIGTERM: no more grace."""
    log.warning("stop_immediately")
    d.draining = True
    d.pool.fail_unfinished(ShuttingDown.type, "daemon stopped immediately; resubmit this task")
    d.outbox.flush()
    d.pool.kill_all()


def reap_everything(d: Daemon) -> None:
    """Kill and reap every process left below us but multiprocessing's own
    helpers, within REAP_DEADLINE (we are a subreaper: orphans are ours)."""
    if not d.spawner.subreaper:
        return
    deadline = time.monotonic() + REAP_DEADLINE
    keep = reaper.multiprocessing_helpers()
    while time.monotonic() < deadline:
        left = [pid for pid in reaper.child_pids() if pid not in keep]
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, os.WNOHANG)
            except (ChildProcessError, ProcessLookupError):
                pass
        time.sleep(0.01)  # bounded by REAP_DEADLINE: SIGKILLed processes die in ms
    log.warning("orphans_left_at_exit", pids=left)
