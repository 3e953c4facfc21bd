"""The pre-flight checks of one task's experiments, where they run: while Snakemake builds the
DAG (rules/common.smk) and in the task's preflight job (rule preflight, scripts/preflight.py).

The file checks (peftbench.core.experiments) and the model-level check (peftbench.core.validate,
on a meta-device model) need torch, transformers and peft for part of their work. A launcher
that has them runs every check while the DAG is built, so a dry run rejects a bad experiment
before anything reaches a cluster queue. A launcher with only Snakemake and the light
dependencies (README, "A launcher without torch") runs the checks that import none of them
(schemas, files, search grids); the task's preflight job runs all of them in the training
environment, and every training job of the task waits for it. Both run :func:`check_task`, so
the messages are the same: each names the config file and key, or the experiment file and field.
Every verdict is kept (peftbench.core.preflight_cache) under the versions of the libraries of the
process that checked, so the job's verdicts are its own environment's.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peftbench.core import codehash, configfile, preflight_cache, search
from peftbench.core import experiments as exps
from peftbench.core.config import ConfigError, training_table
from peftbench.tasks import registry

#: What the checks import beyond the light dependencies.
CHECK_LIBRARIES = ("torch", "transformers", "peft")


def torch_importable() -> bool:
    """Whether this process could import :data:`CHECK_LIBRARIES` (found, not imported: the
    import itself takes seconds)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in CHECK_LIBRARIES)
    except (ImportError, ValueError):  # a finder that refuses them (a torch-free job)
        return False


def check_workers(cores: int | None) -> int:
    """Processes for the model-level check: ``cores``, the cores Snakemake was given (None: as
    many as usable), at most the CPUs this process may use."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or usable or 1, usable or 1))


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (back as it was after). Importing
    torch, transformers and peft allocates long-lived objects by the million, and the full
    collections that their growth triggers cost a fifth of the imports (about 1 s of 5)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze_heap() -> None:
    """Every object alive now out of the collector's passes (``gc.freeze``). For the end of the
    DAG-time checks: the libraries they imported (torch, transformers, peft: millions of objects
    that live as long as the process) are then never walked again by the full collections that
    Snakemake's DAG construction triggers (about 2 of the 6 s that a 500-experiment dry run
    spends after the checks). The young generations are collected first, so that the checks'
    last garbage is not kept; a full collection would walk those millions once more (0.4 s)."""
    gc.collect(1)
    gc.freeze()


def training_settings(task_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """How a task's experiments merge their overrides, and its default search grid."""
    return {
        "merge": task_cfg.get("training_merge", "deep"),
        "task_search": task_cfg.get("search"),
        "points": task_cfg.get("search_points", "all"),
    }


def _first_quoted(text: str) -> str:
    """The key a training-check message is about: the first quoted name in it."""
    found = re.search(r"'([^']+)'", text)
    return found.group(1) if found else ""


def task_folder(task: str) -> Path:
    """The folder of ``task``'s package."""
    return Path(registry.import_module(".", task).__file__).parent


def check_task(
    task: str,
    config: Mapping[str, Any],
    config_files: Mapping[str, Mapping[str, Any]],
    *,
    libraries: bool = True,
    model: bool = True,
    cache_folder: Path = preflight_cache.DEFAULT_FOLDER,
    workers: int = 1,
) -> list[str]:
    """The selected experiments of ``task`` (method/name); ConfigError listing every problem.

    ``config``: the merged config; ``config_files``: each config file's own content, in
    precedence order, to name the file that sets a bad value. ``libraries=False`` runs only the
    checks that import neither torch nor peft, ``model=False`` skips the model-level check.
    Every verdict is kept (peftbench.core.preflight_cache, keyed by all it reads): an unchanged
    experiment is not checked again, and when nothing needs checking neither torch nor peft nor
    the meta model is imported. ``workers``: processes for the model-level check
    (:func:`check_workers`).
    """

    def blamed(*path: Any) -> str:
        return ", ".join(configfile.sources_of(path, config_files))

    spec = registry.get(task)
    table = training_table(spec.training_keys)
    cfg = config[task]
    root = cfg["experiments_dir"]
    code = preflight_cache.code_digest([codehash.ROOT, task_folder(task)])
    cache = preflight_cache.PreflightCache(cache_folder, code)
    # The light checks' verdicts are not those of all of them: kept apart.
    light = "" if libraries else " (without torch)"
    try:
        found = exps.discover(root)
    except ConfigError as exc:
        raise ConfigError(
            f"{blamed(task, 'experiments_dir')}: {task}.experiments_dir: {exc}"
        ) from None
    # The first check that runs imports torch and peft: without the collector's passes over
    # their objects (gc_paused). The file checks leave little garbage; the model check, whose
    # wrapped models have cycles, runs with the collector on.
    with gc_paused():
        # A bad default would fail every experiment: blame the config file that sets it, once.
        defaults = cache.problems(
            "defaults" + light,
            {"training": cfg["training"], "task": task},
            lambda: exps.training_problems(cfg["training"], f"{task}.training", table, libraries),
        )
        problems = [
            f"{blamed(task, 'training', *_first_quoted(p).split('.'))}: {p}" for p in defaults
        ]
        if not problems:
            where = f"{blamed('select', task)}: select.{task}"
            found = exps.select(found, (config.get("select") or {}).get(task), where)
            problems = exps.check_root(root)
            try:
                search.parse_space(
                    cfg.get("search") or {}, f"{blamed(task, 'search')}: {task}.search", table
                )
            except ConfigError as exc:
                problems += str(exc).splitlines()
            settings = training_settings(cfg)
            for experiment in found:
                problems += cache.problems(
                    "files" + light,
                    {
                        **preflight_cache.experiment_inputs(root, experiment),
                        "training": cfg["training"],
                        **settings,
                    },
                    lambda experiment=experiment: exps.file_problems(
                        root, experiment, cfg["training"], table, **settings, libraries=libraries
                    ),
                )
    # The model-level check needs the files to be sound.
    if not problems and libraries and model and spec.meta_model:
        from peftbench.core.validate import validate_task

        def build(task_cfg: Mapping[str, Any]) -> Any:
            with gc_paused():  # imports the model's library (transformers, diffusers)
                return registry.import_module(spec.meta_model, task).build_meta_model(task_cfg)

        where = f"{blamed(task, 'base_model')}: {task}"
        problems = validate_task(
            cfg, found, build, table, where=where, cache=cache, workers=workers
        )
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) found before training:\n" + "\n".join(problems)
        )
    return found
