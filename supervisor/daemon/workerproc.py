"""The I/O side of one worker: its process, its pipe, never blocking.

Why our own framing on the supervisor's end: ``Connection.send_bytes``
blocks when the pipe is full (a worker busy with a long task stops
reading), and ``recv_bytes`` blocks until a whole message is in. Either
would stall the one loop that serves everybody. So the supervisor sets its
end non-blocking and reads and writes the same frames multiprocessing uses
(a 4-byte big-endian signed length, or -1 then an 8-byte length), buffering
partial frames. The worker keeps the ordinary blocking ``Connection`` API.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import struct
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from supervisor.daemon.pool.interfaces import PipeBroken
from workers import loop

__all__ = ["PipeBroken", "WorkerHandle", "renew_forkserver", "reap_group", "stop_forkserver"]

_HEADER = struct.Struct("!i")
_LONG = struct.Struct("!Q")
# 64 KiB: a 1 MiB read buffer costs ~14 us per call to allocate and free,
# on every wake-up from a worker, while a batch of results rarely exceeds it.
_READ_CHUNK = 1 << 16


class WorkerHandle:
    def __init__(self, proc: BaseProcess, conn: Connection, max_frame: int,
                 streams: dict[str, Connection] | None = None) -> None:
        self.proc = proc
        self.conn = conn
        # Read ends of the worker's stdout/stderr pipes, by stream name.
        self.streams: dict[str, Connection] = streams or {}
        for stream in self.streams.values():
            os.set_blocking(stream.fileno(), False)
        self.fd = conn.fileno()
        os.set_blocking(self.fd, False)
        self.sentinel: int = proc.sentinel
        self.pid: int = proc.pid or 0
        self._in = bytearray()
        self._out = bytearray()
        self._max_frame = max_frame
        self.eof = False
        self._ps: psutil.Process | None = None
        self.fs_generation = 0  # which forkserver it came from (see renew_forkserver)
        self._running: Any = None  # shared c_longlong set by spawn()
        self._started: Any = None  # shared c_double set by spawn()
        self._pidfd = -1  # the sentinel of a forked worker (see spawn)

    @classmethod
    def spawn(
        cls, ctx: BaseContext, slot: int, allow: list[str], max_bytes: int,
        path: list[str] | None = None,
        accept_pickle: bool = False,
        siblings: list[int] | None = None,
        ledger: tuple[str, int, int] | None = None,
    ) -> WorkerHandle:
        """``siblings``: with the "fork" start method, the daemon's ends of
        the other workers' pipes, which the new worker closes (see
        ``workers.loop.main``). ``ledger``: where it notes what it starts
        (journal_handoff.worker_note's arguments)."""
        parent, child = ctx.Pipe(duplex=True)
        out_r, out_w = ctx.Pipe(duplex=False)
        err_r, err_w = ctx.Pipe(duplex=False)
        close: list[int] = []
        if ctx.get_start_method() == "fork":
            close = [parent.fileno(), out_r.fileno(), err_r.fileno(), *(siblings or [])]
        # Key of the task the worker is running (0: none) and when it
        # started (time.monotonic(): CLOCK_MONOTONIC is one clock for every
        # process on Linux), in shared memory so they survive the worker's
        # death and can be read while it is busy: deadlines and crash
        # charges go to the task actually running, not the oldest held.
        running = ctx.RawValue("q", 0)
        started = ctx.RawValue("d", 0.0)
        proc = ctx.Process(  # type: ignore[attr-defined]
            target=loop.main,
            args=(child, slot, allow, max_bytes, out_w, err_w, running, started, path or [],
                  accept_pickle, close, ledger),
            name=f"phalanx-worker-{slot}",
            daemon=False,
        )
        try:
            proc.start()
        except BaseException:
            for conn in (parent, out_r, err_r):
                conn.close()
            raise
        finally:
            for conn in (child, out_w, err_w):
                conn.close()
        # Frames carry results up to max_bytes plus their envelope.
        handle = cls(proc, parent, max_bytes + 64 * 1024, {"stdout": out_r, "stderr": err_r})
        if close and hasattr(os, "pidfd_open"):
            # A forked worker's sentinel is a pipe it closes as it exits,
            # a moment before its exit status exists: the loop would see a
            # death without an exit code. A pidfd is readable only once the
            # status is there (a forkserver sends it after its waitpid).
            try:
                handle.sentinel = handle._pidfd = os.pidfd_open(proc.pid)
            except OSError:
                pass  # a kernel without pidfds: the pipe, and maybe no exit code
        handle._running = running
        handle._started = started
        return handle

    def running_key(self) -> int | None:
        """Key of the task the worker is running: 0 if none (between tasks;
        task keys start at 1), None if unknown."""
        if self._running is None:
            return None
        return int(self._running.value)

    def running(self) -> tuple[int | None, float]:
        """(key, started_at) of the task the worker is running; (None, NaN)
        if unknown. key 0: none is running (started_at is then meaningless).
        started_at is on this process's ``time.monotonic()`` clock.

        The worker writes the start time before the key; reading the key on
        both sides of the start time and retrying on a change means the
        time returned is never older than the key's task's start (at worst,
        briefly newer: the next task's, whose key is not yet written).
        """
        if self._running is None:
            return None, math.nan
        for _ in range(8):
            key = int(self._running.value)
            started = float(self._started.value)
            if int(self._running.value) == key:
                return key, started
        return key, started

    @property
    def pipe_open(self) -> bool:
        return not self.conn.closed

    def daemon_fds(self) -> list[int]:
        """Our ends of the worker's pipes (a forked sibling closes them)."""
        return [c.fileno() for c in (self.conn, *self.streams.values()) if not c.closed]

    def stream_fds(self) -> dict[str, int]:
        return {name: c.fileno() for name, c in self.streams.items() if not c.closed}

    def stream_open(self, name: str) -> bool:
        conn = self.streams.get(name)
        return conn is not None and not conn.closed

    def read_stream(self, name: str) -> bytes | None:
        """What the worker wrote to stdout/stderr so far; None at EOF."""
        conn = self.streams.get(name)
        if conn is None or conn.closed:
            return None
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(conn.fileno(), _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                conn.close()
                return b"".join(chunks) if chunks else None
            chunks.append(chunk)
            if len(chunk) < _READ_CHUNK:
                break
        return b"".join(chunks)

    # ------------------------------------------------------------ reading
    def read_frames(self) -> list[bytes]:
        """Everything complete that the worker has written so far.

        Raises PipeBroken on EOF (after returning what came before it, on
        the previous call) or on a frame that cannot be valid.
        """
        buf = self._in
        while True:
            try:
                chunk = os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            buf += chunk
            if len(chunk) < _READ_CHUNK:
                break
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            head = 4
            if size == -1:
                if end - pos < 12:
                    break
                (size,) = _LONG.unpack_from(buf, pos + 4)
                head = 12
            if size < 0 or size > self._max_frame:
                raise PipeBroken(f"bad frame length {size}")
            if end - pos - head < size:
                break
            frames.append(bytes(buf[pos + head : pos + head + size]))
            pos += head + size
        if pos:
            del buf[:pos]
        if self.eof and not frames:
            raise PipeBroken("end of file")
        return frames

    # ------------------------------------------------------------ writing
    def write(self, payload: bytes) -> None:
        n = len(payload)
        if n > 0x7FFFFFFF:
            self._out += _HEADER.pack(-1) + _LONG.pack(n)
        else:
            self._out += _HEADER.pack(n)
        self._out += payload
        self.flush()

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def flush(self) -> None:
        out = self._out
        while out:
            try:
                sent = os.write(self.fd, out)
            except BlockingIOError:
                return
            except OSError:
                out.clear()  # the worker is gone; its sentinel will tell us
                return
            del out[:sent]

    # ------------------------------------------------------------ lifecycle
    def alive(self) -> bool:
        return self.proc.is_alive()

    def exitcode(self) -> int | None:
        self.proc.join(0)
        return self.proc.exitcode

    def signal_group(self, sig: int) -> None:
        """Signal the worker and everything in its process group."""
        for target in (-self.pid, self.pid):
            try:
                os.kill(target, sig)
                return
            except ProcessLookupError:
                continue
            except PermissionError:
                continue

    def usage(self) -> tuple[int | None, float | None]:
        """RSS bytes and CPU percent since the previous call (psutil)."""
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.pid)
                self._ps.cpu_percent(None)  # the first call only primes it
            return self._ps.memory_info().rss, self._ps.cpu_percent(None)
        except psutil.Error:
            return None, None

    def signal_tree(self, sig: int) -> None:
        """Signal the worker's process group and every descendant, even ones
        that left the group (setsid), as far as the tree can still be seen."""
        self.signal_group(sig)
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return
        for proc in descendants:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass

    def close_pipe(self) -> None:
        """Closing our end tells a healthy worker to finish and exit."""
        if not self.conn.closed:
            self.conn.close()

    def release(self) -> None:
        """Free every fd once the process is known dead."""
        self.close_pipe()
        for stream in self.streams.values():
            if not stream.closed:
                stream.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        try:
            self.proc.join(0)
            self.proc.close()
        except ValueError:
            pass  # still running; only for an abandoned handle at exit


def renew_forkserver(preload: list[str]) -> Any:
    """Point multiprocessing at a fresh forkserver; return the old one.

    Why: the forkserver imported the task modules once, and every worker is
    a fork of it, so a rolling reload would restart workers with the old
    code. New workers come from a new forkserver (started on first use,
    importing the code as it is now). The old one must live on until its
    last worker has died: it is what reports those workers' exit status.
    """
    from multiprocessing import forkserver as fs

    old = fs._forkserver
    new = fs.ForkServer()
    new.set_forkserver_preload(preload)
    fs._forkserver = new
    # The module's functions are bound methods of the instance: rebind them.
    for name in ("ensure_running", "get_inherited_fds", "connect_to_new_process",
                 "set_forkserver_preload"):
        setattr(fs, name, getattr(new, name))
    return old


def stop_forkserver(server: Any) -> None:
    stop = getattr(server, "_stop", None)
    if stop is not None:
        try:
            stop()
        except Exception:  # noqa: BLE001, S110 - a private API: best effort only
            pass


def reap_group(pid: int) -> None:
    """SIGKILL whatever is left in a dead worker's process group."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
