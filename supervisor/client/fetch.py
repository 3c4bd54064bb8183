"""Fetch a result by task id (the daemon's journal keeps them for a while).

One short-lived DEALER per call, bounded by ``timeout``: fetching is rare
(a client that was not connected, an operator), so it stays out of the
engine's hot path.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import zmq

from supervisor.client.futures import TaskError
from supervisor.client.types import ext_hook
from supervisor.client.wire import ErrorReply, Fetch, Reply, Results, encoder
from supervisor.curve import ClientKeys

_decoder = msgspec.msgpack.Decoder(Reply, ext_hook=ext_hook)


def fetch_result(endpoint: str, task_id: str, timeout: float | None,
                 keys: ClientKeys | None = None) -> Any:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:  # a daemon beyond loopback speaks CURVE only
        keys.apply(sock)
    try:
        sock.connect(endpoint)
        sock.send(encoder.encode(Fetch([task_id], 1)))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not sock.poll(wait_ms):
                raise TimeoutError(f"no result for task {task_id} from {endpoint} "
                                   f"within {timeout}s")
            msg = _decoder.decode(sock.recv())
            if isinstance(msg, Results):
                for res in msg.results:
                    if res.id == task_id:
                        if res.ok:
                            return res.value
                        err = res.error
                        raise TaskError(err.type if err else "Unknown",
                                        err.message if err else "no error detail",
                                        err.traceback if err else None, task_id)
            elif isinstance(msg, ErrorReply):
                raise TaskError(msg.error.type, msg.error.message, task_id=task_id)
    finally:
        sock.close(linger=0)
