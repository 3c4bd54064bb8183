"""Configuration changes at run time: SIGHUP, phalanxctl reread/update.

A new config is diffed against the running one (reconfig.py); what can
change live is applied (pool size, prefetch, limits, allowlist, output),
what needs a restart is logged. No accepted task is dropped: the Pool
resizes and recycles slots only once they hold nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from supervisor import config as config_mod
from supervisor.config import Config
from supervisor.daemon import logs, reconfig
from supervisor.errors import ConfigError

if TYPE_CHECKING:
    from supervisor.daemon.daemon import Daemon

log = structlog.get_logger("phalanxd")


def on_sighup(d: Daemon) -> None:
    """SIGHUP: re-read the config file and apply it (as phalanxctl update)."""
    if d.draining:
        # READY=1 after STOPPING=1 would tell systemd we are up again,
        # and a grown pool would start workers the drain never stops.
        log.warning("reload_ignored_while_stopping")
        return
    # Before the first READY=1 systemd still waits for start-up: a reload's
    # READY=1 would report us up while workers are starting. all_running()
    # sends it once every slot (added ones too) is RUNNING.
    announce = d.ready_sent
    if announce:
        d.notifier.reloading()
    d.publisher.event("supervisor.reloading")
    try:
        changes = update_from_file(d)
    except ConfigError as exc:
        log.error("reload_failed", error=str(exc))
        d.publisher.event("supervisor.reload_failed", error=str(exc))
    else:
        log.info("reload_done", changes=[c.key for c in changes])
    if announce:
        d.notifier.ready(d.status_line())


def reread(d: Daemon) -> tuple[Config, list[reconfig.Change]]:
    source = d.cfg.source
    if not source or source.startswith("<"):
        raise ConfigError("the daemon was started without --config; nothing to re-read")
    new = config_mod.load(source)
    return new, reconfig.diff(d.cfg, new)


def update_from_file(d: Daemon) -> list[reconfig.Change]:
    new, _ = reread(d)
    return apply_config(d, new)


def apply_config(d: Daemon, new: Config) -> list[reconfig.Change]:
    """Apply a new configuration without dropping an accepted task."""
    if d.draining:  # new workers now would outlive the drain
        raise ConfigError("the daemon is stopping; configuration not applied")
    old = d.cfg
    changes = reconfig.diff(old, new)
    d.cfg = cfg = reconfig.effective(old, new)
    for change in changes:
        if change.how == "daemon":
            log.warning("config_change_needs_restart", key=change.key, new=change.new)
    if (old.daemon.log_level, old.daemon.log_format) != (
        cfg.daemon.log_level, cfg.daemon.log_format
    ):
        logs.configure(cfg.daemon.log_level, cfg.daemon.log_format)
    out = cfg.output
    d.outputs.configure(out.ring_bytes, Path(out.dir) if out.dir else None,
                        out.max_bytes, out.backups)
    d.spawner.cfg = cfg
    d.pool.configure(cfg)
    if changes:
        d.publisher.event("supervisor.updated", changes=[c.as_dict() for c in changes])
    return changes
