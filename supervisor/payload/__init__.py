"""Payload encodings shared by the client and the workers: numpy without pickle.

    client                         phalanxd                  worker
    ndarray --enc_hook--> ext 1 (inline bytes) ----Raw----> ext_hook --> ndarray
    big ndarray -> segment, ext 2 (reference) --Raw----> map segment (copy-on-write)
    args + ext 3 (LOCAL: "I can read your results from shared memory")
    ndarray <--ext_hook-- ext 1 / ext 2 <--------Raw----- encode_result

The daemon never decodes a payload: ``args``, ``kwargs`` and ``value`` stay
``msgspec.Raw`` there, so it needs no numpy and no change, and its limits
(``tasks.max_message_bytes`` on requests and results) apply to inline arrays
as to any other bytes. A shared-memory reference is a few dozen bytes; the
array's own bytes never pass through the daemon (shm.py has the lifetimes).

Which lane carries an array: shared memory when the client reaches the
daemon over an ipc endpoint owned by the same user (same host, same trust)
and the array has at least SHM_MIN_BYTES; inline otherwise. Only arrays
passed directly as an argument or keyword argument (or as a chunk item's
argument) take the shared-memory lane; arrays nested inside other
containers travel inline.

pandas objects are refused on this lane with a TypeError naming the way
out: convert to arrays (``df.to_numpy()``, one array per column) or use a
private Pool, whose channel carries pickle.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from typing import Any

import msgspec

from supervisor.payload import arrays, layout, shm, tuples

__all__ = [
    "SHM_MIN_BYTES", "ClientPayload", "LocalToken", "ShmArg", "client_ext_hook",
    "enc_hook", "encode_result", "split_local", "subscriber_ext_hook", "worker_ext_hook",
]

# Arrays of at least this many bytes go through shared memory when allowed.
SHM_MIN_BYTES = int(os.environ.get("PHALANX_SHM_MIN_BYTES", str(1024 * 1024)))
# A client sends its batch once this many bytes of arrays are in it inline.
FLUSH_BYTES = 1024 * 1024
Ext = msgspec.msgpack.Ext
# The client's side logs through the standard library, as a library should
# (the application configures it), and does not import structlog (and with it
# asyncio) only for this one warning: ~60 ms of a fresh process's first Pool.
log = logging.getLogger("phalanx.payload")


class LocalToken:
    """What ext 3 decodes to in a worker (a local client appends it to a
    task's args as LOCAL_WIRE); stripped before the task runs."""

    __slots__ = ()


LOCAL = LocalToken()
# The token as a client sends it: encoded once, copied verbatim into every
# task (through the encoder's enc_hook it cost a Python call per task).
LOCAL_WIRE = msgspec.Raw(msgspec.msgpack.encode(Ext(layout.LOCAL, b"")))


class ShmArg:
    """An argument array copied into a shared-memory segment.

    The segment lives exactly as long as this object: the client's
    ``TaskOut`` holds it until the task settles, then the finalizer unlinks
    it (and the resource tracker does, should the client die first).
    """

    __slots__ = ("ext", "name", "__weakref__")

    def __init__(self, arr: Any) -> None:
        self.name, data = arrays.into_segment(arr, "a", track=True)
        self.ext = Ext(layout.SHM, data)
        weakref.finalize(self, shm.unlink, self.name, True)


def refusal(obj: object) -> str:
    """Why ``obj`` cannot travel, and what to send instead."""
    return str(_refuse(obj))


def _refuse(obj: object) -> TypeError:
    kind = type(obj)
    if kind.__module__.partition(".")[0] == "pandas":
        return TypeError(
            f"pandas {kind.__name__} cannot travel on the MessagePack lane: send numpy "
            "arrays (df.to_numpy(), or one array per column) or use a private Pool, "
            "which carries pickle")
    return TypeError(f"Encoding objects of type {kind.__module__}.{kind.__qualname__} "
                     "is unsupported")


def travels(obj: Any) -> bool:
    """Whether ``enc_hook`` encodes ``obj`` (a numpy array or scalar, or a
    shared-memory reference ``ClientPayload.prepare`` made)."""
    cls = obj.__class__
    return cls is ShmArg or arrays.is_numpy(obj)


def enc_hook(obj: Any) -> Any:
    """msgspec ``enc_hook``: numpy arrays and scalars as extension values."""
    if obj.__class__ is ShmArg:
        return obj.ext
    if arrays.is_numpy(obj):
        import numpy as np

        if obj.__class__ is np.ndarray:  # a subclass (np.matrix) would lose its class
            return Ext(layout.INLINE, arrays.encode_inline(obj))
        if isinstance(obj, np.generic) and not isinstance(obj, np.object_):
            return Ext(layout.SCALAR, arrays.encode_inline(np.asarray(obj)))
    raise _refuse(obj)


def _decode(code: int, data: memoryview, take: bool) -> Any:
    try:
        if code == layout.INLINE:
            return arrays.decode_inline(data)
        if code == layout.SCALAR:
            return arrays.decode_inline(data)[()]
        if code == layout.SHM:
            return arrays.decode_shm(data, take)
    except (ValueError, TypeError, OverflowError, shm.ShmError) as exc:
        # LayoutError is a ValueError; numpy raises ValueError for shapes it
        # cannot allocate even when they hold no bytes, e.g. (0, 2**63).
        raise msgspec.DecodeError(f"extension type {code}: {exc}") from None
    except ModuleNotFoundError:
        raise msgspec.DecodeError(
            f"extension type {code} is a numpy array and numpy is not installed") from None
    if code == layout.LOCAL and not take:
        return LOCAL
    return Ext(code, bytes(data))  # not ours: handed over as msgspec would


def client_ext_hook(code: int, data: memoryview) -> Any:
    """For results: a shared-memory array's segment is unlinked as it is mapped."""
    if code == layout.TUPLE:
        return tuples.unmark(data, client_ext_hook)
    return _decode(code, data, take=True)


def worker_ext_hook(code: int, data: memoryview) -> Any:
    """For arguments: shared-memory arrays are mapped copy-on-write."""
    if code == layout.TUPLE:
        return tuples.unmark(data, worker_ext_hook)
    return _decode(code, data, take=False)


def subscriber_ext_hook(code: int, data: memoryview) -> Any:
    """For published results: inline arrays only; a shared-memory reference
    is left as an ``Ext`` (its segment is the submitting client's to take)."""
    if code == layout.SHM:
        return Ext(code, bytes(data))
    if code == layout.TUPLE:
        return tuples.unmark(data, subscriber_ext_hook)
    return _decode(code, data, take=True)


def split_local(args: list[Any]) -> tuple[list[Any], bool]:
    """Strip a trailing LOCAL token; True if there was one."""
    if args and args[-1] is LOCAL:
        return args[:-1], True
    return args, False


class _ResultEncoder:
    """A worker's result encoder; with ``local`` big arrays go to segments."""

    def __init__(self) -> None:
        self.segments = shm.ResultSegments()
        self._made: list[str] = []
        self._inline = msgspec.msgpack.Encoder(enc_hook=enc_hook)
        self._local = msgspec.msgpack.Encoder(enc_hook=self._local_hook)

    def _local_hook(self, obj: Any) -> Any:
        if arrays.is_numpy(obj) and getattr(obj, "ndim", 0) != 0 and obj.nbytes >= SHM_MIN_BYTES:
            name, data = arrays.into_segment(obj, "r", track=False)
            self._made.append(name)
            return Ext(layout.SHM, data)
        return enc_hook(obj)

    def encode(self, value: Any, local: bool, chunk: bool = False) -> bytes:
        """A result (``chunk``: a chunk's ``[[ok, value], ...]``): arrays
        as ext 1 or 2, a tuple result as ext 5 (tuples.py)."""
        self.segments.sweep()
        mark = tuples.mark_chunk if chunk else tuples.mark
        if not local or "numpy" not in sys.modules:
            return self._inline.encode(mark(value, self._inline.encode))
        self._made = []
        try:
            out = self._local.encode(mark(value, self._local.encode))
        except shm.ShmError:
            self.segments.discard(self._made)
            # /dev/shm full: try the daemon's lane
            return self._inline.encode(mark(value, self._inline.encode))
        except BaseException:
            self.segments.discard(self._made)
            raise
        for name in self._made:
            self.segments.add(name)
        return out


encode_result = _ResultEncoder().encode


class ClientPayload:
    """What a client does to arguments before encoding them."""

    def __init__(self, endpoints: list[str]) -> None:
        self.local = (os.environ.get("PHALANX_SHM", "1") != "0" and shm.available()
                      and all(_own_ipc(ep) for ep in endpoints))
        self._copied = False  # a segment was filled since flush_now last said so
        self.segments = 0  # shared-memory arguments made so far
        self._inline = 0  # array bytes put in the message since flush_now said so
        self._nd: type | None = None  # numpy.ndarray, once numpy is loaded

    def flush_now(self) -> bool:
        """True once after a task's arrays went to shared memory, or after
        FLUSH_BYTES of arrays went inline: send what is batched now. A
        worker starts on this task while the client copies the next one's
        arrays (a pipeline, not a batch), and a message of arrays stays far
        below the daemon's tasks.max_message_bytes."""
        if self._copied or self._inline >= FLUSH_BYTES:
            self._copied, self._inline = False, 0
            return True
        return False

    def prepare(self, args: Any, kwargs: dict[str, Any] | None, chunk: bool
                ) -> tuple[Any, dict[str, Any] | None]:
        """Big arrays into segments (local clients), plus the LOCAL token.

        On the hot path of every submit: without an ndarray among the
        arguments it costs one class check per argument."""
        nd = self._nd
        if nd is None:
            nd = self._nd = _ndarray()
        if nd is not None:
            if chunk:
                if any(a.__class__ is nd for item in args for a in item):
                    args = [tuple(self._route(a, nd) for a in item) for item in args]
            else:
                for a in args:
                    if a.__class__ is nd:
                        args = tuple(self._route(a, nd) for a in args)
                        break
            if kwargs:
                for v in kwargs.values():
                    if v.__class__ is nd:
                        kwargs = {k: self._route(v, nd) for k, v in kwargs.items()}
                        break
        return ([*args, LOCAL_WIRE] if self.local else args), kwargs

    def _route(self, obj: Any, nd: Any) -> Any:
        if obj.__class__ is not nd or not obj.ndim:
            return obj
        if self.local and obj.nbytes >= SHM_MIN_BYTES and not obj.dtype.hasobject:
            try:
                arg = ShmArg(obj)
            except shm.ShmError as exc:
                # /dev/shm full: the message lane, under the daemon's limits.
                log.warning("shm_unavailable: %s (an array of %d bytes travels inline)",
                            exc, obj.nbytes)
            else:
                self._copied = True
                self.segments += 1
                return arg
        self._inline += obj.nbytes
        return obj


def _ndarray() -> type | None:
    """numpy.ndarray if numpy is loaded (an array can exist only then)."""
    numpy = sys.modules.get("numpy")
    return None if numpy is None else getattr(numpy, "ndarray", None)


def _own_ipc(endpoint: str) -> bool:
    """An ipc endpoint whose socket file belongs to us: the daemon and its
    workers run on this host as this user, so they can map our segments."""
    if not endpoint.startswith("ipc://"):
        return False
    try:
        return os.stat(endpoint[len("ipc://"):]).st_uid == os.getuid()
    except OSError:
        return False
