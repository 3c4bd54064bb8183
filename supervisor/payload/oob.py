"""Arrays out of a pickle, for a private Pool's pickle lane.

A private Pool pickles the call (function, arguments) as one blob. Pickled
the plain way, every numpy array inside is copied into that blob, so a big
array would cross the daemon inside pickle bytes. Pickle protocol 5 lets an
object hand its buffers over *out of band* instead (PEP 574; numpy does for
every contiguous array): ``dumps`` collects them as uint8 arrays, which the
caller passes as separate task arguments, so they take the same lanes as
any array (shared memory from a local client, else inline, never inside
pickle), and ``loads`` rebuilds the objects as views on them, no copy.

    blob, buffers = oob.dumps(call)                  # caller
    client.submit(PICKLE_TASK, main, init, blob, *buffers)
    call = oob.loads(blob, buffers)                  # worker (and back for results)

cloudpickle's ``dumps`` takes the same arguments: pass it as ``dumps_fn``.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any

PROTOCOL = 5  # the first with out-of-band buffers
# Smaller buffers stay inside the pickle: one more task argument (an
# extension header to write and parse) costs more than copying them.
MIN_BYTES = 64 * 1024


def dumps(obj: Any, dumps_fn: Callable[..., bytes] = pickle.dumps,
          min_bytes: int = MIN_BYTES) -> tuple[bytes, list[Any]]:
    """(pickle without the buffers, the buffers as uint8 arrays or bytes).

    Buffers under ``min_bytes`` stay in band. An array numpy cannot hand
    over whole (not contiguous: a strided view) is pickled in band too, by
    numpy itself, so every array comes back equal whichever way it went."""
    buffers: list[pickle.PickleBuffer] = []

    def take(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes < min_bytes:
            return True  # true: serialise it in band
        buffers.append(buf)
        return False

    blob = dumps_fn(obj, protocol=PROTOCOL, buffer_callback=take)
    return bytes(blob), [_portable(b) for b in buffers]


def loads(blob: bytes, buffers: Sequence[Any]) -> Any:
    """Rebuild what ``dumps`` split; arrays become views on ``buffers``."""
    return pickle.loads(blob, buffers=buffers)


def _portable(buf: pickle.PickleBuffer) -> Any:
    raw = buf.raw()  # contiguous bytes view, whatever the array's dtype
    if "numpy" in sys.modules:
        import numpy as np

        return np.frombuffer(raw, dtype=np.uint8)  # travels as an array (ext 1 or 2)
    return raw.tobytes()  # only numpy makes buffers in practice; bin otherwise
