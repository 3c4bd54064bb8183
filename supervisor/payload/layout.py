"""The bytes of the numpy extension types (docs/PROTOCOL.md, "numpy arrays").

Pure byte layout, no numpy: the header every array extension starts with
is written and read here, so the same code serves the inline and the
shared-memory forms and a reader can check it against the docs line by line.

    header := u16 dtype_len, dtype (ASCII), u8 ndim, ndim x u64 dim
    INLINE (ext 1) / SCALAR (ext 4) := header, raw bytes (C order)
    SHM (ext 2)                     := header, u8 name_len, name, u64 nbytes
    LOCAL (ext 3)                   := no bytes
    TUPLE (ext 5)                   := one MessagePack array (the items)

All integers are big-endian (MessagePack's own byte order); the array's
bytes keep the byte order its dtype string names (``<f8``, ``>i4``, ``|b1``).
"""

from __future__ import annotations

import struct

INLINE = 1  # an ndarray whose bytes follow its header
SHM = 2  # an ndarray whose bytes are in a shared-memory segment on this host
LOCAL = 3  # last element of args: the client reads results through shared memory
SCALAR = 4  # a numpy scalar (np.float32(1.5)): INLINE with ndim 0, decoded as a scalar
TUPLE = 5  # a tuple in a result: its data is one MessagePack array (not numpy; see tuples.py)

MAX_NDIM = 64  # numpy's own limit (NPY_MAXDIMS is 32 in 1.x, 64 in 2.x)
MAX_DTYPE_LEN = 4096  # a structured dtype's description; far above any real one

_U16 = struct.Struct(">H")
_U8 = struct.Struct(">B")
_U64 = struct.Struct(">Q")


class LayoutError(ValueError):
    """Extension bytes that do not follow the layout above."""


def pack_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    raw = dtype.encode("ascii")
    if len(raw) > MAX_DTYPE_LEN:
        raise LayoutError(f"dtype description is {len(raw)} bytes, limit {MAX_DTYPE_LEN}")
    return b"".join((_U16.pack(len(raw)), raw, _U8.pack(len(shape)),
                     struct.pack(f">{len(shape)}Q", *shape)))


def unpack_header(data: memoryview) -> tuple[str, tuple[int, ...], int]:
    """(dtype, shape, offset of what follows the header)."""
    try:
        (dlen,) = _U16.unpack_from(data, 0)
        if dlen > MAX_DTYPE_LEN:
            raise LayoutError(f"dtype description of {dlen} bytes, limit {MAX_DTYPE_LEN}")
        dtype = bytes(data[2:2 + dlen]).decode("ascii")
        if len(dtype) != dlen:
            raise LayoutError("dtype description cut short")
        pos = 2 + dlen
        (ndim,) = _U8.unpack_from(data, pos)
        if ndim > MAX_NDIM:
            raise LayoutError(f"{ndim} dimensions, limit {MAX_NDIM}")
        shape = struct.unpack_from(f">{ndim}Q", data, pos + 1)
    except (struct.error, UnicodeDecodeError) as exc:
        raise LayoutError(f"array header: {exc}") from None
    return dtype, shape, pos + 1 + 8 * ndim


def pack_shm(header: bytes, name: str, nbytes: int) -> bytes:
    raw = name.encode("ascii")
    return b"".join((header, _U8.pack(len(raw)), raw, _U64.pack(nbytes)))


def unpack_shm(data: memoryview, pos: int) -> tuple[str, int]:
    """(segment name, bytes of array data in it) after the header at ``pos``."""
    try:
        (nlen,) = _U8.unpack_from(data, pos)
        name = bytes(data[pos + 1:pos + 1 + nlen]).decode("ascii")
        (nbytes,) = _U64.unpack_from(data, pos + 1 + nlen)
    except (struct.error, UnicodeDecodeError) as exc:
        raise LayoutError(f"shared-memory reference: {exc}") from None
    if len(data) != pos + 1 + nlen + 8:
        raise LayoutError("shared-memory reference has trailing bytes")
    return name, nbytes
