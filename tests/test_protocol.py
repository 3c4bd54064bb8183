"""Wire-format unit tests (supervisor/protocol.py).

The daemon never re-encodes payloads: args, kwargs and result values are
``msgspec.Raw`` and must travel as the exact bytes a client or worker wrote.
"""

from __future__ import annotations

import struct

import msgspec
import pytest

from supervisor import protocol
from supervisor.protocol import (
    NO_ARGS,
    NO_KWARGS,
    Ack,
    Batch,
    Done,
    Hello,
    Ping,
    Rejected,
    Result,
    Results,
    Submit,
    TaskIn,
    encoder,
    error_map,
    error_raw,
    intake_decoder,
    is_array,
    is_map,
    worker_decoder,
)

enc = msgspec.msgpack.encode
dec = msgspec.msgpack.decode


def raw(b: bytes) -> msgspec.Raw:
    return msgspec.Raw(b)


# One example of every MessagePack container header form, built by hand so
# the test does not depend on which form the encoder happens to choose.
ARRAYS = {
    "fixarray-empty": b"\x90",
    "fixarray": b"\x93\x01\x02\x03",
    "fixarray-max": b"\x9f" + b"\x00" * 15,
    "array16": b"\xdc" + struct.pack(">H", 16) + b"\x00" * 16,
    "array32": b"\xdd" + struct.pack(">I", 2) + b"\x01\x02",
}
MAPS = {
    "fixmap-empty": b"\x80",
    "fixmap": b"\x81\xa1k\x01",
    "fixmap-max": b"\x8f" + b"".join(bytes([0xA1, 0x61 + i, i]) for i in range(15)),
    "map16": b"\xde" + struct.pack(">H", 1) + b"\xa1k\x01",
    "map32": b"\xdf" + struct.pack(">I", 1) + b"\xa1k\x01",
}
SCALARS = {
    "nil": b"\xc0",
    "false": b"\xc2",
    "true": b"\xc3",
    "positive-fixint": b"\x05",
    "negative-fixint": b"\xff",
    "uint8": b"\xcc\xc8",
    "int32": b"\xd2\x00\x00\x00\x01",
    "float64": enc(1.5),
    "fixstr": b"\xa3abc",
    "str8": b"\xd9\x01a",
    "bin8": b"\xc4\x01\x00",
    "ext": b"\xd4\x01\x00",
}


def test_header_examples_are_valid_messagepack() -> None:
    for b in [*ARRAYS.values(), *MAPS.values(), *SCALARS.values()]:
        dec(b)


@pytest.mark.parametrize("name", ARRAYS)
def test_is_array_accepts_every_array_header_form(name: str) -> None:
    assert is_array(raw(ARRAYS[name]))
    assert not is_map(raw(ARRAYS[name]))


@pytest.mark.parametrize("name", MAPS)
def test_is_map_accepts_every_map_header_form(name: str) -> None:
    assert is_map(raw(MAPS[name]))
    assert not is_array(raw(MAPS[name]))


@pytest.mark.parametrize("name", SCALARS)
def test_non_containers_are_neither_array_nor_map(name: str) -> None:
    assert not is_array(raw(SCALARS[name]))
    assert not is_map(raw(SCALARS[name]))


def test_every_first_byte_is_classified_exactly_as_the_spec_says() -> None:
    for b in range(256):
        want_array = 0x90 <= b <= 0x9F or b in (0xDC, 0xDD)
        want_map = 0x80 <= b <= 0x8F or b in (0xDE, 0xDF)
        r = raw(bytes([b, 0, 0, 0, 0]))
        assert (is_array(r), is_map(r)) == (want_array, want_map), hex(b)


def test_absent_args_and_kwargs_count_as_empty_array_and_map() -> None:
    assert is_array(msgspec.Raw())
    assert is_map(msgspec.Raw())


def test_no_args_and_no_kwargs_constants_are_empty_array_and_map() -> None:
    assert dec(NO_ARGS) == [] and dec(NO_KWARGS) == {}


# ---------------------------------------------------------- intake decoding


def test_task_in_keeps_args_and_kwargs_as_exact_raw_bytes() -> None:
    # Non-canonical encodings (array16 for 2 items, float64 for 1.0, str8
    # for a short string): re-encoding would change them, pass-through won't.
    args = b"\xdc\x00\x02" + b"\xcb" + struct.pack(">d", 1.0) + b"\xd9\x01x"
    kwargs = b"\xde\x00\x01\xa1k\x90"
    body = (
        b"\x82\xa2op\xa6submit\xa5tasks\x91"
        + b"\x83\xa4task\xa3m:f\xa4args" + args + b"\xa6kwargs" + kwargs
    )
    req = intake_decoder.decode(body)
    assert isinstance(req, Submit)
    (task,) = req.tasks
    assert isinstance(task.args, msgspec.Raw) and isinstance(task.kwargs, msgspec.Raw)
    assert bytes(task.args) == args
    assert bytes(task.kwargs) == kwargs
    assert dec(task.args) == [1.0, "x"]


