"""One score beside published rows: this workflow's rows scored as the published suite scores.

A task's quality may be computed differently from the published suite's (math: our answer parser
accepts thousands separators, units and ``\\boxed{}`` that the published parser scores as wrong),
so our rows and published rows are comparable only under one rule. Such a task records a second
score, the summary column its spec's ``published.comparable_quality`` names (math:
``test_accuracy_published``, the published parser's rule), and per item in its item file (read by
the spec's ``published.comparable_item_score``). Wherever published rows are shown on
the same chart or table, this run's rows are scored with it; elsewhere our own score stays.

Per-item scores and a run's stored interval belong to the score they were computed from, so a
row scored as published keeps neither unless per-item scores of the published-compatible score
are given (:func:`items_for`; read by ``table_item_scores(..., comparable=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from peftbench.analysis.published import SOURCE_PUBLISHED
from peftbench.tasks.spec import TaskSpec

#: Column of the frontier tables saying which score the quality column holds.
SCORE_COLUMN = "score"
#: Its value for published rows: the published result's own score.
PUBLISHED_SCORE = "published result"


def comparable_column(spec: TaskSpec) -> str | None:
    """The summary column holding this workflow's quality scored by the published suite's rule
    (the spec's ``published.comparable_quality``), or None: the task has no published format,
    or its quality is the published one already."""
    return None if spec.published is None else spec.published.comparable_quality


def shows_published(summary: pd.DataFrame, task: str) -> bool:
    """Whether ``summary`` has published rows of ``task`` (so they are drawn beside ours)."""
    if summary.empty or "source" not in summary.columns:
        return False
    return bool(((summary["task"] == task) & (summary["source"] == SOURCE_PUBLISHED)).any())


def scored_column(spec: TaskSpec, as_published: bool) -> str:
    """The summary column this run's rows are scored by: the comparable one when
    ``as_published`` and the task has one, else the task's quality."""
    comparable = comparable_column(spec) if as_published else None
    return comparable or spec.quality.name


def with_score(rows: pd.DataFrame, spec: TaskSpec, as_published: bool) -> pd.DataFrame:
    """A copy of summary ``rows`` (one task) with the :data:`SCORE_COLUMN` column and, for this
    run's rows scored as published, the quality column holding that score.

    Published rows keep their quality (:data:`PUBLISHED_SCORE`) and never an interval. A row
    scored as published loses its stored interval (it is the interval of the other score); a
    row without the published-compatible score (a result older than the column) gets a
    missing quality rather than a mix of two scores.
    """
    quality = spec.quality.name
    data = rows.copy()
    published = (
        data["source"] == SOURCE_PUBLISHED
        if "source" in data.columns
        else pd.Series(False, index=data.index)
    )
    column = scored_column(spec, as_published)
    data[SCORE_COLUMN] = np.where(published, PUBLISHED_SCORE, column)
    # Intervals that do not belong to the score shown: a published result records none (one in
    # a summary written before this rule was derived from the test-set size alone), and ours
    # is of our own score when the row holds another.
    no_interval = published if column == quality else pd.Series(True, index=data.index)
    for interval in spec.ci_columns:
        if interval in data.columns and no_interval.any():
            data[interval] = data[interval].astype("float64")
            data.loc[no_interval, interval] = np.nan
    if column != quality:
        ours = ~published
        values = data[column] if column in data.columns else pd.Series(np.nan, index=data.index)
        data[quality] = data[quality].astype("float64")
        data.loc[ours, quality] = pd.to_numeric(values[ours], errors="coerce")
    return data


def items_for(
    rows: pd.DataFrame,
    spec: TaskSpec,
    items: Mapping[Any, Any] | None,
    comparable_items: Mapping[Any, Any] | None = None,
) -> dict[Any, Any]:
    """Per-item scores of ``rows`` (a :func:`with_score` table, keyed by row label) for the
    score each row holds: ``items`` (the quality's own) for rows scored by the quality,
    ``comparable_items`` for rows scored as published (none given: no per-item scores, so no
    item bootstrap), nothing for published rows."""
    sources = {spec.quality.name: items or {}}
    comparable = comparable_column(spec)
    if comparable is not None:
        sources[comparable] = comparable_items or {}
    chosen: dict[Any, Any] = {}
    for label, score in rows[SCORE_COLUMN].items():
        vector = sources.get(score, {}).get(label)
        if vector is not None:
            chosen[label] = vector
    return chosen
