"""Commands on captured output: tail, maintail, clear."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.daemon.control.args import int_arg, one_slot, pick_slots
from supervisor.errors import BadRequest

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon


def _complete_utf8(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the lead byte of the last character
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else (
                4 if byte >> 3 == 0b11110 else 1)
            return len(data) - back if need > back else len(data)
    return len(data)


def _tail(ring: Any, args: dict[str, Any]) -> dict[str, Any]:
    offset = int_arg(args, "offset", None)
    nbytes = int_arg(args, "bytes", None)
    if nbytes is None:
        nbytes = 1600  # supervisorctl's default
    if nbytes < 0:
        raise BadRequest("bytes must be >= 0")
    data, end, overflow = ring.read(offset, nbytes if offset is None else 1 << 20)
    # A character split across two reads would decode as U+FFFD twice:
    # hand back only whole characters; the rest comes with the next read.
    keep = _complete_utf8(data)
    end -= len(data) - keep
    return {"data": data[:keep].decode("utf-8", "replace"), "offset": end, "overflow": overflow}


def cmd_tail(d: Daemon, args: dict[str, Any]) -> Any:
    slot = one_slot(d, args)
    stream = args.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise BadRequest("stream must be 'stdout' or 'stderr'")
    return _tail(d.outputs.of(slot.index)[stream], args)


def cmd_maintail(d: Daemon, args: dict[str, Any]) -> Any:
    from supervisor.daemon.logs import MAIN_LOG

    return _tail(MAIN_LOG, args)


def cmd_clear(d: Daemon, args: dict[str, Any]) -> Any:
    slots = pick_slots(d, args, default_all=False)
    for slot in slots:
        for ring in d.outputs.of(slot.index).values():
            ring.clear()
    return [{"slot": s.index, "cleared": True} for s in slots]
