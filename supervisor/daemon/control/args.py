"""Arguments of control commands (slot lists, numbers) and the errors they raise."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisor.errors import BadRequest, RequestError

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon
    from supervisor.daemon.pool.state import WorkerSlot as Slot

Handler = Callable[["Daemon", dict[str, Any]], Any]


class UnknownSlot(RequestError):
    type = "UnknownSlot"


class ConfigInvalid(RequestError):
    type = "ConfigError"


def pick_slots(d: Daemon, args: dict[str, Any], default_all: bool) -> list[Slot]:
    wanted = args.get("slots")
    if wanted is None or wanted == "all" or wanted == []:
        if wanted is None and not default_all:
            raise BadRequest("name the slots (a list of numbers) or 'all'")
        return list(d.pool.slots)
    if not isinstance(wanted, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in wanted
    ):
        raise BadRequest("slots must be a list of slot numbers or 'all'")
    by_index = {s.index: s for s in d.pool.slots}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise UnknownSlot(f"no such slot: {', '.join(map(str, missing))}")
    return [by_index[i] for i in wanted]


def one_slot(d: Daemon, args: dict[str, Any]) -> Slot:
    index = args.get("slot")
    if not isinstance(index, int) or isinstance(index, bool):
        raise BadRequest("slot must be a slot number")
    return pick_slots(d, {"slots": [index]}, default_all=False)[0]


def int_arg(args: dict[str, Any], key: str, default: int | None) -> int | None:
    value = args.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise BadRequest(f"{key} must be an integer")
    return value
