"""``phalanxctl result ID`` and ``phalanxctl tasks``: the journal's view
of tasks (control commands ``result`` and ``tasks``, docs/CLI.md)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from supervisor.ctl import render
from supervisor.ctl.core import EXIT_FAILED, EXIT_OK, Ctl


def result_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="the task id")


def tasks_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--limit", type=int, default=20,
                   help="at most this many pending and this many recent tasks (default 20)")


def cmd_result(ctl: Ctl, ns: argparse.Namespace) -> int:
    """Exit 0 for a success, 1 for a failed task; pending tasks print their state."""
    result = ctl.call("result", {"id": ns.id})
    ctl.show(result, _result_text)
    return EXIT_FAILED if result.get("state") == "finished" and not result.get("ok") else EXIT_OK


def _result_text(r: dict[str, Any]) -> str:
    if r["state"] != "finished":
        return f"{r['id']}  {r['task']}  {r['state']} (attempts so far {r['attempts']})"
    if r["ok"]:
        return json.dumps(r.get("value"), default=repr)
    err = r.get("error") or {}
    text = f"{err.get('type', 'Error')}: {err.get('message', '')}"
    if err.get("traceback"):
        text += "\n" + str(err["traceback"]).rstrip()
    return text


def cmd_tasks(ctl: Ctl, ns: argparse.Namespace) -> int:
    ctl.show(ctl.call("tasks", {"limit": ns.limit}), _tasks_text)
    return EXIT_OK


def _tasks_text(data: dict[str, Any]) -> str:
    now = time.time()
    pending = [[t["id"], t["task"], t["state"], "" if t["slot"] is None else str(t["slot"]),
                str(t["attempts"])] for t in data["pending"]]
    recent = [[r["id"], r["task"], "ok" if r["ok"] else "failed", str(r["attempts"]),
               render.duration(now - r["accepted"]) + " ago"] for r in data["recent"]]
    journal = data.get("journal") or {}
    lines = [f"pending: {data['pending_count']}"]
    if pending:
        lines.append(render.table(pending, ["ID", "TASK", "STATE", "SLOT", "ATTEMPTS"]))
    if journal.get("path"):
        lines.append(f"\nrecent (journal {journal['path']}, {journal['retained']} results "
                     f"retained, {render.size(journal['file_bytes'])} on disk"
                     f"{', FULL: refusing new work' if journal.get('full') else ''}):")
        if recent:
            lines.append(render.table(recent, ["ID", "TASK", "RESULT", "ATTEMPTS", "ACCEPTED"]))
    else:
        lines.append("\njournal disabled: no results are kept by id")
    return "\n".join(lines)
