"""phalanxctl, the supervisorctl-style CLI, driven as an operator drives it.

Most tests run the real ``phalanxctl`` console script as a subprocess
against a real ``phalanxd`` (the conftest fixtures) and check what it
prints and its exit code; the interactive shell runs on a pseudo-terminal.
A few pure tests at the top pin down formatting and argument rules without
any process. Waits are conditions with deadlines, never bare sleeps.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.client import TaskError
from supervisor.ctl import render
from supervisor.ctl.commands import arguments
from supervisor.ctl.core import UsageError, parse_slots
from supervisor.ctl.main import find_endpoint
from supervisor.ctl.stream import connectable
from tests.conftest import Daemon, StartDaemon, alive, merge, to_toml, wait_until

ECHO = "workers.builtin:echo"
SAY = "workers.testing:say"
SLEEP = "workers.builtin:sleep"
CRASH = "workers.testing:crash"
SPAWN_CHILD = "workers.testing:spawn_child"
CLOCK = r"\d\d:\d\d:\d\d\.\d{3}"


# ================================================================ helpers
def phalanxctl_command() -> list[str]:
    """The installed console script next to this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("phalanxctl")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "supervisor.ctl"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would steer endpoint discovery."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PHALANX_CONTROL", "PHALANX_CONFIG", "PHALANX_RUNTIME_DIR",
                        "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR")}
    env.update(extra)
    return env


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def ctl(*args: str, endpoint: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 30.0, **popen: Any) -> Ran:
    """Run phalanxctl once; ``endpoint`` is passed as --endpoint."""
    argv = [*phalanxctl_command(), *(["--endpoint", endpoint] if endpoint else []), *args]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=env if env is not None else clean_env(), **popen,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def run(d: Daemon, *args: str) -> Ran:
    return ctl(*args, endpoint=d.control)


DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.argv[1], sys.argv[1:])")


class Streaming:
    """A phalanxctl that keeps printing (tail -f, events); output read by a thread."""

    def __init__(self, argv: list[str]) -> None:
        # A pytest run in the background of a script inherits SIGINT ignored,
        # and so would phalanxctl: give it the disposition a terminal gives.
        argv = [sys.executable, "-c", DEFAULT_SIGINT, *argv]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=clean_env(),
        )
        self._out: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):  # whatever arrived, not a full buffer
            self._out.append(chunk)

    @property
    def out(self) -> str:
        return b"".join(self._out).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.out, timeout,
                   message=lambda: f"{text!r} never printed; got {self.out!r}")

    def finish(self, timeout: float = 10.0) -> tuple[int, str, str]:
        """Wait for it to exit on its own: (code, stdout, stderr)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"still running after {timeout:g}s; printed {self.out!r}") from None
        self._reader.join(5)
        assert self.proc.stderr is not None
        return code, self.out, self.proc.stderr.read().decode(errors="replace")

    def interrupt(self) -> tuple[int, str, str]:
        """Ctrl-C, as an operator ends it."""
        self.proc.send_signal(signal.SIGINT)
        return self.finish()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@contextmanager
def streaming(d: Daemon, *args: str) -> Iterator[Streaming]:
    s = Streaming([*phalanxctl_command(), "--endpoint", d.control, *args])
    try:
        yield s
    finally:
        s.close()


class Terminal:
    """phalanxctl's shell on a pseudo-terminal, read with deadlines."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.seen = b""
        self._mark = 0

    def expect(self, marker: str, timeout: float = 10.0) -> str:
        """Read until ``marker`` appears after the previous one; what came before it."""
        want = marker.encode()
        deadline = time.monotonic() + timeout
        while want not in self.seen[self._mark:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} within {timeout:g}s; got "
                                     f"{self.seen[self._mark:].decode(errors='replace')!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # EIO: the shell has exited and closed the terminal
                    time.sleep(0.01)
        end = self.seen.index(want, self._mark) + len(want)
        text = self.seen[self._mark:end].decode(errors="replace")
        self._mark = end
        return text

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            os.close(self.master)


def exited(pid: int) -> bool:
    try:
        return not alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


def rewrite_config(d: Daemon, **sections: dict[str, Any]) -> None:
    d.config = merge(d.config, sections)
    d.config_path.write_text(to_toml(d.config))


