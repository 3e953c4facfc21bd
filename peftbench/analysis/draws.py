"""Bootstrap draws of each run's quality: resampled test items, or the run's own stored interval
for a run without per-item scores, and the seeds of an experiment resampled on top.

Only measured noise gives an interval: a run's per-item scores, the 95% interval the run
recorded (computed from its own items), or several seeds of an experiment. A single run with
none of them (a published result: one seed, no per-item scores, no interval) is not resampled:
its draws are its point value, and :mod:`peftbench.analysis.noise` gives it no interval, no
P(frontier) and no verdict on leads (never "beyond noise"). An interval synthesised from the
quality alone (e.g. Binomial(n, p) from a test-set size) is deliberately not used: it would say
nothing about seed-to-seed variation and pretend a certainty the row does not carry.

The building blocks of :mod:`peftbench.analysis.noise`; :class:`Bootstrap` and
:class:`Fallback` are the options its callers pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from peftbench.core.stats import resampled_means
from peftbench.tasks.spec import TaskSpec

#: Noise models of an experiment, from the most to the least informed: per-item scores, the
#: runs' stored intervals, seeds alone, none (one run without either: no interval). A run has
#: one of the first two or "none"; "seeds" is an experiment's when it has several runs.
NOISE_MODELS = ("items", "normal", "seeds", "none")
#: The noise model of an experiment whose noise cannot be judged.
NO_NOISE = "none"

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Bootstrap:
    """How many draws, from which seed, and how the draws are read."""

    n_boot: int = 1000
    seed: int = 0
    #: Level of the percentile intervals.
    level: float = 0.95
    #: A lead is within noise when the leader is better in fewer than this share of draws.
    threshold: float = 0.95
    #: One shared resample of the test items per draw when every row is over the same items.
    paired: bool = True


@dataclass(frozen=True)
class Fallback:
    """Noise of a run without per-item scores: a normal read from the run's stored 95% interval
    ``ci_cols`` (None, or no stored interval: none)."""

    ci_cols: tuple[str, str] | None = None


#: The defaults, as shared values (a call in an argument default would run once anyway).
DEFAULT_BOOTSTRAP = Bootstrap()
NO_FALLBACK = Fallback()


def task_fallback(spec: TaskSpec) -> Fallback:
    """The fallback of a task's quality: the run's stored interval of it."""
    return Fallback(ci_cols=spec.ci_columns)


def _item_draws(
    vectors: Mapping[int, np.ndarray],
    draws: np.ndarray,
    options: Bootstrap,
    rng: np.random.Generator,
) -> None:
    """Fill ``draws`` of the rows (positions) that have per-item scores."""
    lengths = {len(v) for v in vectors.values()}
    # One shared resample of test items per draw (a paired bootstrap) when every vector is
    # over the same items: item difficulty is common to all methods, so pairing keeps the
    # comparison between two methods from counting that shared noise twice.
    if options.paired and len(lengths) == 1 and vectors:
        n_items = lengths.pop()
        stacked = np.stack([vectors[p] for p in sorted(vectors)])
        means = resampled_means(stacked, n_items, options.n_boot, rng)
        for row, position in enumerate(sorted(vectors)):
            draws[position] = means[row]
        return
    for position in sorted(vectors):
        vector = vectors[position]
        draws[position] = resampled_means(vector[None], len(vector), options.n_boot, rng)[0]


def _cell(df: pd.DataFrame, column: str | None, position: int) -> float:
    """Numeric cell of ``df`` as a float; NaN when the column is absent or the value missing."""
    if column is None or column not in df.columns:
        return np.nan
    try:
        return float(df[column].iloc[position])
    except (TypeError, ValueError):
        return np.nan


def _fallback_draw(
    df: pd.DataFrame, position: int, value: float, fallback: Fallback, n_boot: int, rng: Any
) -> tuple[np.ndarray | float, str]:
    """Draws of one row without per-item scores, and its noise model."""
    low, high = (np.nan, np.nan)
    if fallback.ci_cols is not None:
        low, high = (_cell(df, column, position) for column in fallback.ci_cols)
    if not np.isnan(low) and not np.isnan(high) and high >= low:
        # A 95% interval read as +-1.96 standard deviations of a normal.
        return value + rng.standard_normal(n_boot) * (high - low) / (2 * _Z95), "normal"
    return value, NO_NOISE


def row_quality_draws(
    df: pd.DataFrame,
    quality: str,
    items: Mapping[Any, Any],
    fallback: Fallback,
    options: Bootstrap,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[str], list[int]]:
    """Bootstrap draws of ``quality`` for every row: (rows, n_boot), NaN where unmeasured.

    Also returns each row's noise model and item count (0 without per-item scores).
    """
    point = pd.to_numeric(df[quality], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    draws = np.full((len(df), options.n_boot), np.nan)
    models = [NO_NOISE] * len(df)
    counts = [0] * len(df)
    vectors: dict[int, np.ndarray] = {}
    for position, label in enumerate(df.index):
        vector = items.get(label)
        if vector is not None and len(vector) > 0:
            vectors[position] = np.asarray(vector, dtype=float)
    _item_draws(vectors, draws, options, rng)
    for position, vector in vectors.items():
        models[position], counts[position] = "items", len(vector)
    for position in range(len(df)):
        if position in vectors or np.isnan(point[position]):
            continue
        draws[position], models[position] = _fallback_draw(
            df, position, point[position], fallback, options.n_boot, rng
        )
    return draws, models, counts


def seed_draws(
    positions: Sequence[int],
    values: np.ndarray,
    draws: np.ndarray,
    quality_index: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-draw means of every objective over seeds resampled with replacement.

    ``positions`` are the experiment's rows; the quality column takes each chosen row's
    bootstrap draw, the other objectives its measured value. One seed means no resampling.
    Returns (n_boot, n_objectives).
    """
    n_boot = draws.shape[1]
    k = len(positions)
    chosen = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), int)
    rows = np.asarray(positions)[chosen]  # (n_boot, k)
    with np.errstate(invalid="ignore"):
        objective_draws = values[rows].mean(axis=1)  # (n_boot, n_objectives)
    objective_draws[:, quality_index] = draws[rows, np.arange(n_boot)[:, None]].mean(axis=1)
    return objective_draws
