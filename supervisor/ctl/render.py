"""How phalanxctl shows results to a person: pure functions, data in, text out.

Nothing here talks to a socket or reads the clock (callers pass ``now``),
so every format is unit-tested in microseconds. ``--json`` output never
comes through here: it is ``json.dumps`` of the daemon's result as is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

# The fields every event carries; the event line shows the rest.
_ENVELOPE = ("seq", "gseq", "boot", "kind", "time")


# ------------------------------------------------------------------ units
def duration(seconds: float | None) -> str:
    """Uptime the way supervisorctl shows it: ``0:01:02``, ``2 days, 3:04:05``."""
    if seconds is None:
        return "-"
    return str(timedelta(seconds=int(max(seconds, 0))))


def short_seconds(seconds: float | None) -> str:
    """A latency or run time: ``85µs``, ``12.3ms``, ``1.2s``, ``2:03:04``."""
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return duration(seconds)


def size(nbytes: float | None) -> str:
    """``12.3M``; ``-`` when unknown."""
    if nbytes is None:
        return "-"
    value = float(nbytes)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def scalar(value: Any) -> str:
    """A value inside a line: strings bare, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


# ----------------------------------------------------------------- tables
def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    all_rows = [list(header)] if header else []
    all_rows += [list(r) for r in rows]
    if not all_rows:
        return ""
    width = max(len(r) for r in all_rows)
    widths = [max((len(r[i]) for r in all_rows if i < len(r)), default=0) for i in range(width)]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------- status
def current_task(slot: dict[str, Any]) -> str:
    cur = slot.get("current")
    if not cur:
        return "idle"
    text = f"{cur.get('task', '?')} ({short_seconds(cur.get('for'))})"
    held = slot.get("held") or 0
    if held > 1:
        text += f" +{held - 1} held"
    return text


def _describe(slot: dict[str, Any]) -> str:
    if slot.get("pid") and slot.get("state") in ("RUNNING", "STARTING", "STOPPING"):
        return f"pid {slot['pid']}, uptime {duration(slot.get('uptime'))}"
    return slot.get("last_exit") or "not started"


def status(slots: Iterable[dict[str, Any]]) -> str:
    """supervisorctl's status: one line per slot, columns aligned."""
    rows = [
        [
            str(s.get("slot")),
            str(s.get("state")),
            _describe(s),
            f"restarts {s.get('restarts', 0)}",
            f"done {s.get('done', 0)}",
            f"failed {s.get('failed', 0)}",
            f"rss {size(s.get('rss'))}",
            f"cpu {percent(s.get('cpu'))}",
            f"current {current_task(s)}" if s.get("state") == "RUNNING" else "",
        ]
        for s in slots
    ]
    return table(rows)


def status_columns(slots: Iterable[dict[str, Any]]) -> str:
    """The status as columns under a header (``top``)."""
    header = ["SLOT", "STATE", "PID", "UPTIME", "RESTARTS", "DONE", "FAILED", "RSS", "CPU",
              "CURRENT"]
    rows = []
    for s in slots:
        running = bool(s.get("pid")) and s.get("state") in ("RUNNING", "STARTING", "STOPPING")
        rows.append([
            str(s.get("slot")),
            str(s.get("state")),
            str(s.get("pid") or "-"),
            duration(s.get("uptime")) if running else "-",
            str(s.get("restarts", 0)),
            str(s.get("done", 0)),
            str(s.get("failed", 0)),
            size(s.get("rss")),
            percent(s.get("cpu")),
            current_task(s) if running else (s.get("last_exit") or ""),
        ])
    return table(rows, header)


# ------------------------------------------------------------------ stats
_STATS_ORDER = (
    "workers", "paused", "draining", "uptime", "accepted", "succeeded", "failed", "retried",
    "quarantined", "queued", "in_flight", "restarts", "rate", "latency",
    "published", "publish_dropped", "unroutable_replies",
)


def _stat_value(key: str, value: Any) -> str:
    if key == "workers" and isinstance(value, dict):
        return f"{value.get('running', '?')}/{value.get('total', '?')} running"
    if key in ("paused", "draining"):
        return "yes" if value else "no"
    if key == "uptime":
        return duration(value)
    if key == "rate" and isinstance(value, (int, float)):
        return f"{value:.1f} tasks/s"
    return scalar(value)


def stats(data: dict[str, Any]) -> str:
    """Aligned key/value pairs, then a per-task table."""
    pairs: list[list[str]] = []
    keys = [k for k in _STATS_ORDER if k in data]
    keys += sorted(k for k in data if k not in _STATS_ORDER and k != "per_task")
    for key in keys:
        value = data[key]
        if key == "latency" and isinstance(value, dict):
            for q in sorted(value):
                pairs.append([f"latency {q}", short_seconds(value[q])])
        else:
            pairs.append([key, _stat_value(key, value)])
    text = table(pairs)
    per_task = data.get("per_task")
    if per_task:
        rows = [[name, str(c.get("succeeded", 0)), str(c.get("failed", 0))]
                for name, c in sorted(per_task.items())]
        text += "\n\n" + table(rows, ["TASK", "SUCCEEDED", "FAILED"])
    return text


