"""Experiments are data: ``<root>/<method>/<name>/`` holding ``adapter_config.json`` (a PEFT config
as written by ``save_pretrained``) and/or ``training_params.json`` (overrides deep-merged over the
task's training defaults), and optionally a ``README.md``.

A folder is an experiment only through these files, and nothing else may be in it: a misspelled
``adapter-config.json`` or a dangling link must not quietly turn a PEFT experiment into full
fine-tuning under the PEFT method's label. Full fine-tuning (no adapter config) is therefore
explicit: the method folder ``full-finetuning`` (as in the published suite) or a
``FULL_FINETUNING`` marker file in the experiment folder.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftbench.core import preflight, search
from peftbench.core.config import (
    ConfigError,
    deep_merge,
    did_you_mean,
    read_json_object,
    training_table,
    validate_training_params,
)
from peftbench.core.layout import BASE_METHOD, BASE_NAME
from peftbench.tasks.spec import TrainingKey

ADAPTER_CONFIG = "adapter_config.json"
TRAINING_PARAMS = "training_params.json"
README = "README.md"
#: Method folder whose experiments fine-tune fully (no adapter config), as in the published suite.
FULL_FINETUNING_METHOD = "full-finetuning"
#: Marker file (its content is ignored) that makes any other experiment folder full fine-tuning.
FULL_FINETUNING_MARKER = "FULL_FINETUNING"
#: Files that define an experiment (workflow inputs: editing one reruns it) ...
DEFINING = (ADAPTER_CONFIG, TRAINING_PARAMS, FULL_FINETUNING_MARKER)
#: ... and every file an experiment folder may hold.
RECOGNISED = (*DEFINING, README)
#: The base-model reference run of every task: not a name an experiment may take.
BASE_EXPERIMENT = f"{BASE_METHOD}/{BASE_NAME}"

_HOLDS = f"an experiment folder holds only {', '.join(RECOGNISED)}"
#: What Snakemake (9) expands in a path besides {wildcards}: ``<name>`` is a path variable
#: (snakemake.pathvars.PATHVAR_REGEX); other angle brackets ("<B>", "a < b") are plain text.
_PATHVAR = re.compile(r"<[a-z][a-z0-9_]*>")


def _entries(folder: Path) -> list[Path]:
    """Entries of ``folder`` in name order; hidden ones (.git, .DS_Store) are not looked at."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _broken_link(path: Path) -> str | None:
    if path.is_symlink() and not path.exists():
        return f"{path}: broken symbolic link (to {os.readlink(path)})"
    return None


def _root(root: Path | str) -> Path:
    root = Path(root)
    if root.is_file():
        raise ConfigError(f"{root}: experiments_dir is a file, not a folder of experiments")
    if not root.is_dir():
        raise ConfigError(f"{root}: experiments directory does not exist")
    return root


def discover(root: Path | str) -> list[str]:
    """Sorted ``method/name`` ids of the non-empty folders two levels below ``root``: every one
    is an experiment, or an error of :func:`check_folder`."""
    root = _root(root)
    return sorted(
        f"{method.name}/{folder.name}"
        for method in _entries(root)
        if method.is_dir()
        for folder in _entries(method)
        if folder.is_dir() and _entries(folder)
    )


def check_root(root: Path | str) -> list[str]:
    """Entries above the experiment folders that are not part of any: stray files and broken
    links directly in ``root`` or in a method folder (a README.md is fine)."""
    problems = []
    root = _root(root)
    levels = [root, *(m for m in _entries(root) if m.is_dir())]
    for folder in levels:
        for entry in _entries(folder):
            if broken := _broken_link(entry):
                problems.append(broken)
            elif not entry.is_dir() and entry.name != README:
                problems.append(
                    f"{entry}: not part of an experiment (experiments are folders "
                    f"<method>/<name>/ below {root}; {_HOLDS})"
                )
    return problems


