"""The futures the client hands out keep the concurrent.futures contract
(cancel, callbacks, as_completed), exceptions keep their type, values keep
theirs, and completion races never kill the client (issue 9, items 4,
10, 11, 12)."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import CancelledError, as_completed, wait
from typing import Any

import pytest

from supervisor.client import Client, ClientClosed, TaskError
from tests.conftest import Daemon, wait_until

ECHO = "workers.builtin:echo"
SLEEP = "workers.builtin:sleep"


@pytest.fixture
def client(shared_daemon: Daemon) -> Iterator[Client]:
    c = Client(shared_daemon.intake)
    yield c
    c.terminate()


# ------------------------------------------------------------ exceptions
def test_a_builtin_exception_is_caught_by_its_own_type(client: Client) -> None:
    """sleep(-1) raises ValueError in the worker: the caller's
    ``except ValueError`` catches it, and it is a TaskError with details."""
    with pytest.raises(ValueError) as info:
        client.apply(SLEEP, (-1,), timeout=10)
    err = info.value
    assert isinstance(err, TaskError)
    assert err.type == "ValueError" and "non-negative" in err.message
    assert err.traceback is not None and "Traceback" in err.traceback
    with pytest.raises(TypeError):  # time.sleep("x")
        client.submit(SLEEP, "x").result(10)


def test_a_non_builtin_exception_stays_a_plain_task_error(client: Client) -> None:
    with pytest.raises(TaskError) as info:
        client.call("workers.builtin:fail", "boom")
    assert type(info.value) is TaskError and info.value.type == "TaskFailure"


def test_map_failures_keep_their_type_too(client: Client) -> None:
    with pytest.raises(ValueError):
        client.map(SLEEP, [0, -1, 0], timeout=10)
    with pytest.raises(ValueError):
        client.map(SLEEP, [0] * 10 + [-1], chunksize=4, timeout=10)


# ------------------------------------------------------------------ types
class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


UTC_PLUS_2 = datetime.timezone(datetime.timedelta(hours=2))
SUPPORTED: list[Any] = [
    None, True, 3, -2**63, 2**64 - 1, 1.5, "é", b"\x00\xff", [1, [2, {"a": b"b"}]],
    {"k": [1.0, None]}, {1: "int key", b"b": "bytes key"},
    datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
]
REFUSED: list[Any] = [
    (1, 2), {1, 2}, frozenset({1}), datetime.datetime(2024, 5, 1), datetime.date(2024, 5, 1),
    datetime.time(1, 2), datetime.timedelta(seconds=1), decimal.Decimal("1.5"), uuid.uuid4(),
    Color.RED, Point(1), bytearray(b"x"), [1, (2, 3)], {"a": {1, 2}}, {(1, 2): "tuple key"},
    object(),
]


def test_supported_values_round_trip_exactly(client: Client) -> None:
    """Each supported value comes back equal and of the same type."""
    got = client.map(ECHO, SUPPORTED, timeout=10)
    for sent, back in zip(SUPPORTED, got, strict=True):
        assert back == sent and type(back) is type(sent), (sent, back)
    aware = datetime.datetime(2024, 5, 1, 14, 30, tzinfo=UTC_PLUS_2)
    back = client.call(ECHO, aware)
    assert back == aware and back.tzinfo == datetime.UTC  # the same instant, in UTC


@pytest.mark.parametrize("value", REFUSED, ids=lambda v: type(v).__name__)
def test_values_that_would_change_type_are_refused_by_name(client: Client, value: Any
                                                          ) -> None:
    with pytest.raises(TypeError, match=r"cannot be sent to a worker .*Supported: None, bool"):
        client.submit(ECHO, value)
    with pytest.raises(TypeError, match="Supported"):
        client.map(ECHO, [1, value])
    assert client.pending == 0 or client.map(ECHO, [1], timeout=10) == [1]


# ------------------------------------------------------------------ cancel
def test_cancel_only_succeeds_for_work_that_has_not_left_the_client(
        shared_daemon: Daemon) -> None:
    """With a window of one task, the second future is still held by the
    client: cancel() is True and it never runs. The first has been sent:
    it is RUNNING for cancel(), which returns False, and it completes."""
    with Client(shared_daemon.intake, max_in_flight=1) as c:
        accepted = shared_daemon.stats()["accepted"]
        first = c.submit(SLEEP, 0.3)
        second = c.submit(ECHO, "never")
        wait_until(first.running, 5, message="the first task never left the client")
        assert not first.cancel()
        assert second.cancel() and second.cancelled()
        with pytest.raises(CancelledError):
            second.result(1)
        assert first.result(10) == 0.3
        assert c.submit(ECHO, "after").result(10) == "after"
    assert shared_daemon.stats()["accepted"] == accepted + 2  # 'never' never arrived


def test_cancelling_while_results_arrive_never_breaks_the_client(client: Client) -> None:
    """Cancel a thousand futures from another thread while their results
    pour in: no error escapes, later submissions still work."""
    futs = [client.submit(ECHO, i) for i in range(1000)]
    canceller = threading.Thread(target=lambda: [f.cancel() for f in futs])
    canceller.start()
    canceller.join(10)
    _done, not_done = wait(futs, timeout=20)
    assert not not_done
    assert all(f.cancelled() or f.result() == i for i, f in enumerate(futs))
    assert client.submit(ECHO, "alive").result(10) == "alive"
    assert client.pending == 0


# --------------------------------------------------- futures, iterators
def test_as_completed_and_callbacks_see_every_result(client: Client) -> None:
    seen: list[Any] = []
    lock = threading.Lock()

    def note(f: Any) -> None:
        with lock:
            seen.append(f.result())

    futs = [client.submit(SLEEP, s) for s in (0.3, 0.0, 0.15)]
    for f in futs:
        f.add_done_callback(note)
    order = [f.result() for f in as_completed(futs, timeout=10)]
    assert sorted(order) == [0.0, 0.15, 0.3]
    wait_until(lambda: len(seen) == 3, 5, message=f"callbacks ran for {seen}")
    late: list[Any] = []
    futs[0].add_done_callback(lambda f: late.append(f.result()))  # already done: runs now
    assert late == [0.3]


def test_apply_async_callbacks(client: Client) -> None:
    got: list[Any] = []
    errs: list[BaseException] = []
    client.apply_async(ECHO, (7,), callback=got.append).wait(10)
    client.apply_async(SLEEP, (-1,), error_callback=errs.append).wait(10)
    wait_until(lambda: got == [7] and len(errs) == 1, 5, message="callbacks not called")
    assert isinstance(errs[0], ValueError)


def test_imap_keeps_order_and_imap_unordered_yields_as_finished(client: Client) -> None:
    assert list(client.imap(SLEEP, [0.2, 0.0, 0.1], timeout=10)) == [0.2, 0.0, 0.1]
    assert next(iter(client.imap_unordered(SLEEP, [0.3, 0.0], timeout=10))) == 0.0
    assert list(client.imap(ECHO, range(200), chunksize=16)) == list(range(200))
    with pytest.raises(ValueError):
        list(client.imap(SLEEP, [0, -1]))


def test_terminate_fails_pending_futures_with_client_closed(shared_daemon: Daemon) -> None:
    c = Client(shared_daemon.intake)
    fut = c.submit(SLEEP, 5)
    wait_until(fut.running, 5, message="the task never left the client")
    c.terminate()
    with pytest.raises(ClientClosed):
        fut.result(5)
    with pytest.raises(RuntimeError, match="closed"):
        c.submit(ECHO, 1)


def test_a_lone_future_waited_on_from_many_threads(client: Client) -> None:
    """Several threads each wait on their own future at once (some drive
    the socket, others wait on the I/O thread): all get their result."""
    out: dict[int, Any] = {}

    def one(i: int) -> None:
        for j in range(50):
            out[i * 100 + j] = client.submit(ECHO, i * 100 + j).result(10)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {k: k for k in out} and len(out) == 200


# ------------------------------------------------------------------ tuples
TUPLES = "workers.testing:as_tuples"


def test_a_tuple_a_task_returns_comes_back_a_tuple(client: Client) -> None:
    """As with multiprocessing: ``(1, 2)`` returned is ``(1, 2)`` received,
    and so are the tuples inside it, at any depth, empty or holding
    anything; from call, submit and map (chunked too)."""
    sent = [1, [2, [3, []]], {"k": "v"}, [b"\x00", None, 1.5]]
    want = (1, (2, (3, ())), {"k": "v"}, (b"\x00", None, 1.5))
    got = client.call(TUPLES, sent)
    assert got == want and type(got[1][1]) is tuple
    back = client.submit(TUPLES, [[1, 2], [3]]).result(10)
    assert back == ((1, 2), (3,)) and type(back[0]) is tuple
    assert client.map(TUPLES, [[i, i] for i in range(20)], chunksize=6, timeout=10) == [
        (i, i) for i in range(20)]
    assert client.call(ECHO, [1, [2]]) == [1, [2]]  # no tuple, nothing changes


def test_a_tuple_inside_a_list_or_dict_arrives_as_a_list(client: Client) -> None:
    """The documented limit (supervisor/payload/tuples.py: walking every
    list and dict of every result would cost all results)."""
    assert client.call(TUPLES, {"k": [1, 2]}) == {"k": [1, 2]}
    assert client.call(TUPLES, [{"pairs": [[1, 2]]}]) == ({"pairs": [[1, 2]]},)


def test_tuples_nested_too_deep_fail_that_result_only(client: Client) -> None:
    """Each tuple level is one more decode call on the client's I/O thread:
    past tuples.MAX_DEPTH the result fails Unserializable in the worker."""
    from supervisor.payload.tuples import MAX_DEPTH

    def deep(n: int) -> Any:
        v: Any = []
        for _ in range(n):
            v = [v]
        return v

    assert client.call(TUPLES, deep(MAX_DEPTH - 1)) is not None
    with pytest.raises(TaskError) as info:
        client.call(TUPLES, deep(MAX_DEPTH + 1))
    assert info.value.type == "Unserializable" and "tuples nested deeper" in info.value.message
    assert client.call(ECHO, 1) == 1


def test_arrays_inside_a_returned_tuple_come_back_as_arrays(client: Client) -> None:
    """Big ones through shared memory (a local client), small ones inline,
    both inside the tuple's extension value."""
    np = pytest.importorskip("numpy")
    big, small = np.arange(300_000, dtype=np.float64), np.arange(3, dtype=np.int8)
    got = client.call(TUPLES, [big, [small, "s"]])
    assert type(got) is tuple and type(got[1]) is tuple and got[1][1] == "s"
    for back, sent in ((got[0], big), (got[1][0], small)):
        assert back.dtype == sent.dtype and np.array_equal(back, sent)


