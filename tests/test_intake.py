"""Intake and publisher over raw ZeroMQ sockets, as a non-Python client sees them.

Every bad request here comes from a hand-built socket, and every test then
shows the daemon still serving a valid request: bad input gets a clear
error and changes nothing else.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from tests.conftest import Daemon, RawPeer, StartDaemon

ECHO = "workers.builtin:echo"
PID = "workers.testing:pid"
NOOP = "workers.builtin:noop"
SLEEP = "workers.builtin:sleep"
pack = msgspec.msgpack.encode


def assert_serves(peer: RawPeer, value: Any = "still serving") -> None:
    """The daemon answers a valid submit on this very connection."""
    task_id = f"check-{value}"
    peer.send_msg({"op": "submit", "tasks": [{"task": ECHO, "id": task_id, "args": [value]}]})
    ack = peer.recv()
    assert (ack["op"], ack["accepted"], ack["rejected"]) == ("ack", [task_id], []), ack
    result = peer.results_for({task_id})[task_id]
    assert result["ok"] is True and result["value"] == value


def collect_results(peer: RawPeer, want: dict[str, int], timeout: float = 10.0
                    ) -> dict[str, list[dict[str, Any]]]:
    """Read results until each id got its expected number of copies; fail on
    a copy too many or a result for an id not asked about."""
    got: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in want}
    deadline = time.monotonic() + timeout
    while any(len(got[i]) < n for i, n in want.items()):
        msg = peer.recv(max(deadline - time.monotonic(), 0.001))
        assert msg["op"] == "results", msg
        for res in msg["results"]:
            assert res["id"] in want, res
            got[res["id"]].append(res)
            assert len(got[res["id"]]) <= want[res["id"]], f"extra copy: {res}"
    return got


def assert_bad_request(reply: Any, mentions: str | None = None) -> None:
    assert reply["op"] == "error", reply
    assert reply["error"]["type"] == "BadRequest", reply
    assert reply["error"]["message"], reply
    if mentions is not None:
        assert mentions in reply["error"]["message"], reply


def submit_body(**task: Any) -> bytes:
    return pack({"op": "submit", "tasks": [task]})


# Whole-request errors: the body cannot be a request at all.
GARBAGE: dict[str, bytes] = {
    "empty body": b"",
    "never-used msgpack byte": b"\xc1",
    "truncated msgpack": b"\x82\xa2op",
    "plain text": b"hello, daemon",
    "json": b'{"op": "ping"}',
    "random bytes": bytes(range(256)) * 4,
    "msgpack array": pack([1, 2, 3]),
    "msgpack string": pack("submit"),
    "map without op": pack({"tasks": []}),
    "unknown op": pack({"op": "frobnicate"}),
    "op not a string": pack({"op": 7}),
    "submit without tasks": pack({"op": "submit"}),
    "tasks not a list": pack({"op": "submit", "tasks": 5}),
    "tasks a map": pack({"op": "submit", "tasks": {"task": ECHO}}),
    "task not a map": pack({"op": "submit", "tasks": [ECHO]}),
    "task missing name": pack({"op": "submit", "tasks": [{"id": "x", "args": [1]}]}),
    "task name not a string": submit_body(task=5),
    "id not a string": submit_body(task=ECHO, id=5),
    "timeout not a number": submit_body(task=ECHO, timeout="soon"),
    "max_attempts a float": submit_body(task=ECHO, max_attempts=1.5),
    "unknown task field": submit_body(task=ECHO, priority=1),
    "unknown request field": pack({"op": "ping", "extra": True}),
    "trailing bytes": pack({"op": "ping"}) + b"\x00",
}


@pytest.mark.parametrize("body", list(GARBAGE.values()), ids=list(GARBAGE))
def test_malformed_body_gets_bad_request_and_daemon_keeps_serving(
    shared_daemon: Daemon, body: bytes
) -> None:
    """A body that is not a valid request gets {"op": "error", "error":
    {"type": "BadRequest", ...}} and the same connection is served next."""
    peer = shared_daemon.raw()
    peer.send(body)
    assert_bad_request(peer.recv())
    assert_serves(peer)


# Per-task errors: the request is well formed, one task in it is not.
BAD_TASKS: dict[str, tuple[dict[str, Any], str, str]] = {
    "args a map": ({"task": ECHO, "args": {"x": 1}}, "BadRequest", "args"),
    "args a string": ({"task": ECHO, "args": "x"}, "BadRequest", "args"),
    "kwargs an array": ({"task": ECHO, "kwargs": [1]}, "BadRequest", "kwargs"),
    "negative timeout": ({"task": ECHO, "timeout": -1.0}, "BadRequest", "timeout"),
    "zero max_attempts": ({"task": ECHO, "max_attempts": 0}, "BadRequest", "max_attempts"),
    "name without colon": ({"task": "echo"}, "BadRequest", "module:function"),
    "unknown task": ({"task": "workers.builtin:nope"}, "UnknownTask", "workers.builtin:nope"),
    "private function": ({"task": "workers.builtin:_private"}, "UnknownTask", "_private"),
    "module not allowed": ({"task": "os:system", "args": ["true"]}, "NotAllowed", "'os'"),
    "submodule not allowed": ({"task": "workers.loop:main"}, "NotAllowed", "workers.loop"),
}


@pytest.mark.parametrize(("task", "type_", "mentions"), list(BAD_TASKS.values()), ids=list(BAD_TASKS))
def test_bad_task_is_rejected_alone_in_the_ack(
    shared_daemon: Daemon, task: dict[str, Any], type_: str, mentions: str
) -> None:
    """A task that cannot run is rejected in the ack with a typed error,
    while a valid task in the same request is accepted and runs."""
    peer = shared_daemon.raw()
    peer.send_msg({"op": "submit", "tasks": [
        {**task, "id": "bad"},
        {"task": ECHO, "id": "good", "args": ["fine"]},
    ]})
    ack = peer.recv()
    assert ack["op"] == "ack"
    assert ack["accepted"] == ["good"]
    [rejected] = ack["rejected"]
    assert rejected["id"] == "bad"
    assert rejected["error"]["type"] == type_
    assert mentions in rejected["error"]["message"]
    assert peer.results_for({"good"})["good"]["value"] == "fine"
    assert_serves(peer)


def test_wrong_frame_counts_get_bad_request(shared_daemon: Daemon) -> None:
    """Two body frames (DEALER) and four frames after an empty delimiter
    (REQ-style) are refused with BadRequest, in the envelope the sender used."""
    peer = shared_daemon.raw()
    peer.send(pack({"op": "ping"}), pack({"op": "ping"}))
    frames = peer.recv_frames()
    assert len(frames) == 1
    assert_bad_request(msgspec.msgpack.decode(frames[0]), "frames")

    peer.send(b"", pack({"op": "ping"}), b"x", b"y")  # 5 frames at the ROUTER
    frames = peer.recv_frames()
    assert frames[0] == b""
    assert_bad_request(msgspec.msgpack.decode(frames[-1]), "frames")
    assert_serves(peer)


def test_ping_answers_pong(shared_daemon: Daemon) -> None:
    """ping -> pong with version, protocol version, boot id and worker count."""
    pong = shared_daemon.raw().request({"op": "ping"})
    assert pong["op"] == "pong"
    assert pong["protocol"] == 1
    assert pong["workers"] == 2
    assert re.fullmatch(r"[0-9a-f]{12}", pong["boot"])
    assert shared_daemon.call("version")["boot"] == pong["boot"]


def test_req_socket_gets_one_reply_with_every_result(shared_daemon: Daemon) -> None:
    """A REQ client gets exactly one reply per request: op "results" holding
    every task's result (rejections included), then may send again."""
    peer = shared_daemon.raw(zmq.REQ)
    reply = peer.request({"op": "submit", "tasks": [
        {"task": ECHO, "id": "r1", "args": [1]},
        {"task": SLEEP, "id": "r2", "args": [0.05]},
        {"task": "workers.builtin:nope", "id": "r3"},
    ]})
    assert reply["op"] == "results"
    by_id = {r["id"]: r for r in reply["results"]}
    assert set(by_id) == {"r1", "r2", "r3"}
    assert by_id["r1"]["ok"] and by_id["r1"]["value"] == 1
    assert by_id["r2"]["ok"] and by_id["r2"]["value"] == 0.05
    assert not by_id["r3"]["ok"] and by_id["r3"]["error"]["type"] == "UnknownTask"
    # REQ enforces send/recv alternation: a second request works only if
    # the first got exactly one reply.
    assert peer.request({"op": "ping"})["op"] == "pong"
    bad = peer.request({"op": "frobnicate"})
    assert_bad_request(bad)
    assert peer.request({"op": "submit", "tasks": [{"task": ECHO, "args": [2]}]})[
        "results"][0]["value"] == 2


