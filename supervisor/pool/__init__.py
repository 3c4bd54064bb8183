"""``from supervisor import Pool``: multiprocessing.Pool on a private phalanxd.

pool.py (Pool), results.py (AsyncResult, MapResult, IMapIterator),
private.py (the private daemon: start, watch, stop; its entry point is
supervisor/daemon/private_entry.py, outside this package so that the daemon
never imports the client), lane.py (pickling on the caller's side), executor.py
(concurrent.futures.Executor over a Pool or a Client). docs/POOL.md.
"""

from supervisor.pool.executor import PhalanxExecutor
from supervisor.pool.pool import Pool
from supervisor.pool.results import AsyncResult, IMapIterator, MapResult

__all__ = ["Pool", "PhalanxExecutor", "AsyncResult", "MapResult", "IMapIterator"]
