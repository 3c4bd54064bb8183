"""Real workers: processes from a forkserver (or fork/spawn), and cleanup.

The forkserver preloads the worker modules once, so a restart costs a fork,
not an interpreter start. A reload renews it (new workers import the code as
it is now) and the old one lives until its last worker has died: it is what
reports those workers' exit status. As a child subreaper the daemon also
inherits what tasks started and abandoned; ``reap_orphans`` kills and reaps
those that are not a worker or multiprocessing's own helper.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

import structlog

from supervisor.config import Config
from supervisor.daemon import reaper
from supervisor.daemon.pool.interfaces import Handle
from supervisor.daemon.workerproc import (
    WorkerHandle,
    reap_group,
    renew_forkserver,
    stop_forkserver,
)

log = structlog.get_logger("phalanxd")


class ProcessSpawner:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.mp = multiprocessing.get_context(cfg.workers.start_method)
        self.forkserver = cfg.workers.start_method == "forkserver"
        self.generation = 0
        self._old: dict[int, Any] = {}  # generation -> forkserver still reporting
        self._live: dict[int, int] = {}  # pid -> generation, workers not yet buried
        # Workers not yet buried, when they are forks of this process: a new
        # fork closes its copies of their pipes (WorkerHandle.spawn).
        self._handles: dict[int, WorkerHandle] = {}
        self.subreaper = False
        # Where a worker notes what it starts (journal_handoff.py); the
        # journal sets it once it has replayed, before any worker starts.
        self.ledger_for: Callable[[int], tuple[str, int, int] | None] = lambda slot: None

    def start(self, allow: list[str]) -> None:
        self.subreaper = reaper.become_subreaper()
        if self.forkserver:
            # Each child re-runs the main script (phalanxd) before its target;
            # without its imports (structlog, asyncio, ssl: ~100 ms) cached
            # here, every worker restart paid for them again.
            self.mp.set_forkserver_preload(self.preload(allow))
        elif self.cfg.workers.start_method == "fork":
            # Workers are forks of this process: import what each would
            # import (the preload: a private Pool's pickle lane) once, here.
            # The allowed task modules stay out of the daemon, as ever.
            import importlib

            for name in ["workers.loop", *self.cfg.workers.preload]:
                try:
                    importlib.import_module(name)
                except Exception as exc:  # noqa: BLE001 - the workers report it as they import it
                    log.warning("preload_failed", module=name, error=str(exc))

    def preload(self, allow: list[str]) -> list[str]:
        return ["supervisor.daemon.main", "multiprocessing.sharedctypes", "workers.loop",
                *allow, *self.cfg.workers.preload]

    def spawn(self, index: int, allow: list[str]) -> Handle:
        handle = WorkerHandle.spawn(self.mp, index, allow, self.cfg.tasks.max_message_bytes,
                                    path=self.cfg.task_path,
                                    accept_pickle=self.cfg.tasks.accept_pickle,
                                    siblings=[fd for h in self._handles.values()
                                              for fd in h.daemon_fds()],
                                    ledger=self.ledger_for(index))
        handle.fs_generation = self.generation
        self._live[handle.pid] = self.generation
        if not self.forkserver:
            self._handles[handle.pid] = handle
        return handle

    def renew(self, allow: list[str]) -> None:
        if self.forkserver:
            self._old[self.generation] = renew_forkserver(self.preload(allow))
            self.generation += 1

    def buried(self, handle: Handle) -> None:
        self._live.pop(handle.pid, None)
        self._handles.pop(handle.pid, None)
        reap_group(handle.pid)  # grandchildren the task left behind

    def reap_orphans(self, keep: set[int]) -> int:
        if not self.subreaper:
            return 0
        self._retire_old()
        keep = keep | reaper.multiprocessing_helpers()
        keep.update(fs._forkserver_pid for fs in self._old.values()
                    if getattr(fs, "_forkserver_pid", None))
        return reaper.reap_orphans(keep)

    def _retire_old(self) -> None:
        """Stop each forkserver a reload replaced, once its last worker died."""
        for generation, server in list(self._old.items()):
            if generation not in self._live.values():
                stop_forkserver(server)
                del self._old[generation]
                log.info("old_forkserver_stopped", generation=generation)

    def close(self) -> None:
        """Stop every forkserver: no child left behind once the daemon returns."""
        from multiprocessing import forkserver

        for server in [*self._old.values(), forkserver._forkserver]:
            stop_forkserver(server)
        self._old.clear()