# ============================================================= pure tests
def test_status_line_reads_like_supervisorctl() -> None:
    """A RUNNING slot shows pid, uptime, counters, rss, cpu and its current
    task; columns line up across slots; a stopped slot shows its last exit."""
    slots = [
        {"slot": 0, "state": "RUNNING", "pid": 1234, "uptime": 62.4, "restarts": 0, "done": 10,
         "failed": 0, "held": 1, "current": {"id": "a", "task": "workers.builtin:sleep",
                                             "for": 1.23}, "rss": 12.3 * 1024 * 1024,
         "cpu": 0.5, "last_exit": ""},
        {"slot": 10, "state": "STOPPED", "pid": None, "uptime": 0, "restarts": 2, "done": 3,
         "failed": 1, "held": 0, "current": None, "rss": None, "cpu": None,
         "last_exit": "signal SIGKILL (9)"},
    ]
    first, second = render.status(slots).splitlines()
    assert first == ("0   RUNNING  pid 1234, uptime 0:01:02  restarts 0  done 10  failed 0"
                     "  rss 12.3M  cpu 0.5%  current workers.builtin:sleep (1.2s)")
    assert second.startswith("10  STOPPED  signal SIGKILL (9)        restarts 2  done 3")
    assert first.index("restarts") == second.index("restarts")


def test_changes_render_like_reread() -> None:
    """reread prints `key: old -> new (applies ...)` and says so when nothing changed."""
    change = {"key": "tasks.timeout", "old": 0.0, "new": 5.0, "applies": "live"}
    assert render.changes([change], done=False) == "tasks.timeout: 0.0 -> 5.0 (applies live)"
    assert render.changes([], done=False) == "No config updates"
    assert "applied live" in render.changes([change], done=True)


def test_event_line_format() -> None:
    """An event prints as `HH:MM:SS.mmm topic key=value ...` without the envelope fields."""
    body = {"seq": 3, "gseq": 9, "boot": "b", "kind": "worker.exited", "time": 0.25,
            "slot": 0, "pid": 123, "exit": "signal SIGKILL (9)"}
    (line,) = render.event_lines("event.worker.exited", body, now=0.0)
    assert re.fullmatch(CLOCK + r" event\.worker\.exited slot=0 pid=123 exit=signal SIGKILL \(9\)",
                        line), line
    assert line[9:12] == "250"


def test_config_renders_as_toml_sections() -> None:
    text = render.config({"workers": {"count": 2, "preload": []}, "tasks": {"allow": ["a.b"]}})
    assert text == "[workers]\ncount = 2\npreload = []\n\n[tasks]\nallow = [\"a.b\"]"


def test_slot_arguments() -> None:
    """Slots are numbers or `all`; anything else is a usage error; supervisorctl's
    `tail -100` means `-n 100`; bind wildcards become connectable addresses."""
    assert parse_slots(["0", "2"], required=True) == [0, 2]
    assert parse_slots(["1", "all"], required=True) == "all"
    assert parse_slots([], required=False) is None
    for bad in (["x"], ["-1"], []):
        with pytest.raises(UsageError):
            parse_slots(bad, required=True)
    assert arguments(["-100", "0"]) == ["-n", "100", "0"]
    assert arguments(["-f", "0"]) == ["-f", "0"]
    assert connectable("tcp://*:7456") == "tcp://127.0.0.1:7456"
    assert connectable("ipc:///x/pub") == "ipc:///x/pub"


