"""Which callables a worker may run (workers/registry.py).

Modules are written to ``tmp_path`` under names unique to each test, imported
for real, and removed from ``sys.modules`` afterwards.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workers import registry

_counter = itertools.count()

Writer = Callable[[str], str]


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Writer]:
    """Write a module with the given source; return its (unique) name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"phalanx_regtest_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def short(tasks: dict[str, registry.TaskFn]) -> set[str]:
    return {name.partition(":")[2] for name in tasks}


def test_public_functions_defined_in_the_module_are_tasks(make_module: Writer) -> None:
    mod = make_module("""
        def add(a, b):
            return a + b

        def mul(a, b):
            return a * b
    """)
    tasks = registry.module_tasks(mod)
    assert set(tasks) == {f"{mod}:add", f"{mod}:mul"}
    assert tasks[f"{mod}:add"](2, 3) == 5


def test_imported_functions_are_not_tasks(make_module: Writer) -> None:
    mod = make_module("""
        from os.path import join
        from os import getcwd as cwd
        import shutil

        def mine():
            pass
    """)
    assert short(registry.module_tasks(mod)) == {"mine"}


def test_functions_imported_from_another_allowed_module_belong_only_to_it(
    make_module: Writer,
) -> None:
    lib = make_module("""
        def helper():
            return 1
    """)
    user = make_module(f"""
        from {lib} import helper

        def run():
            return helper()
    """)
    assert short(registry.module_tasks(user)) == {"run"}
    assert short(registry.module_tasks(lib)) == {"helper"}


def test_private_names_classes_and_other_objects_are_not_tasks(make_module: Writer) -> None:
    mod = make_module("""
        import functools

        def _private():
            pass

        def __dunder__():
            pass

        class Thing:
            def method(self):
                pass

        CONSTANT = 3
        lam = lambda: 1
        part = functools.partial(print, 1)
        builtin = len

        def public():
            pass
    """)
    # A lambda bound to a public name is a function defined here: a task.
    assert short(registry.module_tasks(mod)) == {"public", "lam"}


def test_all_limits_tasks_to_the_names_it_lists(make_module: Writer) -> None:
    mod = make_module("""
        __all__ = ["listed", "_hidden", "Klass", "missing"]

        def listed():
            pass

        def unlisted():
            pass

        def _hidden():
            pass

        class Klass:
            pass
    """)
    assert short(registry.module_tasks(mod)) == {"listed"}


def test_all_naming_an_imported_function_does_not_make_it_a_task(make_module: Writer) -> None:
    mod = make_module("""
        from os.path import join
        __all__ = ["join", "own"]

        def own():
            pass
    """)
    assert short(registry.module_tasks(mod)) == {"own"}


def test_empty_all_exports_no_tasks(make_module: Writer) -> None:
    mod = make_module("""
        __all__ = []

        def not_exported():
            pass
    """)
    assert registry.module_tasks(mod) == {}


def test_builtin_module_holds_only_the_tasks_safe_for_users() -> None:
    """The default allowlist must not let a local user crash, sabotage or
    outlive workers: those tasks live in workers.testing."""
    tasks = registry.module_tasks("workers.builtin")
    assert set(tasks) == {f"workers.builtin:{n}" for n in ("echo", "noop", "sleep", "burn", "fail")}
    hostile = registry.module_tasks("workers.testing")
    assert {f"workers.testing:{n}" for n in (
        "crash", "alloc", "sabotage", "spawn_child", "stubborn", "say", "pid")} <= set(hostile)


def test_import_error_in_one_module_is_reported_and_others_still_load(
    make_module: Writer,
) -> None:
    good = make_module("""
        def ok():
            return "ok"
    """)
    broken = make_module("""
        raise RuntimeError("boom at import")
    """)
    syntax = make_module("""
        def (:
    """)
    good2 = make_module("""
        def fine():
            pass
    """)
    tasks, by_module = registry.load([good, broken, "phalanx_no_such_module_x", syntax, good2])
    errors = registry.describe_errors(by_module)
    assert set(tasks) == {f"{good}:ok", f"{good2}:fine"}
    assert len(errors) == 3
    assert errors[0] == f"{broken}: RuntimeError: boom at import"
    assert errors[1].startswith("phalanx_no_such_module_x: ModuleNotFoundError")
    assert errors[2].startswith(f"{syntax}: SyntaxError")
    assert all("\n" not in e for e in errors)


def test_load_of_nothing_is_empty() -> None:
    assert registry.load([]) == ({}, {})


def test_module_of_gives_the_module_part_of_a_task_name() -> None:
    assert registry.module_of("pkg.mod:func") == "pkg.mod"
    assert registry.module_of("nocolon") == "nocolon"
