"""The systemd notify protocol (``sd_notify``), spoken by ``phalanxd``.

Why hand-written: systemd documents this protocol as a stable interface that
services are expected to reimplement rather than link libsystemd for. It is
one ``AF_UNIX`` datagram per message, each a few ``KEY=VALUE`` lines, sent to
the address in ``$NOTIFY_SOCKET``. That is less code than a dependency, and
it lets us guarantee what matters to a single-threaded event loop: no call
here ever blocks and no delivery failure ever raises.

How the daemon uses it::

    notifier = Notifier.from_env()
    ...                                   # start workers
    notifier.ready("4 workers up")        # READY=1 + STATUS=
    while running:
        timeout = min(heap_deadline, notifier.next_watchdog_at or inf) - now
        poller.poll(timeout)
        now = time.monotonic()
        if notifier.watchdog_due(now):
            notifier.watchdog(now)        # WATCHDOG=1 from the live loop
    notifier.stopping()                   # STOPPING=1 on SIGTERM

The watchdog is pinged from the main loop on purpose, never from a helper
thread: if the loop wedges, the pings stop and systemd restarts us, which is
the whole point of ``WatchdogSec=``.

Outside systemd (``NOTIFY_SOCKET`` unset) every method returns at once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Self

__all__ = ["Notifier"]

# sendto() flags: MSG_NOSIGNAL stops a vanished peer from raising SIGPIPE on
# platforms that would; MSG_DONTWAIT makes each send non-blocking even if
# someone flips the socket back to blocking mode.
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0) | getattr(socket, "MSG_DONTWAIT", 0)


def _parse_address(value: str) -> bytes | None:
    """Map a ``$NOTIFY_SOCKET`` value to an ``AF_UNIX`` address, or None.

    ``@name`` is Linux's abstract namespace, written with a leading NUL on the
    wire. systemd >= 254 may also hand out ``vsock:`` addresses; we only run
    on the host, so anything that is not a path or ``@`` form disables
    notification instead of failing start-up.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    return None


def _parse_watchdog_usec(environ: Mapping[str, str]) -> int | None:
    raw_usec = environ.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid:
        # The variables are inherited by children; only the process systemd
        # named may ping, or a child could keep a dead parent "alive".
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec


def _check_line(what: str, text: str) -> None:
    if "\n" in text:
        raise ValueError(f"notify {what} must not contain a newline: {text!r}")


