"""Choosing each experiment's grid point on validation quality, never on test quality.

An experiment with a search grid (:mod:`peftbench.core.search`) has one run per point, named
``method/name@point``. The point that counts is the one with the best mean validation quality
(the task's last validation value, ``TaskSpec.valid_final``) over the seeds every point of the
grid ran (all seeds, or only the first with ``search_seeds: first``); ties go to the
cheaper point (lower headline memory), then to the smaller values (lr=0.0003 before lr=0.001:
an order read from the labels alone, so neither row order nor any score can sway it). A point
with a failed seed ranks below every point whose seeds all succeeded. Test columns are never
read here (tests/analysis/test_search.py proves that changing them cannot change the choice).

A chosen value that is the smallest or largest number its grid tried is flagged (``edge``
names those keys): the best value may lie beyond the grid, so the experiment may be better than
it looks, and the report says so instead of presenting the choice as settled.

The summary keeps only the chosen points, so frontiers, tables and ``advise`` see one row per
experiment and seed, labelled with the point (``search_point``) and the grid size
(``search_size``); :func:`grid_table` keeps every point for the report's sensitivity table
(rule aggregate writes it as ``results/<task>/search.csv``, :func:`read_grid` reads it back).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from peftbench.core.search import POINT_SEPARATOR, split_run_name
from peftbench.tasks import registry

#: Columns of :func:`grid_table`, besides the task's validation and quality columns.
GRID_COLUMNS = [
    "task",
    "experiment",
    "point",
    "run",
    "seeds",
    "failed",
    "valid",
    "quality",
    "memory_gb",
    "chosen",
    "edge",
]


def _split(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each row's experiment folder id and grid point label (None without a grid)."""
    parts = [split_run_name(str(name)) for name in table["name"]]
    base = [f"{method}/{b}" for method, (b, _) in zip(table["method"], parts, strict=True)]
    return (
        pd.Series(base, index=table.index, dtype=object),
        pd.Series([p for _, p in parts], index=table.index, dtype=object),
    )


