"""docs/PROTOCOL.md is enough to write a client: proved by writing one.

The client here is what someone working from the document alone would
write: raw pyzmq sockets and ``msgspec.msgpack`` on plain dicts. It imports
nothing from ``supervisor`` (neither the client library nor the protocol
module), so if the daemon and the document disagree, these tests fail.
It talks to a real ``phalanxd`` started as a subprocess, with ipc endpoints
in a short private directory (an ipc path must fit in ``sun_path``).

The document's example messages are checked too: each ```hex block must
decode to the JSON example just above it and be its exact encoding, so the
examples cannot drift from the bytes a client will see.

Helpers live in this file on purpose (no conftest fixtures): the point is
to show how little a client needs. Every wait is a condition with a
deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest
import zmq

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_MD = ROOT / "docs" / "PROTOCOL.md"
WAIT = 15.0  # seconds: generous upper bound for any single expected event
MAX_MESSAGE_BYTES = 65536

encode = msgspec.msgpack.encode
decode = msgspec.msgpack.decode


# ---------------------------------------------------------------- helpers
def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def recv_frames(sock: zmq.Socket[bytes], timeout: float = WAIT) -> list[bytes]:
    if not sock.poll(int(timeout * 1000)):
        raise AssertionError(f"no message within {timeout}s")
    return sock.recv_multipart()


def recv_body(sock: zmq.Socket[bytes], timeout: float = WAIT) -> dict[str, Any]:
    """One reply from a DEALER or REQ socket: a single body frame, a map."""
    frames = recv_frames(sock, timeout)
    assert len(frames) == 1, frames
    body = decode(frames[0])
    assert isinstance(body, dict)
    return body


def send_body(sock: zmq.Socket[bytes], body: dict[str, Any]) -> None:
    sock.send(encode(body))


class Phalanxd:
    """A phalanxd subprocess with ipc endpoints in its own temp directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="px", dir="/tmp"))
        self.runtime_dir = self.dir / "run"
        self.intake = f"ipc://{self.dir}/intake.sock"
        self.publisher = f"ipc://{self.dir}/pub.sock"
        # Not configured: the document says where it is by default.
        self.control = f"ipc://{self.runtime_dir}/control.sock"
        self.config = self.dir / "phalanx.toml"
        self.config.write_text(
            "[daemon]\n"
            f'runtime_dir = "{self.runtime_dir}"\n'
            'log_format = "json"\n'
            "[workers]\n"
            "count = 2\n"
            "[endpoints]\n"
            f'intake = "{self.intake}"\n'
            f'publisher = "{self.publisher}"\n'
            "[tasks]\n"
            f"max_message_bytes = {MAX_MESSAGE_BYTES}\n"
        )
        self.log = open(self.dir / "phalanxd.log", "wb")
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PHALANX_CONFIG")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "--config", str(self.config)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True,
        )
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sockets: list[zmq.Socket[bytes]] = []
        self.boot = ""

    def socket(self, kind: int, endpoint: str) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        self.sockets.append(sock)
        return sock

    def log_text(self) -> str:
        self.log.flush()
        return (self.dir / "phalanxd.log").read_text(errors="replace")[-4000:]

    def control_call(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        sock = self.socket(zmq.DEALER, self.control)
        try:
            request: dict[str, Any] = {"cmd": cmd}
            if args is not None:
                request["args"] = args
            send_body(sock, request)
            return recv_body(sock)
        finally:
            sock.close(linger=0)
            self.sockets.remove(sock)

    def wait_ready(self) -> None:
        """Ready = a pong on intake, then every worker slot RUNNING."""
        sock = self.socket(zmq.DEALER, self.intake)
        send_body(sock, {"op": "ping"})  # queued by libzmq until the daemon binds
        deadline = time.monotonic() + WAIT
        while not sock.poll(100):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"phalanxd did not answer ping:\n{self.log_text()}")
        pong = recv_body(sock)
        assert pong["op"] == "pong", pong
        self.boot = pong["boot"]

        def all_running() -> bool:
            reply = self.control_call("status")
            return reply["ok"] and all(s["state"] == "RUNNING" for s in reply["result"])

        wait_until(all_running)

    def stop(self) -> None:
        """SIGTERM; after a bounded wait SIGKILL the whole process group."""
        for sock in self.sockets:
            sock.close(linger=0)
        self.ctx.term()
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=WAIT)
        # Workers sit in process groups of their own; none may outlive it.
        _, alive = psutil.wait_procs(children, timeout=WAIT)
        for proc in alive:
            proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert not alive, f"processes outlived phalanxd: {alive}"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Phalanxd]:
    d = Phalanxd()
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


