"""Which Python values travel on the MessagePack lane, and how.

A value either comes back from a worker as the same type and value, or
the client refuses it at ``submit``/``map`` with a TypeError that names the
type and what is supported. Nothing is converted silently: MessagePack has
no tuple, set, Decimal or naive datetime, and msgspec's defaults would
otherwise turn them into lists and strings on the way.

=====================  =============================================
Python                 travels as
=====================  =============================================
None, bool, int,       nil, bool, int (64-bit), float64, str, bin
float, str, bytes
list                   array (elements checked)
dict                   map; keys str, int or bytes (values checked)
datetime, tz-aware     timestamp extension; comes back as the same
                       instant with ``tzinfo=UTC``
extensions             whatever ``register_extension`` added
=====================  =============================================

Results are encoded by the worker, with the same table plus one row: a
tuple the task returns travels as extension type 5 and comes back a tuple,
and so do the tuples inside it; a tuple inside a returned list or dict
arrives as a list (supervisor/payload/tuples.py says why). Sets and the
other refused types arrive as the worker's msgspec makes them.

Refused as arguments (with the reason in the message): tuple, set, frozenset, naive
datetime, date, time, timedelta, Decimal, UUID, Enum members, dataclasses,
msgspec Structs, bytearray, memoryview, subclasses of the types above, and
any other object. Convert them yourself (``list(t)``, ``str(d)``, ...) so
that what the task receives is what you decided it receives.

The hook for new types is one place: ``register_extension`` (a class, an
extension code, and the functions to and from bytes). Both the check and
the encoder consult it; ``ext_hook`` decodes it. A worker that should
receive such a value needs the same registration on its side.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import msgspec

from supervisor import payload
from supervisor.client.wire import TaskOut
from supervisor.payload import layout, tuples

_SCALARS: frozenset[type] = frozenset({type(None), bool, int, float, str, bytes})
_KEYS: frozenset[type] = frozenset({str, int, bytes})
# Top-level arguments that need no walk: scalars, and the token a local
# client appends to every task (payload.LOCAL_WIRE: MessagePack already).
_FLAT: frozenset[type] = _SCALARS | {msgspec.Raw}
SUPPORTED = ("None, bool, int, float, str, bytes, list, dict (str/int/bytes keys), "
             "timezone-aware datetime")

# Why each common type is refused: what it would have become.
_BECOMES: dict[type, str] = {
    tuple: "a list", set: "a list", frozenset: "a list", bytearray: "bytes",
    memoryview: "bytes", datetime.date: "a string", datetime.time: "a string",
    datetime.timedelta: "a string",
}


class _Extension(msgspec.Struct, frozen=True):
    code: int
    to_bytes: Callable[[Any], bytes]
    from_bytes: Callable[[bytes], Any]


_extensions: dict[type, _Extension] = {}
_by_code: dict[int, _Extension] = {}


def register_extension(cls: type, code: int, to_bytes: Callable[[Any], bytes],
                       from_bytes: Callable[[bytes], Any]) -> None:
    """Let instances of ``cls`` travel as MessagePack extension ``code``
    (0-127; the timestamp's -1 is taken)."""
    if not 0 <= code <= 127:
        raise ValueError(f"extension code must be 0..127, got {code}")
    ext = _Extension(code, to_bytes, from_bytes)
    _extensions[cls] = ext
    _by_code[code] = ext


def _why(value: object) -> str:
    t = type(value)
    for base, becomes in _BECOMES.items():
        if isinstance(value, base):
            return f"it would arrive as {becomes}"
    if isinstance(value, datetime.datetime):
        return "a naive datetime has no instant; give it a tzinfo"
    return "it has no exact MessagePack form" if t.__module__ != "builtins" else (
        "it is not one of the supported types")


def refuse(value: object, where: str) -> TypeError:
    t = type(value)
    if t.__module__.partition(".")[0] in ("pandas", "numpy"):
        return TypeError(f"{where}: {payload.refusal(value)}")  # what to send instead
    return TypeError(
        f"{where}: {t.__module__}.{t.__qualname__} cannot be sent to a worker "
        f"({_why(value)}). Supported: {SUPPORTED}"
        + (f", {', '.join(c.__qualname__ for c in _extensions)}" if _extensions else ""))


def check(value: object, where: str = "argument") -> None:
    """Raise TypeError unless ``value`` round-trips exactly (see the table)."""
    t = type(value)
    if t in _SCALARS:
        return
    stack: list[object] = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        t = type(v)
        if t in _SCALARS:
            continue
        if t is list:
            for item in v:  # type: ignore[attr-defined]
                if type(item) not in _SCALARS:
                    push(item)
        elif t is dict:
            for k, item in v.items():  # type: ignore[attr-defined]
                if type(k) not in _KEYS:
                    raise refuse(k, f"{where}: dict key")
                if type(item) not in _SCALARS:
                    push(item)
        elif t is datetime.datetime:
            if v.tzinfo is None or v.utcoffset() is None:  # type: ignore[attr-defined]
                raise refuse(v, where)
        elif t not in _extensions and not payload.travels(v):
            raise refuse(v, where)


def _enc_hook(obj: Any) -> Any:
    ext = _extensions.get(type(obj))
    if ext is None:
        if payload.travels(obj):  # numpy arrays and scalars (supervisor/payload)
            return payload.enc_hook(obj)
        raise refuse(obj, "argument")
    return msgspec.msgpack.Ext(ext.code, ext.to_bytes(obj))


def ext_hook(code: int, data: memoryview) -> Any:
    ext = _by_code.get(code)
    if ext is None:
        if code == layout.TUPLE:  # a tuple the task returned (payload/tuples.py)
            return tuples.unmark(data, ext_hook)
        return payload.client_ext_hook(code, data)  # numpy, or a clear TypeError
    return ext.from_bytes(bytes(data))


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encode_task(task: TaskOut) -> bytes:
    """The one place task arguments become bytes: checked, then encoded."""
    for i, arg in enumerate(task.args):
        if type(arg) not in _FLAT:
            check(arg, f"argument {i}")
    if task.kwargs:
        for key, arg in task.kwargs.items():
            if type(key) is not str:
                raise TypeError(f"keyword names must be str, got {type(key).__qualname__}")
            if type(arg) not in _SCALARS:
                check(arg, f"argument {key!r}")
    return _encoder.encode(task)


def encode_chunk(task: TaskOut) -> bytes:
    """A chunk's args are a list of argument tuples (the envelope)."""
    for n, item in enumerate(task.args):
        if item.__class__ is msgspec.Raw:  # the local-client token after the last item
            continue
        for i, arg in enumerate(item):
            if type(arg) not in _SCALARS:
                check(arg, f"item {n} argument {i}")
    return _encoder.encode(task)
