"""Client.result(task_id): a result by id, from whichever daemon has it."""

from __future__ import annotations

import pytest

from supervisor.client import Client, TaskError
from tests.conftest import StartDaemon

ECHO = "workers.builtin:echo"


def test_a_result_by_id_is_found_on_whichever_daemon_ran_it(start_daemon: StartDaemon) -> None:
    """A task run on the second of two daemons is fetched by a client of
    both (the first says UnknownId, the second answers); an id neither
    knows is UnknownId, within the timeout."""
    a = start_daemon()
    b = start_daemon()
    with Client(b.intake) as only_b:
        fut = only_b.submit(ECHO, ["kept", 1])
        assert fut.result(10) == ["kept", 1]
        task_id = fut.task_id
    assert task_id is not None
    with Client([a.intake, b.intake]) as both:
        assert both.result(task_id, timeout=10) == ["kept", 1]
        with pytest.raises(TaskError) as info:
            both.result("no-such-id", timeout=10)
        assert info.value.type == "UnknownId"