def new_id() -> str:
    return f"doc-{uuid.uuid4().hex}"


def collect_results(sock: zmq.Socket[bytes], ids: set[str]) -> dict[str, dict[str, Any]]:
    """Read `results` messages until every id in ``ids`` has its result."""
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + WAIT
    while not ids <= got.keys():
        body = recv_body(sock, max(0.0, deadline - time.monotonic()))
        assert body["op"] == "results", body
        for result in body["results"]:
            assert result["id"] not in got, f"second result for {result['id']}"
            got[result["id"]] = result
    return got


# ------------------------------------------------------ document examples
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def doc_examples() -> list[tuple[Any, bytes]]:
    blocks = FENCE.findall(PROTOCOL_MD.read_text())
    pairs = []
    for i, (lang, text) in enumerate(blocks):
        if lang != "hex":
            continue
        prev_lang, prev_text = blocks[i - 1]
        assert prev_lang == "json", f"hex block #{i} does not follow a json block"
        pairs.append((json.loads(prev_text), bytes.fromhex(text)))
    return pairs


def test_every_hex_example_is_the_exact_encoding_of_the_json_above_it() -> None:
    """Each ```hex block in PROTOCOL.md decodes to the JSON example shown just
    before it, and encoding that JSON gives exactly those bytes (so key order
    is as documented); examples exist for submit, ack and results at least."""
    pairs = doc_examples()
    for value, raw in pairs:
        assert same(decode(raw), value), (value, raw.hex(" "))
        assert encode(value) == raw, value
    ops = {value.get("op") for value, _ in pairs}
    assert {"ping", "submit", "ack", "results", "pong", "error"} <= ops
    assert any("seq" in v and "results" in v for v, _ in pairs), "no published result example"
    assert any("kind" in v for v, _ in pairs), "no event example"
    assert any("cmd" in v for v, _ in pairs), "no control example"


# ------------------------------------------------------------------ intake
def test_ping_gets_a_pong_with_version_protocol_boot_and_workers(daemon: Phalanxd) -> None:
    """`{"op": "ping"}` over a DEALER gets one `pong` carrying the documented
    fields: protocol 1, the boot id, the configured number of workers."""
    sock = daemon.socket(zmq.DEALER, daemon.intake)
    send_body(sock, {"op": "ping"})
    pong = recv_body(sock)
    assert pong["op"] == "pong"
    assert pong["protocol"] == 1
    assert isinstance(pong["version"], str) and pong["version"]
    assert pong["boot"] == daemon.boot
    assert pong["workers"] == 2
    # credit: 2 running workers x (1 + credit_prefetch 2), nothing held
    # fields at their default (0) are omitted from the pong
    assert (pong.get("credit", 0), pong.get("capacity", 0), pong.get("held", 0)) == (6, 6, 0)


def test_dealer_submit_batch_gets_ack_then_one_result_per_accepted_task(daemon: Phalanxd) -> None:
    """A batch over DEALER: the `ack` lists accepted ids in request order
    (including a daemon-assigned one) and the refused task with its error
    type; then each accepted task gets exactly one result with `ok`,
    `attempts` and `value`, and a raised exception arrives as a failed
    result named after its class, with a traceback."""
    sock = daemon.socket(zmq.DEALER, daemon.intake)
    a, b, c, refused = new_id(), new_id(), new_id(), new_id()
    send_body(sock, {"op": "submit", "tasks": [
        {"task": "workers.builtin:echo", "id": a, "args": [42]},
        {"task": "workers.builtin:echo", "id": b, "kwargs": {"x": {"nested": [1, 2.5, None, True]}}},
        {"task": "os:system", "id": refused, "args": ["true"]},
        {"task": "workers.builtin:echo", "args": ["no id given"]},
        {"task": "workers.builtin:fail", "id": c, "args": ["on purpose"]},
    ]})
    ack = recv_body(sock)
    assert ack["op"] == "ack", ack
    assert ack["accepted"][:2] == [a, b] and ack["accepted"][3] == c
    assigned = ack["accepted"][2]
    assert assigned.startswith(daemon.boot + "-")
    assert len(ack["rejected"]) == 1
    assert ack["rejected"][0]["id"] == refused
    assert ack["rejected"][0]["error"]["type"] == "NotAllowed"

    results = collect_results(sock, {a, b, c, assigned})
    assert results[a] == {"id": a, "task": "workers.builtin:echo", "ok": True, "attempts": 1, "value": 42}
    assert results[b]["value"] == {"nested": [1, 2.5, None, True]}
    assert results[assigned]["value"] == "no id given"
    failed = results[c]
    assert failed["ok"] is False and "value" not in failed
    assert failed["error"]["type"] == "TaskFailure"
    assert failed["error"]["message"] == "on purpose"
    assert "Traceback" in failed["error"]["traceback"]


