"""The report's analysis tables of one task: the noise-aware frontier per cost axis (one row
per experiment) and the Pareto rank over several objectives at once.

Tasks are read through their specs (quality, side effect, noise fallback); nothing here renders.
Where a task's published rows are in the table, this run's rows are scored the way the published
suite scores (:mod:`peftbench.analysis.comparable`), so one score is compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from peftbench.analysis.comparable import SCORE_COLUMN, items_for, shows_published, with_score
from peftbench.analysis.frontier import pareto_rank
from peftbench.analysis.glossary import direction
from peftbench.analysis.noise import DEFAULT_BOOTSTRAP, Bootstrap, task_frontier
from peftbench.analysis.predicted import PREDICTED_COLUMN
from peftbench.analysis.summary import SOURCES
from peftbench.tasks import registry
from peftbench.tasks.spec import TaskSpec

#: Cost axes of the report's trade-off charts: short name -> summary column.
AXES: dict[str, str] = {
    # The headline figure: allocator peak on CUDA, exact live tensors on a CPU (see glossary).
    "memory": "memory_gb",
    "time": "train_time_min",
    "params": "trainable_params",
    "file_size": "file_size_mb",
}

#: Costs every task shares, all lower-is-better: the objectives of the "several objectives at
#: once" table besides the task's quality and side effect, and the columns averaged over seeds
#: for tooltips and tables.
COST_COLUMNS: list[str] = list(AXES.values())

#: Memory figures set beside the memory axis in the frontier tables: the prediction made before
#: any run, then the measured device figure and the accounted live tensors (both means over the
#: successful seeds). Not objectives.
MEMORY_DETAIL_COLUMNS: list[str] = [PREDICTED_COLUMN, "train_memory_gb", "train_tensor_gb"]


def cost_objectives(spec: TaskSpec) -> dict[str, str]:
    """The shared costs and the task's side effect, each minimised."""
    return {column: "min" for column in [*COST_COLUMNS, spec.side_effect.name]}


def experiment_frontier(
    rows: pd.DataFrame,
    x: str,
    spec: TaskSpec,
    items: Mapping[Any, np.ndarray] | None = None,
    *,
    objectives: Mapping[str, str] | None = None,
    options: Bootstrap = DEFAULT_BOOTSTRAP,
) -> pd.DataFrame:
    """Noise-aware frontier of one task and source: one row per experiment.

    ``rows`` are summary rows (experiment x seed). Runs that did not succeed take part with
    every objective missing, so a failed experiment is listed (``missing`` says what) but
    never on the frontier. ``objectives`` defaults to the task's quality (max) and ``x`` in
    its own direction (min unless the glossary says otherwise). Adds the experiment's method,
    family, source, key settings, failed seeds, the mean of the cost columns and of the
    measured memory figures over its successful seeds, its predicted memory (a property of
    the experiment, so kept for a failed one too) and which score its quality is
    (:data:`~peftbench.analysis.comparable.SCORE_COLUMN`; rows without one hold their own).
    """
    quality = spec.quality.name
    objectives = dict(objectives or {quality: "max", x: direction(x) or "min"})
    data = rows.copy() if SCORE_COLUMN in rows.columns else with_score(rows, spec, False)
    failed = data["status"] != "success"
    for column in objectives:
        data[column] = pd.to_numeric(data[column], errors="coerce").astype("float64")
        data.loc[failed, column] = np.nan
    result = task_frontier(data, objectives, spec, items, options)
    ok = data[~failed]
    first = data.groupby("experiment", sort=False).first()
    measured = [c for c in MEMORY_DETAIL_COLUMNS if c != PREDICTED_COLUMN]
    costs = [
        c
        for c in dict.fromkeys([*cost_objectives(spec), *measured])
        if c in ok.columns and c not in objectives
    ]
    means = ok.groupby("experiment", sort=False)[costs].mean()
    labels = ["task", "source", "method", "family", "key_settings", SCORE_COLUMN]
    if PREDICTED_COLUMN in first.columns and PREDICTED_COLUMN not in objectives:
        labels.append(PREDICTED_COLUMN)
    result = result.join(first[labels], on="experiment")
    result = result.join(means, on="experiment")
    return result.join(
        data.assign(failed=failed).groupby("experiment")["failed"].sum().rename("failed_seeds"),
        on="experiment",
    )


def task_frontiers(
    summary: pd.DataFrame,
    task: str,
    items: Mapping[Any, np.ndarray] | None = None,
    *,
    comparable_items: Mapping[Any, np.ndarray] | None = None,
    options: Bootstrap = DEFAULT_BOOTSTRAP,
) -> dict[str, pd.DataFrame]:
    """Noise-aware frontier per cost axis (:data:`AXES`) of one task, both sources stacked.

    Each source is resampled on its own: published and this run's results come from
    different test sets and hardware, so one never dominates the other. When the task has
    published rows, this run's rows are scored as published (the ``score`` column says so)
    and resampled with ``comparable_items``, their per-item scores of that score (``items``
    are of our own score; without ``comparable_items`` such rows have no item bootstrap).
    """
    spec = registry.get(task)
    as_published = shows_published(summary, task)
    out = {}
    for axis, column in AXES.items():
        parts = []
        for source in SOURCES:
            rows = summary[(summary["task"] == task) & (summary["source"] == source)]
            if not rows.empty:
                rows = with_score(rows, spec, as_published)
                chosen = items_for(rows, spec, items, comparable_items)
                parts.append(experiment_frontier(rows, column, spec, chosen, options=options))
        out[axis] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out


def multi_objective_table(summary: pd.DataFrame, task: str) -> pd.DataFrame:
    """Experiments of one task with their Pareto rank over several objectives at once.

    Objectives: the task's quality (max) and every cost of :func:`cost_objectives` that has
    at least one value in the task (min); point estimates (mean over successful seeds).
    Ranked within each source; with published rows, this run's quality is scored as published.
    """
    spec = registry.get(task)
    quality = spec.quality.name
    rows = summary[(summary["task"] == task) & (summary["status"] == "success")]
    rows = with_score(rows, spec, shows_published(summary, task))
    objectives = {quality: "max"}
    objectives |= {c: d for c, d in cost_objectives(spec).items() if rows[c].notna().any()}
    parts = []
    for source in SOURCES:
        subset = rows[rows["source"] == source]
        if subset.empty:
            continue
        numeric = subset.groupby("experiment", sort=False)[list(objectives)].mean()
        labels = subset.groupby("experiment", sort=False)[["source", "family"]].first()
        table = labels.join(numeric).reset_index()
        table["pareto_rank"] = pareto_rank(table, objectives).to_numpy()
        parts.append(table.sort_values(["pareto_rank", quality], ascending=[True, False]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
