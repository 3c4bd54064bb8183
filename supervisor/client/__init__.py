"""The Python client: submit work to phalanxd and read what it publishes.

    from supervisor.client import Client, Subscriber, TaskError

client.py (Client: the I/O thread, heartbeat, resubmission), futures.py
(the cheap Future and AsyncResult), wire.py (the client's view of the
protocol), subscriber.py (SUB with per-topic gap detection).
"""

from supervisor.client.client import Client, Message, Subscriber, TaskError
from supervisor.client.futures import AsyncResult

__all__ = ["Client", "Subscriber", "Message", "TaskError", "AsyncResult"]