class Notifier:
    """Sends ``sd_notify`` messages to systemd without ever blocking.

    Construct with :meth:`from_env`. ``dropped`` counts messages that could
    not be delivered; ``last_error`` holds the errno of the latest such drop.
    """

    __slots__ = (
        "_address",
        "_sock",
        "_watchdog_interval",
        "_next_watchdog_at",
        "_last_status",
        "dropped",
        "last_error",
    )

    def __init__(self, address: bytes | None, watchdog_usec: int | None = None) -> None:
        """Create a notifier for ``address`` (an ``AF_UNIX`` address, NUL-led
        for the abstract namespace) or a disabled one for ``None``."""
        self._address = address
        self._sock: socket.socket | None = None
        self._watchdog_interval: float | None = None
        self._next_watchdog_at: float | None = None
        self._last_status: str | None = None
        self.dropped = 0
        self.last_error: int | None = None
        if address is None:
            return
        # Created once and kept: a socket per message would cost two syscalls
        # and an fd churn on every watchdog ping. Unconnected (sendto) so a
        # listener that is recreated at the same address is found again.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        self._sock = sock
        if watchdog_usec is not None and watchdog_usec > 0:
            # Half the timeout is what systemd recommends: one late ping is
            # then never fatal on its own.
            self._watchdog_interval = watchdog_usec / 2_000_000
            # Due at once: the first loop iteration proves the loop runs.
            self._next_watchdog_at = time.monotonic()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        ``environ`` defaults to ``os.environ``. The environment is left as it
        is: with ``NotifyAccess=main`` systemd ignores anything our workers
        might send, and tests want to read the variables back.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET")
        address = _parse_address(raw) if raw else None
        if address is None:
            return cls(None)
        return cls(address, _parse_watchdog_usec(env))

    # -- state ---------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True while there is a notify socket to send to."""
        return self._sock is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``WATCHDOG_USEC``), None if no watchdog."""
        return self._watchdog_interval if self._sock is not None else None

    @property
    def next_watchdog_at(self) -> float | None:
        """``time.monotonic()`` instant the next ping is due; fold it into the
        poll timeout. None when there is no watchdog."""
        return self._next_watchdog_at if self._sock is not None else None

    def watchdog_due(self, now: float | None = None) -> bool:
        """True if a ``WATCHDOG=1`` ping should be sent at ``now`` (monotonic)."""
        due = self.next_watchdog_at
        if due is None:
            return False
        return (time.monotonic() if now is None else now) >= due

    # -- messages ------------------------------------------------------------

    def send(self, text: str | None = None, /, **fields: str | int) -> bool:
        """Send one datagram: ``text`` verbatim, or ``fields`` as ``KEY=VALUE`` lines.

        Returns True if the datagram was handed to the kernel, False if
        notification is disabled or the message was dropped. Never raises for
        delivery problems; raises ValueError for a value containing a newline
        (it would silently become a second assignment) and TypeError for
        passing both forms or neither.
        """
        if (text is None) == (not fields):
            raise TypeError("send() takes either one text argument or keyword fields")
        if text is None:
            lines: list[str] = []
            for key, value in fields.items():
                rendered = str(value)
                _check_line(f"field {key}", rendered)
                lines.append(f"{key}={rendered}\n")
            text = "".join(lines)
        return self._send(text)

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up (or a reload) is complete: ``READY=1``.

        A ``status`` goes in the same datagram so the unit never shows
        "active" with a stale status line.
        """
        if self._sock is None:
            return False
        message = "READY=1\n"
        status_text = None if status is None else _one_line(status)
        if status_text is not None and status_text != self._last_status:
            message += f"STATUS={status_text}\n"
        else:
            status_text = None
        return self._send(message, status=status_text)

    def status(self, text: str) -> bool:
        """Set the free-form status ``systemctl status`` shows: ``STATUS=``.

        An identical repeat is not sent (returns False): the loop may report
        status on every tick and systemd rate-limits notify traffic.
        """
        if self._sock is None:
            return False
        line = _one_line(text)
        if line == self._last_status:
            return False
        return self._send(f"STATUS={line}\n", status=line)

    def watchdog(self, now: float | None = None) -> bool:
        """Ping the watchdog (``WATCHDOG=1``) and schedule the next ping.

        ``now`` is the loop's ``time.monotonic()`` reading, if it has one.
        """
        if self._sock is None:
            return False
        if self._watchdog_interval is not None:
            # Scheduled from now even if this ping is dropped: retrying at
            # once would spin the loop while systemd is busy.
            start = time.monotonic() if now is None else now
            self._next_watchdog_at = start + self._watchdog_interval
        return self._send("WATCHDOG=1\n")

    def reloading(self) -> bool:
        """Announce a reload (SIGHUP): ``RELOADING=1`` plus ``MONOTONIC_USEC``.

        ``Type=notify-reload`` requires the timestamp in the same datagram so
        systemd can tell this reload from an older one. Send :meth:`ready`
        when the reload is done.
        """
        if self._sock is None:
            return False
        # systemd compares against its own CLOCK_MONOTONIC; name the clock
        # rather than rely on time.monotonic() happening to use it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}\n")

    def stopping(self) -> bool:
        """Announce an orderly shutdown has begun (SIGTERM): ``STOPPING=1``."""
        if self._sock is None:
            return False
        return self._send("STOPPING=1\n")

    def close(self) -> None:
        """Close the socket; afterwards every method is a no-op. Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Notifier(enabled={self.enabled}, watchdog_interval={self.watchdog_interval},"
            f" dropped={self.dropped})"
        )

    # -- I/O -----------------------------------------------------------------

    def _send(self, message: str, *, status: str | None = None) -> bool:
        sock = self._sock
        if sock is None or self._address is None:
            return False
        try:
            sock.sendto(message.encode("utf-8"), _SEND_FLAGS, self._address)
        except OSError as exc:
            # Notification is advisory and must never take the daemon down.
            # Expected: EAGAIN/ENOBUFS (systemd's queue is full), ECONNREFUSED
            # and ENOENT (systemd gone or restarting). Anything else (EACCES,
            # EMSGSIZE, ...) is swallowed too: if pings really stop arriving,
            # systemd's watchdog is the right escalation, not a crash here.
            self.dropped += 1
            self.last_error = exc.errno
            return False
        if status is not None:
            # Remembered only once delivered, so a dropped status is resent.
            self._last_status = status
        return True


def _one_line(text: str) -> str:
    # STATUS is one line on the wire; a newline in, say, an error message
    # would turn the rest into a bogus assignment, so flatten it instead.
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text
