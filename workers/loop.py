"""The loop that runs inside every worker process.

    supervisor --[Work, Work, ...]--> pipe --> run in order received
    supervisor <--[Done] [Done] ...-- pipe <-- each result as its task ends

Answering in order is what lets the supervisor account for a crash: the
oldest unanswered task is the one that was running. A result leaves as
soon as its task ends, before the next task starts: a finished result held
behind a long task would wait for it (and could be charged for its
deadline or its crash). Batching happens on the other hops (the supervisor
sends many tasks at once; it reads every result waiting in the pipe in one
wake-up).

Two shared values (see workerproc.py) say what runs: the key of the task
started and its start time on CLOCK_MONOTONIC, which is system-wide on
Linux, so the supervisor can compare it with its own ``time.monotonic()``.
The key is 0 between tasks, once the last result has been written.

The worker decodes arguments and encodes results; the supervisor only ever
sees the bytes. Exceptions a task raises become failed results; only a
process death is a crash. Nothing leaves that the supervisor cannot decode
(workers/outcome.py).
"""

from __future__ import annotations

import faulthandler
import gc
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from supervisor import payload
from supervisor.protocol import Batch, Done, Hello, Work, encoder, error_map
from workers import outcome, registry

# The worker's end of its pipe to the supervisor (for workers.testing:sabotage).
PIPE_FD = -1

_work_decoder = msgspec.msgpack.Decoder(list[Work])
# numpy arrays arrive as extension values (supervisor/payload).
_args_decoder = msgspec.msgpack.Decoder(list[Any], ext_hook=payload.worker_ext_hook)
_kwargs_decoder = msgspec.msgpack.Decoder(dict[str, Any], ext_hook=payload.worker_ext_hook)


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
            out.append([False, outcome.exception_map(exc)])
    return out


def run_one(
    work: Work, tasks: dict[str, registry.TaskFn], max_result_bytes: int,
    import_errors: dict[str, str] | None = None,
) -> Done:
    fn = tasks.get(work.task)
    if fn is None:
        module = registry.module_of(work.task)
        why = (import_errors or {}).get(module)
        message = f"no task named {work.task!r}"
        if why:
            message += f" (module {module!r} failed to import: {why})"
        return Done(work.key, False, outcome.failure("UnknownTask", message))
    try:
        args = _args_decoder.decode(work.args) if work.args else []
        kwargs = _kwargs_decoder.decode(work.kwargs) if work.kwargs else {}
        args, local = payload.split_local(args)  # local: results may use shared memory
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        # The daemon passes arguments through unread, so whatever msgspec
        # refuses in them lands here: bad input, not a crash. That includes
        # RecursionError (nesting deeper than it decodes) and
        # UnicodeDecodeError (a str that is not UTF-8).
        return Done(work.key, False, outcome.failure("BadRequest", f"arguments: {exc}"))
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
        return Done(work.key, False, outcome.exception_failure(exc))
    # numpy arrays go out as extension values, or in shared memory for a
    # local client, a tuple as a tuple (supervisor/payload); the limits
    # below apply either way.
    chunk = bool(work.chunk)
    ok, raw = outcome.encode_result(value, max_result_bytes,
                                    lambda v: payload.encode_result(v, local, chunk))
    return Done(work.key, ok, raw)


def _sender(conn: Connection) -> Callable[[bytes], None]:
    """``conn.send_bytes``, with a fast path for the common small frame.

    One result per message makes the per-message cost count: a frame of at
    most PIPE_BUF bytes goes out as one os.write, which a blocking pipe
    performs whole (atomic), skipping Connection's checks and copies. The
    framing is multiprocessing's, so the daemon reads both alike.
    """
    fd = conn.fileno()
    slow = conn.send_bytes
    pack = struct.Struct("!i").pack
    write = os.write
    small = select.PIPE_BUF - 4

    def send(frame: bytes) -> None:
        if len(frame) <= small:
            write(fd, pack(len(frame)) + frame)
        else:
            slow(frame)

    return send


def serve(conn: Connection, tasks: dict[str, registry.TaskFn], max_result_bytes: int,
          running: Any = None, started: Any = None,
          import_errors: dict[str, str] | None = None,
          note: Callable[[int, int], None] | None = None) -> None:
    """Run batches until the pipe closes, sending each result as its task ends.

    ``running``/``started`` (shared memory, see workerproc.py) hold the key
    and start time of the task being run: the start time is written first
    and the key last, so a reader that sees a key sees a start time at
    least as new as that task's. ``note`` records the task's key and digest
    before it starts, in a file that outlives the daemon (the journal's).
    """
    send = _sender(conn)
    monotonic = time.monotonic
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # supervisor closed our pipe: stop quietly
        for work in _work_decoder.decode(data):
            if note is not None:
                note(work.key, work.digest)
            if running is not None:
                started.value = monotonic()
                running.value = work.key
            done = run_one(work, tasks, max_result_bytes, import_errors)
            send(encoder.encode(Batch([done])))
            if running is not None:
                running.value = 0


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
         running: Any = None, started: Any = None, path: list[str] | None = None,
         accept_pickle: bool = False, close: list[int] | None = None,
         ledger: tuple[str, int, int] | None = None) -> None:
    """Entry point of a worker process (target of multiprocessing.Process).

    ``close``: fds a worker forked straight from the daemon closes first,
    the daemon's ends of its own and its siblings' pipes; held here, they
    would keep a pipe from ever reading EOF, and a worker would outlive
    its daemon. (``gc.freeze`` first: the daemon's objects that own them
    must never close those numbers again once reused.)

    ``path``: folders put at the front of ``sys.path`` before the allowed
    modules are imported (config ``tasks.path``). ``accept_pickle``: a
    private Pool's worker, which also runs pickled calls. ``ledger``: the
    journal's hand-off file, slot and epoch, where it notes each task it
    starts (supervisor/daemon/journal_handoff.py)."""
    if close:
        gc.freeze()
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
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
    # A worker forked straight from the daemon (workers.start_method "fork",
    # a private Pool's) inherits its handlers and its wakeup fd: a SIGHUP
    # sent to the worker would reach the daemon's loop as a reload.
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    os.environ["PHALANX_SLOT"] = str(slot)
    # msgspec refuses nesting deeper than the recursion limit minus the
    # current stack. The daemon checks requests with that budget at a
    # shallower stack than ours (forkserver bootstrap frames), so without
    # headroom arguments it accepted could fail to decode here and kill
    # every worker they reach.
    sys.setrecursionlimit(sys.getrecursionlimit() + 100)
    global PIPE_FD
    PIPE_FD = conn.fileno()
    for folder in reversed(path or []):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    tasks, errors = registry.load(allow)
    payload.shm.sweep_orphans()  # segments of dead workers and clients nobody read
    if accept_pickle:  # a private Pool's worker only (tasks.accept_pickle)
        from workers import pickle_lane

        tasks.update(pickle_lane.tasks())
    note = None
    if ledger is not None:
        from supervisor.daemon.journal_handoff import worker_note

        note = worker_note(*ledger)
        if note is None:
            print(f"phalanx worker {slot}: cannot map {ledger[0]}; the daemon records this "
                  "worker's hand-offs before it gets them", file=sys.stderr)
    hello = Hello(os.getpid(), sorted(tasks), registry.describe_errors(errors),
                  ledger is None or note is not None)
    conn.send_bytes(encoder.encode(hello))
    try:
        serve(conn, tasks, max_result_bytes, running, started, errors, note)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
