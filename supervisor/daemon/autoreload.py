"""``workers.reload_on_change``: roll the workers when a task module's file
changes (development only).

Once a second (a loop timer, no thread, no inotify dependency) the daemon
stats the file of every module in ``tasks.allow``; when one's mtime or size
moved since the last look, it starts the same rolling restart as
``phalanxctl reload`` (a fresh forkserver, then one slot at a time, each
once it holds no task), so the next tasks run the saved code.

The files are found without importing anything in the daemon
(``PathFinder`` walks ``sys.path`` and package directories), so a module
with a syntax error cannot hurt the daemon: its workers report the import
error in their hello, as at start. Only the allowed modules' own files are
watched, not the modules they import.
"""

from __future__ import annotations

import os
from importlib.machinery import PathFinder
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon

log = structlog.get_logger("phalanxd")

INTERVAL = 1.0  # seconds between two looks

Stamp = tuple[float, int] | None


def module_file(name: str) -> str | None:
    """The source file of module ``name``, found without importing it."""
    path: list[str] | None = None
    origin: str | None = None
    for part in name.split("."):
        spec = PathFinder.find_spec(part, path)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
        path = list(locations) if locations is not None else None
        origin = spec.origin if spec.has_location else None
    return origin


def _stamp(path: str | None) -> Stamp:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


class ModuleWatcher:
    """Remembers each allowed module's file stamp; says when one moved."""

    def __init__(self) -> None:
        self._seen: dict[str, Stamp] = {}

    def changed(self, modules: list[str]) -> list[str]:
        now = {name: _stamp(module_file(name)) for name in modules}
        moved = [name for name, stamp in now.items()
                 if name in self._seen and self._seen[name] != stamp]
        self._seen = now
        return moved


def install(d: Daemon) -> None:
    """Start the once-a-second look (it does nothing while the switch is off,
    so turning it on with `phalanxctl update` works too)."""
    watcher = ModuleWatcher()
    if d.cfg.workers.reload_on_change:
        watcher.changed(list(d.pool.allow))  # the code the first workers load

    def tick() -> None:
        if not d.cfg.workers.reload_on_change or d.draining:
            return
        moved = watcher.changed(list(d.pool.allow))
        if moved:
            log.info("task_modules_changed", modules=moved)
            d.publisher.event("supervisor.modules_changed", modules=moved)
            d.pool.recycle_all()

    d.loop.every(INTERVAL, tick)