def test_pipelined_requests_get_their_responses_in_order(daemon: Phalanxd) -> None:
    """Requests sent back to back on one DEALER get one immediate response
    each (ack / error / pong) in the order sent; `results` messages may come
    in between and are skipped when matching."""
    sock = daemon.socket(zmq.DEALER, daemon.intake)
    first, second = new_id(), new_id()
    send_body(sock, {"op": "submit", "tasks": [{"task": "workers.builtin:echo", "id": first}]})
    sock.send(b"\xc1 not messagepack")
    send_body(sock, {"op": "submit", "tasks": [{"task": "workers.builtin:echo", "id": second}]})
    send_body(sock, {"op": "ping"})
    responses: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(responses) < 4:
        body = recv_body(sock, max(0.0, deadline - time.monotonic()))
        if body["op"] != "results":
            responses.append(body)
    assert [r["op"] for r in responses] == ["ack", "error", "ack", "pong"]
    assert responses[0]["accepted"] == [first]
    assert responses[1]["error"]["type"] == "BadRequest"
    assert responses[2]["accepted"] == [second]


def test_resubmitting_a_finished_id_replays_the_cached_result(daemon: Phalanxd) -> None:
    """Submitting an id again after its task finished does not run it again:
    the submission is acked and the result of the first run follows in a
    `results` message. The same id with other arguments is refused with
    IdConflict: the id is the idempotency key."""
    sock = daemon.socket(zmq.DEALER, daemon.intake)
    task_id = new_id()
    send_body(sock, {"op": "submit", "tasks": [{"task": "workers.builtin:echo", "id": task_id, "args": [1]}]})
    assert recv_body(sock)["accepted"] == [task_id]
    assert collect_results(sock, {task_id})[task_id]["value"] == 1
    send_body(sock, {"op": "submit", "tasks": [{"task": "workers.builtin:echo", "id": task_id, "args": [1]}]})
    assert recv_body(sock)["accepted"] == [task_id]
    assert collect_results(sock, {task_id})[task_id]["value"] == 1
    send_body(sock, {"op": "submit", "tasks": [{"task": "workers.builtin:echo", "id": task_id, "args": [2]}]})
    ack = recv_body(sock)
    assert ack["accepted"] == [] and ack["rejected"][0]["error"]["type"] == "IdConflict"


def test_req_socket_gets_one_reply_with_every_result_including_refusals(daemon: Phalanxd) -> None:
    """A REQ client gets no ack: one `results` reply per submit, holding one
    result per task, a refused task as a failed result without `attempts`;
    `ping` works over REQ too."""
    sock = daemon.socket(zmq.REQ, daemon.intake)
    send_body(sock, {"op": "ping"})
    assert recv_body(sock)["op"] == "pong"
    a, b, refused = new_id(), new_id(), new_id()
    send_body(sock, {"op": "submit", "tasks": [
        {"task": "workers.builtin:echo", "id": a, "args": ["A"]},
        {"task": "workers.builtin:nope", "id": refused},
        {"task": "workers.builtin:echo", "id": b, "args": ["B"]},
    ]})
    reply = recv_body(sock)
    assert reply["op"] == "results", reply
    by_id = {r["id"]: r for r in reply["results"]}
    assert set(by_id) == {a, b, refused}
    assert by_id[a]["value"] == "A" and by_id[a]["ok"] is True and by_id[a]["attempts"] == 1
    assert by_id[b]["value"] == "B"
    assert by_id[refused]["ok"] is False
    assert by_id[refused]["error"]["type"] == "UnknownTask"
    assert "attempts" not in by_id[refused]
    send_body(sock, {"op": "submit", "tasks": []})
    assert recv_body(sock) == {"op": "results", "results": []}


def test_dealer_with_empty_delimiter_frame_uses_request_reply_mode(daemon: Phalanxd) -> None:
    """A DEALER that sends ["", body] is answered like a REQ: ["", body], and
    a submit gets its single `results` reply instead of an ack."""
    sock = daemon.socket(zmq.DEALER, daemon.intake)
    task_id = new_id()
    sock.send_multipart([b"", encode({"op": "submit", "tasks": [
        {"task": "workers.builtin:echo", "id": task_id, "args": [7]}]})])
    frames = recv_frames(sock)
    assert len(frames) == 2 and frames[0] == b""
    reply = decode(frames[1])
    assert reply["op"] == "results"
    assert [(r["id"], r["value"]) for r in reply["results"]] == [(task_id, 7)]


