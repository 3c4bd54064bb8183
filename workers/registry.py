"""Which callables a worker may run.

A task is named ``module:function``. Only modules listed in the config's
``tasks.allow`` are ever imported, and of those only public functions that
the module itself defines (not names it imported) are tasks. No decorator
is needed: allowing a module is the whole opt-in.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

TaskFn = Callable[..., Any]


def module_tasks(module_name: str) -> dict[str, TaskFn]:
    module = importlib.import_module(module_name)
    found: dict[str, TaskFn] = {}
    # An empty __all__ exports nothing; only a missing one means "look at all".
    names = getattr(module, "__all__", None)
    if names is None:
        names = list(vars(module))
    for name in names:
        obj = getattr(module, name, None)
        if name.startswith("_") or not inspect.isfunction(obj):
            continue
        if obj.__module__ != module.__name__:
            continue
        found[f"{module_name}:{name}"] = obj
    return found


def load(allow: Iterable[str]) -> tuple[dict[str, TaskFn], dict[str, str]]:
    """Import every allowed module; return (tasks by name, import errors by
    module: "ExceptionType: message")."""
    tasks: dict[str, TaskFn] = {}
    errors: dict[str, str] = {}
    for module_name in allow:
        try:
            tasks.update(module_tasks(module_name))
        except Exception as exc:  # noqa: BLE001 - a broken user module must not kill the worker
            errors[module_name] = f"{type(exc).__name__}: {_one_line(exc)}"
    return tasks, errors


def _one_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a module's own exception type may be broken
        text = "<str() failed>"
    text = " ".join(text.split())
    return text if len(text) <= 2000 else text[:2000] + " [cut]"


def describe_errors(errors: dict[str, str]) -> list[str]:
    """One line per module that failed: "module: ExceptionType: message"."""
    return [f"{module}: {why}" for module, why in errors.items()]


def module_of(task_name: str) -> str:
    return task_name.partition(":")[0]
