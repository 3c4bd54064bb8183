"""Property-based fuzzing of the intake and control sockets of ONE phalanxd.

DESIGN.md: "Bad input of any kind (garbage frames, wrong types, unknown
task, oversized message, invalid config) gets a clear error and changes
nothing else: the daemon keeps serving every other client." Hypothesis
throws at a live daemon: random frame counts and bytes, valid MessagePack
cut short, headers declaring gigabytes, unknown ops, maps of random keys
and values, nesting thousands deep, and valid envelopes whose task fields
are random. After every example the daemon must have answered exactly as
docs/PROTOCOL.md says (one `error`, or an `ack` whose accepted tasks each
get exactly one result) and must then still serve a ping and a real echo
task. One daemon serves the whole module, so damage would carry over from
one example to the next and be caught there.
"""

from __future__ import annotations

import math
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.attack import ECHO, Peer, decode, echo_round_trip
from tests.conftest import Daemon, base_config, merge, short_tempdir
from workers import builtin, testing

MAX_MSG = 64 * 1024  # tasks.max_message_bytes of the fuzzed daemon
HARD_LIMIT = 2 * MAX_MSG + 4096  # the intake socket's MAXMSGSIZE
REPLY_TIMEOUT = 5.0
MAX_ATTEMPTS_LIMIT = 10  # the default tasks.max_attempts_limit
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
enc = msgspec.msgpack.encode

# Safe to run whatever the arguments: nothing here sleeps, spins, forks,
# allocates on request or kills its worker.
SAFE_TASKS = ["workers.builtin:echo", "workers.builtin:noop", "workers.testing:pid",
              "workers.builtin:fail", "workers.testing:say"]
UNSAFE = {"sleep", "burn", "crash", "alloc", "spawn_child", "sabotage", "stubborn"}
KNOWN = {f"workers.builtin:{n}" for n in builtin.__all__} | {f"workers.testing:{n}" for n in testing.__all__}
# Control commands that only read (or, for `clear`/`start`, change nothing
# the fuzz depends on): fuzzing `stop`, `shutdown` or `pause` with random
# arguments would only test that they work.
SAFE_COMMANDS = ["status", "pid", "tail", "maintail", "stats", "version", "config", "avail",
                 "help", "clear", "start", "snapshot"]
UNSAFE_COMMANDS = {"stop", "restart", "signal", "pause", "resume", "reread", "update", "reload",
                   "shutdown", "incr", "decr"}


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One phalanxd for every example of this module."""
    path = short_tempdir()
    config = merge(base_config(path), {
        "tasks": {"max_message_bytes": MAX_MSG},
        # Fuzzed hard timeouts of a microsecond kill workers on purpose:
        # restart them at once rather than backing off.
        "restart": {"max_restarts": 100_000, "daemon_max_restarts": 0},
    })
    d = Daemon(path, tmp_path_factory.mktemp("fuzz"), config)
    try:
        d.launch()
        d.wait_ready()
        yield d
    finally:
        try:
            d.teardown()
        finally:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.term()


# --------------------------------------------------------------- strategies
ints = st.one_of(st.integers(-(2**63), 2**64 - 1),
                 st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**64 - 1, -(2**63)]))
floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan,
                                                 1e-300, 1e300, 5e-324]))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, st.text(max_size=20),
                    st.binary(max_size=20))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
op_names = st.one_of(st.sampled_from(["ping", "submit", "ack", "results", "error", "pong",
                                      "Submit", "PING", ""]), st.text(max_size=10))
UTF8_TARGET = "utf8-target"  # a str in arguments that the "utf8" mutation corrupts
HUGE_HEADERS = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 G elements
    b"\xdf\xff\xff\xff\xff",  # map32 of 4 G pairs
    b"\xdb\x7f\xff\xff\xff",  # str32 of 2 GiB
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",  # ext32 of 4 GiB
    b"\xdc\xff\xff",  # array16 of 65535 elements, none present
]


def nested(depth: int, kind: str) -> bytes:
    opener = {"array": b"\x91", "map": b"\x81\xa1k"}[kind]
    return opener * depth + b"\xc0"


@st.composite
def valid_request(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed submit or ping (what the mutations start from)."""
    if draw(st.booleans()):
        return {"op": "ping"}
    tasks = [{"task": ECHO, "id": f"fz-{uuid.uuid4().hex}",
              "args": [draw(st.one_of(values, st.just(UTF8_TARGET)))]}
             for _ in range(draw(st.integers(0, 3)))]
    return {"op": "submit", "tasks": tasks, "ref": draw(st.integers(0, 1000))}