def test_task_in_defaults_when_only_task_given() -> None:
    req = intake_decoder.decode(enc({"op": "submit", "tasks": [{"task": "m:f"}]}))
    assert isinstance(req, Submit)
    (task,) = req.tasks
    assert task.id is None and task.timeout is None and task.max_attempts is None
    assert len(task.args) == 0 and len(task.kwargs) == 0


def test_task_in_keeps_options() -> None:
    body = enc({"op": "submit", "tasks": [
        {"task": "m:f", "id": "abc", "timeout": 2.5, "max_attempts": 4},
    ]})
    req = intake_decoder.decode(body)
    assert isinstance(req, Submit)
    assert req.tasks[0] == TaskIn(task="m:f", id="abc", timeout=2.5, max_attempts=4)


def test_ping_decodes() -> None:
    assert intake_decoder.decode(enc({"op": "ping"})) == Ping()


def test_unknown_op_is_a_validation_error_naming_the_op_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.op"):
        intake_decoder.decode(enc({"op": "launch_missiles"}))


def test_missing_op_is_a_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="op"):
        intake_decoder.decode(enc({"tasks": []}))


def test_unknown_field_in_a_task_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        intake_decoder.decode(enc({"op": "submit", "tasks": [{"task": "m:f", "pickle": 1}]}))


@pytest.mark.parametrize("body", [b"", b"\xc1", b"\x92\x01", b"not msgpack at all", enc([1, 2])])
def test_garbage_bytes_raise_a_msgspec_error_not_anything_else(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):  # ValidationError is a DecodeError
        intake_decoder.decode(body)


# ------------------------------------------------------------ result encoding


def test_result_with_raw_value_splices_bytes_verbatim() -> None:
    value = b"\xdc\x00\x01\xcb" + struct.pack(">d", 2.0)  # non-canonical on purpose
    body = encoder.encode(Result("id1", "m:f", True, 1, value=raw(value)))
    assert value in body
    assert dec(body) == {"id": "id1", "task": "m:f", "ok": True, "attempts": 1, "value": [2.0]}


def test_failed_result_carries_error_map_and_omits_value() -> None:
    body = encoder.encode(Result("x", "m:f", False, 2, error=error_raw("Timeout", "too slow")))
    out = dec(body)
    assert out["error"] == {"type": "Timeout", "message": "too slow"}
    assert "value" not in out


def test_results_reply_is_tagged_with_op() -> None:
    body = encoder.encode(Results([Result(None, "m:f", True, value=raw(b"\xc0"))]))
    assert dec(body) == {"op": "results", "results": [{"id": None, "task": "m:f", "ok": True,
                                                      "value": None}]}


def test_ack_lists_accepted_and_rejected_with_raw_error() -> None:
    """A rejection names the task's id and position; ref is echoed only if given."""
    body = encoder.encode(Ack(["a"], [Rejected("b", 1, error_raw("UnknownTask", "no"))]))
    assert dec(body) == {
        "op": "ack", "accepted": ["a"],
        "rejected": [{"id": "b", "index": 1, "error": {"type": "UnknownTask", "message": "no"}}],
    }
    assert dec(encoder.encode(Ack(["a"], [], ref=7)))["ref"] == 7


def test_error_map_includes_traceback_only_when_given() -> None:
    assert error_map("T", "m") == {"type": "T", "message": "m"}
    assert error_map("T", "m", "tb") == {"type": "T", "message": "m", "traceback": "tb"}


# ---------------------------------------------------------------- worker pipe


def test_worker_batch_round_trips_with_raw_values_untouched() -> None:
    value = b"\xd9\x02hi"
    batch = Batch([Done(7, True, raw(value)), Done(8, False, error_raw("TaskFailed", "x"))])
    got = worker_decoder.decode(encoder.encode(batch))
    assert isinstance(got, Batch)
    assert [d.key for d in got.done] == [7, 8]
    assert bytes(got.done[0].value) == value


def test_worker_hello_round_trips() -> None:
    hello = Hello(123, ["m:f"], ["bad: ImportError: x"])
    assert worker_decoder.decode(encoder.encode(hello)) == hello


def test_unknown_worker_message_tag_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        worker_decoder.decode(enc(["bye", 1]))


def test_protocol_version_is_an_int() -> None:
    assert isinstance(protocol.PROTOCOL_VERSION, int)