def test_endpoint_discovery_order(tmp_path: Path) -> None:
    """--endpoint beats --config beats $PHALANX_CONTROL beats $PHALANX_CONFIG beats
    the default ipc://<runtime dir>/control.sock."""
    conf = tmp_path / "p.toml"
    conf.write_text('[endpoints]\ncontrol = "ipc:///from/config"\n')
    conf2 = tmp_path / "q.toml"
    conf2.write_text('[endpoints]\ncontrol = "ipc:///from/env/config"\n')

    def ns(endpoint: str | None = None, config: str | None = None) -> Namespace:
        return Namespace(endpoint=endpoint, config=config)

    env = {"PHALANX_CONTROL": "ipc:///from/env", "PHALANX_CONFIG": str(conf2),
           "PHALANX_RUNTIME_DIR": "/run/px"}
    assert find_endpoint(ns("ipc:///opt", str(conf)), env) == "ipc:///opt"
    assert find_endpoint(ns(config=str(conf)), env) == "ipc:///from/config"
    assert find_endpoint(ns(), env) == "ipc:///from/env"
    del env["PHALANX_CONTROL"]
    assert find_endpoint(ns(), env) == "ipc:///from/env/config"
    del env["PHALANX_CONFIG"]
    old = os.environ.get("PHALANX_RUNTIME_DIR")
    os.environ["PHALANX_RUNTIME_DIR"] = "/run/px"
    try:
        assert find_endpoint(ns(), env) == "ipc:///run/px/control.sock"
    finally:
        if old is None:
            del os.environ["PHALANX_RUNTIME_DIR"]
        else:
            os.environ["PHALANX_RUNTIME_DIR"] = old


# ============================================== no daemon: usage, errors
def test_cannot_connect_exit_codes(tmp_path: Path) -> None:
    """With no daemon: status exits 4, other commands 7 (LSB "not running"), each
    with one line on stderr naming the endpoint; a stale socket file and a
    silent TCP endpoint fail the same way (the latter after --timeout)."""
    missing = f"ipc://{tmp_path}/nothing.sock"
    r = ctl("status", endpoint=missing)
    assert (r.code, r.out) == (4, "")
    assert r.err == f"phalanxctl: cannot connect to {missing}: is phalanxd running? " \
                    "(no such socket)\n"
    r = ctl("version", endpoint=missing)
    assert r.code == 7 and len(r.err.splitlines()) == 1

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # a socket file nobody listens on, as after a SIGKILL
    r = ctl("stop", "0", endpoint=f"ipc://{stale}")
    assert r.code == 7 and "connection refused" in r.err

    with socket.socket() as s:  # a port that is bound but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        start = time.monotonic()
        r = ctl("--timeout", "0.5", "stats", endpoint=f"tcp://127.0.0.1:{port}")
        assert time.monotonic() - start < 10
    assert r.code == 7
    assert "no reply from" in r.err and "within 0.5s" in r.err


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """Unknown commands, missing or malformed arguments, a bad config file and a
    bad --timeout are usage errors (exit 2) and never reach the daemon."""
    dead = f"ipc://{tmp_path}/none"
    for argv in (["bogus"], ["stop"], ["stop", "x"], ["tail"], ["tail", "0", "stdin"],
                 ["signal"], ["--timeout", "0", "status"]):
        r = ctl(*argv, endpoint=dead)
        assert r.code == 2, (argv, r)
        assert r.out == ""
        assert "phalanxctl" in r.err
    r = ctl("--config", str(tmp_path / "missing.toml"), "status")
    assert r.code == 2 and "invalid config" in r.err


def test_help_needs_no_daemon(tmp_path: Path) -> None:
    """`help` lists every command; `help CMD` and `CMD --help` show its usage; exit 0."""
    dead = f"ipc://{tmp_path}/none"
    r = ctl("help", endpoint=dead)
    assert r.code == 0
    for name in ("status", "start", "stop", "restart", "signal", "pid", "tail", "maintail",
                 "clear", "stats", "top", "pause", "resume", "reread", "update", "reload",
                 "shutdown", "version", "config", "avail", "events", "help"):
        assert re.search(rf"^{name}\s", r.out, re.M), name
    r = ctl("help", "tail", endpoint=dead)
    assert r.code == 0 and r.out.startswith("usage: tail")
    r = ctl("stop", "--help", endpoint=dead)
    assert r.code == 0 and "usage: phalanxctl stop" in r.out


