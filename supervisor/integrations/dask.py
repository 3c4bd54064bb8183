"""Phalanx inside a Dask cluster: crash-proof workers for annotated tasks.

    from supervisor.integrations.dask import PhalanxExecutorPlugin

    plugin = PhalanxExecutorPlugin(make_executor)      # one executor per Dask worker
    cluster = LocalCluster(n_workers=2, plugins={plugin})   # or Worker(plugins=...)
    # or, on a running cluster: client.register_plugin(plugin)
    with dask.annotate(executor="phalanx"):
        fut = client.submit(might_segfault, x)

Dask runs a task in the executor its ``executor`` annotation names
(``Worker.executors``). Without Phalanx a task that segfaults or is
OOM-killed takes the whole Dask worker process down with it, and every
task that worker held is recomputed elsewhere. With this plugin each Dask
worker gets its own executor whose calls run in Phalanx worker processes:
a crash costs one Phalanx worker, which phalanxd replaces and retries the
task on; the Dask worker never notices.

``make_executor`` is any zero-argument callable returning a
``concurrent.futures.Executor``, called once per Dask worker in
``setup``; the executor is shut down in ``teardown``. Today that is
``lambda: ClientExecutor(endpoint)`` (supervisor/integrations/executor.py)
over a phalanxd private to that worker's user; once the private Pool
exists, ``lambda: Pool(n).executor()`` gives each Dask worker its own
pool with no daemon to manage.

Dask calls a non-thread executor as ``executor.submit(_run_task_simple,
task, data, delay)``, the path it documents for process pools: the task
and its inputs are pickled, so this is for private pools only (see
workers/pickled.py).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from distributed import WorkerPlugin

NAME = "phalanx"


class PhalanxExecutorPlugin(WorkerPlugin):
    """Adds ``worker.executors[executor_name] = make_executor()`` on each worker."""

    def __init__(self, make_executor: Callable[[], Executor], executor_name: str = NAME) -> None:
        self.make_executor = make_executor
        self.executor_name = executor_name
        self.name = f"phalanx-executor-{executor_name}"  # one per name on a worker
        self._mine: dict[str, Executor] = {}  # worker address -> its executor

    def setup(self, worker: Any) -> None:
        executor = self.make_executor()
        self._mine[str(worker.address)] = executor
        worker.executors[self.executor_name] = executor

    def teardown(self, worker: Any) -> None:
        executor = self._mine.pop(str(worker.address), None)
        worker.executors.pop(self.executor_name, None)
        if executor is not None:
            executor.shutdown(wait=True)