def top_frame(st: dict[str, Any], slots: list[dict[str, Any]], now: float) -> str:
    """One screen of ``phalanxctl top``."""
    workers = st.get("workers") or {}
    running = workers.get("running", sum(1 for s in slots if s.get("state") == "RUNNING"))
    total = workers.get("total", len(slots))
    latency = st.get("latency") or {}
    rate = st.get("rate")
    head = [
        f"phalanxd  {time.strftime('%H:%M:%S', time.localtime(now))}"
        f"  up {duration(st.get('uptime'))}  workers {running}/{total}"
        + ("  PAUSED" if st.get("paused") else ""),
        f"rate {'-' if rate is None else f'{rate:.1f}/s'}  queued {st.get('queued', 0)}"
        f"  in flight {st.get('in_flight', 0)}  succeeded {st.get('succeeded', 0)}"
        f"  failed {st.get('failed', 0)}  retried {st.get('retried', 0)}"
        f"  restarts {st.get('restarts', 0)}",
        f"latency p50 {short_seconds(latency.get('p50'))}"
        f"  p99 {short_seconds(latency.get('p99'))}",
    ]
    return "\n".join(head) + "\n\n" + status_columns(slots)


# ----------------------------------------------------------- worker lists
def slot_states(items: Iterable[dict[str, Any]]) -> str:
    """``0: stopped`` lines (start, stop, restart)."""
    lines = []
    for item in items:
        if item.get("error"):
            lines.append(f"{item.get('slot')}: ERROR ({scalar(item['error'])})")
        else:
            lines.append(f"{item.get('slot')}: {str(item.get('state', 'ok')).lower()}")
    return "\n".join(lines)


def changes(items: Sequence[dict[str, Any]], done: bool) -> str:
    """reread/update: ``tasks.timeout: 0.0 -> 5.0 (applies live)``."""
    if not items:
        return "No config updates"
    how_reread = {"live": "applies live", "workers": "applies by a rolling restart of workers",
                  "daemon": "applies at the next daemon start"}
    how_update = {"live": "applied live", "workers": "applying by a rolling restart of workers",
                  "daemon": "kept until the next daemon start"}
    how = how_update if done else how_reread
    return "\n".join(
        f"{c.get('key')}: {scalar(c.get('old'))} -> {scalar(c.get('new'))}"
        f" ({how.get(c.get('applies', ''), c.get('applies', '?'))})"
        for c in items
    )


# ----------------------------------------------------------------- config
def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value if isinstance(value, str) else scalar(value))


def config(data: dict[str, Any], prefix: str = "") -> str:
    """The effective config as TOML sections."""
    plain = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    nested = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    blocks = []
    if plain:
        lines = [f"[{prefix}]"] if prefix else []
        lines += [f"{k} = {_toml(v)}" if v is not None else f"# {k} is unset" for k, v in plain]
        blocks.append("\n".join(lines))
    for key, sub in nested:
        text = config(sub, f"{prefix}.{key}" if prefix else key)
        if text:
            blocks.append(text)
    return "\n\n".join(blocks)


# ----------------------------------------------------------------- events
def clock(when: float) -> str:
    """``HH:MM:SS.mmm`` in local time."""
    whole = time.strftime("%H:%M:%S", time.localtime(when))
    return f"{whole}.{int((when % 1) * 1000):03d}"


def event_lines(topic: str, body: dict[str, Any], now: float) -> list[str]:
    """``12:00:01.234 event.worker.exited slot=0 pid=123 exit=signal SIGKILL (9)``.

    A ``result.`` message carries a batch of results: one line each.
    """
    stamp = clock(body["time"] if isinstance(body.get("time"), (int, float)) else now)
    if topic.startswith("result.") and isinstance(body.get("results"), list):
        lines = []
        for res in body["results"]:
            fields = {"id": res.get("id"), "ok": res.get("ok"), "attempts": res.get("attempts")}
            if res.get("ok"):
                fields["value"] = res.get("value")
            else:
                err = res.get("error") or {}
                fields["error"] = f"{err.get('type')}: {err.get('message')}"
            lines.append(f"{stamp} {topic} " + _fields(fields))
        return lines
    rest = {k: v for k, v in body.items() if k not in _ENVELOPE}
    return [f"{stamp} {topic} {_fields(rest)}".rstrip()]


def _fields(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={scalar(v)}" for k, v in fields.items())
