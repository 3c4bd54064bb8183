"""Shared fixtures for the real-process tests: a phalanxd per test, peers.

``start_daemon(**sections)`` writes a TOML config whose intake, publisher
and control endpoints are ipc sockets in a short private directory (an ipc
path must fit in ``sun_path``, ~107 bytes, which pytest's tmp_path may not),
starts ``phalanxd --config`` in its own session and waits until every
worker slot is RUNNING. On teardown it stops the daemon the way an operator
does (SIGTERM, a bounded wait, then SIGKILL to its process group) and fails
the test if any process the daemon started outlived it.

Synchronisation is always a condition with a deadline (``wait_until``) or
a message we wait for, never a bare sleep.

Subscriptions are asynchronous in ZeroMQ: a SUB that has just connected
misses what is published before the daemon has processed its subscription.
``Subscription.sync`` closes that window: it submits marker echo tasks
until a marker's published result comes back, which proves every
subscription sent before it is active. ``Subscription.fence`` does the same
at the end of a test: everything published before the fence's result has
been received once the fence arrives (one PUB socket delivers in order).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psutil
import pytest
import zmq

from supervisor.client import Client, Message, Subscriber
from supervisor.ctl import connection as ctlclient

T = TypeVar("T")

ECHO = "workers.builtin:echo"
SYNC_TOPIC = "result." + ECHO
MARKER = "__px_marker__"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


# ------------------------------------------------------------------ helpers
def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.01,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    Fails the test with ``message`` (a string or a callable producing one,
    for details only known at the deadline) if ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"after {timeout:g}s: {text}")
        time.sleep(interval)


def phalanxd_command() -> list[str]:
    """The installed ``phalanxd`` next to this interpreter, else ``-m supervisor``."""
    script = Path(sys.executable).with_name("phalanxd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "supervisor"]


def short_tempdir() -> Path:
    """A private directory whose paths stay short enough for ipc://."""
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="px", dir=base))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(sections: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for name, body in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in body.items())
        lines.append("")
    return "\n".join(lines)


def merge(base: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]
          ) -> dict[str, dict[str, Any]]:
    out = {name: dict(body) for name, body in base.items()}
    for name, body in overrides.items():
        out.setdefault(name, {}).update(body)
    return out


def base_config(ipc_dir: Path) -> dict[str, dict[str, Any]]:
    return {
        "daemon": {"runtime_dir": str(ipc_dir / "run"), "log_format": "json"},
        "workers": {"count": 2},
        # workers.testing: the hostile tasks (crash, sabotage, ...) tests need.
        "tasks": {"allow": ["workers.builtin", "workers.testing"]},
        "endpoints": {
            "intake": f"ipc://{ipc_dir}/intake",
            "publisher": f"ipc://{ipc_dir}/pub",
            "control": f"ipc://{ipc_dir}/run/control",
        },
        "shutdown": {"grace": 10.0, "stop_timeout": 2.0},
        # Per test, and kept across restarts of the test's daemon.
        "journal": {"path": str(ipc_dir / "journal.db")},
    }


def free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ------------------------------------------------------------- raw sockets
class RawPeer:
    """A bare ZeroMQ socket speaking the wire protocol by hand."""

    def __init__(self, endpoint: str, kind: int = zmq.DEALER) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        # Bounded: a DEALER with no usable connection (a refused CURVE
        # handshake, say) blocks in send; zmq.Again after 10 s instead.
        self.sock.setsockopt(zmq.SNDTIMEO, 10_000)
        self.sock.connect(endpoint)

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def send_msg(self, obj: Any) -> None:
        self.sock.send(msgspec.msgpack.encode(obj))

    def recv_frames(self, timeout: float = 10.0) -> list[bytes]:
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"no reply within {timeout:g}s")
        return self.sock.recv_multipart()

    def recv(self, timeout: float = 10.0) -> Any:
        return msgspec.msgpack.decode(self.recv_frames(timeout)[-1])

    def request(self, obj: Any, timeout: float = 10.0) -> Any:
        self.send_msg(obj)
        return self.recv(timeout)

    def results_for(self, ids: set[str], timeout: float = 10.0) -> dict[str, dict[str, Any]]:
        """Read until a result for each id arrived; a second one fails."""
        got: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while not ids <= got.keys():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"missing results for {sorted(ids - got.keys())}")
            msg = self.recv(left)
            if msg.get("op") != "results":
                continue
            for res in msg["results"]:
                assert res["id"] not in got, f"second result for {res['id']}: {res}"
                got[res["id"]] = res
        return got

    def close(self) -> None:
        if not self.ctx.closed:
            self.sock.close(linger=0)
            self.ctx.term()


