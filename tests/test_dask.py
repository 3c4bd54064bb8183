"""Phalanx as a Dask worker's executor: a task that segfaults once runs to
completion and the Dask workers survive.

Each of the 2 Dask workers gets its own phalanxd (ipc in a private
directory, the only kind of daemon that may allow ``workers.pickled``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import dask
import distributed

from supervisor.integrations.dask import PhalanxExecutorPlugin
from supervisor.integrations.executor import ClientExecutor
from tests.conftest import StartDaemon
from workers.testing import crash_once


def test_annotated_tasks_survive_a_segfault_and_the_dask_workers_live_on(
        start_daemon: StartDaemon, tmp_path: Path) -> None:
    private = {"tasks": {"allow": ["workers.builtin", "workers.testing", "workers.pickled"]},
               "workers": {"count": 1, "preload": ["distributed.worker"]}}
    daemons = [start_daemon(private), start_daemon(private)]
    free = [d.intake for d in daemons]
    lock = threading.Lock()

    def make_executor() -> ClientExecutor:
        with lock:  # one private daemon per Dask worker
            return ClientExecutor(free.pop(), shutdown_timeout=10.0)

    plugin = PhalanxExecutorPlugin(make_executor)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None, plugins={plugin}) as cluster, \
            distributed.Client(cluster) as client:
        workers_before = set(client.scheduler_info()["workers"])
        markers = [tmp_path / f"crashed-{i}" for i in range(4)]
        with dask.annotate(executor="phalanx"):
            futs = [client.submit(crash_once, str(m), "segv", i, pure=False)
                    for i, m in enumerate(markers)]
        assert client.gather(futs) == [0, 1, 2, 3]
        assert set(client.scheduler_info()["workers"]) == workers_before
        assert all(m.exists() for m in markers)  # each one did segfault first
    crashes = sum(d.stats()["restarts"] for d in daemons)
    assert crashes == 4
    assert free == []
