"""The core decides; it never touches the OS or the network.

supervisor/core/ may import the standard library's pure parts, msgspec and
the shared config/protocol/errors modules, but never zmq, os, signal,
subprocess, socket, multiprocessing or the daemon: that is what lets the
recovery rules be unit-tested in microseconds. And no import cycle among
core modules, not even a type-only one.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "supervisor" / "core"
FORBIDDEN = {"zmq", "os", "signal", "subprocess", "socket", "multiprocessing", "psutil",
             "supervisor.daemon", "supervisor.client", "supervisor.ctl"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_core_imports_nothing_that_touches_the_os_or_the_network() -> None:
    offenders = {
        path.name: sorted(m for m in imports(path)
                          if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
        for path in CORE.glob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_core_modules_import_each_other_without_a_cycle() -> None:
    graph = {
        path.stem: {m.rsplit(".", 1)[-1] for m in imports(path)
                    if m.startswith("supervisor.core.")} - {path.stem}
        for path in CORE.glob("*.py")
    }
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        assert node not in visiting, f"import cycle: {' -> '.join([*trail, node])}"
        if node in done or node not in graph:
            return
        visiting.add(node)
        for nxt in graph[node]:
            visit(nxt, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for module in graph:
        visit(module, [])
    assert {"tasks", "slots", "policy"} <= set(graph)
