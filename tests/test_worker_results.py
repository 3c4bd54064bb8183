"""What a worker answers reaches its client, whatever the task did.

Real daemons, real workers: results leave a worker while a later task still
runs; results the daemon could not decode, exceptions that cannot be shown
and over-limit attempts are each a clear answer for that task alone, and a
module that fails to import is named where the user looks.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, RawPeer, StartDaemon, phalanxd_command, to_toml, wait_until

ECHO = "workers.builtin:echo"
SLEEP = "workers.builtin:sleep"
NESTED = "workers.testing:nested"


def submit(peer: RawPeer, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    ack: dict[str, Any] = peer.request({"op": "submit", "tasks": tasks})
    assert ack["op"] == "ack", ack
    return ack


def test_finished_results_reach_the_client_while_a_long_task_runs(
        start_daemon: StartDaemon) -> None:
    """One worker, ten echoes then sleep(30) in one request: the echoes'
    results arrive while the sleep still runs on that worker."""
    d = start_daemon(workers={"count": 1}, shutdown={"grace": 0.5, "stop_timeout": 1.0})
    peer = d.raw()
    echoes = [{"task": ECHO, "id": f"e{i}", "args": [i]} for i in range(10)]
    submit(peer, [*echoes, {"task": SLEEP, "id": "long", "args": [30]}])
    got = peer.results_for({f"e{i}" for i in range(10)}, timeout=10)
    assert [got[f"e{i}"]["value"] for i in range(10)] == list(range(10))
    slot = d.slot_holding("long")  # still running: its result did not come
    assert slot["current"]["task"] == SLEEP


def test_a_result_too_deep_to_decode_fails_alone_and_charges_nobody(
        start_daemon: StartDaemon) -> None:
    """A result nested 1000 deep in the same request as other tasks: that
    task alone fails Unserializable on its first attempt; the others succeed;
    the worker is not restarted."""
    d = start_daemon(workers={"count": 1})
    before = d.status()[0]
    peer = d.raw()
    tasks = [{"task": ECHO, "id": "a", "args": ["a"]},
             {"task": NESTED, "id": "deep", "args": [1000]},
             {"task": ECHO, "id": "b", "args": ["b"]},
             {"task": NESTED, "id": "fits", "args": [50]}]
    submit(peer, tasks)
    got = peer.results_for({"a", "deep", "b", "fits"})
    assert got["a"]["value"] == "a" and got["b"]["value"] == "b"
    deep = got["deep"]
    assert (deep["ok"], deep["attempts"], deep["error"]["type"]) == (False, 1, "Unserializable")
    assert "nested deeper than 900" in deep["error"]["message"]
    assert got["fits"]["ok"]
    after = d.status()[0]
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])


def test_an_exception_whose_str_raises_fails_the_task_not_the_worker(
        start_daemon: StartDaemon) -> None:
    d = start_daemon(workers={"count": 1})
    pid = d.status()[0]["pid"]
    peer = d.raw()
    submit(peer, [{"task": "workers.testing:bad_str", "id": "bad"}])
    res = peer.results_for({"bad"})["bad"]
    assert (res["ok"], res["attempts"]) == (False, 1)
    assert res["error"]["type"] == "UnprintableFailure"
    assert "whose str() raised RuntimeError" in res["error"]["message"]
    assert d.status()[0]["pid"] == pid


def test_max_attempts_over_the_configured_limit_is_refused(start_daemon: StartDaemon) -> None:
    """One request cannot make a task run (and kill workers) without end."""
    d = start_daemon(tasks={"allow": ["workers.builtin", "workers.testing"],
                            "max_attempts_limit": 4})
    peer = d.raw()
    ack = peer.request({"op": "submit", "tasks": [
        {"task": ECHO, "id": "ok", "args": [1], "max_attempts": 4},
        {"task": ECHO, "id": "many", "args": [1], "max_attempts": 1_000_000},
    ]})
    assert ack["accepted"] == ["ok"]
    [rejected] = ack["rejected"]
    assert (rejected["id"], rejected["error"]["type"]) == ("many", "LimitExceeded")
    assert "tasks.max_attempts_limit (4)" in rejected["error"]["message"]


BROKEN = """
    import no_such_dependency_px  # the user forgot to install it

    def work():
        return 1
"""
GOOD = """
    def hello(name):
        return f"hello {name}"
"""


def write_modules(folder: Path) -> None:
    (folder / "pxbroken.py").write_text(textwrap.dedent(BROKEN))
    (folder / "pxgood.py").write_text(textwrap.dedent(GOOD))


def test_unknown_task_names_the_import_error_and_config_folder_is_on_the_path(
        start_daemon: StartDaemon, tmp_path: Path) -> None:
    """Task modules next to the config file import without any path setup;
    a task of an allowed module that failed to import is refused with the
    import error in the UnknownTask message."""
    write_modules(tmp_path)  # the test daemon's config file lives in this folder
    d = start_daemon(tasks={"allow": ["workers.builtin", "pxbroken", "pxgood"]})
    peer = d.raw()
    ack = peer.request({"op": "submit", "tasks": [
        {"task": "pxbroken:work", "id": "w"}, {"task": "pxgood:hello", "id": "h", "args": ["x"]}]})
    assert ack["accepted"] == ["h"], ack
    error = ack["rejected"][0]["error"]
    assert error["type"] == "UnknownTask"
    assert "ModuleNotFoundError" in error["message"] and "no_such_dependency_px" in error["message"]
    assert peer.results_for({"h"})["h"]["value"] == "hello x"


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*phalanxd_command(), "--check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_imports_the_allowed_modules_and_reports_failures(tmp_path: Path) -> None:
    write_modules(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml({"tasks": {"allow": ["pxgood", "pxbroken"]}}))
    run = check_config(bad)
    assert run.returncode == 2, run
    assert "pxbroken: ModuleNotFoundError" in run.stderr and "no_such_dependency_px" in run.stderr
    good = tmp_path / "good.toml"
    good.write_text(to_toml({"tasks": {"allow": ["pxgood"]}}))
    run = check_config(good)
    assert run.returncode == 0, run
    assert "1 task" in run.stdout


def test_tasks_path_puts_its_folders_first(start_daemon: StartDaemon, tmp_path: Path) -> None:
    """tasks.path entries (relative to the config file) are where modules come from."""
    lib = tmp_path / "lib"
    lib.mkdir()
    write_modules(lib)
    d: Daemon = start_daemon(tasks={"allow": ["workers.builtin", "pxgood"], "path": ["lib"]})
    peer = d.raw()
    submit(peer, [{"task": "pxgood:hello", "id": "h", "args": ["lib"]}])
    assert peer.results_for({"h"})["h"]["value"] == "hello lib"
    wait_until(lambda: d.call("avail"), 5)
    assert "pxgood:hello" in d.call("avail")
