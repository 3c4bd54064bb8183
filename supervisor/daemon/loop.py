"""The event loop: one epoll, the fds it watches, timers, signals.

Everything the daemon waits on is a file descriptor registered here with
its handler: ZeroMQ sockets (through their ZMQ_FD, see ``watch_zmq``),
worker pipes, stdout/stderr pipes, process sentinels and the signal wakeup
fd. Timers are a heap consulted for the poll timeout. The loop knows
nothing of workers or tasks: each turn it runs the ready handlers, then
the owner's ``turn(now)``, then re-checks ZeroMQ sockets a send disarmed.

Why epoll and not zmq.Poller: every socket is watched through its ZMQ_FD,
so everything here is a plain fd, and zmq_poll costs two poll(2) calls per
wait (a non-blocking first pass, then the wait) plus a pollfd array built
per call; epoll registers each fd once and waits in one call. Handlers get
zmq-style flags (zmqio.POLLIN/POLLOUT/POLLERR); a hang-up counts as
POLLERR, as zmq_poll reported it.

Signal handlers do nothing but wake the loop: Python's C-level handler
writes the signal number to our socketpair (``signal.set_wakeup_fd``), and
the loop hands the numbers to the owner as an ordinary readable fd.
"""

from __future__ import annotations

import heapq
import itertools
import select
import signal
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from supervisor.daemon.zmqio import POLLERR, POLLIN, POLLOUT, has_input

Handler = Callable[[int], None]
_EPOLL_ERR = select.EPOLLERR | select.EPOLLHUP


def _to_epoll(flags: int) -> int:
    return (select.EPOLLIN if flags & POLLIN else 0) | (select.EPOLLOUT if flags & POLLOUT else 0)


def _from_epoll(ev: int) -> int:
    return ((POLLIN if ev & select.EPOLLIN else 0) | (POLLOUT if ev & select.EPOLLOUT else 0)
            | (POLLERR if ev & _EPOLL_ERR else 0))


def _wake_only(signum: int, frame: Any) -> None:
    """The wakeup fd already carries the signal number; nothing to do here."""


class EventLoop:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._zmq_drains: dict[zmq.Socket[bytes], Callable[[], bool]] = {}
        self._recheck: set[zmq.Socket[bytes]] = set()
        self._sig_r: socket.socket | None = None
        self._sig_w: socket.socket | None = None
        self.stopped = False

    # ------------------------------------------------------------- fds
    def watch(self, fd: int, handler: Handler, flags: int = POLLIN) -> None:
        self._handlers[fd] = handler
        try:
            self._epoll.register(fd, _to_epoll(flags))
        except FileExistsError:
            self._epoll.modify(fd, _to_epoll(flags))

    def unwatch(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):  # closed already: epoll forgot it
                pass

    def watching(self, fd: int) -> bool:
        return fd in self._handlers

    def modify(self, fd: int, flags: int) -> None:
        if fd in self._handlers:
            self._epoll.modify(fd, _to_epoll(flags))

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
        self.watch(int(sock.getsockopt(zmq.FD)), lambda ev: self._drain(sock))
        self._recheck.add(sock)  # anything queued before we polled

    def sent_on(self, sock: zmq.Socket[bytes]) -> None:
        self._recheck.add(sock)

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        if self._zmq_drains[sock]():
            self._recheck.add(sock)

    def recheck_zmq(self) -> bool:
        """Re-read ZMQ_EVENTS of every socket a send may have disarmed, and
        drain those with input; True if any had (the owner then needs a turn
        before the loop waits again: what was read may be work to dispatch)."""
        if not self._recheck:
            return False
        sockets = list(self._recheck)
        self._recheck.clear()
        drained = False
        for sock in sockets:
            if has_input(sock):
                self._drain(sock)
                drained = True
        return drained

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
        self._epoll.close()
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
        poll = self._epoll.poll
        handlers = self._handlers
        monotonic = time.monotonic
        fast = POLLIN  # the common event, mapped without a call
        while not self.stopped:
            now = monotonic()
            if self._recheck:
                timeout = 0.0
            else:
                when = self.next_timer()
                extra = wake_by(now)
                if extra is not None and (when is None or extra < when):
                    when = extra
                timeout = 1.0 if when is None else max(0.0, when - now)
            try:
                events = poll(timeout)
            except InterruptedError:  # a signal; its byte is on the wakeup fd
                continue
            for fd, ev in events:
                handler = handlers.get(fd)
                if handler is not None:
                    handler(fast if ev == select.EPOLLIN else _from_epoll(ev))
            turn(monotonic())  # it runs the due timers (run_due) in its order
            # Requests read while re-checking get their turn now: waiting
            # first would leave them queued until the next timer (a lost
            # wake-up that once cost up to a second).
            while self.recheck_zmq():
                turn(monotonic())
