"""The Pool: worker slots, the task table and the worker handles.

    pool.py         the narrow API the daemon and its edges use
    state.py        what the pool holds, declared once
    workers.py      starting a worker, reading its pipe, feeding it, deadlines
    recovery.py     a worker died: charge, retry or fail, restart or back off
    maintenance.py  resize, recycle, operator start/stop, stopping for good
    spawner.py      real processes (forkserver), the reaper
    interfaces.py   the seams: Handle, Spawner, Watcher, PoolEvents
"""

from supervisor.daemon.pool.pool import Pool

__all__ = ["Pool"]