def test_dealer_speaking_req_envelope_gets_delimited_reply(shared_daemon: Daemon) -> None:
    """[b"", body] from a DEALER is the REQ envelope: one delimited reply."""
    peer = shared_daemon.raw()
    peer.send(b"", pack({"op": "submit", "tasks": [{"task": ECHO, "id": "d1", "args": [3]}]}))
    frames = peer.recv_frames()
    assert frames[0] == b""
    reply = msgspec.msgpack.decode(frames[1])
    assert reply["op"] == "results"
    assert [(r["id"], r["value"]) for r in reply["results"]] == [("d1", 3)]


def test_daemon_assigns_ids_when_the_client_does_not(shared_daemon: Daemon) -> None:
    """Tasks without an id get unique daemon-assigned ids (boot-prefixed),
    returned in the ack and carried by the results."""
    peer = shared_daemon.raw()
    boot = peer.request({"op": "ping"})["boot"]
    peer.send_msg({"op": "submit", "tasks": [{"task": ECHO, "args": [i]} for i in range(3)]})
    ack = peer.recv()
    ids = ack["accepted"]
    assert len(set(ids)) == 3 and ack["rejected"] == []
    assert all(i.startswith(f"{boot}-") for i in ids)
    results = peer.results_for(set(ids))
    assert [results[i]["value"] for i in ids] == [0, 1, 2]


