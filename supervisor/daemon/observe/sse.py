"""Server-sent events: the status page's live feed.

One ``history`` event when the stream opens (the plotted points of the
last minutes), then one ``snapshot`` event per new snapshot (about one a
second). A comment line every ``KEEPALIVE`` seconds when the daemon does
not answer, so a dead client is found by the failed write.
"""

from __future__ import annotations

from io import BufferedIOBase

import msgspec

from supervisor.daemon.observe.source import SnapshotSource

KEEPALIVE = 5.0
_json = msgspec.json.Encoder()


def frame(event: str, data: object) -> bytes:
    # msgspec's JSON never contains a raw newline, so one data: line is enough.
    return b"event: " + event.encode() + b"\ndata: " + _json.encode(data) + b"\n\n"


def stream(source: SnapshotSource, out: BufferedIOBase) -> None:
    """Write events to ``out`` until the source stops or a write fails
    (OSError, including the socket's write timeout)."""
    out.write(frame("history", list(source.history)))
    out.flush()
    seq = -1
    first = True  # the history already ends with the newest point
    while not source.stopped:
        new_seq, snap = source.wait_next(seq, KEEPALIVE)
        if source.stopped:
            return
        if new_seq == seq or snap is None:
            out.write(b": keepalive\n\n")
        else:
            seq = new_seq
            point = source.history[-1] if source.history and not first else None
            first = False
            out.write(frame("snapshot", {"snapshot": snap, "point": point}))
        out.flush()