def test_bad_requests_get_an_error_reply_and_change_nothing(daemon: Phalanxd) -> None:
    """Garbage bytes, a non-map, an unknown field, an unknown op, two body
    frames and an oversized body each get one `error` reply with the
    documented type; the daemon then still answers ping on the same socket."""
    sock = daemon.socket(zmq.DEALER, daemon.intake)
    cases: list[tuple[list[bytes], str]] = [
        ([b"\xc1\xc1garbage"], "BadRequest"),
        ([encode([1, 2, 3])], "BadRequest"),
        ([encode({"op": "ping", "extra": 1})], "BadRequest"),
        ([encode({"op": "launch"})], "BadRequest"),
        ([encode({"op": "submit", "tasks": [{"task": "workers.builtin:echo", "id": 5}]})], "BadRequest"),
        ([encode({"op": "ping"}), encode({"op": "ping"})], "BadRequest"),
        ([b"\x00" * (MAX_MESSAGE_BYTES + 1)], "TooLarge"),
    ]
    for frames, expected in cases:
        sock.send_multipart(frames)
        reply = recv_body(sock)
        assert reply["op"] == "error", (frames[0][:20], reply)
        assert reply["error"]["type"] == expected, reply
        assert isinstance(reply["error"]["message"], str)
        assert "traceback" not in reply["error"]
    send_body(sock, {"op": "ping"})
    assert recv_body(sock)["op"] == "pong"


def test_task_level_checks_reject_single_tasks_not_the_request(daemon: Phalanxd) -> None:
    """`args` not an array, `kwargs` not a map, a bad name, a negative
    timeout or max_attempts 0 reject that task only, in the ack."""
    sock = daemon.socket(zmq.DEALER, daemon.intake)
    ok_id = new_id()
    bad = [new_id() for _ in range(5)]
    send_body(sock, {"op": "submit", "tasks": [
        {"task": "workers.builtin:echo", "id": bad[0], "args": {"x": 1}},
        {"task": "workers.builtin:echo", "id": bad[1], "kwargs": [1]},
        {"task": "no-colon", "id": bad[2]},
        {"task": "workers.builtin:echo", "id": bad[3], "timeout": -1},
        {"task": "workers.builtin:echo", "id": bad[4], "max_attempts": 0},
        {"task": "workers.builtin:echo", "id": ok_id, "timeout": 5, "max_attempts": 1},
    ]})
    ack = recv_body(sock)
    assert ack["accepted"] == [ok_id]
    assert [(r["id"], r["error"]["type"]) for r in ack["rejected"]] == [(i, "BadRequest") for i in bad]
    assert collect_results(sock, {ok_id})[ok_id]["ok"] is True


# --------------------------------------------------------------- publisher
def test_subscriber_receives_published_results_numbered_from_one(daemon: Phalanxd) -> None:
    """A SUB on `result.` gets [topic, body] messages: topic
    `result.<task>`, body with `seq` counting 1, 2, ... per topic, `gseq`
    increasing, the daemon's `boot` and the results themselves. The
    subscription is proved active first with probe tasks on another topic
    (the slow-joiner recipe of the document). No other test here runs
    `workers.builtin:sleep`, so its topic starts at seq 1."""
    sub = daemon.socket(zmq.SUB, daemon.publisher)
    sub.setsockopt(zmq.SUBSCRIBE, b"result.")
    dealer = daemon.socket(zmq.DEALER, daemon.intake)

    def probe_seen() -> bool:
        probe = new_id()
        send_body(dealer, {"op": "submit", "tasks": [{"task": "workers.builtin:noop", "id": probe}]})
        deadline = time.monotonic() + 0.5
        while sub.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            topic, body = sub.recv_multipart()
            if topic == b"result.workers.builtin:noop":
                if any(r["id"] == probe for r in decode(body)["results"]):
                    return True
        return False

    wait_until(probe_seen, interval=0)
    ids = [new_id() for _ in range(20)]
    send_body(dealer, {"op": "submit", "tasks": [
        {"task": "workers.builtin:sleep", "id": i, "args": [0]} for i in ids]})
    seen: dict[str, dict[str, Any]] = {}
    seqs: list[int] = []
    gseqs: list[int] = []
    deadline = time.monotonic() + WAIT
    while len(seen) < len(ids):
        frames = recv_frames(sub, max(0.0, deadline - time.monotonic()))
        assert len(frames) == 2
        topic, raw = frames
        body = decode(raw)
        assert body["boot"] == daemon.boot
        gseqs.append(body["gseq"])
        if topic != b"result.workers.builtin:sleep":
            continue
        seqs.append(body["seq"])
        for result in body["results"]:
            assert result["task"] == "workers.builtin:sleep"
            seen[result["id"]] = result
    assert set(seen) == set(ids)
    assert all(r["ok"] is True and r["value"] == 0 and r["attempts"] == 1 for r in seen.values())
    assert seqs == list(range(1, len(seqs) + 1))
    assert gseqs == sorted(gseqs) and len(set(gseqs)) == len(gseqs)


