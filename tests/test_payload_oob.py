"""Arrays leave a pickle out of band and take the array lanes (payload/oob.py).

In-process on purpose: a configured daemon never runs pickle, and the
private Pool that does is tested with its own lane; here the encoders are
the real client and worker codecs.
"""

from __future__ import annotations

import pickle

import msgspec
import pytest

from supervisor import payload
from supervisor.payload import oob

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