def ack_collecting(peer: RawPeer, got: dict[str, dict[str, Any]],
                   request: dict[str, Any]) -> dict[str, Any]:
    """Send ``request`` on ``peer``; return its ack (results that arrive
    meanwhile are kept in ``got`` by id). Each read is bounded (RawPeer.recv)."""
    peer.send_msg(request)
    while True:
        msg = peer.recv()
        if msg.get("op") == "ack" and msg.get("ref") == request["ref"]:
            return msg  # type: ignore[no-any-return]
        for res in msg.get("results", []):
            got[res["id"]] = res


def fill_journal_then_recover(peer: RawPeer, attempts: int, results_timeout: float,
                              recover_timeout: float) -> list[str]:
    """Queue two blockers (sleep 2 s), then 16 kB echoes one request at a
    time until one is refused. Asserts the refusal is JournalFull, that every
    accepted task completes with its value, and that work is accepted again
    within ``recover_timeout``. Returns the ids accepted before the refusal."""
    blockers = [f"block{i}" for i in range(2)]
    peer.send_msg({"op": "submit", "tasks": [
        {"task": "workers.builtin:sleep", "id": b, "args": [2.0]} for b in blockers]})
    accepted: list[str] = []
    refused: list[dict[str, Any]] = []
    got: dict[str, dict[str, Any]] = {}
    big = "x" * 16_000
    for i in range(attempts):
        reply = ack_collecting(peer, got, {"op": "submit", "ack": True, "ref": i, "tasks": [
            {"task": "workers.builtin:echo", "id": f"big{i}", "args": [big]}]})
        accepted += reply["accepted"]
        refused += [r["error"] for r in reply["rejected"]]
        if refused:
            break
    assert refused and refused[0]["type"] == "JournalFull", (len(accepted), refused)
    got.update(peer.results_for((set(accepted) | set(blockers)) - got.keys(),
                                timeout=results_timeout))
    assert all(got[i]["ok"] and got[i]["value"] == big for i in accepted)

    def accepts_again() -> bool:
        reply = ack_collecting(peer, got, {"op": "submit", "ack": True, "ref": "again",
                                           "tasks": [{"task": "workers.builtin:echo",
                                                      "args": [1]}]})
        return bool(reply["accepted"])

    wait_until(accepts_again, recover_timeout, interval=0.2,
               message="never accepted work again")
    return accepted


