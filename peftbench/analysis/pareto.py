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
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

Direction = Literal["max", "min"]

#: Preferred direction of every metric column of the summary table (see
#: ``peftbench.analysis.aggregate.summarize``): math's accuracy and forgetting, the image task's
#: similarity and drift (change of behaviour away from the base model), costs.
METRIC_DIRECTIONS: dict[str, Direction] = {
    # Higher is better.
    "test_accuracy": "max",
    "valid_accuracy_final": "max",
    "train_tokens_per_s": "max",
    "similarity": "max",
    "valid_similarity_final": "max",
    # Lower is better.
    "train_memory_gb": "min",
    "train_memory_allocated_gb": "min",
    "eval_memory_gb": "min",
    "train_time_min": "min",
    "eval_time_min": "min",
    "generation_time_min": "min",
    "trainable_params": "min",
    "trainable_pct": "min",
    "file_size_mb": "min",
    "forgetting": "min",
    "train_loss_final": "min",
    "drift": "min",
}

#: Quality metrics that are a share of test items (so Binomial(n, p) / n models their noise).
PROPORTION_QUALITIES = frozenset({"test_accuracy"})

_DIRECTIONS = ("max", "min")


def _check_objectives(objectives: Mapping[str, str]) -> None:
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
    _check_objectives(objectives)
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