def test_resubmitted_id_runs_once_and_gets_the_same_answer(daemon: Daemon) -> None:
    """A client-chosen id sent again while the task is still queued, and again
    after it finished, is one run: a second peer's submission gets its own
    copy of the one result, the same peer's repeat collapses into the first
    (no amplification), the cached result answers once finished, and
    exactly one result is published."""
    sub = daemon.subscribe(f"result.{PID}", "result.workers.builtin:sleep")
    accepted_before = daemon.stats()["accepted"]
    succeeded_before = daemon.stats()["succeeded"]
    peer = daemon.raw()
    # Two sleeps occupy both workers so "dup" is certainly still queued.
    peer.send_msg({"op": "submit", "tasks": [
        {"task": SLEEP, "id": f"busy-{i}", "args": [1.0]} for i in range(2)]})
    assert len(peer.recv()["accepted"]) == 2
    daemon.slot_holding("busy-0")
    daemon.slot_holding("busy-1")
    other = daemon.raw()
    for p in (peer, peer, other):
        p.send_msg({"op": "submit", "tasks": [{"task": PID, "id": "dup"}]})
        assert p.recv()["accepted"] == ["dup"]
    # The premise: every submission arrived while "dup" was unfinished.
    assert daemon.stats()["succeeded"] == succeeded_before
    answers = collect_results(peer, {"busy-0": 1, "busy-1": 1, "dup": 1})["dup"]
    first = answers[0]
    assert answers == [first]
    assert collect_results(other, {"dup": 1})["dup"] == [first]
    assert first["ok"] and first["attempts"] == 1
    assert first["value"] in daemon.slot_pids().values()

    peer.send_msg({"op": "submit", "tasks": [{"task": PID, "id": "dup"}]})
    assert peer.recv()["accepted"] == ["dup"]
    assert collect_results(peer, {"dup": 1})["dup"] == [first]

    stats = daemon.stats()
    assert stats["accepted"] - accepted_before == 3  # two sleeps and one "dup"
    assert (stats["queued"], stats["in_flight"]) == (0, 0)
    sub.fence(daemon.client())
    assert len(sub.results("dup")) == 1
    # And no further copy reached the connection.
    assert peer.request({"op": "ping"})["op"] == "pong"


