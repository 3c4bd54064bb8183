"""PhalanxExecutor is a real concurrent.futures.Executor: from a Pool (any
callable) and from a Client (tasks of a configured daemon), under asyncio's
run_in_executor and as dask's scheduler."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator

import pytest

from supervisor import Pool
from supervisor.pool import PhalanxExecutor
from tests import pool_tasks as t
from tests.conftest import Daemon


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    p = Pool(2)
    yield p
    p.terminate()


def test_submit_map_and_shutdown_as_the_standard_library(pool: Pool) -> None:
    ex = PhalanxExecutor(pool)
    assert isinstance(ex, concurrent.futures.Executor)
    fut = ex.submit(t.add, 1, 2, c=3)
    assert fut.result(10) == 6
    assert list(ex.map(t.add, [1, 2, 3], [10, 20, 30], chunksize=2)) == [11, 22, 33]
    assert list(ex.map(t.add, [1, 2], [1, 2, 3])) == [2, 4]  # zip stops at the shortest
    failing = ex.map(t.fail_on, range(5))
    assert [next(failing) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad item 3"):
        next(failing)
    with pytest.raises(TimeoutError):
        list(ex.map(t.sleep_then, [1.0], timeout=0.1))
    slow = [ex.submit(t.sleep_then, 1.0) for _ in range(3)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in slow)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(t.square, 1)
    assert pool.apply(t.square, (3,)) == 9  # a Pool it was given stays open


def test_run_in_executor_from_asyncio(pool: Pool) -> None:
    ex = PhalanxExecutor(pool)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(ex, t.square, i)
                                           for i in range(5))))

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_dask_computes_on_a_private_pool(pool: Pool) -> None:
    dask = pytest.importorskip("dask")
    from dask import delayed

    parts = [delayed(t.square)(i) for i in range(6)]
    total = delayed(sum)(parts)
    ex = PhalanxExecutor(pool)
    assert dask.compute(total, scheduler=ex) == (sum(i * i for i in range(6)),)


def test_an_executor_on_a_client_runs_configured_tasks(daemon: Daemon) -> None:
    ex = PhalanxExecutor(client=daemon.client())
    assert ex.submit("workers.builtin:echo", 5).result(10) == 5
    assert list(ex.map("workers.builtin:echo", range(10), chunksize=3)) == list(range(10))
    ex.shutdown()


def test_an_executor_of_its_own_stops_its_pool() -> None:
    with PhalanxExecutor(max_workers=1) as ex:
        assert ex.submit(t.square, 4).result(10) == 16
        pool = ex._pool
    assert pool is not None
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(t.square, (1,))
