"""What a changed config file means for a running daemon (pure).

``reread`` shows the difference; ``update`` (and SIGHUP) applies it. Each
key is applied in one of three ways:

    live      takes effect at once (limits, timeouts, restart policy,
              log level, the number of workers, the prefetch window)
    workers   needs fresh worker processes: applied by a rolling restart,
              one slot at a time, no task dropped (tasks.allow)
    daemon    cannot change under a running daemon (endpoints, runtime
              dir, start method, preload): reported, kept as it was, and
              applied at the next start
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from supervisor.config import Config

How = Literal["live", "workers", "daemon"]

_DAEMON_ONLY = {
    ("daemon", "runtime_dir"),
    ("endpoints", "intake"),
    ("endpoints", "publisher"),
    ("endpoints", "control"),
    ("endpoints", "local"),
    ("workers", "start_method"),
    ("workers", "preload"),
    # Baked into the sockets and the ZAP handler at start (daemon/zap.py).
    ("curve", "secret_key_file"),
    ("curve", "authorized_keys_dir"),
    # Baked into the intake socket's MAXMSGSIZE and each worker's limits.
    ("tasks", "max_message_bytes"),
}
_WORKERS = {("tasks", "allow")}
_DAEMON_SECTIONS = {"observe"}  # its listeners are bound once, at start


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    old: Any
    new: Any
    how: How

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "old": self.old, "new": self.new, "applies": self.how}


def diff(old: Config, new: Config) -> list[Change]:
    a = msgspec.to_builtins(old)
    b = msgspec.to_builtins(new)
    changes: list[Change] = []
    for section, values in b.items():
        if section == "source" or not isinstance(values, dict):
            continue
        for key, value in values.items():
            before = a[section][key]
            if before == value:
                continue
            pair = (section, key)
            how: How = "daemon" if pair in _DAEMON_ONLY or section in _DAEMON_SECTIONS else "workers" if pair in _WORKERS else "live"
            changes.append(Change(f"{section}.{key}", before, value, how))
    return changes


def effective(old: Config, new: Config) -> Config:
    """The config the daemon runs with after an update: ``new``, except the
    keys that only a restart of the daemon can change."""
    workers = msgspec.structs.replace(
        new.workers, start_method=old.workers.start_method, preload=old.workers.preload
    )
    daemon = msgspec.structs.replace(new.daemon, runtime_dir=old.daemon.runtime_dir)
    return msgspec.structs.replace(
        new, workers=workers, daemon=daemon, endpoints=old.endpoints, observe=old.observe, source=old.source
    )
