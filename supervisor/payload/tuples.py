"""Tuples in results: extension type 5, so that a task returning ``(1, 2)``
gives the caller ``(1, 2)``, not ``[1, 2]`` (docs/PROTOCOL.md, 3.2).

MessagePack has one array type, and msgspec encodes a tuple as an array
without asking ``enc_hook``. So a worker wraps a tuple result in an
``Ext(5, <its items as one MessagePack array>)``, and a reader's
``ext_hook`` makes the items a tuple again.

Which tuples: the result itself (each item's result, for a chunk), and the
tuples directly inside a kept tuple, at any depth up to MAX_DEPTH. A tuple
inside a list or a dict still arrives as a list. Why not every tuple:
finding them means walking every list and dict of every result in Python,
measured at 5x the cost of encoding a list of 1,000 ints (which holds no
tuple at all) and 60x for a list of 1,000 pairs (each pair one more encode
call and one more decode call on the client's I/O thread). The rule kept
costs a result that is not a tuple one class check, and a tuple result one
extra encode of its items: ``return a, b`` comes back as it would from
multiprocessing, and no other result pays for it.

Why results only: arguments come from the Python client, which refuses a
tuple argument (it would arrive as a list; ``starmap`` covers argument
tuples) and stays as it is on its hot path. A worker still reads ext 5 in
arguments, from a client in another language that sends one.

Each nested level is one more decode call on the reader's stack (its I/O
thread), so the depth is bounded here, where it fails only that result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from supervisor.payload import layout

MAX_DEPTH = 32


class TooDeep(ValueError):
    """Tuples nested deeper than MAX_DEPTH: the worker reports the result
    as Unserializable, with this message."""


def mark(value: Any, encode: Callable[[Any], bytes]) -> Any:
    """``value`` as an ext 5 if it is a tuple (its tuple items too), else
    ``value`` itself."""
    if value.__class__ is not tuple:
        return value
    return _mark(value, encode, 0)


def mark_chunk(outcomes: list[Any], encode: Callable[[Any], bytes]) -> list[Any]:
    """A chunk's ``[[ok, value], ...]`` with each successful value marked."""
    return [[True, _mark(o[1], encode, 0)] if o[0] and o[1].__class__ is tuple else o
            for o in outcomes]


def _mark(v: tuple[Any, ...], encode: Callable[[Any], bytes], depth: int) -> msgspec.msgpack.Ext:
    if depth >= MAX_DEPTH:
        raise TooDeep(f"tuples nested deeper than {MAX_DEPTH} levels")
    items = [_mark(x, encode, depth + 1) if x.__class__ is tuple else x for x in v]
    return msgspec.msgpack.Ext(layout.TUPLE, encode(items))


def unmark(data: memoryview, ext_hook: Callable[[int, memoryview], Any]) -> tuple[Any, ...]:
    """An ext 5's data back into a tuple (nested ones through ``ext_hook``)."""
    items = msgspec.msgpack.decode(data, ext_hook=ext_hook)
    if items.__class__ is not list:
        raise msgspec.DecodeError("extension type 5 must hold an array")
    return tuple(items)
