"""A thread per connection, at most ``slots`` of them.

The observers' servers (web.py, rpcserver.py) are stdlib threading servers:
simple, and far from the loop's thread. An event stream or ``tail -f``
holds its thread for as long as the client stays, so the number of
connections is bounded; the rest get a 503 at once and cost nothing.
"""

from __future__ import annotations

import socketserver
import threading
from typing import Any

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
         b"Retry-After: 1\r\nConnection: close\r\n\r\n")


class Bounded(socketserver.ThreadingMixIn):
    daemon_threads = True
    block_on_close = False
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()
