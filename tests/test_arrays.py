"""numpy arrays travel without pickle, both ways, on both lanes.

Two daemons per module: ``local`` is reached over its ipc intake (same host,
same user), so arrays of at least SHM_MIN_BYTES go through shared memory;
``remote`` is reached over loopback TCP, as a client on another host would,
so every array travels inline in the MessagePack message, under the
daemon's own size limits. Shared-memory lifetimes are checked in
/dev/shm itself: after every test no segment of ours is left.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from supervisor.client import Client
from supervisor.payload import SHM_MIN_BYTES
from supervisor.payload.shm import SHM_DIR
from tests.conftest import Daemon, _factory, _teardown_all, free_tcp_port, short_tempdir

ALLOW = {"tasks": {"allow": ["workers.builtin", "workers.arrays"]}}
BIG = SHM_MIN_BYTES * 4  # bytes: well over the shared-memory threshold


def segments() -> set[str]:
    return {n for n in os.listdir(SHM_DIR) if re.fullmatch(r"phx-[ar]\d+-[0-9a-f]{16}", n)}


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Daemon]]:
    path = short_tempdir()
    start, started = _factory(path, tmp_path_factory.mktemp("phalanxd"))
    try:
        local = start(ALLOW)
        remote = start(ALLOW, endpoints={"intake": f"tcp://127.0.0.1:{free_tcp_port()}"})
        yield {"local": local, "remote": remote}
    finally:
        try:
            _teardown_all(started)
        finally:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def clients(daemons: dict[str, Daemon]) -> Iterator[dict[str, Client]]:
    out = {lane: Client(d.intake) for lane, d in daemons.items()}
    yield out
    for c in out.values():
        c.terminate()


@pytest.fixture(autouse=True)
def no_segment_left() -> Iterator[None]:
    before = segments()
    yield
    from tests.conftest import wait_until

    wait_until(lambda: not (segments() - before), 10,
               message=lambda: f"shared-memory segments left: {sorted(segments() - before)}")


def same(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes())


SAMPLES = {
    "bool": np.array([True, False, True]),
    "int8": np.arange(-5, 5, dtype=np.int8),
    "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "int32-big-endian": np.arange(6, dtype=">i4"),
    "float16": np.linspace(0, 1, 7, dtype=np.float16),
    "float64-nan-inf": np.array([np.nan, np.inf, -0.0, 1e-300]),
    "complex128": np.array([1 + 2j, -3.5j]),
    "datetime64[ns]": np.array(["2026-01-01T00:00:00.123456789", "NaT"], dtype="M8[ns]"),
    "timedelta64[s]": np.array([1, -2], dtype="m8[s]"),
    "unicode": np.array(["phalanx", "µ", ""]),
    "bytes": np.array([b"a\x00b", b""]),
    "structured": np.array([(1, 2.5, "x")], dtype=[("a", "<i4"), ("b", "<f8"), ("c", "<U2")]),
    "0-d": np.array(42.0),
    "empty-2d": np.zeros((0, 3), dtype=np.int16),
    "3-d": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    "strided": np.arange(20)[::3],
    "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
    "transposed": np.arange(12.0).reshape(3, 4).T,
}


@pytest.mark.parametrize("lane", ["local", "remote"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_array_round_trips_exactly(clients: dict[str, Client], lane: str, name: str) -> None:
    """Argument to the worker and result back: same dtype, shape and bytes,
    C-contiguous and writable on arrival (Fortran order is not kept)."""
    arr = SAMPLES[name]
    got = clients[lane].call("workers.arrays:roundtrip", arr)
    assert same(got, arr.copy(order="C"))
    assert got.flags.c_contiguous and got.flags.writeable
    seen = clients[lane].call("workers.arrays:describe", arr)
    assert seen == [arr.dtype.str, list(arr.shape), True, True]


@pytest.mark.parametrize("lane", ["local", "remote"])
def test_numpy_scalars_stay_scalars(clients: dict[str, Client], lane: str) -> None:
    c = clients[lane]
    for value in (np.float32(1.5), np.int64(-7), np.bool_(True), np.complex64(1j),
                  np.datetime64("2026-12-01")):
        got = c.call("workers.builtin:echo", value)
        assert type(got) is type(value) and got == value
    assert c.call("workers.arrays:scalar", 2.5) == np.float32(2.5)
    assert type(c.call("workers.arrays:scalar", 2.5)) is np.float32


@pytest.mark.parametrize("lane", ["local", "remote"])
def test_arrays_inside_containers_and_chunks(clients: dict[str, Client], lane: str) -> None:
    c = clients[lane]
    nested = {"a": [np.arange(3), [np.ones(2, np.uint8)]]}
    got = c.call("workers.builtin:echo", nested)
    assert same(got["a"][0], np.arange(3)) and same(got["a"][1][0], np.ones(2, np.uint8))
    parts = [np.full(5, i, dtype=np.int32) for i in range(200)]
    assert c.map("workers.arrays:total", parts, chunksize=16) == [5.0 * i for i in range(200)]
    doubled = c.map("workers.arrays:double", parts[:10])
    assert all(same(d, p * 2) for d, p in zip(doubled, parts[:10], strict=True))


def test_big_array_goes_through_shared_memory_both_ways(clients: dict[str, Client],
                                                        daemons: dict[str, Daemon]) -> None:
    """32 MiB each way, twice the daemon's 16 MiB message limit: only a
    reference crossed the daemon. The client's argument segment is unlinked
    when the result arrives, the worker's result segment when it is read."""
    limit = daemons["local"].config.get("tasks", {}).get("max_message_bytes", 16 * 1024 * 1024)
    arr = np.random.default_rng(1).standard_normal(32 * 1024 * 1024 // 8)
    assert arr.nbytes > limit
    c = clients["local"]
    got = c.submit("workers.arrays:double", arr).result(timeout=30)
    assert np.array_equal(got, arr * 2) and got.flags.writeable
    got[0] = 1.0  # the client owns the mapping: writing is fine
    made = c.call("workers.arrays:zeros", BIG // 8)
    assert made.shape == (BIG // 8,) and not made.any()
    f_big = np.asfortranarray(np.arange(BIG // 8, dtype=np.float64).reshape(-1, 2))
    assert same(c.call("workers.arrays:roundtrip", f_big), f_big.copy(order="C"))
    assert c.call("workers.arrays:total", arr=arr) == pytest.approx(float(arr.sum()))


def test_inline_arrays_are_bounded_by_the_message_limit(daemons: dict[str, Daemon]) -> None:
    """Without shared memory an array is in the message, and the daemon's
    max_message_bytes refuses an oversized one with a named error, unread."""
    from supervisor.client.wire import encoder

    arr = np.zeros(20 * 1024 * 1024 // 8)
    peer = daemons["remote"].raw()
    peer.send(encoder.encode({"op": "submit", "ref": 7, "tasks": [
        {"task": "workers.arrays:total", "id": "big", "args": [arr]}]}))
    reply = peer.recv(timeout=30)
    assert reply["op"] == "error" and reply["error"]["type"] == "TooLarge"
    c = Client(daemons["remote"].intake)
    try:
        assert c.call("workers.arrays:total", np.ones(BIG // 8)) == BIG // 8  # under the limit
    finally:
        c.terminate()


def test_retry_after_worker_death_reads_the_original_argument(
        clients: dict[str, Client], tmp_path: Path) -> None:
    """The task doubles its shared-memory argument in place and is SIGKILLed;
    the retry must see the original (workers map arguments copy-on-write)."""
    arr = np.arange(BIG // 8, dtype=np.float64)
    marker = str(tmp_path / "died-once")
    got = clients["local"].submit("workers.arrays:double_then_die", arr, marker).result(timeout=60)
    assert os.path.exists(marker)
    assert np.array_equal(got, arr * 2)


@pytest.mark.parametrize("lane", ["local", "remote"])
def test_pandas_and_object_arrays_fail_clearly(clients: dict[str, Client], lane: str) -> None:
    pd = pytest.importorskip("pandas")
    c = clients[lane]
    # Refused at submit, before anything is sent (the client's type policy).
    with pytest.raises(TypeError, match="pandas DataFrame cannot travel on the MessagePack lane"):
        c.submit("workers.builtin:echo", pd.DataFrame({"a": [1, 2]}))
    with pytest.raises(TypeError, match="Python objects"):
        c.submit("workers.builtin:echo", np.array([object()]))
    for subclass in (np.ma.masked_array([1, 2], mask=[0, 1]),):
        with pytest.raises(TypeError, match="is unsupported"):  # would lose its mask
            c.submit("workers.builtin:echo", subclass)
    assert same(c.call("workers.arrays:roundtrip", np.arange(3)), np.arange(3))  # still serving


def test_malformed_array_extensions_are_bad_requests(daemons: dict[str, Daemon]) -> None:
    """Hand-made extension bytes a worker cannot trust: each is refused as
    BadRequest and the workers keep serving."""
    ext = msgspec.msgpack.Ext
    header = b"\x00\x03<f8\x01" + (2).to_bytes(8, "big")
    bad = {
        "short": ext(1, header + b"\x00" * 8),
        "object-dtype": ext(1, b"\x00\x03|O8\x01" + (1).to_bytes(8, "big") + b"\x00" * 8),
        "garbage": ext(1, b"\xff"),
        "foreign-path": ext(2, header + b"\x0b../../x/etc" + (16).to_bytes(8, "big")),
        "missing-segment": ext(2, header + b"\x1aphx-a1-0123456789abcdef\x00\x00"
                               + (16).to_bytes(8, "big")),
    }
    peer = daemons["remote"].raw()
    peer.send_msg({"op": "submit", "tasks": [
        {"task": "workers.arrays:roundtrip", "id": name, "args": [value]}
        for name, value in bad.items()]})
    got = peer.results_for(set(bad), timeout=20)
    for name, res in got.items():
        assert not res["ok"] and res["error"]["type"] == "BadRequest", (name, res)
    good = Client(daemons["remote"].intake)
    try:
        assert same(good.call("workers.arrays:roundtrip", np.arange(4)), np.arange(4))
    finally:
        good.terminate()


def test_subscribers_decode_inline_arrays_and_keep_references(
        daemons: dict[str, Daemon], clients: dict[str, Client]) -> None:
    """A published result holds the same array bytes; a shared-memory
    result is published as its reference, which a subscriber must not take."""
    c = clients["local"]
    sub = daemons["local"].subscribe("result.workers.arrays:roundtrip", client=c)
    small, big = np.arange(5), np.zeros(BIG // 8)
    assert same(c.call("workers.arrays:roundtrip", small), small)
    assert same(c.call("workers.arrays:roundtrip", big), big)
    sub.fence(c)
    values = [r["value"] for r in sub.results()]
    assert any(isinstance(v, np.ndarray) and same(v, small) for v in values), values
    refs = [v for v in values if isinstance(v, msgspec.msgpack.Ext)]
    assert len(refs) == 1 and refs[0].code == 2
