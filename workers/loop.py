"""The loop that runs inside every worker process.

    supervisor --[Work, Work, ...]--> pipe --> run in order received
    supervisor <--[Done, Done, ...]-- pipe <-- answer in the same order

Answering in order is what lets the supervisor account for a crash: the
oldest unanswered task is the one that was running. Results are flushed as
soon as the batch in hand is finished, or earlier when a task took long
enough that holding its result back would cost latency.

The worker decodes arguments and encodes results; the supervisor only ever
sees the bytes. Exceptions a task raises become failed results; only a
process death is a crash.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from supervisor.protocol import Batch, Done, Hello, Work, encoder, error_map
from workers import registry

# The worker's end of its pipe to the supervisor (for workers.builtin:sabotage).
PIPE_FD = -1

# Results held back at most this long while later tasks of a batch run.
FLUSH_AFTER = 0.001

_work_decoder = msgspec.msgpack.Decoder(list[Work])
_args_decoder = msgspec.msgpack.Decoder(list[Any])
_kwargs_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def _failure(type_: str, message: str, tb: str | None = None) -> msgspec.Raw:
    return msgspec.Raw(encoder.encode(error_map(type_, message, tb)))


class SoftTimeout(Exception):
    """Raised inside a task that ran past its soft timeout, so it can clean
    up; if it swallows this and runs on, the hard timeout still applies."""


def _on_alarm(signum: int, frame: object) -> None:
    raise SoftTimeout("task ran past its soft timeout")


def _run_chunk(fn: registry.TaskFn, items: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    """Run ``fn`` once per item; each outcome is ``[ok, value or error map]``.

    One item raising fails that item only. A SoftTimeout fails the item it
    interrupted and every item after it: the chunk's time is up.
    """
    if not all(isinstance(item, list) for item in items):
        raise TypeError("a chunk's args must be an array of argument arrays")
    out: list[Any] = []
    for n, item in enumerate(items):
        try:
            out.append([True, fn(*item, **kwargs)])
        except SoftTimeout as exc:
            failure = error_map("SoftTimeout", str(exc))
            out.extend([False, failure] for _ in items[n:])
            break
        except Exception as exc:  # noqa: BLE001 - an item's error is its outcome
            out.append([False, error_map(type(exc).__name__, str(exc), traceback.format_exc())])
    return out


def run_one(
    work: Work, tasks: dict[str, registry.TaskFn], max_result_bytes: int
) -> Done:
    fn = tasks.get(work.task)
    if fn is None:
        return Done(work.key, False, _failure("UnknownTask", f"no task named {work.task!r}"))
    try:
        args = _args_decoder.decode(work.args) if work.args else []
        kwargs = _kwargs_decoder.decode(work.kwargs) if work.kwargs else {}
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        # The daemon passes arguments through unread, so whatever msgspec
        # refuses in them lands here: bad input, not a crash. That includes
        # RecursionError (nesting deeper than it decodes) and
        # UnicodeDecodeError (a str that is not UTF-8).
        return Done(work.key, False, _failure("BadRequest", f"arguments: {exc}"))
    soft = work.soft_timeout
    try:
        if soft > 0:
            # setitimer overflows past ~9.2e9 s (OverflowError, and the task
            # would fail for a limit it never reached): any longer soft
            # timeout is as good as a billion seconds.
            signal.setitimer(signal.ITIMER_REAL, min(soft, 1e9))
        try:
            value = _run_chunk(fn, args, kwargs) if work.chunk else fn(*args, **kwargs)
        finally:
            if soft > 0:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except Exception as exc:  # noqa: BLE001 - any error a task raises is its result
        return Done(
            work.key,
            False,
            _failure(type(exc).__name__, str(exc), traceback.format_exc()),
        )
    try:
        encoded = encoder.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        return Done(work.key, False, _failure("Unserializable", f"result: {exc}"))
    if len(encoded) > max_result_bytes:
        return Done(
            work.key,
            False,
            _failure("TooLarge", f"result is {len(encoded)} bytes, limit {max_result_bytes}"),
        )
    return Done(work.key, True, msgspec.Raw(encoded))


def serve(conn: Connection, tasks: dict[str, registry.TaskFn], max_result_bytes: int,
          running: Any = None) -> None:
    """Run batches until the pipe closes.

    ``running`` (shared memory, see workerproc.py) is set to each task's key
    before it runs. Results are held back up to FLUSH_AFTER, so when this
    process dies the oldest unanswered task is not necessarily the one that
    killed it; ``running`` tells the supervisor which one was.
    """
    send = conn.send_bytes
    monotonic = time.monotonic
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # supervisor closed our pipe: stop quietly
        batch = _work_decoder.decode(data)
        out: list[Done] = []
        flushed_at = monotonic()
        for work in batch:
            if running is not None:
                running.value = work.key
            out.append(run_one(work, tasks, max_result_bytes))
            now = monotonic()
            if now - flushed_at >= FLUSH_AFTER:
                send(encoder.encode(Batch(out)))
                out = []
                flushed_at = now
        if out:
            send(encoder.encode(Batch(out)))


def _capture(stdout: Connection | None, stderr: Connection | None) -> None:
    """Point fds 1 and 2 at the supervisor's capture pipes.

    At the fd level, so output from C code, subprocesses the task starts
    and faulthandler's crash tracebacks is captured too.
    """
    for conn, fd, stream in ((stdout, 1, sys.stdout), (stderr, 2, sys.stderr)):
        if conn is None:
            continue
        if stream is not None:
            stream.flush()
        os.dup2(conn.fileno(), fd)
        conn.close()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    faulthandler.enable()  # a segfault leaves a Python traceback in stderr


def main(conn: Connection, slot: int, allow: list[str], max_result_bytes: int,
         stdout: Connection | None = None, stderr: Connection | None = None,
         running: Any = None, accept_pickle: bool = False) -> None:
    """Entry point of a worker process (target of multiprocessing.Process)."""
    if accept_pickle:
        # A private Pool's worker: what tasks print goes to the owner's
        # terminal (the fds inherited from its daemon), as with multiprocessing.
        for stream in (stdout, stderr):
            if stream is not None:
                stream.close()
        stdout = stderr = None
    _capture(stdout, stderr)
    # Own process group: the supervisor stops a worker and everything the
    # worker's tasks started with one killpg.
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    # Ctrl-C in a terminal is for the daemon, which drains; workers hear
    # about shutdown from their pipe closing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, _on_alarm)
    os.environ["PHALANX_SLOT"] = str(slot)
    # msgspec refuses nesting deeper than the recursion limit minus the
    # current stack. The daemon checks requests with that budget at a
    # shallower stack than ours (forkserver bootstrap frames), so without
    # headroom arguments it accepted could fail to decode here and kill
    # every worker they reach.
    sys.setrecursionlimit(sys.getrecursionlimit() + 100)
    global PIPE_FD
    PIPE_FD = conn.fileno()
    tasks, errors = registry.load(allow)
    if accept_pickle:  # a private Pool's worker only (tasks.accept_pickle)
        from workers import pickle_lane

        tasks.update(pickle_lane.tasks())
    conn.send_bytes(encoder.encode(Hello(os.getpid(), sorted(tasks), errors)))
    try:
        serve(conn, tasks, max_result_bytes, running)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
