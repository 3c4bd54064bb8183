"""workers.reload_on_change: a development daemon runs an edited task
module's new code without anyone asking."""

from __future__ import annotations

from pathlib import Path

from supervisor.daemon.autoreload import ModuleWatcher, module_file
from tests.conftest import StartDaemon, wait_until

MODULE_V1 = "def version():\n    return 1\n"
MODULE_V2 = "def version():\n    return 2\n"


def test_module_file_is_found_without_importing(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pkg = tmp_path / "devpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "tasks.py").write_text(MODULE_V1)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_file("devpkg.tasks") == str(pkg / "tasks.py")
    assert module_file("devpkg.absent") is None
    watcher = ModuleWatcher()
    assert watcher.changed(["devpkg.tasks"]) == []
    (pkg / "tasks.py").write_text(MODULE_V2 + "# longer\n")
    assert watcher.changed(["devpkg.tasks"]) == ["devpkg.tasks"]
    assert watcher.changed(["devpkg.tasks"]) == []


def test_an_edited_task_module_is_picked_up(start_daemon: StartDaemon, tmp_path: Path,
                                            monkeypatch) -> None:  # type: ignore[no-untyped-def]
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    module = mod_dir / "devtasks.py"
    module.write_text(MODULE_V1)
    monkeypatch.setenv("PYTHONPATH", str(mod_dir))  # the daemon inherits it
    d = start_daemon(workers={"count": 1, "reload_on_change": True},
                     tasks={"allow": ["devtasks"]})
    client = d.client()
    assert client.call("devtasks:version") == 1
    module.write_text(MODULE_V2 + "# saved again\n")
    wait_until(lambda: client.call("devtasks:version") == 2, 15,
               message="the daemon still runs the old code")
    assert d.log_events("task_modules_changed")
