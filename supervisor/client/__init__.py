"""The Python client: submit work to phalanxd and read what it publishes.

    from supervisor.client import Client, Subscriber, TaskError

client.py (Client), api.py (its Pool/Executor-shaped methods), engine.py
(the sockets, the window, completion), links.py (one daemon: when to
re-attach; its credit), heartbeat.py (pings, silence, re-sending), routing.py
(several daemons: credit, deaths, failover), window.py, types.py (the MessagePack type policy),
errors.py (what the client raises), results.py (receiving), futures.py (the cheap
Future and AsyncResult), wire.py (the client's view of the protocol),
subscriber.py (one SUB per publisher, gap detection per daemon and topic).
"""

from supervisor.client.client import Client, Message, Subscriber
from supervisor.client.errors import (
    ClientBroken,
    ClientClosed,
    DaemonUnreachable,
    TaskError,
    TooLarge,
)
from supervisor.client.futures import AsyncResult

__all__ = ["Client", "Subscriber", "Message", "TaskError", "AsyncResult", "TooLarge",
           "DaemonUnreachable", "ClientClosed", "ClientBroken"]
