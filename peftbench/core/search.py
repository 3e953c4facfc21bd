"""Hyperparameter search spaces: each point of a grid is a run of its own, chosen on validation.

An experiment's ``training_params.json`` (or a task's config section, for every experiment of
the task that declares none) may hold ``"search": {"optimizer_kwargs.lr": [3e-4, 1e-3]}``: dotted
training keys, each with the values to try. The grid is their Cartesian product, in the order
written. Every point is its own run folder and cached job, named ``<name>@<label>`` (e.g.
``rank8@lr=0.001``), so adding a value runs only the new point. Which point counts is decided
after the runs by :mod:`peftbench.analysis.search`, on validation quality only.

Torch-free: the DAG builds the grid while it plans.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

from peftbench.core.config import ConfigError, did_you_mean
from peftbench.tasks.spec import TrainingKey

#: Separates an experiment's folder name from its grid point in run names.
POINT_SEPARATOR = "@"
#: The key in training_params.json and in a task's config section.
SEARCH_KEY = "search"
#: A point label must be a plain folder name: no path separators, braces (wildcards) or spaces.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")

Space = list[tuple[str, list[Any]]]


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def parse_space(space: Any, source: str, table: Mapping[str, TrainingKey]) -> Space:
    """The ``(dotted key, values)`` pairs of a search space; ConfigError naming ``source`` and
    the key for anything that cannot be a grid (unknown key, empty or repeated values, a value
    that cannot name a folder)."""
    if not isinstance(space, Mapping):
        raise ConfigError(f"{source}: '{SEARCH_KEY}' must be an object of key -> list of values")
    problems = []
    parsed: Space = []
    for key, values in space.items():
        where = f"{source}: '{SEARCH_KEY}.{key}'"
        top = key.split(".")[0]
        if top not in table:
            problems.append(f"{where}: unknown training key '{top}'{did_you_mean(top, table)}")
            continue
        if "." in key and dict not in table[top].types:
            problems.append(f"{where}: '{top}' is not an object, so it has no '{key}'")
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"{where}: must be a non-empty list of values")
            continue
        bad = [
            v
            for v in values
            if isinstance(v, (dict, list))
            or v is None
            or (isinstance(v, float) and not math.isfinite(v))
            or not _LABEL_VALUE.match(_label_value(v))
        ]
        if bad:
            problems.append(
                f"{where}: value {bad[0]!r} cannot name a run folder (numbers, booleans and "
                "plain words only)"
            )
            continue
        labels = [_label_value(v) for v in values]
        if len(set(labels)) != len(labels):
            problems.append(f"{where}: repeated value in {values}")
            continue
        parsed.append((key, list(values)))
    if problems:
        raise ConfigError("\n".join(problems))
    return parsed


def _short_names(space: Space) -> dict[str, str]:
    """Label name of each key: its last component, or the whole dotted key where two keys
    share a last component (optimizer_kwargs.lr vs. a task's own lr)."""
    lasts = [key.split(".")[-1] for key, _ in space]
    return {
        key: last if lasts.count(last) == 1 else key
        for (key, _), last in zip(space, lasts, strict=True)
    }


def points(space: Space) -> list[tuple[str, dict[str, Any]]]:
    """``(label, {dotted key: value})`` of every grid point, in the order written."""
    if not space:
        return []
    names = _short_names(space)
    keys = [key for key, _ in space]
    grid = []
    for values in itertools.product(*(values for _, values in space)):
        label = ",".join(
            f"{names[key]}={_label_value(value)}" for key, value in zip(keys, values, strict=True)
        )
        grid.append((label, dict(zip(keys, values, strict=True))))
    return grid


#: Which grid points run (task config key ``search_points``): all of them, or only the middle
#: one of each grid, under the experiment's own name (quick runs and tests: one job per
#: experiment, nothing chosen).
POINT_MODES = ("all", "middle")


def run_names(name: str, space: Space, mode: str = "all") -> list[str]:
    """Run folder names of an experiment folder ``name``: one per grid point (``mode`` "all"),
    or just ``name`` (no grid, or ``mode`` "middle": see :func:`middle_point`)."""
    names = [f"{name}{POINT_SEPARATOR}{label}" for label, _ in points(space)]
    return names if names and mode == "all" else [name]


def middle_point(space: Space) -> dict[str, Any]:
    """The assignment of the middle point of ``space`` (the lower middle of an even grid), or
    none without a grid: what an experiment runs with under ``search_points: middle``."""
    grid = points(space)
    return grid[(len(grid) - 1) // 2][1] if grid else {}


def split_run_name(name: str) -> tuple[str, str | None]:
    """``(experiment folder name, point label or None)`` of a run folder name."""
    base, separator, label = name.partition(POINT_SEPARATOR)
    return base, (label if separator else None)


def base_experiment(experiment: str) -> str:
    """The experiment (``method/name``) a run id (``method/name@point``) belongs to."""
    method, _, name = experiment.partition("/")
    return f"{method}/{split_run_name(name)[0]}"


def sets(params: Mapping[str, Any], key: str) -> bool:
    """Whether ``params`` sets the dotted ``key``."""
    for part in key.split("."):
        if not isinstance(params, Mapping) or part not in params:
            return False
        params = params[part]
    return True


def apply_point(params: Mapping[str, Any], assignment: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each dotted key of ``assignment`` set (a copy)."""
    merged = copy.deepcopy(dict(params))
    for key, value in assignment.items():
        *parents, last = key.split(".")
        target = merged
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return merged


def point_assignment(space: Space, label: str, source: str) -> dict[str, Any]:
    """The key -> value assignment of the point ``label`` of ``space``."""
    for candidate, assignment in points(space):
        if candidate == label:
            return assignment
    known = [candidate for candidate, _ in points(space)]
    raise ConfigError(
        f"{source}: no grid point '{label}' in its search space{did_you_mean(label, known)}"
    )
