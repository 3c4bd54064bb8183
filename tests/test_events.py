"""Per-task and per-worker state changes on the publisher, and the per-task
retry policy for timeouts."""

from __future__ import annotations

import pytest

from supervisor.client import TaskError
from tests.conftest import Daemon

ECHO = "workers.builtin:echo"
SLEEP = "workers.builtin:sleep"


def test_task_acceptance_and_assignment_are_published(daemon: Daemon) -> None:
    """A subscriber to event.task. sees each task accepted, then handed to a
    worker (slot and pid named), then its result on result.<task>."""
    client = daemon.client()
    sub = daemon.subscribe("event.task.", "result.", client=client)
    fut = client.submit(ECHO, "hello")
    assert fut.result(10) == "hello"
    sub.fence(client)
    (result,) = [r for r in sub.results() if r.get("value") == "hello"]
    task_id = result["id"]
    accepted = sub.wait_for(lambda m: m.topic == "event.task.accepted"
                            and task_id in m.body["ids"], timeout=10)
    assigned = sub.wait_for(lambda m: m.topic == "event.task.assigned"
                            and task_id in m.body["ids"], timeout=10)
    assert accepted.body["gseq"] < assigned.body["gseq"]
    slots = {s["slot"]: s["pid"] for s in daemon.status()}
    assert slots[assigned.body["slot"]] == assigned.body["pid"]


def test_stopping_a_worker_is_published_before_it_stops(daemon: Daemon) -> None:
    """Control `stop` publishes worker.stopping (with what the worker held),
    then worker.stopped."""
    client = daemon.client()
    sub = daemon.subscribe("event.worker.", client=client)
    daemon.call("stop", {"slots": [0]})
    stopping = sub.event("worker.stopping", slot=0)
    assert {"pid", "held"} <= set(stopping)
    sub.event("worker.stopped", slot=0, after=stopping)


@pytest.mark.parametrize("retry", [False, True])
def test_timeout_retry_is_a_per_task_choice(daemon: Daemon, retry: bool) -> None:
    """retry_timeouts on a submit overrides tasks.retry_timeouts: with it a
    timed-out task uses its remaining attempts (attempt 2 of 2), without it
    it fails at once."""
    client = daemon.client().with_options(timeout=0.3, max_attempts=2, retry_timeouts=retry)
    with pytest.raises(TaskError) as err:
        client.submit(SLEEP, 30).result(20)
    assert err.value.type == "Timeout"
    if retry:
        assert "attempt 2 of 2" in err.value.message
    else:
        assert "not retried" in err.value.message
