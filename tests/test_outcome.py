"""What a worker may send (workers/outcome.py): in-process, no daemon.

The limits are the daemon's: a result nested MAX_NESTING deep must decode
with the daemon's own decoder from a stack well deeper than its loop's,
and anything deeper is refused in the worker, never sent.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from supervisor.protocol import MAX_NESTING, Batch, Done, encoder, worker_decoder
from workers import outcome
from workers.builtin import TaskFailure
from workers.testing import nested


def on_fresh_stack(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a new thread: a stack as shallow as a worker's or the
    daemon's loop, not pytest's (msgspec's depth budget is the recursion
    limit minus the stack in use)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(30)
    assert out, "raised or timed out"
    return out[0]


def test_nesting_limit_is_exact() -> None:
    assert on_fresh_stack(lambda: outcome.encode_result(nested(MAX_NESTING), 1 << 20))[0]
    assert on_fresh_stack(lambda: outcome.encode_result({"k": nested(MAX_NESTING - 1)}, 1 << 20))[0]
    ok, raw = on_fresh_stack(lambda: outcome.encode_result(nested(MAX_NESTING + 1), 1 << 20))
    assert not ok
    assert msgspec.msgpack.decode(raw)["type"] == "Unserializable"


def _at_depth(frames: int, fn: Callable[[], Any]) -> Any:
    return _at_depth(frames - 1, fn) if frames else fn()


def test_the_daemons_decoder_reads_the_deepest_allowed_result_with_stack_to_spare() -> None:
    """MAX_NESTING leaves the daemon 80 frames of its own stack (its loop
    runs ~20 deep) under the default recursion limit of 1000."""
    ok, raw = on_fresh_stack(lambda: outcome.encode_result(nested(MAX_NESTING), 1 << 20))
    frame = encoder.encode(Batch([Done(1, ok, raw)]))
    assert sys.getrecursionlimit() == 1000
    msg = on_fresh_stack(lambda: _at_depth(80, lambda: worker_decoder.decode(frame)))
    assert isinstance(msg, Batch) and msg.done[0].ok


def test_failure_text_is_clipped_and_always_encodes() -> None:
    raw = outcome.failure("X", "m" * 100_000, "t" * 100_000)
    assert len(raw) <= outcome.ERROR_MAX_BYTES
    error = msgspec.msgpack.decode(raw)
    assert error["message"].endswith("characters cut]")
    assert error["traceback"].startswith("[") and error["traceback"].endswith("t")
    lone = msgspec.msgpack.decode(outcome.failure("X", "bad \ud800 text"))
    assert lone["message"] == "bad \\ud800 text"


def test_an_exception_whose_str_raises_gets_a_fallback_message() -> None:
    class Broken(TaskFailure):
        def __str__(self) -> str:
            raise ValueError("nope")

    try:
        raise Broken()
    except Broken as exc:
        error = outcome.exception_map(exc)
    assert error["type"] == "Broken"
    assert error["message"] == "<Broken whose str() raised ValueError>"