# ----------------------------------------------------------------- control
def test_control_status_over_ipc_and_unknown_command(daemon: Phalanxd) -> None:
    """The control socket is at ipc://<runtime_dir>/control.sock, a socket
    file only its owner can use; `{"cmd": "status"}` answers
    `{"ok": true, "result": [slot, ...]}` with the documented fields, and an
    unknown command answers `ok: false` with type UnknownCommand."""
    path = Path(daemon.control.removeprefix("ipc://"))
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode) and mode & 0o077 == 0, oct(mode)
    reply = daemon.control_call("status", {})
    assert reply["ok"] is True, reply
    slots = reply["result"]
    assert [s["slot"] for s in slots] == [0, 1]
    for s in slots:
        assert s["state"] == "RUNNING"
        assert isinstance(s["pid"], int)
        assert {"uptime", "restarts", "done", "failed", "held", "current", "last_exit"} <= s.keys()
    assert daemon.control_call("version")["result"]["boot"] == daemon.boot
    reply = daemon.control_call("frobnicate")
    assert reply["ok"] is False and "result" not in reply
    assert reply["error"]["type"] == "UnknownCommand"


# ----------------------------------------------------------- configuration
CONFIGURATION_MD = ROOT / "docs" / "CONFIGURATION.md"


def _stub_task_modules(folder: Path, text: str) -> None:
    """The examples allow the reader's own modules (myapp.tasks, ...):
    --check-config imports them, so put stand-ins next to the config file,
    where tasks.path looks by default."""
    try:
        allow = tomllib.loads(text).get("tasks", {}).get("allow", [])
    except tomllib.TOMLDecodeError:
        return  # an invalid example: the check reports that instead
    for module in allow:
        if module.split(".")[0] in ("workers", "bench"):
            continue
        parts = module.split(".")
        package = folder.joinpath(*parts[:-1])
        package.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(parts)):
            (folder.joinpath(*parts[:depth]) / "__init__.py").touch()
        (package / f"{parts[-1]}.py").write_text("def run():\n    return 1\n")


def check_config(text: str) -> subprocess.CompletedProcess[str]:
    folder = Path(tempfile.mkdtemp(prefix="px", dir="/tmp"))
    try:
        path = folder / "phalanx.toml"
        path.write_text(text)
        _stub_task_modules(folder, text)
        return subprocess.run(
            [sys.executable, "-m", "supervisor", "--check-config", str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_configuration_doc_documents_exactly_the_keys_the_daemon_has(daemon: Phalanxd) -> None:
    """Every section and key of the running daemon's configuration (control
    `config`) has a row in docs/CONFIGURATION.md under its `[section]`
    heading, and the document lists no key the daemon does not have."""
    effective = daemon.control_call("config")["result"]
    documented: dict[str, set[str]] = {}
    section = None
    for line in CONFIGURATION_MD.read_text().splitlines():
        if m := re.match(r"^### `\[(\w+)\]`", line):
            section = m[1]
            documented[section] = set()
        elif line.startswith("## "):
            section = None
        elif section and (m := re.match(r"^\| `(\w+)` \|", line)):
            documented[section].add(m[1])
    assert documented == {name: set(keys) for name, keys in effective.items()}


def test_configuration_doc_examples_are_valid_and_errors_name_file_and_key() -> None:
    """Each ```toml example in docs/CONFIGURATION.md passes
    `phalanxd --check-config`; an invalid file exits with status 2 and one
    stderr line naming the file and the dotted key."""
    blocks = [text for lang, text in FENCE.findall(CONFIGURATION_MD.read_text()) if lang == "toml"]
    assert len(blocks) >= 2
    for text in blocks:
        done = check_config(text)
        assert done.returncode == 0, done.stderr
        assert ": ok (" in done.stdout
    done = check_config("[workers]\ncuont = 2\n")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "phalanx.toml: workers.cuont: unknown key" in lines[0], lines