# ======================================================= shared daemon
def test_status_all_running_exit_0(shared_daemon: Daemon) -> None:
    """status prints one aligned supervisorctl-style line per slot and exits 0
    when all are RUNNING; slot numbers narrow it; --json gives the raw list."""
    r = run(shared_daemon, "status")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines):
        assert re.match(rf"{i}  RUNNING  pid \d+, uptime \d+:\d\d:\d\d  restarts \d+  done \d+"
                        r"  failed \d+  rss [\d.]+[BKMG]  cpu [\d.]+%  current ", line), line
    r = run(shared_daemon, "status", "1")
    assert r.code == 0 and r.out.startswith("1  RUNNING")
    r = run(shared_daemon, "status", "--json")
    assert r.code == 0
    slots = r.json()
    assert [s["slot"] for s in slots] == [0, 1]
    assert {"slot", "state", "pid", "uptime", "restarts", "done", "failed", "held", "current",
            "rss", "cpu", "last_exit"} <= slots[0].keys()


def test_unknown_slot_exit_codes(shared_daemon: Daemon) -> None:
    """status of an unknown slot exits 4 (supervisorctl's "no such process");
    other commands given one exit 1; either way one line on stderr."""
    r = run(shared_daemon, "status", "9")
    assert (r.code, r.out) == (4, "")
    assert r.err == "phalanxctl: UnknownSlot: no such slot: 9\n"
    r = run(shared_daemon, "stop", "9")
    assert r.code == 1 and "UnknownSlot" in r.err
    r = run(shared_daemon, "signal", "NOPE", "0")
    assert r.code == 1 and "unknown signal" in r.err


def test_information_commands(shared_daemon: Daemon) -> None:
    """version, pid, config, avail and stats print what an operator expects,
    and each --json output parses."""
    d = shared_daemon
    d.client().map(ECHO, range(20))
    r = run(d, "version")
    assert re.fullmatch(rf"phalanxd \d+\.\d+\.\d+  pid {d.pid}  boot [0-9a-f]+\n", r.out), r.out
    assert run(d, "pid").out == f"{d.pid}\n"
    pids = d.slot_pids()
    assert run(d, "pid", "1").out == f"{pids[1]}\n"
    assert run(d, "pid", "all").out == f"0: {pids[0]}\n1: {pids[1]}\n"
    r = run(d, "config")
    assert "[workers]\ncount = 2\n" in r.out and f'publisher = "{d.publisher}"' in r.out
    r = run(d, "avail")
    assert "workers.builtin:echo" in r.out.splitlines()
    r = run(d, "stats")
    assert r.code == 0
    assert re.search(r"^workers\s+2/2 running$", r.out, re.M)
    assert re.search(r"^succeeded\s+\d+$", r.out, re.M)
    assert re.search(r"^TASK\s+SUCCEEDED\s+FAILED$", r.out, re.M)
    assert re.search(r"^workers\.builtin:echo\s+\d+\s+0$", r.out, re.M)
    for argv, key in ((["version"], "boot"), (["pid"], "pid"), (["config"], "workers"),
                      (["stats"], "latency"), (["avail"], None), (["pid", "all"], None)):
        data = run(d, "--json", *argv).json()
        assert key is None or key in data
    assert run(d, "stats", "--json").json()["per_task"][ECHO]["succeeded"] >= 20


def test_top_once_and_json(shared_daemon: Daemon) -> None:
    """top --once prints one frame (summary + slot columns); --json prints one
    JSON line per refresh with stats and status."""
    r = run(shared_daemon, "top", "--once")
    assert r.code == 0
    assert re.search(r"^SLOT\s+STATE\s+PID\s+UPTIME", r.out, re.M)
    assert re.search(r"^0\s+RUNNING\s+\d+", r.out, re.M)
    assert "workers 2/2" in r.out
    r = run(shared_daemon, "top", "--json", "-n", "2", "-d", "0.1")
    frames = [json.loads(line) for line in r.out.splitlines()]
    assert len(frames) == 2
    assert {"stats", "status", "time"} <= frames[0].keys()


def test_pause_and_resume(shared_daemon: Daemon) -> None:
    """pause refuses new tasks (Paused) until resume; stats shows it."""
    d = shared_daemon
    assert run(d, "pause").out == "intake paused\n"
    try:
        assert run(d, "stats", "--json").json()["paused"] is True
        with pytest.raises(TaskError) as err:
            d.client().submit(ECHO, 1).result(10)
        assert err.value.type == "Paused"
    finally:
        r = run(d, "resume", "--json")
    assert r.json() == {"paused": False}
    assert d.client().submit(ECHO, 2).result(10) == 2