def _objective_matrix(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
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
    _check_objectives(objectives)
    values = _objective_matrix(df, objectives)
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
    _check_objectives(objectives)
    values = _objective_matrix(df, objectives)
    ranks = pd.Series(pd.NA, index=df.index, name="pareto_rank", dtype="Int64")
    remaining = np.flatnonzero(~np.isnan(values).any(axis=1))
    rank = 1
    while remaining.size:
        block = values[remaining]
        front = _front_mask(block[None])[0]
        ranks.iloc[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    return ranks


def _front_mask(values: np.ndarray) -> np.ndarray:
    """Non-dominated mask of a stack of point sets.

    ``values`` has shape (draws, points, objectives), oriented so that larger is better and
    without NaN; returns (draws, points) booleans. Broadcasts over all pairs of points, so it
    is meant for benchmark-sized sets (tens to a few hundred points).
    """
    # ge[d, i, j]: point j is at least as good as point i on every objective.
    ge = (values[:, None, :, :] >= values[:, :, None, :]).all(axis=-1)
    gt = (values[:, None, :, :] > values[:, :, None, :]).any(axis=-1)
    return ~(ge & gt).any(axis=2)


# ---------------------------------------------------------------------------------------------
# Noise-aware frontier: bootstrap over test items and seeds.
# ---------------------------------------------------------------------------------------------

#: Noise models of :func:`frontier_probability`, from the most to the least informed.
NOISE_MODELS = ("items", "binomial", "normal", "none")

_Z95 = 1.959963984540054


def _row_quality_draws(
    df: pd.DataFrame,
    quality: str,
    items: Mapping[Any, Any],
    n_col: str | None,
    ci_cols: tuple[str, str] | None,
    n_boot: int,
    rng: np.random.Generator,
    paired: bool,
) -> tuple[np.ndarray, list[str], list[int]]:
    """Bootstrap draws of ``quality`` for every row: (rows, n_boot), NaN where unmeasured.

    Also returns each row's noise model and item count (0 without per-item scores).
    """
    n_rows = len(df)
    point = pd.to_numeric(df[quality], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    draws = np.full((n_rows, n_boot), np.nan)
    models = ["none"] * n_rows
    counts = [0] * n_rows

    vectors: dict[int, np.ndarray] = {}
    for position, label in enumerate(df.index):
        vector = items.get(label)
        if vector is not None and len(vector) > 0:
            vectors[position] = np.asarray(vector, dtype=float)
    lengths = {len(v) for v in vectors.values()}
    # One shared resample of test items per draw (a paired bootstrap) when every vector is
    # over the same items: item difficulty is common to all methods, so pairing keeps the
    # comparison between two methods from counting that shared noise twice.
    if paired and len(lengths) == 1 and vectors:
        n_items = lengths.pop()
        stacked = np.stack([vectors[p] for p in sorted(vectors)])
        means = _resampled_means(stacked, n_items, n_boot, rng)
        for row, position in enumerate(sorted(vectors)):
            draws[position] = means[row]
    else:
        for position in sorted(vectors):
            vector = vectors[position]
            draws[position] = _resampled_means(vector[None], len(vector), n_boot, rng)[0]
    for position, vector in vectors.items():
        models[position], counts[position] = "items", len(vector)

    for position in range(n_rows):
        if position in vectors or np.isnan(point[position]):
            continue
        value = point[position]
        n = _cell(df, n_col, position)
        low, high = (
            (np.nan, np.nan)
            if ci_cols is None
            else (
                _cell(df, ci_cols[0], position),
                _cell(df, ci_cols[1], position),
            )
        )
        if n > 0 and 0.0 <= value <= 1.0:
            draws[position] = rng.binomial(int(n), value, size=n_boot) / int(n)
            models[position] = "binomial"
        elif not np.isnan(low) and not np.isnan(high) and high >= low:
            # A 95% interval read as +-1.96 standard deviations of a normal.
            draws[position] = value + rng.standard_normal(n_boot) * (high - low) / (2 * _Z95)
            models[position] = "normal"
        else:
            draws[position] = value
    return draws, models, counts


def _cell(df: pd.DataFrame, column: str | None, position: int) -> float:
    """Numeric cell of ``df`` as a float; NaN when the column is absent or the value missing."""
    if column is None or column not in df.columns:
        return np.nan
    try:
        return float(df[column].iloc[position])
    except (TypeError, ValueError):
        return np.nan


def _resampled_means(
    vectors: np.ndarray, n_items: int, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Mean of each row of ``vectors`` over ``n_boot`` resamples of its items (with replacement).

    Resampling n items with replacement is a multinomial count per item; the same counts are
    applied to every row, so rows are resampled in pairs. Draws are made in chunks to bound
    memory for large test sets.
    """
    out = np.empty((len(vectors), n_boot))
    chunk = max(1, 2_000_000 // max(n_items, 1))
    uniform = np.full(n_items, 1.0 / n_items)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        counts = rng.multinomial(n_items, uniform, size=stop - start)
        out[:, start:stop] = vectors @ counts.T / n_items
    return out


def _seed_draws(
    positions: Sequence[int],
    values: np.ndarray,
    draws: np.ndarray,
    quality_index: int,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-draw means of every objective over seeds resampled with replacement.

    ``positions`` are the experiment's rows; the quality column takes each chosen row's
    bootstrap draw, the other objectives its measured value. One seed means no resampling.
    Returns (n_boot, n_objectives).
    """
    k = len(positions)
    chosen = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), int)
    rows = np.asarray(positions)[chosen]  # (n_boot, k)
    with np.errstate(invalid="ignore"):
        objective_draws = values[rows].mean(axis=1)  # (n_boot, n_objectives)
    objective_draws[:, quality_index] = draws[rows, np.arange(n_boot)[:, None]].mean(axis=1)
    return objective_draws


def frontier_probability(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    *,
    quality: str | None = None,
    items: Mapping[Any, Any] | None = None,
    group: str | Sequence[str] = "experiment",
    n_col: str | None = "test_n",
    ci_cols: tuple[str, str] | None = ("test_accuracy_ci_low", "test_accuracy_ci_high"),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    threshold: float = 0.95,
    paired: bool = True,
) -> pd.DataFrame:
    """How often each experiment is on the Pareto frontier when measurement noise is resampled.

    ``df`` has one row per run (experiment x seed); rows sharing the ``group`` column(s) are one
    experiment. ``quality`` (default: the first "max" objective) is the noisy metric; every
    draw of the bootstrap

    1. resamples the test items: ``items[row_label]`` holds a row's per-item scores (e.g. 0/1
       correctness, in the same item order for every row, so the resample is paired). Rows
       without item scores fall back to ``Binomial(n, p) / n`` from ``n_col``, else to a normal
       read from the ``ci_cols`` interval, else to no noise (see the ``noise`` column);
    2. resamples the seeds of each experiment with replacement (when it has several) and
       averages every objective over the chosen seeds (costs such as time vary by seed too);
    3. computes the non-dominated set over all ``objectives`` at once.

    Returns one row per experiment with the group columns, ``n_seeds`` (runs with every
    objective measured), ``n_items``, ``noise``, the mean of every objective over its seeds,
    ``<quality>_low`` / ``<quality>_high`` (the ``level`` percentile interval of the draws),
    ``missing`` (objectives never measured together; such an experiment still shows what was
    measured but is never on the frontier and never dominates), ``on_frontier`` (point
    estimates), ``frontier_prob`` (share of draws on the frontier) and, for frontier
    experiments, the comparison with the next frontier experiment by quality (``next``):
    ``lead`` (quality difference), ``lead_low`` / ``lead_high``, ``lead_prob`` (share of
    draws where it is strictly better; exact ties count as not better), ``intervals_overlap``
    and ``within_noise`` (``lead_prob < threshold``), all <NA> where there is no next one.
    Rows: complete experiments by quality descending, then the partly measured ones.
    """
    _check_objectives(objectives)
    if quality is None:
        quality = next((c for c, d in objectives.items() if d == "max"), None)
        if quality is None:
            raise ValueError("no 'max' objective to use as quality; pass quality=")
    if quality not in objectives:
        raise ValueError(f"quality {quality!r} must be one of the objectives")
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    group_cols = [group] if isinstance(group, str) else list(group)
    _objective_matrix(df, objectives)  # column and type checks
    columns = list(objectives)
    rng = np.random.default_rng(seed)

    draws, models, counts = _row_quality_draws(
        df, quality, items or {}, n_col, ci_cols, n_boot, rng, paired
    )
    values = np.column_stack(
        [
            pd.to_numeric(df[c], errors="raise").to_numpy(dtype=float, na_value=np.nan)
            for c in columns
        ]
    )
    quality_index = columns.index(quality)
    sign = np.array([1.0 if objectives[c] == "max" else -1.0 for c in columns])

    records = []
    group_draws = []  # per experiment: (n_boot, n_objectives) draws, oriented larger-better
    partial_quality = []  # quality draws of experiments that miss another objective
    keys = df[group_cols].astype(object).where(df[group_cols].notna(), None)
    groups: dict[tuple, list[int]] = {}
    for position, key in enumerate(map(tuple, keys.to_numpy())):
        groups.setdefault(key, []).append(position)
    for key, positions in groups.items():
        complete = [p for p in positions if not np.isnan(values[p]).any()]
        record: dict[str, Any] = dict(zip(group_cols, key, strict=True))
        record["n_seeds"] = len(complete)
        if complete:
            record["n_items"] = counts[complete[0]]
            record["noise"] = min((models[p] for p in complete), key=NOISE_MODELS.index)
            record["missing"] = ""
            point = values[complete].mean(axis=0)
            objective_draws = _seed_draws(complete, values, draws, quality_index, n_boot, rng)
            group_draws.append(objective_draws * sign)
            partial_quality.append(None)
        else:
            record["n_items"] = 0
            record["noise"] = "none"
            absent = [c for i, c in enumerate(columns) if np.isnan(values[positions, i]).all()]
            # Every objective is measured by some seed, just never all by the same seed.
            record["missing"] = ",".join(absent) or ",".join(
                c for i, c in enumerate(columns) if np.isnan(values[positions, i]).any()
            )
            # Still report what was measured (e.g. the base model's accuracy, which has no
            # training memory), but such an experiment takes no part in the frontier.
            with np.errstate(invalid="ignore"):
                point = np.array(
                    [
                        np.nan if np.isnan(column).all() else np.nanmean(column)
                        for column in values[positions].T
                    ]
                )
            measured = [p for p in positions if not np.isnan(values[p, quality_index])]
            if measured:
                record["noise"] = min((models[p] for p in measured), key=NOISE_MODELS.index)
                record["n_items"] = counts[measured[0]]
                quality_only = _seed_draws(measured, values, draws, quality_index, n_boot, rng)
                partial_quality.append(quality_only[:, quality_index])
            else:
                partial_quality.append(None)
            group_draws.append(None)
        for i, column in enumerate(columns):
            record[column] = point[i]
        records.append(record)

    result = pd.DataFrame.from_records(records)
    base_columns = [*group_cols, "n_seeds", "n_items", "noise", *columns]
    low_col, high_col = f"{quality}_low", f"{quality}_high"
    extra = [
        low_col,
        high_col,
        "missing",
        "on_frontier",
        "frontier_prob",
        "next",
        "lead",
        "lead_low",
        "lead_high",
        "lead_prob",
        "intervals_overlap",
        "within_noise",
    ]
    if result.empty:
        return pd.DataFrame(columns=base_columns + extra)

    complete_groups = [i for i, d in enumerate(group_draws) if d is not None]
    probability = np.zeros(len(result))
    tail = (1.0 - level) / 2.0
    low = np.full(len(result), np.nan)
    high = np.full(len(result), np.nan)
    quality_draws: dict[int, np.ndarray] = {}
    if complete_groups:
        stack = np.stack([group_draws[i] for i in complete_groups], axis=1)  # (B, G, k)
        on_front = np.zeros((n_boot, len(complete_groups)), dtype=bool)
        chunk = max(1, 4_000_000 // max(len(complete_groups) ** 2 * len(columns), 1))
        for start in range(0, n_boot, chunk):
            on_front[start : start + chunk] = _front_mask(stack[start : start + chunk])
        probability[complete_groups] = on_front.mean(axis=0)
        for column_index, group_index in enumerate(complete_groups):
            q = stack[:, column_index, quality_index] * sign[quality_index]
            quality_draws[group_index] = q
            low[group_index], high[group_index] = np.quantile(q, [tail, 1.0 - tail])

    for group_index, q in enumerate(partial_quality):
        if q is not None:
            low[group_index], high[group_index] = np.quantile(q, [tail, 1.0 - tail])
    result[low_col], result[high_col] = low, high
    # Point frontier over the complete experiments only (a partly measured one may have a
    # value for every objective from different seeds, which is not one measurement).
    complete_mask = np.zeros(len(result), dtype=bool)
    complete_mask[complete_groups] = True
    on_frontier = np.zeros(len(result), dtype=bool)
    if complete_groups:
        on_frontier[complete_mask] = pareto_mask(result[complete_mask], objectives).to_numpy()
    result["on_frontier"] = on_frontier
    result["frontier_prob"] = probability

    result["next"] = pd.Series([None] * len(result), dtype=object)
    for column in ("lead", "lead_low", "lead_high", "lead_prob"):
        result[column] = np.nan
    result["intervals_overlap"] = pd.array([pd.NA] * len(result), dtype="boolean")
    result["within_noise"] = pd.array([pd.NA] * len(result), dtype="boolean")

    # Frontier experiments best first; among equal quality, the cheaper first (other
    # objectives in the order given), then by group key so the order is deterministic.
    frontier = result[result["on_frontier"]].copy()
    sort_cols = [quality, *[c for c in columns if c != quality], *group_cols]
    ascending = [False, *[objectives[c] == "min" for c in columns if c != quality]]
    ascending += [True] * len(group_cols)
    order = frontier.sort_values(sort_cols, ascending=ascending, kind="stable").index.tolist()
    for current, following in zip(order, order[1:], strict=False):
        difference = quality_draws[current] - quality_draws[following]
        result.at[current, "next"] = " / ".join(str(result.at[following, c]) for c in group_cols)
        result.at[current, "lead"] = result.at[current, quality] - result.at[following, quality]
        result.at[current, "lead_low"], result.at[current, "lead_high"] = np.quantile(
            difference, [tail, 1.0 - tail]
        )
        lead_prob = float((difference > 0).mean())
        result.at[current, "lead_prob"] = lead_prob
        result.at[current, "intervals_overlap"] = bool(
            result.at[current, low_col] <= result.at[following, high_col]
        )
        result.at[current, "within_noise"] = lead_prob < threshold

    # Complete experiments first (best quality first), then the partly measured ones.
    result["_incomplete"] = ~complete_mask
    result = result.sort_values(
        ["_incomplete", quality, *group_cols],
        ascending=[True, False] + [True] * len(group_cols),
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)
    return result[base_columns + extra]


def quality_frontier(
    data: pd.DataFrame,
    objectives: Mapping[str, str],
    quality: str,
    items: Mapping[Any, Any] | None,
    *,
    n_boot: int,
    seed: int,
    threshold: float,
) -> pd.DataFrame:
    """:func:`frontier_probability` over experiments (rows grouped by ``experiment``).

    Rows without per-item scores fall back to a binomial draw from ``test_n`` when the
    quality is a proportion (:data:`PROPORTION_QUALITIES`: an accuracy), else to the run's
    stored 95% interval ``<quality>_ci_low`` / ``<quality>_ci_high`` when there is one (a
    mean similarity is not a proportion, so its ``test_n`` says nothing about its noise).
    """
    proportion = quality in PROPORTION_QUALITIES
    return frontier_probability(
        data,
        objectives,
        quality=quality,
        items=items,
        group="experiment",
        n_col="test_n" if proportion else None,
        ci_cols=(f"{quality}_ci_low", f"{quality}_ci_high"),
        n_boot=n_boot,
        seed=seed,
        threshold=threshold,
    )