def check_folder(root: Path | str, experiment: str) -> list[str]:
    """Problems of an experiment folder's name and contents (not of the files' insides)."""
    folder = Path(root) / experiment
    problems = []
    if experiment == BASE_EXPERIMENT:
        problems.append(
            f"{folder}: '{BASE_EXPERIMENT}' is reserved for the base-model reference run "
            "(no fine-tuning) of every task; rename the folder"
        )
    for part in experiment.split("/"):
        if "{" in part or "}" in part:
            problems.append(
                f"{folder}: the folder name '{part}' contains a brace, which Snakemake reads as "
                "a wildcard; rename the folder"
            )
        if found := _PATHVAR.search(part):
            problems.append(
                f"{folder}: the folder name '{part}' contains {found.group()}, which Snakemake "
                "reads as a path variable; rename the folder"
            )
    files = set()
    for entry in _entries(folder):
        if broken := _broken_link(entry):
            problems.append(broken)
        elif entry.is_dir():
            problems.append(f"{entry}: unexpected folder in an experiment ({_HOLDS})")
        elif entry.name not in RECOGNISED:
            hint = did_you_mean(entry.name, RECOGNISED)
            problems.append(f"{entry}: unknown file{hint} ({_HOLDS})")
        else:
            files.add(entry.name)
    if problems:
        return problems  # what kind of run it is can only be told once every file is known
    full = experiment.split("/")[0] == FULL_FINETUNING_METHOD or FULL_FINETUNING_MARKER in files
    if not files & set(DEFINING):
        problems.append(f"{folder}: no {ADAPTER_CONFIG} or {TRAINING_PARAMS}: not an experiment")
    elif full and ADAPTER_CONFIG in files:
        problems.append(
            f"{folder / ADAPTER_CONFIG}: a full fine-tuning experiment (method folder "
            f"{FULL_FINETUNING_METHOD}/ or a {FULL_FINETUNING_MARKER} file) has no adapter config"
        )
    elif not full and ADAPTER_CONFIG not in files:
        problems.append(
            f"{folder}: no {ADAPTER_CONFIG}; only experiments under {FULL_FINETUNING_METHOD}/ or "
            f"with a {FULL_FINETUNING_MARKER} marker file run without an adapter"
        )
    return problems


def select(experiments: list[str], patterns: list[str] | None, where: str = "select") -> list[str]:
    """Experiments matching any glob pattern (all when ``patterns`` is empty). A pattern that
    matches nothing is an error naming ``where`` (the config key) and the closest names."""
    if not patterns:
        return experiments
    problems = []
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(e, pattern) for e in experiments):
            folded = [e for e in experiments if fnmatch.fnmatchcase(e.lower(), pattern.lower())]
            hint = (
                f" (it matches {', '.join(folded[:3])} in another case)"
                if folded
                else did_you_mean(pattern, experiments)
            )
            problems.append(f"{where}: pattern '{pattern}' matches no experiment{hint}")
    if problems:
        raise ConfigError("\n".join(problems))
    return [e for e in experiments if any(fnmatch.fnmatchcase(e, p) for p in patterns)]


def experiment_files(root: Path | str, experiment: str) -> list[str]:
    """The files that define ``experiment`` (workflow inputs: editing one reruns it)."""
    folder = Path(root) / experiment
    return [str(folder / f) for f in DEFINING if (folder / f).exists()]


def training_problems(
    params: Mapping[str, Any],
    source: str,
    table: Mapping[str, TrainingKey] | None = None,
    libraries: bool = True,
) -> list[str]:
    """Problems of a complete training config (task defaults, or merged with an experiment's
    overrides): every key against ``table``, ``optimizer_kwargs`` against the optimizer (that
    one imports torch and peft: ``libraries=False`` skips it, see :func:`file_problems`)."""
    problems = validate_training_params(params, source, table=table)
    return problems + (preflight.optimizer_problems(params, source) if libraries else [])


