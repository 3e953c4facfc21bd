"""Pareto dominance and frontier computation.

Objectives are given as a mapping ``{column: "max" | "min"}``. Every function here is pure:
inputs are never modified, and the same input always gives the same output.

Rules shared by all functions:

* A row with a missing value (NaN / None / pd.NA) in any objective is never on the frontier
  and never dominates another row: an unmeasured run cannot be said to be better or worse.
* Rows with identical objective vectors do not dominate each other, so exact ties are all
  kept on the frontier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from peftbench.tasks.spec import Direction

# Direction is the spec's type, re-exported for the callers that compute frontiers.
__all__ = [
    "Direction",
    "check_objectives",
    "dominates",
    "frontier_line",
    "non_dominated",
    "objective_matrix",
    "pareto_mask",
    "pareto_rank",
    "stacked_front_mask",
]

_DIRECTIONS = ("max", "min")


def check_objectives(objectives: Mapping[str, str]) -> None:
    """Raise ValueError for an empty mapping or an unknown direction."""
    if not objectives:
        raise ValueError("objectives must name at least one column")
    for column, direction in objectives.items():
        if direction not in _DIRECTIONS:
            raise ValueError(
                f"objective {column!r}: direction must be 'max' or 'min', got {direction!r}"
            )


def _is_missing(value: Any) -> bool:
    """True for None, NaN and pd.NA (pd.isna alone would also accept arrays)."""
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(value)
    except TypeError:
        return False


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], objectives: Mapping[str, str]) -> bool:
    """Return True when ``a`` Pareto-dominates ``b``.

    ``a`` dominates ``b`` when it is at least as good on every objective and strictly better
    on at least one. ``a`` and ``b`` are mappings (dicts, pandas Series) holding every
    objective column. If either has a missing value in any objective, the two cannot be
    compared and the result is False.
    """
    check_objectives(objectives)
    strictly_better = False
    for column, direction in objectives.items():
        va, vb = a[column], b[column]
        if _is_missing(va) or _is_missing(vb):
            return False
        va, vb = float(va), float(vb)
        # Flip minimised objectives so that "larger is better" holds for every comparison.
        if direction == "min":
            va, vb = -va, -vb
        if va < vb:
            return False
        if va > vb:
            strictly_better = True
    return strictly_better


def objective_matrix(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """Return an (n_rows, n_objectives) float array, oriented so that larger is better."""
    missing = [column for column in objectives if column not in df.columns]
    if missing:
        raise KeyError(f"objective columns not in the table: {missing}")
    columns = []
    for column, direction in objectives.items():
        # to_numeric turns None/pd.NA into NaN but still rejects real text, so a wrongly
        # typed column fails loudly instead of silently dropping off the frontier.
        values = pd.to_numeric(df[column], errors="raise").to_numpy(dtype=float, na_value=np.nan)
        columns.append(-values if direction == "min" else values)
    return np.column_stack(columns) if columns else np.empty((len(df), 0))


def pareto_mask(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """Return a boolean Series (index of ``df``) that is True for non-dominated rows.

    Works for any number of objectives. Rows with a missing objective value are False and are
    ignored as potential dominators; rows with identical objective vectors are all kept.
    """
    check_objectives(objectives)
    values = objective_matrix(df, objectives)
    complete = ~np.isnan(values).any(axis=1)
    mask = np.zeros(len(df), dtype=bool)
    candidates = values[complete]
    candidate_rows = np.flatnonzero(complete)
    # O(n^2 * k) pairwise check, one row at a time so memory stays O(n * k); benchmark
    # tables have at most a few thousand rows, so no sorting-based algorithm is needed.
    for position, row in zip(candidate_rows, candidates, strict=True):
        at_least_as_good = (candidates >= row).all(axis=1)
        strictly_better = (candidates > row).any(axis=1)
        mask[position] = not (at_least_as_good & strictly_better).any()
    return pd.Series(mask, index=df.index, name="on_frontier", dtype=bool)


def frontier_line(
    df: pd.DataFrame, x: str, y: str, x_dir: Direction = "min", y_dir: Direction = "max"
) -> pd.DataFrame:
    """Return the 2-D Pareto frontier rows of ``df`` over ``x`` and ``y``, sorted by ``x``.

    The result keeps all columns of ``df`` (and its index), so it can be drawn directly as a
    line or step. Ties in ``x`` are ordered by ``y`` ascending so the drawing order is stable.
    """
    mask = pareto_mask(df, {x: x_dir, y: y_dir})
    # A stable sort keeps the original order of exact ties, making the output deterministic.
    return df.loc[mask.to_numpy()].sort_values([x, y], kind="stable")


# ---------------------------------------------------------------------------------------------
# Several objectives at once: non-dominated set and non-dominated sorting.
# ---------------------------------------------------------------------------------------------


def non_dominated(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """Rows of ``df`` not dominated on all ``objectives`` at once, in their original order.

    Same rules as :func:`pareto_mask` (any number of objectives; rows with a missing objective
    are left out; exact ties are all kept).
    """
    return df.loc[pareto_mask(df, objectives).to_numpy()]


def pareto_rank(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """Non-dominated sorting: 1 for the frontier, 2 for the frontier once rank 1 is removed, ...

    Returns a nullable Int64 Series on ``df``'s index; rows with a missing objective get <NA>
    (they cannot be ranked against the others). Exact ties share a rank.
    """
    check_objectives(objectives)
    values = objective_matrix(df, objectives)
    ranks = pd.Series(pd.NA, index=df.index, name="pareto_rank", dtype="Int64")
    remaining = np.flatnonzero(~np.isnan(values).any(axis=1))
    rank = 1
    while remaining.size:
        block = values[remaining]
        front = stacked_front_mask(block[None])[0]
        ranks.iloc[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    return ranks


def stacked_front_mask(values: np.ndarray) -> np.ndarray:
    """Non-dominated mask of a stack of point sets.

    ``values`` has shape (draws, points, objectives), oriented so that larger is better and
    without NaN; returns (draws, points) booleans. Broadcasts over all pairs of points, so it
    is meant for benchmark-sized sets (tens to a few hundred points).
    """
    # ge[d, i, j]: point j is at least as good as point i on every objective.
    ge = (values[:, None, :, :] >= values[:, :, None, :]).all(axis=-1)
    gt = (values[:, None, :, :] > values[:, :, None, :]).any(axis=-1)
    return ~(ge & gt).any(axis=2)