def test_oversized_message_gets_too_large_and_daemon_keeps_serving(
    start_daemon: StartDaemon,
) -> None:
    """A message over tasks.max_message_bytes (but under twice it) is answered
    with TooLarge; the connection then works as before."""
    d = start_daemon(tasks={"max_message_bytes": 65536})
    peer = d.raw()
    body = submit_body(task=ECHO, id="big", args=["x" * 100_000])
    assert 65536 < len(body) < 2 * 65536
    peer.send(body)
    reply = peer.recv()
    assert reply["op"] == "error"
    assert reply["error"]["type"] == "TooLarge"
    assert "65536" in reply["error"]["message"]
    assert_serves(peer)


def test_message_beyond_twice_the_limit_drops_only_that_peer(
    start_daemon: StartDaemon,
) -> None:
    """A message over twice tasks.max_message_bytes is not even read: that
    peer is disconnected, and every other client is served throughout."""
    d = start_daemon(tasks={"max_message_bytes": 65536})
    other = d.raw()
    assert other.request({"op": "ping"})["op"] == "pong"
    attacker = d.raw()
    monitor = attacker.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        attacker.send(b"\x00" * (3 * 65536))
        assert monitor.poll(10_000), "the oversized sender was not disconnected"
        event = recv_monitor_message(monitor)
        assert event["event"] == zmq.EVENT_DISCONNECTED
    finally:
        attacker.sock.disable_monitor()
        monitor.close(linger=0)
    assert_serves(other)
    assert d.call("stats")["accepted"] == 1


def test_publisher_numbers_messages_per_topic_from_one(daemon: Daemon) -> None:
    """Each published message carries seq (per topic, from 1, +1 each time),
    gseq (per daemon, increasing across topics) and the daemon's boot id."""
    client = daemon.client()
    boot = client.ping()["boot"]
    sub = daemon.subscribe(f"result.{NOOP}", "event.supervisor.", client=client)
    for _ in range(3):
        client.submit(NOOP).result(timeout=10)
    daemon.call("pause")
    daemon.call("resume")
    daemon.call("pause")
    daemon.call("resume")
    assert client.map(NOOP, [None] * 0) == []
    client.starmap(NOOP, [()] * 300)
    messages = sub.fence(client)

    results = [m.body for m in messages if m.topic == f"result.{NOOP}"]
    assert [b["seq"] for b in results[:3]] == [1, 2, 3]
    assert [b["seq"] for b in results] == list(range(1, len(results) + 1))
    assert sum(len(b["results"]) for b in results) == 303
    paused = [m.body["seq"] for m in messages if m.topic == "event.supervisor.paused"]
    resumed = [m.body["seq"] for m in messages if m.topic == "event.supervisor.resumed"]
    assert paused == [1, 2] and resumed == [1, 2]
    gseqs = [m.body["gseq"] for m in messages]
    assert gseqs == sorted(gseqs) and len(set(gseqs)) == len(gseqs)
    assert {m.body["boot"] for m in messages} == {boot}
    assert sub.sub.gaps == {}


def test_pause_rejects_with_paused_and_resume_accepts_again(daemon: Daemon) -> None:
    """Control pause makes intake reject every task with Paused; resume lets
    tasks in again."""
    peer = daemon.raw()
    assert daemon.call("pause") == {"paused": True}
    ack = peer.request({"op": "submit", "tasks": [{"task": ECHO, "id": "p1", "args": [1]}]})
    assert ack["accepted"] == []
    assert [(r["id"], r["error"]["type"]) for r in ack["rejected"]] == [("p1", "Paused")]
    assert peer.request({"op": "ping"})["op"] == "pong"  # pings still answered
    assert daemon.call("resume") == {"paused": False}
    assert_serves(peer)