#: How an experiment's training_params.json combines with the task's defaults (task config key
#: ``training_merge``): "deep" merges nested objects key by key, so overriding
#: ``optimizer_kwargs.lr`` keeps the default weight decay; "shallow" replaces whole top-level
#: values, as the published suite does (its folders were tuned that way).
MERGE_MODES = ("deep", "shallow")


def merge_training(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any], merge: str = "deep"
) -> dict[str, Any]:
    """``defaults`` updated by ``overrides`` under ``merge`` (see :data:`MERGE_MODES`)."""
    if merge == "deep":
        return deep_merge(defaults, overrides)
    if merge == "shallow":
        return copy.deepcopy({**defaults, **overrides})
    raise ConfigError(f"training_merge: {merge!r} is not one of {', '.join(MERGE_MODES)}")


def _overrides(root: Path | str, experiment: str) -> tuple[Path, dict[str, Any]]:
    path = Path(root) / experiment / TRAINING_PARAMS
    return path, (read_json_object(path) if path.exists() else {})


def search_space(
    root: Path | str,
    experiment: str,
    task_search: Mapping[str, Any] | None,
    table: Mapping[str, TrainingKey],
) -> search.Space:
    """The grid of ``experiment`` (``method/name``): its training_params.json's ``search``
    (``{}`` opts out), else the task's (config ``<task>.search``) without the keys the file
    sets itself (an explicit value is never overridden by a default grid); none for the base
    run."""
    if experiment == BASE_EXPERIMENT:
        return []
    return _space(*_overrides(root, experiment), task_search, table)


def _space(
    path: Path,
    overrides: Mapping[str, Any],
    task_search: Mapping[str, Any] | None,
    table: Mapping[str, TrainingKey],
) -> search.Space:
    """:func:`search_space` of an experiment whose training_params.json (``path``) holds
    ``overrides`` (already read)."""
    if search.SEARCH_KEY in overrides:
        return search.parse_space(overrides[search.SEARCH_KEY], str(path), table)
    space = search.parse_space(task_search or {}, f"{search.SEARCH_KEY} (task config)", table)
    return [(key, values) for key, values in space if not search.sets(overrides, key)]


def run_ids(
    root: Path | str,
    experiment: str,
    task_search: Mapping[str, Any] | None,
    table: Mapping[str, TrainingKey],
    points: str = "all",
) -> list[str]:
    """The runs of ``experiment``: ``method/name@point`` per grid point (``points``: all, or
    the middle one, :data:`peftbench.core.search.POINT_MODES`), or ``method/name``."""
    method, _, name = experiment.partition("/")
    space = search_space(root, experiment, task_search, table)
    return [f"{method}/{run}" for run in search.run_names(name, space, points)]


def effective_params(
    defaults: Mapping[str, Any],
    root: Path | str,
    experiment: str,
    table: Mapping[str, TrainingKey] | None = None,
    merge: str = "deep",
    task_search: Mapping[str, Any] | None = None,
    points: str = "all",
    validate: bool = True,
    libraries: bool = True,
) -> dict[str, Any]:
    """Task defaults merged (``merge``, :data:`MERGE_MODES`) with the experiment's overrides,
    validated against ``table`` (the task's training keys,
    :func:`peftbench.core.config.training_table`). ``experiment`` may name a grid point
    (``method/name@point``, see :mod:`peftbench.core.search`): its values are set last; with
    ``points`` "middle", an experiment named without a point runs its grid's middle point.
    ``validate=False`` skips the checks of the merged params that need torch (the pre-flight
    check has run them on every run of the plan); ``libraries=False`` only those that import
    torch or peft (:func:`file_problems`).

    Raises ConfigError listing every problem, each naming the file and the key.
    """
    folder = search.base_experiment(experiment)
    label = search.split_run_name(experiment.partition("/")[2])[1]
    path, raw = _overrides(root, folder)
    # Where the grid comes from, for messages about one of its points.
    grid = "its search" if search.SEARCH_KEY in raw else "the task's search (config)"
    overrides = {k: v for k, v in raw.items() if k != search.SEARCH_KEY}
    # A task's defaults name the keys it uses: a math-only key in an image experiment is a typo.
    problems = validate_training_params(overrides, str(path), known=defaults.keys(), table=table)
    merged = merge_training(defaults, overrides, merge)
    if (label is not None or points == "middle") and not problems:
        space = _space(path, raw, task_search, table or training_table())
        if label is not None:
            merged = search.apply_point(merged, search.point_assignment(space, label, str(path)))
            path = f"{path} at point {label} of {grid}"
        elif space:
            merged = search.apply_point(merged, search.middle_point(space))
            path = f"{path} at the middle point of {grid}"
    if not problems and validate:
        # The defaults passed the same checks (rules/common.smk), so what fails now comes from
        # this file, alone or together with a default (lora-fa without its `r`). The checks of
        # the merged params import torch; ``validate=False`` skips them where they already ran
        # (rule params, after the DAG's pre-flight check), so a cached plan stays torch-free.
        source = f"{path} (merged with the task defaults)"
        problems = training_problems(merged, source, table, libraries)
    if problems:
        raise ConfigError("\n".join(problems))
    return merged