# ------------------------------------------------------------- subscription
class Subscription:
    """A supervisor.client.Subscriber that knows when it is really subscribed."""

    def __init__(self, endpoint: str, topics: tuple[str, ...]) -> None:
        self.topics = topics
        self._covers_sync = any(SYNC_TOPIC.startswith(t) for t in topics)
        wire_topics = list(topics) if self._covers_sync else [*topics, SYNC_TOPIC]
        self.sub = Subscriber(endpoint, topics=wire_topics)
        self.seen: list[Message] = []  # everything the test subscribed to
        self._markers: set[str] = set()

    def _pull(self, timeout: float) -> bool:
        """Receive one message (within ``timeout``); False if none came."""
        msg = self.sub.recv(timeout=max(timeout, 0.0))
        if msg is None:
            return False
        if msg.topic == SYNC_TOPIC:
            results = msg.body.get("results", [])
            mine = [r for r in results
                    if isinstance(r.get("value"), str) and r["value"].startswith(MARKER)]
            self._markers.update(r["value"] for r in mine)
            if not self._covers_sync:
                return True
            if mine:
                rest = [r for r in results if r not in mine]
                if not rest:
                    return True
                msg = Message(msg.topic, {**msg.body, "results": rest})
        self.seen.append(msg)
        return True

    def _marker_round_trip(self, client: Client, deadline: float, per_try: float) -> bool:
        marker = f"{MARKER}{uuid.uuid4().hex}"
        client.submit(ECHO, marker).result(timeout=max(deadline - time.monotonic(), 0.1))
        until = min(deadline, time.monotonic() + per_try)
        while marker not in self._markers:
            left = until - time.monotonic()
            if left <= 0:
                return False
            self._pull(left)
        return True

    def sync(self, client: Client, timeout: float = 15.0) -> Subscription:
        """Return once the daemon has processed our subscriptions."""
        deadline = time.monotonic() + timeout
        while not self._marker_round_trip(client, deadline, per_try=0.2):
            if time.monotonic() >= deadline:
                raise AssertionError("subscription never became active")
        return self

    def fence(self, client: Client, timeout: float = 15.0) -> list[Message]:
        """Receive everything published so far; return all messages seen."""
        deadline = time.monotonic() + timeout
        if not self._marker_round_trip(client, deadline, per_try=timeout):
            raise AssertionError("fence result was never published")
        return self.seen

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 10.0,
                 what: str = "message") -> Message:
        """The first message (seen before or arriving now) matching predicate."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for msg in self.seen[checked:]:
                if predicate(msg):
                    return msg
            checked = len(self.seen)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout:g}s; saw {self.topics_seen()}")
            self._pull(min(left, 0.1))

    def event(self, kind: str, timeout: float = 10.0, after: dict[str, Any] | None = None,
              **fields: Any) -> dict[str, Any]:
        """The first ``event.<kind>`` whose body has all of ``fields``
        (and, given ``after``, that was published after that message)."""
        topic = f"event.{kind}"
        since = after["gseq"] if after is not None else 0

        def match(msg: Message) -> bool:
            return (msg.topic == topic and msg.body.get("gseq", 0) > since
                    and all(msg.body.get(k) == v for k, v in fields.items()))

        return self.wait_for(match, timeout, what=f"{topic} {fields}").body

    def drain(self) -> None:
        """Take in whatever has arrived, without waiting."""
        while self._pull(0):
            pass

    def events(self, kind: str) -> list[dict[str, Any]]:
        """Every ``event.<kind>`` received so far."""
        self.drain()
        return [m.body for m in self.seen if m.topic == f"event.{kind}"]

    def results(self, task_id: str | None = None) -> list[dict[str, Any]]:
        """Every published result received so far (for ``task_id`` if given)."""
        self.drain()
        out = [r for m in self.seen if m.topic.startswith("result.")
               for r in m.body.get("results", [])]
        return out if task_id is None else [r for r in out if r.get("id") == task_id]

    def topics_seen(self) -> list[str]:
        return sorted({m.topic for m in self.seen})

    def close(self) -> None:
        self.sub.close()


# ------------------------------------------------------------ state dir
@pytest.fixture(autouse=True, scope="module")
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A daemon started without a journal path keeps its journal under
    $XDG_STATE_HOME: point that into this test run, never at the user's
    home (a file there is shared with every other run on the machine)."""
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "STATE_DIRECTORY")}
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    os.environ.pop("STATE_DIRECTORY", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# ------------------------------------------------------------------ daemon
class Daemon:
    """One running phalanxd and everything a test talks to it with."""

    def __init__(self, ipc_dir: Path, log_dir: Path, config: dict[str, dict[str, Any]]) -> None:
        self.dir = ipc_dir
        self.config = config
        self.config_path = log_dir / "phalanx.toml"
        self.config_path.write_text(to_toml(config))
        self.log_path = log_dir / "phalanxd.log"
        self.intake = config["endpoints"]["intake"]
        self.publisher = config["endpoints"]["publisher"]
        self.control = config["endpoints"]["control"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.expected_exit: int | None = 0  # checked on teardown; None: anything
        self._started: dict[int, psutil.Process] = {}
        self._closers: list[Callable[[], None]] = []

    # ---------------------------------------------------------- process
    def launch(self) -> Daemon:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*phalanxd_command(), "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                out.append(entry)
        return out

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"phalanxd still running after {timeout:g}s\n{self.log}") from None

    def signal(self, signum: int) -> None:
        self.snapshot()
        os.kill(self.pid, signum)

    def snapshot(self) -> None:
        """Remember every process the daemon has started, to check on exit."""
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            self._started.setdefault(child.pid, child)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Daemon:
        def ready() -> bool:
            if self.exited():
                raise AssertionError(
                    f"phalanxd exited with {self.proc.returncode} while starting\n{self.log}"
                )
            try:
                slots = self.status(timeout=0.5)
            except ctlclient.Unreachable:
                return False
            return all(s["state"] == "RUNNING" for s in slots)

        wait_until(ready, timeout, interval=0.02,
                   message=lambda: f"workers never all RUNNING\n{self.log}")
        return self

    # ---------------------------------------------------------- control
    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        return ctlclient.call(self.control, cmd, args, timeout=timeout)

    def status(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        slots = self.call("status", timeout=timeout)
        self.snapshot()
        return slots  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self.call("stats")  # type: ignore[no-any-return]

    def slot_pids(self) -> dict[int, int]:
        return {s["slot"]: s["pid"] for s in self.status()}

    def wait_all_running(self, timeout: float = 10.0, *, not_pids: set[int] = frozenset()
                         ) -> list[dict[str, Any]]:
        """Every slot RUNNING, on a worker whose pid is not in ``not_pids``."""
        last: list[Any] = []

        def check() -> list[dict[str, Any]] | None:
            slots = self.status()
            last[:] = slots
            ok = all(s["state"] == "RUNNING" and s["pid"] not in not_pids for s in slots)
            return slots if ok else None

        return wait_until(check, timeout, interval=0.02,
                          message=lambda: f"slots not all RUNNING on new workers: {last}")

    def slot_holding(self, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The status of the slot currently running ``task_id``."""
        def find() -> dict[str, Any] | None:
            for s in self.status():
                if s["current"] and s["current"]["id"] == task_id:
                    return s
            return None

        return wait_until(find, timeout, message=f"no slot is running {task_id}")

    # ----------------------------------------------------------- peers
    def _closing(self, fn: Callable[[], None]) -> None:
        self._closers.append(fn)

    def client(self) -> Client:
        c = Client(self.intake)
        self._closing(c.terminate)
        return c

    def raw(self, kind: int = zmq.DEALER) -> RawPeer:
        peer = RawPeer(self.intake, kind)
        self._closing(peer.close)
        return peer

    def subscribe(self, *topics: str, client: Client | None = None) -> Subscription:
        """A Subscription to ``topics``, already active when returned."""
        sub = Subscription(self.publisher, topics or ("",))
        self._closing(sub.close)
        return sub.sync(client or self.client())

    # -------------------------------------------------------- teardown
    def teardown(self) -> None:
        problems: list[str] = []
        for close in reversed(self._closers):
            try:
                close()
            except (zmq.ZMQError, OSError, RuntimeError) as exc:  # keep tearing down
                problems.append(f"closing a peer failed: {exc!r}")
        self._closers.clear()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.snapshot()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"phalanxd ignored SIGTERM for {STOP_TIMEOUT:g}s")
                self._kill_group()
                self.proc.wait(5)
            else:
                if self.expected_exit is not None and self.proc.returncode != self.expected_exit:
                    problems.append(f"phalanxd exited {self.proc.returncode} on SIGTERM")
        leftover = self.leftover_processes(timeout=5.0)
        if leftover:
            problems.append(f"processes started by phalanxd outlived it: {leftover}")
        self._kill_group()
        for proc in self._started.values():
            if alive(proc):
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
        if problems:
            raise AssertionError("; ".join(problems) + f"\n--- phalanxd log ---\n{self.log}")

    def leftover_processes(self, timeout: float) -> list[str]:
        """Processes the daemon started that are still alive ``timeout`` s after."""
        deadline = time.monotonic() + timeout
        while True:
            left = [p for p in self._started.values() if alive(p)]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        out = []
        for p in left:
            try:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            except psutil.Error:
                out.append(str(p.pid))
        return out

    def kill_everything(self, timeout: float = 10.0) -> None:
        """SIGKILL phalanxd, its process group and every process it started
        (workers have groups of their own): a crash of the whole service, as
        systemd's cgroup kill does it. Returns once all of them are gone."""
        self.snapshot()
        self.expected_exit = None
        self._kill_group()
        self.kill_started()
        self.wait_exit(timeout)
        wait_until(lambda: not any(alive(p) for p in self._started.values()), timeout,
                   message=lambda: f"still alive: {self.leftover_processes(0)}")

    def kill_started(self) -> None:
        """SIGKILL, by pid, every process the daemon was seen to start."""
        for proc in self._started.values():
            try:
                proc.kill()
            except psutil.Error:
                pass

    def restarted(self, log_dir: Path) -> Daemon:
        """A new phalanxd with this one's config (same endpoints, same journal)."""
        log_dir.mkdir(exist_ok=True)
        return Daemon(self.dir, log_dir, self.config)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # start_new_session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


StartDaemon = Callable[..., Daemon]


def _factory(ipc_dir: Path, log_dir: Path) -> tuple[StartDaemon, list[Daemon]]:
    started: list[Daemon] = []

    def start(overrides: dict[str, dict[str, Any]] | None = None, *, wait: bool = True,
              **sections: dict[str, Any]) -> Daemon:
        """Start phalanxd; ``overrides``/``sections`` merge into config sections."""
        n = len(started)
        run_dir = ipc_dir if n == 0 else ipc_dir / f"d{n}"
        run_dir.mkdir(exist_ok=True)
        logs = log_dir if n == 0 else log_dir / f"d{n}"
        logs.mkdir(exist_ok=True)
        config = merge(base_config(run_dir), {**(overrides or {}), **sections})
        d = Daemon(run_dir, logs, config)
        started.append(d)
        d.launch()
        if wait:
            d.wait_ready()
        return d

    return start, started


def _teardown_all(started: list[Daemon]) -> None:
    errors = []
    for d in started:
        try:
            d.teardown()
        except AssertionError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def start_daemon(ipc_dir: Path, tmp_path: Path) -> Iterator[StartDaemon]:
    """Factory: ``start_daemon(restart={"max_restarts": 1})`` -> a ready Daemon."""
    start, started = _factory(ipc_dir, tmp_path)
    yield start
    _teardown_all(started)


@pytest.fixture
def daemon(start_daemon: StartDaemon) -> Daemon:
    """A phalanxd with the test defaults (2 workers, ipc endpoints)."""
    return start_daemon()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One phalanxd for a whole module of tests that each leave it as found."""
    path = short_tempdir()
    start, started = _factory(path, tmp_path_factory.mktemp("phalanxd"))
    try:
        yield start()
    finally:
        try:
            _teardown_all(started)
        finally:
            shutil.rmtree(path, ignore_errors=True)