def test_shell_completion(shared_daemon: Daemon) -> None:
    """The shell completes command names, then the daemon's slot numbers and
    `all`, streams after `tail SLOT`, signal names after `signal`."""
    from supervisor.ctl.core import Ctl
    from supervisor.ctl.main import run_command
    from supervisor.ctl.shell import Shell

    shell = Shell(Ctl(shared_daemon.control, interactive=True), run_command)
    assert shell.completenames("st") == ["status", "start", "stop", "stats"]
    assert shell.completenames("q") == ["quit"]
    assert shell.completedefault("", "stop ", 5, 5) == ["0", "1", "all"]
    assert shell.completedefault("a", "restart 0 a", 10, 11) == ["all"]
    assert shell.completedefault("", "tail -f ", 8, 8) == ["0", "1"]
    assert shell.completedefault("std", "tail 0 std", 7, 10) == ["stdout", "stderr"]
    assert shell.completedefault("K", "signal K", 7, 8) == ["KILL"]
    assert shell.completedefault("", "signal TERM ", 12, 12) == ["0", "1", "all"]
    assert shell.completedefault("ta", "help ta", 5, 7) == ["tail", "tasks"]
    assert shell.completedefault("", "stats ", 6, 6) == []


def test_maintail_shows_the_daemon_log(shared_daemon: Daemon) -> None:
    """maintail prints the end of the daemon's own log (-n bytes, or -N like supervisorctl)."""
    r = run(shared_daemon, "maintail", "-n", "100000")
    assert r.code == 0 and "daemon_ready" in r.out
    assert len(run(shared_daemon, "maintail", "-50").out.encode()) <= 50
    assert run(shared_daemon, "--json", "maintail").json().keys() == {"data", "offset", "overflow"}


# ===================================================== own daemon each
def test_stop_start_restart_and_status_exit_3(daemon: Daemon) -> None:
    """stop waits until the slot is STOPPED (status then exits 3), start until it
    runs again, restart until it runs a new worker; repeats are harmless."""
    r = run(daemon, "stop", "0")
    assert (r.code, r.out) == (0, "0: stopped\n")
    assert run(daemon, "stop", "0").out == "0: not running\n"
    r = run(daemon, "status")
    assert r.code == 3
    assert re.match(r"0  STOPPED  (exit code 0|signal SIGTERM \(15\))  ", r.out), r.out
    assert run(daemon, "pid", "0").code == 1
    r = run(daemon, "start", "0")
    assert (r.code, r.out) == (0, "0: started\n")
    assert run(daemon, "start", "0").out == "0: already started\n"
    assert run(daemon, "status").code == 0
    before = daemon.slot_pids()
    r = run(daemon, "restart", "all", "--json", "--wait", "10")
    after = {s["slot"]: s["pid"] for s in r.json()}
    assert r.code == 0 and all(s["state"] == "RUNNING" for s in r.json())
    assert set(after.values()).isdisjoint(before.values())
    r = run(daemon, "stop", "1", "--wait", "0")
    assert r.out in ("1: stopping\n", "1: stopped\n")
    wait_until(lambda: daemon.status()[1]["state"] == "STOPPED", 10)


def test_signal_and_reload(daemon: Daemon) -> None:
    """signal KILL reaches the worker (the slot restarts it); reload recycles
    every worker, one at a time, onto new pids."""
    pids = daemon.slot_pids()
    r = run(daemon, "signal", "KILL", "0")
    assert r.out == f"0: sent SIGKILL to pid {pids[0]}\n"
    daemon.wait_all_running(not_pids={pids[0]})
    r = run(daemon, "status", "0", "--json")
    assert r.json()[0]["restarts"] == 1
    pids = daemon.slot_pids()
    assert run(daemon, "signal", "9", "0", "--json").json() == [{"slot": 0, "pid": pids[0]}]
    daemon.wait_all_running(not_pids={pids[0]})
    pids = daemon.slot_pids()
    r = run(daemon, "reload")
    assert r.out == "Recycling workers 0, 1 (rolling restart, one slot at a time)\n"
    daemon.wait_all_running(timeout=20, not_pids=set(pids.values()))