def file_problems(
    root: Path | str,
    experiment: str,
    defaults: Mapping[str, Any],
    table: Mapping[str, TrainingKey] | None = None,
    merge: str = "deep",
    task_search: Mapping[str, Any] | None = None,
    points: str = "all",
    libraries: bool = True,
) -> list[str]:
    """Every problem of one experiment that shows without a model: its folder, then (once the
    folder is sound) its adapter config and its training parameters merged over ``defaults``,
    at every point of its search grid that runs (``points``). ``libraries=False``: only the
    checks that import neither torch nor peft (a launcher without them; the task's preflight
    job runs all of them in the training environment, peftbench.core.task_checks)."""
    problems = check_folder(root, experiment)
    if problems:
        return problems
    problems = check_adapter_config(root, experiment, libraries)
    try:
        for run in run_ids(root, experiment, task_search, table or training_table(), points):
            effective_params(
                defaults, root, run, table, merge, task_search, points, libraries=libraries
            )
    except ConfigError as exc:
        problems += str(exc).splitlines()
    return problems


def _normalised(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def check_adapter_config(root: Path | str, experiment: str, libraries: bool = True) -> list[str]:
    """Problems with the experiment's adapter_config.json that show without loading a model
    (``libraries=False``: only those that show without peft, a readable JSON object naming a
    ``peft_type``)."""
    path = Path(root) / experiment / ADAPTER_CONFIG
    if not path.exists():
        return []
    try:
        data = read_json_object(path)
    except ConfigError as exc:
        return [str(exc)]
    peft_type = data.get("peft_type")
    if peft_type is None:
        return [
            f"{path}: missing 'peft_type' (a PEFT config as written by save_pretrained has one)"
        ]
    if not libraries:
        return []
    from peft.utils import PeftType, TaskType

    known = {t.value for t in PeftType}
    if peft_type not in known:
        hint = did_you_mean(str(peft_type), known)
        return [
            f"{path}: 'peft_type' {peft_type!r} is not a PEFT method known to this peft "
            f"version{hint}"
        ]
    problems = []
    method = experiment.split("/")[0]
    # A method folder named after another PEFT method would label every row wrongly; folders
    # named after no method ("dora": LoRA with use_dora) are free.
    if _normalised(method) in {_normalised(t) for t in known} - {_normalised(peft_type)}:
        problems.append(
            f"{path}: 'peft_type' {peft_type!r} does not match the method folder '{method}' "
            "its results would be labelled with"
        )
    task_type = data.get("task_type")
    if task_type is not None and task_type not in {t.value for t in TaskType}:
        hint = did_you_mean(str(task_type), [t.value for t in TaskType])
        problems.append(f"{path}: 'task_type' {task_type!r} is not a PEFT task type{hint}")
    return problems + preflight.peft_config_problems(data, str(path))
