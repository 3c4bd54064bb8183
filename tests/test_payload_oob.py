"""Arrays leave a pickle out of band and take the array lanes (payload/oob.py).

First in-process, with the real client and worker codecs; then end to end
through a private Pool, the one place pickle travels.
"""

from __future__ import annotations

import mmap
import os
import pickle
from typing import Any

import msgspec
import pytest

from supervisor import Pool, payload
from supervisor.payload import oob
from supervisor.payload.shm import SHM_DIR
from tests import pool_tasks
from tests.conftest import wait_until

np = pytest.importorskip("numpy")


def test_arrays_leave_the_pickle_and_come_back_equal() -> None:
    big = np.arange(1_000_000, dtype=np.float64)
    call = ("f", [big, {"k": big[::2].copy()}], np.arange(3).astype("<M8[s]"))
    blob, buffers = oob.dumps(call)
    assert len(blob) < 10_000 < len(pickle.dumps(call))  # the bytes are not in the pickle
    assert all(isinstance(b, np.ndarray) and b.dtype == np.uint8 for b in buffers)
    # Through the real codecs: the client's encoder, the worker's decoder.
    wire = msgspec.msgpack.Encoder(enc_hook=payload.enc_hook).encode([blob, *buffers])
    got_blob, *got_buffers = msgspec.msgpack.Decoder(
        ext_hook=payload.worker_ext_hook).decode(wire)
    name, parts, stamps = oob.loads(got_blob, got_buffers)
    assert name == "f" and np.array_equal(parts[0], big)
    assert np.array_equal(parts[1]["k"], big[::2]) and parts[0].dtype == np.float64
    assert np.array_equal(stamps, np.arange(3).astype("<M8[s]"))


def test_nothing_to_take_out_gives_no_buffers() -> None:
    blob, buffers = oob.dumps({"a": [1, 2.5, "x"]})
    assert buffers == [] and oob.loads(blob, buffers) == {"a": [1, 2.5, "x"]}


def test_small_buffers_stay_in_the_pickle() -> None:
    blob, buffers = oob.dumps([np.arange(10), np.zeros(oob.MIN_BYTES // 8)])
    assert len(buffers) == 1 and buffers[0].nbytes == oob.MIN_BYTES
    small, big = oob.loads(blob, buffers)
    assert small.tolist() == list(range(10)) and not big.any()


# --------------------------------------------------------- a private Pool, end to end
BIG = 300_000  # float64s: 2.4 MB, over oob.MIN_BYTES and payload.SHM_MIN_BYTES


def _arrays() -> dict[str, Any]:
    """Every shape of array a caller may pass: out of band (contiguous, C or
    Fortran order, any plain dtype, big-endian), in band (small, strided,
    object dtype), 0-d and empty."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal(BIG)
    return {
        "float64": base,
        "fortran_int16": np.asfortranarray(
            rng.integers(-3000, 3000, size=(600, 500)).astype(np.int16)),
        "strided": base[::3],  # not contiguous: numpy pickles it in band
        "transposed": rng.standard_normal((400, 300)).T,  # Fortran-contiguous view
        "big_endian": np.arange(BIG, dtype=">i4"),
        "datetime": (np.arange(BIG) * 1_000).astype("<M8[ms]"),
        "structured": np.array([(i, float(i) / 3) for i in range(20_000)],
                               dtype=[("k", "<u4"), ("v", "<f8")]),
        "bool": base > 0,
        "small": np.arange(5, dtype=np.uint8),
        "objects": np.array([{"a": 1}, None, "x"], dtype=object),
        "zero_d": np.array(3.5),
        "empty": np.zeros((0, 7), dtype=np.float32),
    }


def _same(got: Any, want: Any) -> bool:
    return bool(type(got) is np.ndarray and got.dtype == want.dtype
                and got.shape == want.shape and np.array_equal(got, want))


def _shm_names() -> set[str]:
    return {n for n in os.listdir(SHM_DIR) if n.startswith("phx-")}


def _mapped(arr: Any) -> bool:
    """Whether ``arr`` is a view on a shared-memory mapping (no copy)."""
    while arr is not None:
        if isinstance(arr, mmap.mmap):
            return True
        arr = getattr(arr, "base", getattr(arr, "obj", None))
    return False


def test_a_private_pool_round_trips_every_array_exactly_and_out_of_band() -> None:
    """Arguments and results of apply and map: dtype, shape, order and
    values survive; the big ones travel through shared memory (the client
    made segments for them, and results come back as views on a mapping),
    and no segment is left once the results are read."""
    before = _shm_names()
    arrays = _arrays()
    with Pool(2) as pool:
        made = pool._client._payload.segments
        # Positional, keyword and nested in containers, then returned whole.
        got = pool.apply(pool_tasks.echo_all, (arrays, [arrays["float64"]]),
                         {"extra": (arrays["big_endian"],)})
        assert pool._client._payload.segments > made  # arguments went through shared memory
        (got_arrays, got_list), got_kwds = got
        for name, want in arrays.items():
            assert _same(got_arrays[name], want), name
        assert got_arrays["fortran_int16"].flags.f_contiguous
        assert _same(got_list[0], arrays["float64"])
        assert type(got_kwds["extra"]) is tuple and _same(got_kwds["extra"][0],
                                                          arrays["big_endian"])
        assert _mapped(got_arrays["float64"])  # the result was mapped, not copied
        # map: each item's array and its result, in order.
        items = [arrays["float64"] * k for k in range(6)]
        assert all(_same(g, w * 2) for g, w in zip(pool.map(pool_tasks.twice, items,
                                                             chunksize=2), items, strict=True))
    wait_until(lambda: _shm_names() <= before, 10,
               message=lambda: f"left in {SHM_DIR}: {_shm_names() - before}")


def test_an_array_a_task_writes_to_is_not_changed_for_the_caller() -> None:
    """Out-of-band arguments are the caller's bytes mapped copy-on-write:
    the task may write to its argument, the caller's array stays as it was."""
    arr = np.ones(BIG)
    with Pool(1) as pool:
        out = pool.apply(pool_tasks.double_in_place, (arr,))
    assert (out == 2).all() and (arr == 1).all()
