"""numpy arrays as MessagePack extension values (layout.py has the bytes).

numpy is imported only when an array actually travels: a daemon or client
without numpy installed never imports it, and an ``ndarray`` can only reach
these functions from a process that already has numpy loaded.

Decoding is one ``memcpy`` (inline) or one ``mmap`` (shared memory), never
per-element work. Arrays arrive C-contiguous, writable and owned by the
receiver, as they would from pickle; a Fortran-ordered or strided array is
copied to C order before it is sent (its order is not kept).
"""

from __future__ import annotations

import ast
from typing import Any

from supervisor.payload import layout, shm


def is_numpy(obj: object) -> bool:
    return type(obj).__module__ == "numpy"


def dtype_text(dtype: Any) -> str:
    """The dtype as text numpy reads back: ``str`` for plain dtypes
    (``<f8``, ``<M8[ns]``, ``<U3``), the ``descr`` list for structured ones."""
    if dtype.hasobject:
        raise TypeError(f"numpy dtype {dtype} holds Python objects; only plain-data dtypes "
                        "travel on the MessagePack lane (use a private Pool for objects)")
    if dtype.fields is not None:
        return repr(dtype.descr)
    return str(dtype.str)


def parse_dtype(text: str) -> Any:
    import numpy as np

    try:
        if text.startswith("["):
            dtype = np.dtype(ast.literal_eval(text))  # literals only: never code
        else:
            dtype = np.dtype(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise layout.LayoutError(f"not a numpy dtype: {text!r} ({exc})") from None
    if dtype.hasobject:
        raise layout.LayoutError(f"numpy dtype {text!r} holds Python objects")
    return dtype


def contiguous(arr: Any) -> Any:
    import numpy as np

    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def header(arr: Any) -> bytes:
    return layout.pack_header(dtype_text(arr.dtype), tuple(arr.shape))


def raw_bytes(arr: Any) -> Any:
    """A C-contiguous array's bytes as a uint8 array (a view, no copy).

    Not ``memoryview(arr)``: numpy exports no buffer for datetime64 and
    timedelta64, so every dtype goes through one uint8 view instead."""
    import numpy as np

    return arr.reshape(-1).view(np.uint8)


def encode_inline(arr: Any) -> bytes:
    arr = contiguous(arr)
    return b"".join((header(arr), raw_bytes(arr)))  # one copy


def _check_size(dtype: Any, shape: tuple[int, ...], nbytes: int) -> None:
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != nbytes:
        raise layout.LayoutError(
            f"array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} bytes, "
            f"got {nbytes}")


def decode_inline(data: memoryview) -> Any:
    import numpy as np

    text, shape, pos = layout.unpack_header(data)
    dtype = parse_dtype(text)
    body = data[pos:]
    _check_size(dtype, shape, len(body))
    out = np.empty(shape, dtype)
    if body:
        raw_bytes(out)[:] = np.frombuffer(body, np.uint8)  # one memcpy; the array owns it
    return out


def into_segment(arr: Any, kind: str, track: bool) -> tuple[str, bytes]:
    """Copy ``arr`` into a new segment; (name, extension bytes)."""
    arr = contiguous(arr)
    name = shm.create(kind, memoryview(raw_bytes(arr)), track)
    return name, layout.pack_shm(header(arr), name, arr.nbytes)


def decode_shm(data: memoryview, take: bool) -> Any:
    import numpy as np

    text, shape, pos = layout.unpack_header(data)
    dtype = parse_dtype(text)
    name, nbytes = layout.unpack_shm(data, pos)
    _check_size(dtype, shape, nbytes)
    if nbytes == 0:
        raise layout.LayoutError("a shared-memory array cannot be empty")
    mm = shm.open_segment(name, nbytes, take=take)
    return np.frombuffer(mm, dtype=dtype).reshape(shape)
