"""supervisor.Pool against multiprocessing.Pool: same inputs, same outputs
and exceptions, method by method. One private pool and one multiprocessing
pool serve the whole module."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.pool
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor import Pool
from supervisor.client import TaskError
from tests import pool_tasks as t

Both = tuple[Any, Any]


@pytest.fixture(scope="module")
def pools() -> Iterator[Both]:
    ours = Pool(2)
    theirs = multiprocessing.get_context("spawn").Pool(2)
    try:
        yield ours, theirs
    finally:
        ours.terminate()
        theirs.terminate()
        theirs.join()


def same(pools: Both, call: Callable[[Any], Any]) -> Any:
    """``call`` on both pools: equal results, or equal exceptions (type, args)."""
    outcomes = []
    for pool in pools:
        try:
            outcomes.append(("ok", call(pool)))
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes.append(("raised", (type(exc), exc.args)))
    assert outcomes[0] == outcomes[1]
    return outcomes[0][1]


def test_apply_and_map_family_match_multiprocessing(pools: Both) -> None:
    assert same(pools, lambda p: p.apply(t.add, (1, 2), {"c": 3})) == 6
    assert same(pools, lambda p: p.apply_async(t.square, (7,)).get(10)) == 49
    assert same(pools, lambda p: p.map(t.square, range(50))) == [x * x for x in range(50)]
    assert same(pools, lambda p: p.map(t.square, range(50), chunksize=7))[-1] == 49 * 49
    assert same(pools, lambda p: p.map(t.square, [])) == []
    assert same(pools, lambda p: p.map(t.square, iter(range(5)))) == [0, 1, 4, 9, 16]
    assert same(pools, lambda p: p.map_async(t.square, range(5)).get(10)) == [0, 1, 4, 9, 16]
    assert same(pools, lambda p: p.starmap(t.add, [(1, 2), (3, 4)])) == [3, 7]
    assert same(pools, lambda p: p.starmap_async(t.add, [(1, 2, 3)]).get(10)) == [6]
    assert same(pools, lambda p: list(p.imap(t.square, range(20), chunksize=3))) == [
        x * x for x in range(20)]
    assert same(pools, lambda p: sorted(p.imap_unordered(t.square, range(20)))) == sorted(
        x * x for x in range(20))


def test_results_keep_their_types_as_with_multiprocessing(pools: Both) -> None:
    """A pickle lane: tuples stay tuples at any depth, sets stay sets."""
    value = ((1, 2), [(3, (4,))], {"k": (5,)}, {6, 7}, frozenset({8}))
    got = same(pools, lambda p: p.apply(t.echo_all, (value,)))
    assert got == (((value,), {})) and type(got[0][0][1][0]) is tuple
    assert same(pools, lambda p: p.map(t.twice, [(1,), (2, 3)])) == [(1, 1), (2, 3, 2, 3)]


def test_task_exceptions_are_reraised_as_themselves(pools: Both) -> None:
    same(pools, lambda p: p.apply(t.raise_keyerror, ("k",)))
    same(pools, lambda p: p.map(t.fail_on, range(10), chunksize=2))
    same(pools, lambda p: p.starmap(t.fail_on, [(1,), (3,)]))
    ours, _ = pools
    with pytest.raises(KeyError) as info:
        ours.apply_async(t.raise_keyerror, ("k",)).get(10)
    # As multiprocessing: the worker's traceback rides along as the cause.
    assert type(info.value.__cause__).__name__ == "RemoteTraceback"
    assert "raise_keyerror" in str(info.value.__cause__)


def test_imap_raises_at_the_failing_item_and_goes_on(pools: Both) -> None:
    def walk(p: Any) -> list[Any]:
        out: list[Any] = []
        it = p.imap(t.fail_on, range(6))
        for _ in range(6):
            try:
                out.append(it.next(10))
            except ValueError as exc:
                out.append(str(exc))
        with pytest.raises(StopIteration):
            it.next(10)
        return out

    assert same(pools, walk) == [0, 1, 2, "bad item 3", 4, 5]


def test_imap_reads_a_generator_and_its_failure_lands_in_place(pools: Both) -> None:
    def numbers() -> Iterator[int]:
        yield from range(4)
        raise LookupError("input ran dry")

    def walk(p: Any) -> list[Any]:
        out: list[Any] = []
        it = p.imap(t.square, numbers())
        while True:
            try:
                out.append(it.next(10))
            except StopIteration:
                return out
            except LookupError as exc:
                out.append(repr(exc))

    assert same(pools, walk) == [0, 1, 4, 9, "LookupError('input ran dry')"]
    assert same(pools, lambda p: sorted(p.imap_unordered(t.square, iter(range(30)), 4))) == [
        x * x for x in range(30)]


def test_async_result_protocol(pools: Both) -> None:
    def protocol(p: Any) -> tuple[Any, ...]:
        r = p.apply_async(t.sleep_then, (0.5, "late"))
        with pytest.raises(ValueError):
            r.successful()
        with pytest.raises(multiprocessing.TimeoutError):
            r.get(0.01)
        early = r.ready()
        r.wait(10)
        bad = p.apply_async(t.raise_keyerror, ("x",))
        bad.wait(10)
        return early, r.ready(), r.successful(), r.get(), bad.ready(), bad.successful()

    assert same(pools, protocol) == (False, True, True, "late", True, False)


def test_callbacks_run_before_get_returns(pools: Both) -> None:
    def callbacks(p: Any) -> tuple[Any, ...]:
        got: list[Any] = []
        r1 = p.apply_async(t.square, (4,), callback=got.append)
        r2 = p.apply_async(t.raise_keyerror, ("e",), error_callback=lambda e: got.append(repr(e)))
        r3 = p.map_async(t.square, range(3), callback=got.append)
        r4 = p.map_async(t.fail_on, range(5), error_callback=lambda e: got.append(str(e)))
        for r in (r1, r2, r3, r4):
            r.wait(10)
        return tuple(sorted(map(str, got)))

    assert same(pools, callbacks) == ("16", "KeyError('e')", "[0, 1, 4]", "bad item 3")


def test_arguments_checked_as_multiprocessing(pools: Both) -> None:
    same(pools, lambda p: p.imap(t.square, range(3), chunksize=0))
    same(pools, lambda p: p.imap_unordered(t.square, range(3), chunksize=-1))
    same(pools, lambda p: p.join())  # still running
    for kwargs in ({"processes": 0}, {"maxtasksperchild": 0}, {"initializer": 3}):
        outcomes = []
        for make in (Pool, multiprocessing.get_context("spawn").Pool):
            with pytest.raises((ValueError, TypeError)) as info:
                make(**kwargs)
            outcomes.append((info.type, info.value.args))
        assert outcomes[0] == outcomes[1]


def test_unpicklable_result_is_a_maybe_encoding_error(pools: Both) -> None:
    ours, _ = pools
    with pytest.raises(multiprocessing.pool.MaybeEncodingError):
        ours.apply(t.unpicklable)


def test_lambdas_and_closures_run_with_cloudpickle(pools: Both) -> None:
    pytest.importorskip("cloudpickle")
    ours, _ = pools
    k = 10
    assert ours.map(lambda x: x + k, range(3)) == [10, 11, 12]


def test_a_worker_sigkilled_mid_map_costs_a_retry_not_a_hang(pools: Both, tmp_path: Path
                                                             ) -> None:
    ours, _ = pools
    marker = str(tmp_path / "killed")
    items = [(marker, x) for x in range(40)]
    assert ours.starmap(t.kill_self_once, items, chunksize=4) == [x * x for x in range(40)]
    assert os.path.exists(marker)  # a worker really died on the way


def test_per_call_timeout_and_max_attempts(pools: Both, tmp_path: Path) -> None:
    ours, _ = pools
    with pytest.raises(TaskError) as info:
        ours.apply(t.sleep_then, (30,), timeout=0.3)
    assert info.value.type == "Timeout"
    marker = str(tmp_path / "once")
    with pytest.raises(TaskError) as crashed:
        ours.apply(t.kill_self_once, (marker, 2), max_attempts=1)
    assert crashed.value.type == "WorkerCrashed"
    assert ours.apply(t.square, (5,)) == 25  # the pool carries on


def test_awaiting_results_from_asyncio(pools: Both) -> None:
    ours, _ = pools

    async def main() -> list[Any]:
        return list(await asyncio.gather(ours.apply_async(t.square, (3,)),
                                         ours.map_async(t.square, range(3))))

    assert asyncio.run(main()) == [9, [0, 1, 4]]


def test_callbacks_come_from_another_thread_like_multiprocessing(pools: Both) -> None:
    ours, _ = pools
    seen: list[str] = []
    ours.apply_async(t.square, (2,), callback=lambda _: seen.append(
        threading.current_thread().name)).wait(10)
    assert seen and seen[0] != threading.current_thread().name