# ------------------------------------------------------------ broken I/O
def test_a_bug_inside_the_clients_io_fails_every_future_loudly(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net for the client's own bugs: an unexpected exception
    while handling results (injected here, standing in for any bug) fails
    every pending future with ClientBroken naming the cause, later calls
    raise it at once, and terminate() does not hang. Never a silent hang."""
    from supervisor.client import ClientBroken
    from supervisor.client import results as client_results

    def bug(engine: object, results: object) -> None:
        raise RuntimeError("injected bug in result handling")

    monkeypatch.setattr(client_results, "on_results", bug)
    c = Client(daemon.intake)
    try:
        futures = [c.submit(ECHO, i) for i in range(5)]
        for fut in futures:
            err = fut.exception(timeout=30)
            assert isinstance(err, ClientBroken), err
            assert "injected bug" in str(err)
            assert isinstance(err.__cause__, RuntimeError)
        with pytest.raises(ClientBroken):
            c.submit(ECHO, 1)
    finally:
        closed = threading.Event()
        closer = threading.Thread(target=lambda: (c.terminate(), closed.set()), daemon=True)
        closer.start()
        assert closed.wait(10), "terminate() hung on a broken client"


def test_a_terminate_landing_mid_step_still_fails_every_pending_future(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """terminate() sets the stop flag from another thread; when it lands
    while the I/O thread is inside a step (past the step's own check), the
    thread ends at the next check. Every pending future must still end in
    ClientClosed (the race once left them waiting forever). The flag is set
    from inside the step here, which is where the race put it."""
    from supervisor.client import ClientClosed, heartbeat

    real = heartbeat.tend
    armed = threading.Event()
    fired = threading.Event()

    def tend(engine: Any, now: float) -> float | None:
        if armed.is_set() and threading.current_thread() is engine.thread:
            engine.stop = True  # as terminate() would, a moment too late for the check
            fired.set()
        return real(engine, now)

    monkeypatch.setattr(heartbeat, "tend", tend)
    c = Client(daemon.intake)
    try:
        futures = [c.submit(SLEEP, 3) for _ in range(3)]
        futures[0].done()  # someone watches: the I/O thread holds the work
        armed.set()
        # The I/O thread must step now, not when the results come: one more
        # task wakes it (with others pending, it is the one to send), and
        # nobody waits on a future (which would step in the caller) before.
        futures.append(c.submit(SLEEP, 3))
        assert fired.wait(10), "the I/O thread did not step"
        for fut in futures:
            err = fut.exception(timeout=30)
            assert isinstance(err, ClientClosed), err
    finally:
        c.terminate()