def test_stop_kills_the_workers_grandchildren(start_daemon: StartDaemon) -> None:
    """A task that forked a grandchild ignoring SIGTERM: once `stop` returns the
    slot is STOPPED and the grandchild is gone too (the whole tree is killed)."""
    d = start_daemon(workers={"count": 1})
    grandchild = d.client().submit(SPAWN_CHILD, 60).result(10)
    assert not exited(grandchild)
    r = run(d, "stop", "0")
    assert (r.code, r.out) == (0, "0: stopped\n")
    wait_until(lambda: exited(grandchild), 5, message=f"grandchild {grandchild} outlived stop")
    assert run(d, "status").code == 3
    assert run(d, "start", "0").out == "0: started\n"


def test_tail_follows_a_slot_through_a_crash(start_daemon: StartDaemon) -> None:
    """tail -f keeps printing a slot's output across its worker's crash and
    restart, and exits 0 on Ctrl-C; maintail -f shows the crash in the log;
    tail without -f prints the end, per stream; clear empties it."""
    d = start_daemon(workers={"count": 1})
    client = d.client()
    client.submit(SAY, "before the crash").result(10)
    with streaming(d, "tail", "-f", "0") as tail, streaming(d, "maintail", "-f") as main, \
            streaming(d, "--json", "tail", "-f", "-n", "0", "0") as fresh:
        tail.wait_for("before the crash\n")
        main.wait_for("daemon_ready")
        fresh.wait_for('"offset"')  # its first line: -n 0 has taken the end offset
        old = d.slot_pids()[0]
        with pytest.raises(TaskError) as err:
            client.with_options(max_attempts=1).submit(CRASH, "kill").result(10)
        assert err.value.type == "WorkerCrashed"
        d.wait_all_running(not_pids={old})
        client.submit(SAY, "after the restart").result(10)
        tail.wait_for("after the restart\n")
        main.wait_for("worker_exited")
        code, out, err_text = tail.interrupt()
        assert code == 0 and "Traceback" not in err_text, err_text
        assert out.index("before the crash") < out.index("after the restart")
        code, _, err_text = main.interrupt()
        assert code == 0 and "Traceback" not in err_text
        fresh.wait_for("after the restart")
        code, out, _ = fresh.interrupt()
        chunks = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and chunks[0]["data"] == ""
        assert "".join(c["data"] for c in chunks) == "after the restart\n"

    assert run(d, "tail", "0").out == "before the crash\nafter the restart\n"
    assert run(d, "tail", "-n", "8", "0").out == "restart\n"
    assert run(d, "tail", "-8", "0").out == "restart\n"
    assert run(d, "tail", "-n", "0", "0").out == ""
    client.submit(SAY, "to stderr", stream="stderr").result(10)
    assert "to stderr" in run(d, "tail", "0", "stderr").out
    assert "to stderr" not in run(d, "tail", "0").out
    data = run(d, "tail", "0", "--json").json()
    assert data["offset"] == len(b"before the crash\nafter the restart\n")
    assert data["overflow"] is False
    assert run(d, "clear", "0").out == "0: cleared\n"
    assert run(d, "tail", "0").out == ""


def test_events_print_as_they_happen(daemon: Daemon) -> None:
    """events prints `HH:MM:SS.mmm topic key=value` lines (JSON lines with
    --json), for the given topic prefixes, and stops after --count."""
    with streaming(daemon, "events", "--count", "1", "event.worker.exited") as ev:
        # The subscription becomes active asynchronously: kill workers of
        # slot 0 until one death is printed.
        for _ in range(10):
            pid = daemon.wait_all_running()[0]["pid"]
            os.kill(pid, signal.SIGKILL)
            if wait_for_exit(ev.proc, 1.0):
                break
            daemon.wait_all_running(not_pids={pid})
        code, out, err = ev.finish()
    assert code == 0, err
    assert re.fullmatch(CLOCK + r" event\.worker\.exited slot=0 pid=\d+ exit=signal SIGKILL"
                        r" \(9\) exitcode=-9\n", out), out

    client = daemon.client()
    with streaming(daemon, "--json", "events", "--count", "2", "result.") as ev:
        wait_until(lambda: client.submit(ECHO, "hi").result(10) and wait_for_exit(ev.proc, 0.2),
                   20, message="no result events printed")
        code, out, _ = ev.finish()
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 2
    assert lines[0]["topic"] == f"result.{ECHO}"
    assert lines[0]["body"]["results"][0]["value"] == "hi"


