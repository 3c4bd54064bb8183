"""The event loop: one zmq.Poller, the fds it watches, timers, signals.

Everything the daemon waits on is a file descriptor registered here with
its handler: ZeroMQ sockets (through their ZMQ_FD, see ``watch_zmq``),
worker pipes, stdout/stderr pipes, process sentinels and the signal wakeup
fd. Timers are a heap consulted for the poll timeout. The loop knows
nothing of workers or tasks: each turn it runs the ready handlers, then
the owner's ``turn(now)``, then re-checks ZeroMQ sockets a send disarmed.

Signal handlers do nothing but wake the loop: Python's C-level handler
writes the signal number to our socketpair (``signal.set_wakeup_fd``), and
the loop hands the numbers to the owner as an ordinary readable fd.
"""

from __future__ import annotations

import heapq
import itertools
import signal
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from supervisor.daemon.zmqio import has_input

Handler = Callable[[int], None]


def _wake_only(signum: int, frame: Any) -> None:
    """The wakeup fd already carries the signal number; nothing to do here."""


class EventLoop:
    def __init__(self) -> None:
        self.poller = zmq.Poller()
        self._handlers: dict[Any, Handler] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._zmq_drains: dict[zmq.Socket[bytes], Callable[[], bool]] = {}
        self._recheck: set[zmq.Socket[bytes]] = set()
        self._sig_r: socket.socket | None = None
        self._sig_w: socket.socket | None = None
        self.stopped = False

    # ------------------------------------------------------------- fds
    def watch(self, what: Any, handler: Handler, flags: int = zmq.POLLIN) -> None:
        self._handlers[what] = handler
        self.poller.register(what, flags)

    def unwatch(self, what: Any) -> None:
        self._handlers.pop(what, None)
        try:
            self.poller.unregister(what)
        except KeyError:
            pass

    def watching(self, what: Any) -> bool:
        return what in self._handlers

    def modify(self, what: Any, flags: int) -> None:
        if what in self._handlers:
            self.poller.modify(what, flags)

    def watch_zmq(self, sock: zmq.Socket[bytes], drain: Callable[[], bool]) -> None:
        """Poll a ZeroMQ socket through its ZMQ_FD, as a plain fd.

        Why: zmq_poll asks every socket it polls for ZMQ_EVENTS before and
        after waiting, each a syscall or two, on every turn of the loop,
        even for the control and publisher sockets that are idle nearly
        always. ZMQ_FD is edge-triggered: it fires when something changed,
        and is re-armed once ZMQ_EVENTS has been read after the last
        operation. So ``drain`` reads until ZMQ_EVENTS shows nothing (it
        returns True if it stopped at its budget with more to read), and a
        socket we sent on (a send can consume the edge: ``sent_on``) is
        checked again at the end of the turn.
        """
        self._zmq_drains[sock] = drain
        self.watch(sock.getsockopt(zmq.FD), lambda ev: self._drain(sock))
        self._recheck.add(sock)  # anything queued before we polled

    def sent_on(self, sock: zmq.Socket[bytes]) -> None:
        self._recheck.add(sock)

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        if self._zmq_drains[sock]():
            self._recheck.add(sock)

    def recheck_zmq(self) -> None:
        """Re-read ZMQ_EVENTS of every socket a send may have disarmed."""
        if not self._recheck:
            return
        sockets = list(self._recheck)
        self._recheck.clear()
        for sock in sockets:
            if has_input(sock):
                self._drain(sock)

    # ------------------------------------------------------------ timers
    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_ids), fn))

    def every(self, interval: float, fn: Callable[[], None]) -> None:
        def tick() -> None:
            fn()
            self.at(time.monotonic() + interval, tick)

        self.at(time.monotonic() + interval, tick)

    def run_due(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn = heapq.heappop(timers)
            fn()

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    # ----------------------------------------------------------- signals
    def install_signals(self, signums: Iterable[int], on_signal: Callable[[int], None]) -> None:
        self._sig_r, self._sig_w = socket.socketpair()
        self._sig_r.setblocking(False)
        self._sig_w.setblocking(False)
        signal.set_wakeup_fd(self._sig_w.fileno(), warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, _wake_only)
        reader = self._sig_r

        def on_readable(ev: int) -> None:
            try:
                data = reader.recv(4096)
            except BlockingIOError:
                return
            for signum in data:
                on_signal(signum)

        self.watch(reader.fileno(), on_readable)

    def close(self) -> None:
        if self._sig_r is not None and self._sig_w is not None:
            signal.set_wakeup_fd(-1)
            self._sig_r.close()
            self._sig_w.close()
            self._sig_r = self._sig_w = None

    # -------------------------------------------------------------- run
    def run(self, turn: Callable[[float], None], wake_by: Callable[[float], float | None]) -> None:
        """Poll and dispatch until ``stopped``.

        ``turn(now)`` runs after each poll's handlers and calls ``run_due``;
        ``wake_by(now)`` tells the earliest moment the owner needs a turn
        (a task deadline, a watchdog ping) besides the timers, or None.
        """
        poll = self.poller.poll
        handlers = self._handlers
        monotonic = time.monotonic
        while not self.stopped:
            now = monotonic()
            if self._recheck:
                timeout: int | None = 0
            else:
                when = self.next_timer()
                extra = wake_by(now)
                if extra is not None and (when is None or extra < when):
                    when = extra
                if when is None:
                    when = now + 1.0
                timeout = max(0, int((when - now) * 1000) + 1)
            for what, ev in poll(timeout):
                handler = handlers.get(what)
                if handler is not None:
                    handler(ev)
            turn(monotonic())  # it runs the due timers (run_due) in its order
            self.recheck_zmq()
