"""Prometheus metrics from a live daemon, parsed by prometheus_client's own parser.

The values must move with real work: tasks submitted and completed by task
and outcome, a crash that restarts a worker and retries its task, an
intake refusal, the duration and queue-wait histograms, workers by state.
"""

from __future__ import annotations

import pytest

from supervisor.client import TaskError
from tests.conftest import Daemon, StartDaemon, wait_until
from tests.observe_util import http_port, scrape

ECHO = "workers.builtin:echo"
CRASH = "workers.testing:crash"


@pytest.fixture
def observed(start_daemon: StartDaemon) -> Daemon:
    return start_daemon(observe={"http": "127.0.0.1:0"}, tasks={"max_attempts": 2})


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_conventions_and_start_at_zero(observed: Daemon) -> None:
    """Build info, every worker state (zero-filled), RSS by slot; nothing
    labelled by a task id or pid; counters end in _total."""
    port = http_port(observed)
    # Snapshots are up to a second old: wait for the one after start-up.
    samples = wait_until(lambda: (lambda s: s if value(s, "phalanx_workers", state="RUNNING") == 2
                                  else None)(scrape(port)), 10, interval=0.2)
    names = {name for name, _ in samples}
    assert all(n.startswith("phalanx_") for n in names), names
    assert value(samples, "phalanx_build_info", version="0.1.0",
                 python=next(dict(lb)["python"] for n, lb in samples
                             if n == "phalanx_build_info")) == 1
    assert value(samples, "phalanx_workers", state="FATAL") == 0
    rss = {dict(lb)["slot"]: v for (n, lb), v in samples.items()
           if n == "phalanx_worker_resident_memory_bytes"}
    assert set(rss) == {"0", "1"} and all(v > 1e6 for v in rss.values())
    labels = {k for _, lb in samples for k, _ in lb}
    assert labels <= {"version", "python", "task", "outcome", "reason", "state", "slot", "le"}
    assert value(samples, "phalanx_worker_restarts_total", reason="signal") == 0
    assert value(samples, "phalanx_queue_depth") == 0


def test_metrics_move_with_real_work(observed: Daemon) -> None:
    """20 echoes, a failing task, a crash (the worker restarts, the task is
    retried then fails) and an unknown task refused: each shows up."""
    port = http_port(observed)
    client = observed.client()
    assert client.map(ECHO, range(20)) == list(range(20))
    with pytest.raises(TaskError):
        client.apply("workers.builtin:fail")
    with pytest.raises(TaskError):  # exits its worker twice: retried once, then fails
        client.apply(CRASH, ["exit"])
    with pytest.raises(TaskError):
        client.apply("workers.builtin:no_such_task")

    def moved() -> dict | None:
        s = scrape(port)
        ok = (value(s, "phalanx_tasks_completed_total", task=ECHO, outcome="succeeded") == 20
              and value(s, "phalanx_tasks_completed_total", task=CRASH, outcome="failed") == 1
              and value(s, "phalanx_worker_restarts_total", reason="exit") == 2)
        return s if ok else None

    s = wait_until(moved, 10, interval=0.2, message=lambda: repr(scrape(port)))
    assert value(s, "phalanx_tasks_submitted_total", task=ECHO) == 20
    assert value(s, "phalanx_tasks_completed_total", task="workers.builtin:fail",
                 outcome="failed") == 1
    assert value(s, "phalanx_task_retries_total", reason="WorkerCrashed") == 1
    assert value(s, "phalanx_intake_refusals_total", reason="UnknownTask") == 1
    assert value(s, "phalanx_task_duration_seconds_count", task=ECHO) == 20
    assert value(s, "phalanx_task_duration_seconds_bucket", task=ECHO, le="+Inf") == 20
    assert value(s, "phalanx_task_queue_wait_seconds_count") >= 22
    wait_until(lambda: value(scrape(port), "phalanx_workers", state="RUNNING") == 2, 10,
               interval=0.2)


def test_a_sigkilled_worker_counts_as_a_signal_restart(observed: Daemon) -> None:
    import os
    import signal

    port = http_port(observed)
    pid = observed.status()[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: value(scrape(port), "phalanx_worker_restarts_total", reason="signal") == 1,
               10, interval=0.2, message=lambda: repr(scrape(port)))
    observed.wait_all_running(not_pids={pid})