def wait_for_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_update_grows_and_shrinks_the_pool_under_load(start_daemon: StartDaemon) -> None:
    """Editing workers.count and running `update` grows the pool then shrinks
    it while a client streams tasks; every task gets exactly one result."""
    d = start_daemon(workers={"count": 2})
    client = d.client()
    wave = 200
    results: list[float] = []
    waves = [0]
    stop = threading.Event()
    done = threading.Event()

    def stream() -> None:
        # Waves until told to stop, so the load cannot run out before the
        # pool has grown and shrunk, however fast or slow the machine is.
        try:
            while not stop.is_set():
                results.extend(client.imap_unordered(SLEEP, [0.003] * wave))
                waves[0] += 1
        finally:
            done.set()

    feeder = threading.Thread(target=stream, daemon=True)
    feeder.start()
    wait_until(lambda: run(d, "stats", "--json").json()["succeeded"] > 0, 10)
    rewrite_config(d, workers={"count": 4})
    assert run(d, "reread").out == "workers.count: 2 -> 4 (applies live)\n"
    r = run(d, "update")
    assert (r.code, r.out) == (0, "workers.count: 2 -> 4 (applied live)\n")
    assert not done.is_set(), "the load finished before the pool grew"
    wait_until(lambda: run(d, "status").code == 0 and len(d.status()) == 4, 15)
    rewrite_config(d, workers={"count": 2})
    assert run(d, "update", "--json").json()["changes"] == [
        {"key": "workers.count", "old": 4, "new": 2, "applies": "live"}]
    assert not done.is_set(), "the load failed before the pool shrank"
    wait_until(lambda: len(d.status()) == 2, 20, message=lambda: run(d, "status").out)
    stop.set()
    assert done.wait(60), "the stream never finished"
    feeder.join(5)
    n = waves[0] * wave
    assert len(results) == n and n > 0
    stats = run(d, "stats", "--json").json()
    assert stats["succeeded"] == n and stats["failed"] == 0
    assert run(d, "update").out == "No config updates\n"


def test_shell_on_a_terminal(start_daemon: StartDaemon, tmp_path: Path) -> None:
    """With no command phalanxctl is a shell: it shows the status, runs
    commands at the `phalanx> ` prompt, has help, runs top until q, asks
    before shutdown, leaves on quit (exit 0) and keeps a history file."""
    d = start_daemon()
    term = Terminal([*phalanxctl_command(), "--endpoint", d.control],
                    clean_env(HOME=str(tmp_path), TERM="xterm"))
    try:
        banner = term.expect("phalanx> ")
        assert re.search(r"^0  RUNNING  pid \d+", banner, re.M), banner
        term.send("status\n")
        assert "1  RUNNING" in term.expect("phalanx> ")
        term.send("help\n")
        out = term.expect("phalanx> ")
        assert "maintail" in out and "quit" in out
        term.send("help stop\n")
        assert "usage: stop" in term.expect("phalanx> ")
        term.send("status 9\n")
        assert "UnknownSlot" in term.expect("phalanx> ")
        term.send("nonsense\n")
        assert "Unknown syntax" in term.expect("phalanx> ")
        term.send("restart \t\t")  # readline lists the slots and `all`
        assert re.search(r"0\s+1\s+all", term.expect("all"))
        term.send("\x15")  # Ctrl-U: drop the half-typed line
        term.send("\n")
        term.expect("phalanx> ")
        term.send("top\n")
        term.expect("SLOT")
        term.send("q")
        term.expect("phalanx> ")
        term.send("shutdown\n")
        term.expect("y/N? ")
        term.send("n\n")
        term.expect("phalanx> ")
        assert not d.exited()
        term.send("quit\n")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.close()
    history = (tmp_path / ".phalanxctl_history").read_text().splitlines()
    assert history[:2] == ["status", "help"]

    r = run(d, "shutdown")
    assert (r.code, r.out) == (0, "Shut down (draining: 0 unfinished tasks)\n")
    assert d.wait_exit(20) == 0
    assert run(d, "status").code == 4