@st.composite
def bad_body(draw: st.DrawFn) -> bytes:
    """One body frame that is not a valid request, or hardly one."""
    kind = draw(st.sampled_from(["bytes", "truncated", "huge", "value", "map", "op", "mutated",
                                 "deep", "trailing", "utf8", "large"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":  # a valid encoding cut short (MessagePack is prefix-free)
        body = enc(draw(st.one_of(valid_request(), values)))
        return body[:draw(st.integers(0, len(body) - 1))]
    if kind == "huge":
        prefix = draw(st.sampled_from([b"", b"\x81\xa2op", b"\x82\xa2op\xa6submit\xa5tasks",
                                       b"\x82\xa2op\xa6submit\xa5tasks\x91\x82\xa4task\xa1x\xa4args"]))
        return prefix + draw(st.sampled_from(HUGE_HEADERS)) + draw(st.binary(max_size=8))
    if kind == "value":  # any MessagePack value: wrong type for a request
        return enc(draw(values))
    if kind == "map":
        return enc(draw(st.dictionaries(st.text(max_size=8), values, max_size=5)))
    if kind == "op":
        body = draw(st.dictionaries(st.text(max_size=8), values, max_size=3))
        body["op"] = draw(op_names)
        return enc(body)
    if kind == "mutated":  # a valid request with one field replaced or added
        req = draw(valid_request())
        target: dict[str, Any] = req
        if req.get("tasks") and draw(st.booleans()):
            target = req["tasks"][0]
        key = draw(st.one_of(st.sampled_from(sorted(target)), st.text(max_size=8)))
        target[key] = draw(values)
        return enc(req)
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        where = draw(st.sampled_from(["top", "args", "kwargs", "ref", "id"]))
        inner = nested(depth, draw(st.sampled_from(["array", "map"])))
        head = b"\x82\xa2op\xa6submit\xa5tasks\x91\x83\xa4task\xb4workers.builtin:echo\xa2id"
        tid = enc(f"deep-{uuid.uuid4().hex}")
        return {
            "top": inner,
            "args": head + tid + b"\xa4args\x91" + inner,
            "kwargs": head + tid + b"\xa6kwargs\x81\xa1x" + inner,
            "ref": b"\x83\xa2op\xa6submit\xa5tasks\x90\xa3ref" + inner,
            "id": head + inner + b"\xa4args\x90",
        }[where]
    if kind == "utf8":  # one string of a valid request made invalid UTF-8, in place
        body = enc(draw(valid_request()))
        targets = [t for t in (b"op", b"ping", b"submit", b"tasks", b"task", b"ref", b"args",
                               ECHO.encode(), b"fz-", UTF8_TARGET.encode()) if t in body]
        target = draw(st.sampled_from(targets))
        bad = b"\xff" + draw(st.binary(min_size=len(target) - 1, max_size=len(target) - 1))
        return body.replace(target, bad, 1)
    if kind == "trailing":  # a valid request followed by more bytes
        return enc(draw(valid_request())) + draw(st.binary(min_size=1, max_size=8))
    # over tasks.max_message_bytes but under MAXMSGSIZE: TooLarge
    size = draw(st.one_of(st.sampled_from([MAX_MSG + 1, HARD_LIMIT]),
                          st.integers(MAX_MSG + 1, HARD_LIMIT)))
    return Blob(draw(st.sampled_from([b"\x00", b"\x91", b"\xa1"])) * size)


class Blob(bytes):
    """Bytes whose repr stays short in a falsifying example."""

    def __repr__(self) -> str:
        return f"Blob({bytes(self[:8])!r} * {len(self)} bytes)"


frames_strategy = st.one_of(
    bad_body().map(lambda b: [b]),  # DEALER mode
    bad_body().map(lambda b: [b"", b]),  # REQ mode, as a DEALER sends it
    st.lists(st.binary(max_size=40), min_size=1, max_size=5),  # any frame count
    st.lists(bad_body(), min_size=2, max_size=4),
)


# ------------------------------------------------------------------ helpers
def answer_of(peer: Peer, frames: list[bytes]) -> dict[str, Any]:
    """The one immediate reply to ``frames``, checked for framing."""
    peer.sock.send_multipart(frames)
    if not peer.sock.poll(int(REPLY_TIMEOUT * 1000)):
        raise AssertionError(f"no reply within {REPLY_TIMEOUT:g}s to {frames!r:.300}")
    reply = peer.sock.recv_multipart()
    req_mode = len(frames) >= 2 and frames[0] == b""
    assert len(reply) == (2 if req_mode else 1), reply
    if req_mode:
        assert reply[0] == b"", reply
    msg = decode(reply[-1])
    assert isinstance(msg, dict) and "op" in msg, msg
    return msg


def settle_answer(peer: Peer, frames: list[bytes], msg: dict[str, Any]) -> None:
    """Check one reply per the protocol; wait for the results it promises."""
    op = msg["op"]
    if op == "error":
        err = msg["error"]
        assert err["type"] in ("BadRequest", "TooLarge"), msg
        assert isinstance(err["message"], str) and err["message"], msg
        assert "traceback" not in err, msg
        one_body = len(frames) == 1 or (len(frames) == 2 and frames[0] == b"")
        if one_body and len(frames[-1]) > MAX_MSG:
            assert err["type"] == "TooLarge", msg
    elif op == "ack":  # a mutation that was still valid: it must be honoured
        peer._take(msg)
        wanted = Counter(msg["accepted"])
        peer.wait(lambda: all(peer.results[i] >= n for i, n in wanted.items()), 15,
                  f"results for {sorted(wanted)}")
        for i in wanted:  # whatever the arguments, they must not kill a worker
            assert peer.last[i]["ok"] or peer.last[i]["error"]["type"] != "WorkerCrashed", \
                peer.last[i]
    elif op == "results":  # request/reply mode: the one reply is all results
        peer._take(msg)
    else:
        assert op == "pong", msg


def still_serving(peer: Peer, daemon: Daemon) -> None:
    echo_round_trip(peer)
    assert not daemon.exited(), daemon.log


# -------------------------------------------------------------------- intake
@FUZZ
@given(frames=frames_strategy)
def test_intake_answers_any_frames_with_one_error_and_keeps_serving(
    fuzzed: Daemon, zctx: zmq.Context[zmq.Socket[bytes]], frames: list[bytes]
) -> None:
    """Any frames a DEALER can send (under MAXMSGSIZE) get exactly one
    reply: an `error` (BadRequest, or TooLarge over max_message_bytes), or,
    for the rare mutation that stays valid, what a valid request gets; then
    the same connection still gets a pong and a correct echo result, and no
    accepted task is answered twice."""
    peer = Peer(fuzzed.intake, zctx)
    try:
        msg = answer_of(peer, frames)
        settle_answer(peer, frames, msg)
        still_serving(peer, fuzzed)
        assert all(n == 1 for n in peer.results.values()), peer.results
    finally:
        peer.close()


@pytest.mark.parametrize("kind", ["array", "map"])
@pytest.mark.parametrize("where", ["args", "kwargs"])
def test_arguments_nested_to_the_decoding_limit_never_kill_a_worker(
    fuzzed: Daemon, zctx: zmq.Context[zmq.Socket[bytes]], kind: str, where: str
) -> None:
    """Sweep the nesting depth of args/kwargs across the depth where
    MessagePack decoding gives up: the daemon either refuses the request
    (BadRequest) or accepts the task, and an accepted task gets one result
    that is never WorkerCrashed: arguments the daemon accepted must not kill
    the workers that decode them."""
    peer = Peer(fuzzed.intake, zctx)
    before = fuzzed.stats()["restarts"]
    try:
        outcomes: Counter[str] = Counter()
        for depth in range(940, 1010, 2):
            tid = f"depth-{where}-{kind}-{depth}-{uuid.uuid4().hex[:6]}"
            value = nested(depth, kind)
            task = (b"\x83\xa4task\xb4workers.builtin:echo\xa2id" + enc(tid)
                    + (b"\xa4args\x91" if where == "args" else b"\xa6kwargs\x81\xa1x") + value)
            body = b"\x82\xa2op\xa6submit\xa5tasks\x91" + task
            msg = answer_of(peer, [body])
            if msg["op"] == "error":
                assert msg["error"]["type"] == "BadRequest", msg
                outcomes["refused"] += 1
                continue
            assert msg["accepted"] == [tid], msg
            peer.wait(lambda: peer.results[tid], 15, f"result of {tid}")  # noqa: B023
            res = peer.last[tid]
            if not res["ok"]:
                assert res["error"]["type"] != "WorkerCrashed", res
            outcomes["ok" if res["ok"] else res["error"]["type"]] += 1
        print(f"\nnesting {where}/{kind} 940..1008: {dict(outcomes)}")
        assert outcomes["refused"], "the sweep never reached the decoding limit"
        assert fuzzed.stats()["restarts"] == before, "a worker died"
        still_serving(peer, fuzzed)
    finally:
        peer.close()


BAD_UTF8 = b"\xa2\xff\xfe"  # a 2-byte str that is not UTF-8


@pytest.mark.parametrize("where", ["key", "op", "task", "id", "ref", "args", "kwargs-key"])
def test_a_string_that_is_not_utf8_is_refused_wherever_it_is(
    fuzzed: Daemon, zctx: zmq.Context[zmq.Socket[bytes]], where: str
) -> None:
    """A MessagePack str holding invalid UTF-8 (msgspec raises
    UnicodeDecodeError, not a DecodeError, for it) is a BadRequest wherever
    it sits: in the request it refuses the request; inside the arguments,
    which the daemon passes on unread, the task fails with BadRequest when
    its worker decodes them. The daemon and every worker live on."""
    restarts = fuzzed.stats()["restarts"]
    tid = enc(f"utf8-{where}-{uuid.uuid4().hex[:6]}")
    echo = enc(ECHO)
    body = {
        "key": b"\x81" + BAD_UTF8 + b"\xa4ping",
        "op": b"\x81\xa2op" + BAD_UTF8,
        "task": b"\x82\xa2op\xa6submit\xa5tasks\x91\x81\xa4task" + BAD_UTF8,
        "id": b"\x82\xa2op\xa6submit\xa5tasks\x91\x82\xa4task" + echo + b"\xa2id" + BAD_UTF8,
        "ref": b"\x83\xa2op\xa6submit\xa5tasks\x90\xa3ref" + BAD_UTF8,
        "args": (b"\x82\xa2op\xa6submit\xa5tasks\x91\x83\xa4task" + echo + b"\xa2id" + tid
                 + b"\xa4args\x91" + BAD_UTF8),
        "kwargs-key": (b"\x82\xa2op\xa6submit\xa5tasks\x91\x83\xa4task" + echo + b"\xa2id" + tid
                       + b"\xa6kwargs\x81" + BAD_UTF8 + b"\x01"),
    }[where]
    peer = Peer(fuzzed.intake, zctx)
    try:
        msg = answer_of(peer, [body])
        if where in ("args", "kwargs-key"):
            task_id = msgspec.msgpack.decode(tid)
            assert msg["op"] == "ack" and msg["accepted"] == [task_id], msg
            peer.wait(lambda: peer.results[task_id], 10, "the task's result")
            res = peer.last[task_id]
            assert not res["ok"] and res["error"]["type"] == "BadRequest", res
        else:
            assert msg["op"] == "error" and msg["error"]["type"] == "BadRequest", msg
        still_serving(peer, fuzzed)
        assert fuzzed.stats()["restarts"] == restarts, "a worker died"
    finally:
        peer.close()
    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fuzzed.control)
    try:
        sock.send(b"\x82\xa3cmd\xa6status\xa4args\x81" + BAD_UTF8 + b"\xc0")
        assert sock.poll(int(REPLY_TIMEOUT * 1000)), "no control reply"
        reply = msgspec.msgpack.decode(sock.recv())
        assert reply["ok"] is False and reply["error"]["type"] == "BadRequest", reply
    finally:
        sock.close()


def test_frames_over_maxmsgsize_drop_the_peer_and_nothing_else(
    fuzzed: Daemon, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """At exactly MAXMSGSIZE (2 x max_message_bytes + 4096) a body is still
    read and refused as TooLarge; one byte more and libzmq drops the
    connection unread (seen as a disconnect on the client's socket); the
    daemon serves the next connection and other clients as before."""
    bystander = Peer(fuzzed.intake, zctx)
    try:
        echo_round_trip(bystander)
        peer = Peer(fuzzed.intake, zctx)
        try:
            msg = answer_of(peer, [b"\x00" * HARD_LIMIT])
            assert msg["error"]["type"] == "TooLarge", msg
        finally:
            peer.close()
        for frames in ([b"\x00" * (HARD_LIMIT + 1)], [b"", b"\x00" * (4 * MAX_MSG)],
                       [b"x", b"\x00" * (HARD_LIMIT + 1)]):
            sock = zctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # Watch before connecting, or the connection event is missed.
            monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            try:
                sock.connect(fuzzed.intake)
                assert wait_event(monitor, zmq.EVENT_CONNECTED), "never connected"
                sock.send_multipart(frames)
                assert wait_event(monitor, zmq.EVENT_DISCONNECTED), "the daemon kept the peer"
                assert not sock.poll(0), "an oversized frame got a reply"
            finally:
                sock.disable_monitor()
                monitor.close()
                sock.close()
            echo_round_trip(bystander)
        assert not fuzzed.exited()
    finally:
        bystander.close()


def wait_event(monitor: zmq.Socket[bytes], event: int, timeout: float = 5.0) -> bool:
    from zmq.utils.monitor import recv_monitor_message

    while monitor.poll(int(timeout * 1000)):
        if recv_monitor_message(monitor)["event"] == event:
            return True
    return False


# ------------------------------------------------------------- task fields
REUSED_IDS = {"", "0", "same"}
numbers = st.one_of(st.none(), floats, ints)
junk = st.one_of(st.text(max_size=3), st.booleans(), st.binary(max_size=3),
                 st.lists(st.integers(-5, 5), max_size=2))
task_names = st.one_of(
    st.sampled_from(SAFE_TASKS),
    st.sampled_from(["workers.builtin:", ":echo", "workers.builtin", "os:system",
                     "workers.builtin:nope", "workers.builtin:_private", "workers:echo",
                     "workers.builtin.echo", "workers.builtin:echo:x", "", ":"]),
    st.text(max_size=30),
    st.text(max_size=12).map(lambda s: f"workers.builtin:{s}"),
).filter(lambda n: n.partition(":")[2] not in UNSAFE or not n.startswith("workers.builtin:"))


@st.composite
def task_field_sets(draw: st.DrawFn, ill_typed: bool = False) -> dict[str, Any]:
    """One task map; with ``ill_typed``, one of its fields has a wrong type."""
    safe = draw(st.integers(0, 9)) < 6  # most tasks run, so results get checked
    spec: dict[str, Any] = {"task": draw(st.sampled_from(SAFE_TASKS) if safe else task_names)}
    optional = {
        "id": st.one_of(st.none(), st.text(max_size=10).map(lambda s: f"{uuid.uuid4().hex[:8]}{s}"),
                        st.sampled_from(sorted(REUSED_IDS))),
        "args": st.one_of(st.lists(values, max_size=3), st.lists(values, max_size=3), values),
        "kwargs": st.one_of(st.dictionaries(st.text(max_size=5), values, max_size=3), values),
        "timeout": numbers,
        "max_attempts": st.one_of(st.none(), ints),
        "soft_timeout": numbers,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    if ill_typed:
        key = draw(st.sampled_from(["task", "id", "timeout", "max_attempts", "soft_timeout"]))
        bad = draw(junk if key != "max_attempts" else st.one_of(junk, floats))
        spec[key] = bad
    return spec


@st.composite
def task_batches(draw: st.DrawFn) -> list[dict[str, Any]]:
    specs = draw(st.lists(task_field_sets(), min_size=1, max_size=5))
    if draw(st.integers(0, 4)) == 0:  # one request in five is refused whole
        specs.insert(draw(st.integers(0, len(specs))), draw(task_field_sets(ill_typed=True)))
    return specs


def is_float_field(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def is_int_field(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool))


def well_typed(spec: dict[str, Any]) -> bool:
    """Whether the task map matches the request table's types (else the
    whole request is refused with an `error`)."""
    return (isinstance(spec["task"], str)
            and (spec.get("id") is None or isinstance(spec.get("id"), str))
            and is_float_field(spec.get("timeout"))
            and is_int_field(spec.get("max_attempts"))
            and is_float_field(spec.get("soft_timeout")))


def expected_rejection(spec: dict[str, Any]) -> str | None:
    """The error type docs/PROTOCOL.md's check order gives this task."""
    name = spec["task"]
    module, sep, fn = name.partition(":")
    if not sep or not module or not fn:
        return "BadRequest"
    if module not in ("workers.builtin", "workers.testing"):
        return "NotAllowed"
    if name not in KNOWN:
        return "UnknownTask"
    if "args" in spec and not isinstance(spec["args"], list):
        return "BadRequest"
    if "kwargs" in spec and not isinstance(spec["kwargs"], dict):
        return "BadRequest"
    t = spec.get("timeout")
    if t is not None and not t >= 0:
        return "BadRequest"
    m = spec.get("max_attempts")
    if m is not None and m < 1:
        return "BadRequest"
    s = spec.get("soft_timeout")
    if s is not None and not s >= 0:
        return "BadRequest"
    if m is not None and m > MAX_ATTEMPTS_LIMIT:
        return "LimitExceeded"
    return None


# What an accepted safe task may legitimately fail with, given fuzzed
# arguments and limits; anything else (WorkerCrashed above all) is a bug.
ALLOWED_FAILURES = {"TypeError", "BadRequest", "SoftTimeout", "Timeout", "TaskFailure",
                    "TooLarge", "Unserializable"}


@FUZZ
@given(specs=task_batches())
def test_fuzzed_task_fields_get_the_documented_ack_and_exactly_one_result(
    fuzzed: Daemon, zctx: zmq.Context[zmq.Socket[bytes]], specs: list[dict[str, Any]]
) -> None:
    """Valid submit envelopes with random task names, ids, args, kwargs,
    timeouts, max_attempts and soft timeouts: an ill-typed field refuses the
    request with BadRequest; otherwise the ack accepts or rejects each task
    exactly as the check order of docs/PROTOCOL.md predicts, each accepted
    task gets exactly one result, and an echo that succeeds returns its
    argument unchanged."""
    peer = Peer(fuzzed.intake, zctx)
    try:
        ref = uuid.uuid4().hex
        msg = answer_of(peer, [enc({"op": "submit", "tasks": specs, "ref": ref})])
        if not all(well_typed(s) for s in specs):
            assert msg["op"] == "error" and msg["error"]["type"] == "BadRequest", msg
            assert msg.get("ref") == ref, msg
            still_serving(peer, fuzzed)
            return
        assert msg["op"] == "ack" and msg["ref"] == ref, msg
        rejected = {r["index"]: r for r in msg["rejected"]}
        accepted = iter(msg["accepted"])
        expect: Counter[str] = Counter()
        echoes: dict[str, Any] = {}
        seen: set[str] = set()
        for index, spec in enumerate(specs):
            if isinstance(spec.get("id"), str) and spec["id"] in seen:
                continue  # a repeat of an id accepted in this request collapses to one
            why = expected_rejection(spec)
            if why is not None:
                assert rejected.get(index, {}).get("error", {}).get("type") == why, (spec, msg)
                assert rejected[index]["id"] == spec.get("id"), (spec, msg)
                continue
            if spec.get("id") is not None and index in rejected:
                # A recurring id (REUSED_IDS, or any id when hypothesis
                # replays an example) sent with another task or arguments
                # than the first time: the id is the idempotency key.
                assert rejected[index]["error"]["type"] == "IdConflict", (spec, msg)
                continue
            assert index not in rejected, (spec, msg)
            tid = next(accepted)
            seen.add(tid)
            if spec.get("id") is not None:
                assert tid == spec["id"], (spec, msg)
            expect[tid] += 1
            # Ids "", "0" and "same" recur across examples: a resubmission
            # that matches is answered with the earlier run's result.
            fresh = spec.get("id") not in REUSED_IDS
            if (fresh and spec["task"] == ECHO and len(spec.get("args", [0])) == 1
                    and not spec.get("kwargs")):
                echoes[tid] = spec.get("args", [None])[0]
        assert next(accepted, None) is None, msg
        peer.wait(lambda: all(peer.results[i] >= n for i, n in expect.items()), 20,
                  f"results for {dict(expect)}")
        still_serving(peer, fuzzed)  # also gives any extra result time to show
        for tid, n in expect.items():
            assert peer.results[tid] == n, (tid, peer.results[tid], n)
            res = peer.last[tid]
            if not res["ok"]:
                assert res["error"]["type"] in ALLOWED_FAILURES, (specs, res)
            elif tid in echoes and n == 1:
                assert enc(res["value"]) == enc(msgspec.msgpack.decode(enc(echoes[tid]))), res
    finally:
        peer.close()


# ------------------------------------------------------------------ control
@st.composite
def control_bodies(draw: st.DrawFn) -> tuple[list[bytes], str | None]:
    """(frames, command) for the control socket; command None if not one."""
    kind = draw(st.sampled_from(["bytes", "truncated", "value", "cmd", "unknown", "deep",
                                 "frames"]))
    if kind == "bytes":
        return [draw(st.binary(max_size=100))], None
    if kind == "truncated":
        body = enc({"cmd": draw(st.sampled_from(SAFE_COMMANDS)), "args": draw(values)})
        return [body[:draw(st.integers(0, len(body) - 1))]], None
    if kind == "value":
        return [enc(draw(values))], None
    if kind == "deep":
        depth = draw(st.integers(500, 3000))
        return [b"\x82\xa3cmd\xa6status\xa4args\x81\xa1x" + nested(depth, "array")], "status"
    if kind == "frames":
        return draw(st.lists(st.binary(max_size=20), min_size=2, max_size=4)), None
    cmd = draw(st.sampled_from(SAFE_COMMANDS)) if kind == "cmd" else draw(
        st.text(max_size=12).filter(lambda c: c not in UNSAFE_COMMANDS))
    body: dict[str, Any] = {"cmd": cmd}
    if draw(st.booleans()):
        body["args"] = draw(st.one_of(
            st.dictionaries(st.sampled_from(["slots", "slot", "stream", "offset", "bytes",
                                             "signal", "x"]), values, max_size=4),
            st.fixed_dictionaries({"slots": st.one_of(st.lists(ints, max_size=3),
                                                      st.sampled_from(["all", [], [0], [1]]))}),
            st.fixed_dictionaries({"slot": st.one_of(ints, st.sampled_from([0, 1, 2, -1])),
                                   "offset": st.one_of(st.none(), ints),
                                   "bytes": st.one_of(ints, st.none())}),
            values))
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.text(max_size=5))] = draw(values)
    return [enc(body)], cmd


@FUZZ
@given(case=control_bodies())
def test_control_answers_any_request_without_an_internal_error(
    fuzzed: Daemon, zctx: zmq.Context[zmq.Socket[bytes]], case: tuple[list[bytes], str | None]
) -> None:
    """Random bytes, truncated or deeply nested maps, unknown commands and
    read-only commands with random arguments each get exactly one reply
    {ok, result | error} whose error type is one of the documented ones and
    never InternalError (a handler that crashes on input is a bug even if
    the daemon survives it); afterwards control still reports every slot
    RUNNING and intake still serves."""
    frames, cmd = case
    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(fuzzed.control)
    try:
        sock.send_multipart(frames)
        assert sock.poll(int(REPLY_TIMEOUT * 1000)), f"no control reply to {frames!r:.200}"
        reply_frames = sock.recv_multipart()
        reply = msgspec.msgpack.decode(reply_frames[-1])
        assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
        if reply["ok"]:
            assert cmd in SAFE_COMMANDS, (frames, reply)
            assert "result" in reply, reply
        else:
            err = reply["error"]
            assert err["type"] in ("BadRequest", "UnknownCommand", "UnknownSlot"), (frames, reply)
            if cmd is not None and cmd not in SAFE_COMMANDS and isinstance(
                    msgspec.msgpack.decode(frames[0]).get("args", {}), dict):
                assert err["type"] in ("UnknownCommand", "BadRequest"), reply
        # A valid request on the same connection still works.
        sock.send(enc({"cmd": "status"}))
        assert sock.poll(int(REPLY_TIMEOUT * 1000)), "control stopped answering"
        status = msgspec.msgpack.decode(sock.recv_multipart()[-1])
        assert status["ok"] and all(s["state"] == "RUNNING" for s in status["result"]), status
    finally:
        sock.close()
    peer = Peer(fuzzed.intake, zctx)
    try:
        still_serving(peer, fuzzed)
    finally:
        peer.close()