def grid_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point of every searched experiment of the summary ``table`` (all
    points, one row per seed in the input): mean validation (``valid``) and headline memory
    over the seeds that every point of its grid ran (the seeds the choice compares on), mean
    test quality (``quality``) over all its successful seeds, how many seeds failed, whether it
    is the chosen point, and on the chosen point the keys at an end of the grid (``edge``).
    Empty when no experiment has a grid.

    Comparing on the shared seeds keeps the choice fair when only the chosen point runs the
    other seeds (task config ``search_seeds: first``): a point is never judged on seeds its
    rivals did not run, and the choice is the one made before those seeds existed."""
    if table.empty:
        return pd.DataFrame(columns=GRID_COLUMNS)
    base, point = _split(table)
    searched = point.notna()
    rows = []
    for (task, experiment), runs in table[searched].groupby(
        [table.loc[searched, "task"], base[searched]], sort=False
    ):
        spec = registry.get(task)
        shared = set.intersection(*(set(s["seed"]) for _, s in runs.groupby("name", sort=False)))
        for name, seeds in runs.groupby("name", sort=False):
            compared = seeds[seeds["seed"].isin(shared)]
            ok = compared[compared["status"] == "success"]
            rows.append(
                {
                    "task": task,
                    "experiment": experiment,
                    "point": split_run_name(str(name))[1],
                    "run": f"{seeds['method'].iloc[0]}/{name}",
                    "seeds": len(seeds),
                    "failed": int((compared["status"] != "success").sum()),
                    "valid": _mean(ok, spec.valid_final),
                    "quality": _mean(seeds[seeds["status"] == "success"], spec.quality.name),
                    "memory_gb": _mean(ok, "memory_gb"),
                    "_order": _label_order(split_run_name(str(name))[1]),
                }
            )
    if not rows:
        return pd.DataFrame(columns=GRID_COLUMNS)
    grid = pd.DataFrame.from_records(rows)
    grid = grid.sort_values(["task", "experiment", "_order"], kind="stable")
    grid["chosen"] = False
    grid["edge"] = ""
    for _, points in grid.groupby(["task", "experiment"], sort=False):
        best = _best(points)
        grid.loc[best, "chosen"] = True
        grid.loc[best, "edge"] = ",".join(_edge_keys(points, best))
    return grid.drop(columns="_order").reset_index(drop=True)[GRID_COLUMNS]


def _edge_keys(points: pd.DataFrame, chosen: object) -> list[str]:
    """The keys whose chosen value is the smallest or largest number the grid tried: the best
    value may lie beyond the grid, so the choice is flagged rather than trusted silently."""
    tried: dict[str, set[float]] = {}
    for label in points["point"]:
        for key, value in _numbers(str(label)):
            tried.setdefault(key, set()).add(value)
    return [
        key
        for key, value in _numbers(str(points.loc[chosen, "point"]))
        if len(tried[key]) > 1 and value in (min(tried[key]), max(tried[key]))
    ]


def _numbers(label: str) -> list[tuple[str, float]]:
    """(key, value) of the numeric values of a point label ("lr=0.001,r=8")."""
    pairs = []
    for part in label.split(","):
        key, _, value = part.partition("=")
        try:
            pairs.append((key, float(value)))
        except ValueError:
            pass  # not a number: no ends to be at
    return pairs


def unchosen_runs(grid: pd.DataFrame) -> set[tuple[str, str]]:
    """``(task, run id)`` of every grid point of ``grid`` (:func:`grid_table`) that was not
    chosen: keyed by task, since two tasks may share a run id (lora/r8@lr=0.01)."""
    if grid.empty:
        return set()
    rows = grid.loc[~grid["chosen"].astype(bool)]
    return set(zip(rows["task"].astype(str), rows["run"].astype(str), strict=True))


def read_grid(path: Path | str) -> pd.DataFrame:
    """A :func:`grid_table` written as CSV, with its column types: the labels as text (a label
    never reads as a number) and ``chosen`` as bools, also when the grid is empty."""
    labels = ["task", "experiment", "point", "run", "edge"]
    grid = pd.read_csv(path, dtype=dict.fromkeys(labels, str))
    grid["edge"] = grid["edge"].fillna("")  # written empty where the choice is inside the grid
    grid["chosen"] = grid["chosen"].astype(bool)
    return grid[GRID_COLUMNS]


def _label_order(label: str) -> tuple:
    """Sort key of a point label: its values in order, numbers by value."""
    key = []
    for part in label.split(","):
        value = part.partition("=")[2]
        try:
            key.append((0, float(value), ""))
        except ValueError:
            key.append((1, 0.0, value))
    return tuple(key)


def _mean(rows: pd.DataFrame, column: str) -> float:
    if column not in rows.columns or rows.empty:
        return float("nan")
    values = pd.to_numeric(rows[column], errors="coerce").dropna()
    return float(values.mean()) if len(values) else float("nan")


def _best(points: pd.DataFrame) -> object:
    """Label of the chosen point among one experiment's ``points`` (rows of the grid)."""
    key = pd.DataFrame(
        {
            # Points with a failed seed, or no validation value, come last.
            "incomplete": (points["failed"] > 0) | points["valid"].isna(),
            "valid": -points["valid"].fillna(-np.inf),
            "memory": points["memory_gb"].fillna(np.inf),
            "order": points["_order"],
        },
        index=points.index,
    )
    return key.sort_values(list(key.columns), kind="stable").index[0]


def choose(table: pd.DataFrame, grid: pd.DataFrame | None = None) -> pd.DataFrame:
    """The summary ``table`` with each searched experiment reduced to its chosen point's rows,
    ``search_point`` and ``search_size`` filled (empty for experiments without a grid).
    ``grid``: :func:`grid_table` of ``table``, when the caller has it already."""
    table = table.copy()
    table["search_point"] = None
    table["search_size"] = pd.array([pd.NA] * len(table), dtype="Int64")
    if table.empty or not table["name"].astype(str).str.contains(POINT_SEPARATOR).any():
        return table
    grid = grid_table(table) if grid is None else grid
    base, point = _split(table)
    # Keyed by task too: two tasks may have the same experiment and grid (lora/r8@lr=0.01),
    # and one task's choice must not keep the other's point.
    runs = (
        table["task"].astype(str)
        + ":"
        + table["method"].astype(str)
        + "/"
        + table["name"].astype(str)
    )
    chosen = grid.loc[grid["chosen"]]
    keep = point.isna() | runs.isin(
        set(chosen["task"].astype(str) + ":" + chosen["run"].astype(str))
    )
    sizes = grid.groupby(["task", "experiment"])["point"].count()
    table["search_point"] = point.where(point.notna(), None)
    table["search_size"] = pd.array(
        [
            sizes.get((task, b), pd.NA) if p is not None else pd.NA
            for task, b, p in zip(table["task"], base, point, strict=True)
        ],
        dtype="Int64",
    )
    return table[keep]