# ============================================= the control socket is private
@pytest.fixture
def private_daemon(start_daemon: StartDaemon, ipc_dir: Path) -> Daemon:
    """A daemon whose control socket is the default one, <runtime dir>/control.sock."""
    return start_daemon(endpoints={"control": f"ipc://{ipc_dir}/run/control.sock"})


def test_default_endpoint_comes_from_the_runtime_dir(private_daemon: Daemon, ipc_dir: Path
                                                     ) -> None:
    """With no option phalanxctl finds ipc://$PHALANX_RUNTIME_DIR/control.sock;
    $PHALANX_CONTROL and --config point it elsewhere."""
    env = clean_env(PHALANX_RUNTIME_DIR=str(ipc_dir / "run"))
    assert ctl("status", env=env).code == 0
    env = clean_env(PHALANX_CONTROL=private_daemon.control)
    assert ctl("status", env=env).code == 0
    r = ctl("--config", str(private_daemon.config_path), "version", env=clean_env())
    assert r.code == 0 and f"pid {private_daemon.pid}" in r.out


def test_control_socket_and_runtime_dir_are_owner_only(private_daemon: Daemon, ipc_dir: Path
                                                       ) -> None:
    """The runtime directory is 0700 and the control socket file 0600."""
    run_dir = ipc_dir / "run"
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    st = os.stat(run_dir / "control.sock")
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


# The interpreter may live where only root can read (a pyenv in root's home),
# so the other user's process starts as root, imports what it needs and
# drops to that user before phalanxctl runs: every connect() and every
# byte on the socket is then done as that user, which is what is tested.
AS_USER = """
import os, sys
import gettext, locale, shutil, supervisor.ctl.main, supervisor.ctl.connection
from supervisor.ctl.commands import COMMANDS, parse
if sys.argv[3] != "--raw":  # argparse imports lazily: parse once while we can
    ns = supervisor.ctl.main.global_parser().parse_args(sys.argv[3:])
    parse(COMMANDS[ns.command], ns.args, ns.command)
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([]); os.setgid(gid); os.setuid(uid)
assert os.geteuid() == uid and os.getegid() == gid
if sys.argv[3] == "--raw":  # a bare control request, no phalanxctl checks
    try:
        supervisor.ctl.connection.call(sys.argv[4], "version", timeout=1.0)
    except supervisor.ctl.connection.Unreachable:
        sys.exit(7)
    sys.exit(0)
sys.exit(supervisor.ctl.main.main(sys.argv[3:]))
"""


def test_another_user_gets_no_reply(private_daemon: Daemon, ipc_dir: Path) -> None:
    """A different user (nobody) cannot use the control socket: phalanxctl exits
    7 (status: 4) without a reply, even with the directories opened up, and a
    raw ZeroMQ request from that user gets no answer either."""
    if os.geteuid() != 0:
        print("skipped: needs root to run a command as another user")
        pytest.skip("needs root to run phalanxctl as another user")
    nobody = pwd.getpwnam("nobody")
    endpoint = private_daemon.control

    def as_nobody(*args: str) -> Ran:
        argv = [sys.executable, "-c", AS_USER, str(nobody.pw_uid), str(nobody.pw_gid), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL, env=clean_env(HOME="/"))
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    r = as_nobody("--endpoint", endpoint, "--timeout", "1", "version")
    assert (r.code, r.out) == (7, ""), r
    assert "permission denied" in r.err
    assert as_nobody("--endpoint", endpoint, "--timeout", "1", "status").code == 4
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in (ipc_dir, ipc_dir / "run")}
    try:
        for path in modes:
            os.chmod(path, 0o711)  # others may now traverse: only the socket's mode is left
        r = as_nobody("--endpoint", endpoint, "--timeout", "1", "shutdown")
        assert (r.code, r.out) == (7, "") and "permission denied" in r.err, r
        r = as_nobody("--raw", endpoint)
        assert r.code == 7, r
    finally:
        for path, mode in modes.items():
            os.chmod(path, mode)
    assert not private_daemon.exited()
    assert run(private_daemon, "status").code == 0
