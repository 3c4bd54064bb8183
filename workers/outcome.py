"""Turning what a task did into bytes the daemon can always read.

Whatever a worker sends must decode in the daemon, or the daemon cannot
tell one task's answer from garbage and has to kill the worker (charging
a task that did nothing wrong). So every outcome is checked here, in the
worker, against the daemon's limits before it leaves:

* size: a result's encoded bytes at most ``max_result_bytes`` (TooLarge);
  an error map is cut to ERROR_TEXT_CHARS of message and TRACEBACK_CHARS
  of traceback, so a failure is never bigger than ERROR_MAX_BYTES;
* nesting: at most protocol.MAX_NESTING levels (Unserializable). The
  daemon decodes a result's bytes only to find where they end, but msgspec
  still refuses nesting deeper than its recursion budget; MAX_NESTING sits
  well inside the daemon's budget;
* text: an exception whose ``str()`` raises (or returns something odd)
  still yields a readable message.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import msgspec

from supervisor.protocol import MAX_NESTING, encoder, error_map

ERROR_TEXT_CHARS = 4000
TRACEBACK_CHARS = 8000
# UTF-8 is at most 4 bytes a character; plus the map's keys and type name.
ERROR_MAX_BYTES = 4 * (ERROR_TEXT_CHARS + TRACEBACK_CHARS) + 1024

# Decoding into Raw makes msgspec walk the value without building objects:
# the same walk, with the same recursion checks, the daemon's decoder does.
_walker = msgspec.msgpack.Decoder(msgspec.Raw)


def _clip(text: str, limit: int, keep_tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep_tail:  # a traceback's last lines name the error
        return f"[{cut} characters cut]\n" + text[-limit:]
    return text[:limit] + f" [{cut} characters cut]"


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a fallback naming why there is none."""
    try:
        text = str(exc)
    except Exception as inner:  # noqa: BLE001 - a task's broken __str__ is its own bug
        return f"<{type(exc).__name__} whose str() raised {type(inner).__name__}>"
    if not isinstance(text, str):  # a str subclass with its own surprises
        return f"<{type(exc).__name__} whose str() returned {type(text).__name__}>"
    return text


def _utf8(text: str) -> str:
    """``text`` if it is valid UTF-8 material; else with lone surrogates escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def clipped_map(type_: str, message: str, tb: str | None = None) -> dict[str, Any]:
    """An error map that encodes in at most ERROR_MAX_BYTES."""
    message = _utf8(_clip(message, ERROR_TEXT_CHARS))
    tb = _utf8(_clip(tb, TRACEBACK_CHARS, keep_tail=True)) if tb else None
    return error_map(type_, message, tb)


def failure(type_: str, message: str, tb: str | None = None) -> msgspec.Raw:
    return msgspec.Raw(encoder.encode(clipped_map(type_, message, tb)))


def exception_map(exc: BaseException) -> dict[str, Any]:
    """The error map for an exception a task raised (inside its except block)."""
    try:
        tb: str | None = traceback.format_exc()
    except Exception:  # noqa: BLE001 - formatting calls the task's own __str__/__repr__
        tb = None
    return clipped_map(type(exc).__name__, exception_text(exc), tb)


def exception_failure(exc: BaseException) -> msgspec.Raw:
    return msgspec.Raw(encoder.encode(exception_map(exc)))


def nesting_ok(encoded: bytes) -> bool:
    """Whether ``encoded`` nests at most MAX_NESTING levels.

    Each level costs at least one byte, so only a value longer than
    MAX_NESTING needs the walk. The walk runs with the recursion limit set
    to allow just MAX_NESTING levels beyond this frame (msgspec counts each
    level against it, as it does in the daemon).
    """
    if len(encoded) <= MAX_NESTING:
        return True
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + MAX_NESTING + 1)
    try:
        _walker.decode(encoded)
    except RecursionError:
        return False
    finally:
        sys.setrecursionlimit(old)
    return True


def encode_result(value: Any, max_result_bytes: int,
                  encode: Callable[[Any], bytes] = encoder.encode) -> tuple[bool, msgspec.Raw]:
    """(ok, bytes) for a task's return value: the value, or why it cannot go."""
    try:
        encoded = encode(value)
    except RecursionError:
        return False, failure(
            "Unserializable", f"result: nested deeper than {MAX_NESTING} levels"
        )
    except Exception as exc:  # noqa: BLE001 - anything a value's type raises while encoding
        return False, failure("Unserializable", f"result: {exception_text(exc)}")
    if len(encoded) > max_result_bytes:
        return False, failure(
            "TooLarge", f"result is {len(encoded)} bytes, limit {max_result_bytes}"
        )
    if not nesting_ok(encoded):
        return False, failure(
            "Unserializable", f"result: nested deeper than {MAX_NESTING} levels"
        )
    return True, msgspec.Raw(encoded)
