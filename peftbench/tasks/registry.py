"""The task registry: task name -> :class:`~peftbench.tasks.spec.TaskSpec`.

Built-in tasks are the packages below ``peftbench/tasks/`` that define ``SPEC``. A task that
lives elsewhere (a user's own, or the toy task of the tests) is named in the config:
``task_packages: {toy: tests/toy_task}``, a folder with an ``__init__.py`` that defines ``SPEC``,
relative to the workflow folder. Nothing generic needs editing to add a task.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path

from peftbench.tasks.spec import TaskSpec

BUILTIN = ("math", "image")
_LOADED: dict[str, TaskSpec] = {}


class UnknownTaskError(ValueError):
    """A task name that is neither built in nor configured in ``task_packages``."""


def _import_folder(name: str, folder: Path) -> object:
    """Import ``folder`` as the package ``peftbench_task_<name>`` (its submodules too)."""
    module_name = f"peftbench_task_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    init = folder / "__init__.py"
    if not init.is_file():
        raise UnknownTaskError(f"task_packages.{name}: {init} does not exist")
    spec = importlib.util.spec_from_file_location(
        module_name, init, submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def register_packages(packages: Mapping[str, str] | None, base: Path | str = ".") -> None:
    """Load the external task packages of a config (``task_packages``), relative to ``base``."""
    for name, folder in (packages or {}).items():
        if name in BUILTIN:
            raise UnknownTaskError(f"task_packages.{name}: '{name}' is a built-in task")
        path = Path(folder)
        module = _import_folder(name, path if path.is_absolute() else Path(base) / path)
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, TaskSpec) or spec.name != name:
            raise UnknownTaskError(
                f"task_packages.{name}: {folder}/__init__.py must define SPEC, a TaskSpec "
                f"named '{name}'"
            )
        _LOADED[name] = spec


def get(name: str) -> TaskSpec:
    """The spec of task ``name`` (built in, or registered with :func:`register_packages`)."""
    if name in _LOADED:
        return _LOADED[name]
    if name in BUILTIN:
        spec = importlib.import_module(f"peftbench.tasks.{name}").SPEC
        _LOADED[name] = spec
        return spec
    known = ", ".join([*BUILTIN, *(n for n in _LOADED if n not in BUILTIN)])
    raise UnknownTaskError(f"unknown task '{name}' (known: {known}; see task_packages)")


def known() -> list[TaskSpec]:
    """Every task known now: the built-in ones, then the registered ones."""
    return [get(name) for name in BUILTIN] + [s for n, s in _LOADED.items() if n not in BUILTIN]


def spec_of(task: str, default: TaskSpec | None = None) -> TaskSpec | None:
    """Like :func:`get`, but ``default`` for an unknown task (e.g. a stray published row)."""
    try:
        return get(task)
    except UnknownTaskError:
        return default


def import_module(dotted: str, task: str) -> object:
    """Import ``dotted`` (a spec's ``run_module`` / ``data_module``); relative names (".run")
    are resolved inside the task's own package."""
    if dotted.startswith("."):
        spec = get(task)
        package = f"peftbench.tasks.{task}" if task in BUILTIN else f"peftbench_task_{spec.name}"
        return importlib.import_module(dotted, package)
    return importlib.import_module(dotted)
