"""What the Pool holds, declared once; its parts (workers, recovery,
maintenance) read and change it, nothing outside the pool package does.

Who owns what: the task table owns tasks (queued, held by a slot, done);
each slot owns its state and its worker handle; ``deaths`` lists slots whose
sentinel fired this turn; ``meters`` count for stats. Edges read through
``Pool``'s methods and never write here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from supervisor.config import Config
from supervisor.core.slots import Slot
from supervisor.core.stats import LatencyHistogram
from supervisor.core.tasks import Task, TaskTable
from supervisor.daemon.observe.counters import Counters
from supervisor.daemon.output import Outputs
from supervisor.daemon.pool.interfaces import Handle, PoolEvents, Spawner, Watcher

WorkerSlot = Slot[Handle, Task]


@dataclass
class Meters:
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # task name -> [succeeded, failed]; names are bounded by the allowlist
    per_task: dict[str, list[int]] = field(default_factory=dict)

    def count(self, name: str, ok: bool) -> None:
        count = self.per_task.get(name)
        if count is None:
            count = self.per_task[name] = [0, 0]
        count[0 if ok else 1] += 1


class PoolState:
    def __init__(self, cfg: Config, spawner: Spawner, loop: Watcher, events: PoolEvents,
                 outputs: Outputs, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.spawner = spawner
        self.loop = loop
        self.events = events
        self.outputs = outputs
        self.rng = rng or random.Random()
        self.table = TaskTable(cfg.tasks.result_cache, cfg.tasks.result_cache_bytes)
        self.slots: list[WorkerSlot] = [
            Slot(i, max_window=cfg.workers.max_prefetch) for i in range(cfg.worker_count)
        ]
        self.allow = list(cfg.tasks.allow)
        self.known_tasks: set[str] = set()
        self.import_errors: dict[str, str] = {}  # module -> why it failed to import
        self.meters = Meters()
        self.counters = Counters()  # for observe/: read only through observe/snapshot.py
        self.deaths: list[WorkerSlot] = []
        self.maintenance = False  # some slot waits to retire or recycle
        self.pool_restarts: tuple[float, ...] = ()
        self.crash_loop = False
        self.stopping = False  # workers are being stopped for good
        # Slots to start once this turn's deaths are accounted for (None:
        # not inside that accounting, start at once). See recovery.py.
        self.deferred: list[WorkerSlot] | None = None

    def new_index(self) -> int:
        """The smallest slot index no slot uses (indices stay unique)."""
        used = {s.index for s in self.slots}
        index = 0
        while index in used:
            index += 1
        return index
