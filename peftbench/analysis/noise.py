"""Noise-aware frontier: how often each experiment is on the Pareto frontier when measurement
noise is resampled (a bootstrap over test items and seeds).

:func:`frontier_probability` is generic (any quality column, any objectives); how rows without
per-item scores are resampled is a :class:`~peftbench.analysis.draws.Fallback`, and
:func:`task_frontier` reads it from a task's spec (the run's stored interval of its quality).
An experiment without measured noise (one run, no per-item scores, no stored interval: a
published result) gets no interval, no P(frontier), and every lead that involves it is
"cannot be judged", never "beyond noise".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from peftbench.analysis.draws import (
    DEFAULT_BOOTSTRAP,
    NO_FALLBACK,
    NO_NOISE,
    NOISE_MODELS,
    Bootstrap,
    Fallback,
    row_quality_draws,
    seed_draws,
    task_fallback,
)
from peftbench.analysis.frontier import (
    check_objectives,
    objective_matrix,
    pareto_mask,
    stacked_front_mask,
)
from peftbench.tasks.spec import TaskSpec

# The options and noise models are part of this module's interface.
__all__ = [
    "NOISE_MODELS",
    "NO_INTERVAL",
    "NO_NOISE",
    "RESULT_COLUMNS",
    "VERDICTS",
    "DEFAULT_BOOTSTRAP",
    "NO_FALLBACK",
    "Bootstrap",
    "Fallback",
    "frontier_probability",
    "task_fallback",
    "task_frontier",
]

#: Columns of :func:`frontier_probability` after the objectives (``{q}``: the quality).
RESULT_COLUMNS = [
    "{q}_low",
    "{q}_high",
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
    "lead_verdict",
]

#: ``lead_verdict`` of a frontier experiment with a next one: its lead is within noise, beyond
#: noise, or cannot be judged (one of the two has no measured noise).
VERDICTS = ("within noise", "beyond noise", "cannot be judged")
#: What tables and charts show instead of the interval of an experiment without noise.
NO_INTERVAL = "no interval: 1 run, no per-item scores"


# ---------------------------------------------------------------------------------------------
# One record per experiment
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """What every row contributes: its objective values and quality draws."""

    values: np.ndarray  # (rows, objectives), raw units
    draws: np.ndarray  # (rows, n_boot), the quality
    models: list[str]
    counts: list[int]
    columns: list[str]
    quality_index: int
    sign: np.ndarray  # +1 for a maximised objective, -1 for a minimised one


@dataclass(frozen=True)
class _Group:
    """One experiment: its table record and its draws."""

    record: dict[str, Any]
    #: (n_boot, objectives) draws oriented larger-is-better; None unless one seed measured all.
    draws: np.ndarray | None
    #: Quality draws of an experiment that misses another objective (None: not measured).
    partial_quality: np.ndarray | None


def _group_positions(df: pd.DataFrame, group_cols: list[str]) -> dict[tuple, list[int]]:
    """Row positions of each experiment (missing keys read as None), in first-seen order."""
    keys = df[group_cols].astype(object).where(df[group_cols].notna(), None)
    groups: dict[tuple, list[int]] = {}
    for position, key in enumerate(map(tuple, keys.to_numpy())):
        groups.setdefault(key, []).append(position)
    return groups


def _best_noise(rows: _Rows, positions: Sequence[int]) -> str:
    """The experiment's noise model: its best run's, or "seeds" for several runs without one."""
    best = min((rows.models[p] for p in positions), key=NOISE_MODELS.index)
    return "seeds" if best == NO_NOISE and len(positions) > 1 else best


def _summarise_group(
    record: dict[str, Any], positions: list[int], rows: _Rows, rng: np.random.Generator
) -> _Group:
    """Point estimates and draws of one experiment (its rows at ``positions``)."""
    values, q = rows.values, rows.quality_index
    complete = [p for p in positions if not np.isnan(values[p]).any()]
    record["n_seeds"] = len(complete)
    if complete:
        record.update(n_items=rows.counts[complete[0]], noise=_best_noise(rows, complete))
        record["missing"] = ""
        record.update(zip(rows.columns, values[complete].mean(axis=0), strict=True))
        draws = seed_draws(complete, values, rows.draws, q, rng) * rows.sign
        return _Group(record, draws, None)
    record.update(n_items=0, noise=NO_NOISE)
    absent = [c for i, c in enumerate(rows.columns) if np.isnan(values[positions, i]).all()]
    # Every objective is measured by some seed, just never all by the same seed.
    record["missing"] = ",".join(absent) or ",".join(
        c for i, c in enumerate(rows.columns) if np.isnan(values[positions, i]).any()
    )
    # Still report what was measured (e.g. the base model's quality, which has no training
    # memory), but such an experiment takes no part in the frontier.
    with np.errstate(invalid="ignore"):
        point = [np.nan if np.isnan(c).all() else np.nanmean(c) for c in values[positions].T]
    record.update(zip(rows.columns, point, strict=True))
    measured = [p for p in positions if not np.isnan(values[p, q])]
    if not measured:
        return _Group(record, None, None)
    record.update(noise=_best_noise(rows, measured), n_items=rows.counts[measured[0]])
    return _Group(record, None, seed_draws(measured, values, rows.draws, q, rng)[:, q])


# ---------------------------------------------------------------------------------------------
# Frontier shares, intervals and leads
# ---------------------------------------------------------------------------------------------


def _add_frontier_shares(
    result: pd.DataFrame, groups: list[_Group], rows: _Rows, quality: str, options: Bootstrap
) -> dict[int, np.ndarray]:
    """``frontier_prob`` and the quality interval of every experiment; returns the quality
    draws of the complete ones (by position in ``result``)."""
    complete = [i for i, group in enumerate(groups) if group.draws is not None]
    tail = (1.0 - options.level) / 2.0
    probability = np.zeros(len(result))
    low, high = np.full(len(result), np.nan), np.full(len(result), np.nan)
    quality_draws: dict[int, np.ndarray] = {}
    if complete:
        stack = np.stack([groups[i].draws for i in complete], axis=1)  # (B, G, k)
        on_front = np.zeros((options.n_boot, len(complete)), dtype=bool)
        chunk = max(1, 4_000_000 // max(len(complete) ** 2 * len(rows.columns), 1))
        for start in range(0, options.n_boot, chunk):
            on_front[start : start + chunk] = stacked_front_mask(stack[start : start + chunk])
        probability[complete] = on_front.mean(axis=0)
        for column_index, group_index in enumerate(complete):
            draws = stack[:, column_index, rows.quality_index] * rows.sign[rows.quality_index]
            quality_draws[group_index] = draws
    for group_index, group in enumerate(groups):
        draws = quality_draws.get(group_index, group.partial_quality)
        if draws is None:
            continue
        if group.record["noise"] == NO_NOISE:
            # Its draws are its point value: a zero-width interval and a P(frontier) of 0 or 1
            # would claim a certainty one unrepeated run without item scores cannot give.
            if group.draws is not None:
                probability[group_index] = np.nan
            continue
        low[group_index], high[group_index] = np.quantile(draws, [tail, 1.0 - tail])
    result[f"{quality}_low"], result[f"{quality}_high"] = low, high
    result["frontier_prob"] = probability
    return quality_draws


def _add_point_frontier(
    result: pd.DataFrame, groups: list[_Group], objectives: Mapping[str, str]
) -> None:
    """``on_frontier`` of the point estimates, over the complete experiments only (a partly
    measured one may have a value for every objective from different seeds, which is not one
    measurement)."""
    complete = np.array([group.draws is not None for group in groups])
    on_frontier = np.zeros(len(result), dtype=bool)
    if complete.any():
        on_frontier[complete] = pareto_mask(result[complete], objectives).to_numpy()
    result["on_frontier"] = on_frontier
    result["_incomplete"] = ~complete


def _add_leads(
    result: pd.DataFrame,
    quality_draws: Mapping[int, np.ndarray],
    objectives: Mapping[str, str],
    quality: str,
    group_cols: list[str],
    options: Bootstrap,
) -> None:
    """Compare every frontier experiment with the next one by quality (``next``, ``lead``...)."""
    result["next"] = pd.Series([None] * len(result), dtype=object)
    for column in ("lead", "lead_low", "lead_high", "lead_prob"):
        result[column] = np.nan
    result["intervals_overlap"] = pd.array([pd.NA] * len(result), dtype="boolean")
    result["within_noise"] = pd.array([pd.NA] * len(result), dtype="boolean")
    result["lead_verdict"] = pd.Series([None] * len(result), dtype=object)
    tail = (1.0 - options.level) / 2.0
    # Frontier experiments best first; among equal quality, the cheaper first (other
    # objectives in the order given), then by group key so the order is deterministic.
    others = [c for c in objectives if c != quality]
    order = (
        result[result["on_frontier"]]
        .sort_values(
            [quality, *others, *group_cols],
            ascending=[False, *[objectives[c] == "min" for c in others], *[True] * len(group_cols)],
            kind="stable",
        )
        .index.tolist()
    )
    for current, following in zip(order, order[1:], strict=False):
        result.at[current, "next"] = " / ".join(str(result.at[following, c]) for c in group_cols)
        result.at[current, "lead"] = result.at[current, quality] - result.at[following, quality]
        if NO_NOISE in (result.at[current, "noise"], result.at[following, "noise"]):
            # The lead is a difference of point values; how much of it is noise is unknown.
            result.at[current, "lead_verdict"] = VERDICTS[2]
            continue
        difference = quality_draws[current] - quality_draws[following]
        lead_prob = float((difference > 0).mean())
        result.at[current, "lead_low"], result.at[current, "lead_high"] = np.quantile(
            difference, [tail, 1.0 - tail]
        )
        result.at[current, "lead_prob"] = lead_prob
        result.at[current, "intervals_overlap"] = bool(
            result.at[current, f"{quality}_low"] <= result.at[following, f"{quality}_high"]
        )
        result.at[current, "within_noise"] = lead_prob < options.threshold
        result.at[current, "lead_verdict"] = VERDICTS[0 if lead_prob < options.threshold else 1]


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _quality_of(objectives: Mapping[str, str], quality: str | None) -> str:
    """``quality``, by default the first "max" objective; ValueError when it is not one."""
    if quality is None:
        quality = next((c for c, d in objectives.items() if d == "max"), None)
        if quality is None:
            raise ValueError("no 'max' objective to use as quality; pass quality=")
    if quality not in objectives:
        raise ValueError(f"quality {quality!r} must be one of the objectives")
    return quality


def frontier_probability(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    *,
    quality: str | None = None,
    items: Mapping[Any, Any] | None = None,
    group: str | Sequence[str] = "experiment",
    fallback: Fallback = NO_FALLBACK,
    options: Bootstrap = DEFAULT_BOOTSTRAP,
) -> pd.DataFrame:
    """How often each experiment is on the Pareto frontier when measurement noise is resampled.

    ``df`` has one row per run (experiment x seed); rows sharing the ``group`` column(s) are one
    experiment. ``quality`` (default: the first "max" objective) is the noisy metric; every
    draw of the bootstrap

    1. resamples the test items: ``items[row_label]`` holds a row's per-item scores (e.g. 0/1
       correctness, in the same item order for every row, so the resample is paired). Rows
       without item scores fall back as ``fallback`` says (see the ``noise`` column);
    2. resamples the seeds of each experiment with replacement (when it has several) and
       averages every objective over the chosen seeds (costs such as time vary by seed too);
    3. computes the non-dominated set over all ``objectives`` at once.

    Returns one row per experiment with the group columns, ``n_seeds`` (runs with every
    objective measured), ``n_items``, ``noise``, the mean of every objective over its seeds,
    ``<quality>_low`` / ``<quality>_high`` (the ``options.level`` percentile interval of the
    draws), ``missing`` (objectives never measured; such an experiment is listed with what was
    measured but is never on the frontier and never dominates), ``on_frontier`` (point
    estimates), ``frontier_prob`` (share of draws on the frontier) and, for frontier
    experiments, the comparison with the next frontier experiment by quality (``next``):
    ``lead`` (quality difference), ``lead_low`` / ``lead_high``, ``lead_prob`` (share of
    draws where it is strictly better; exact ties count as not better), ``intervals_overlap``,
    ``within_noise`` (``lead_prob < options.threshold``) and ``lead_verdict`` (one of
    :data:`VERDICTS`), all <NA> where there is no next one. An experiment whose ``noise`` is
    "none" (one run without item scores or a stored interval) has no interval and a NaN
    ``frontier_prob``; a lead involving it has only ``lead``, and the verdict "cannot be
    judged". Rows: complete experiments by quality descending, then the partly measured ones.
    """
    check_objectives(objectives)
    quality = _quality_of(objectives, quality)
    if options.n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    group_cols = [group] if isinstance(group, str) else list(group)
    columns = list(objectives)
    sign = np.array([1.0 if objectives[c] == "max" else -1.0 for c in columns])
    values = objective_matrix(df, objectives) * sign  # raw units again
    rng = np.random.default_rng(options.seed)
    draws, models, counts = row_quality_draws(df, quality, items or {}, fallback, options, rng)
    rows = _Rows(values, draws, models, counts, columns, columns.index(quality), sign)
    groups = [
        _summarise_group(dict(zip(group_cols, key, strict=True)), positions, rows, rng)
        for key, positions in _group_positions(df, group_cols).items()
    ]
    names = [*group_cols, "n_seeds", "n_items", "noise", *columns]
    names += [c.format(q=quality) for c in RESULT_COLUMNS]
    result = pd.DataFrame.from_records([group.record for group in groups])
    if result.empty:
        return pd.DataFrame(columns=names)
    quality_draws = _add_frontier_shares(result, groups, rows, quality, options)
    _add_point_frontier(result, groups, objectives)
    _add_leads(result, quality_draws, objectives, quality, group_cols, options)
    # Complete experiments first (best quality first), then the partly measured ones.
    result = result.sort_values(
        ["_incomplete", quality, *group_cols],
        ascending=[True, False] + [True] * len(group_cols),
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)
    return result[names]


def task_frontier(
    data: pd.DataFrame,
    objectives: Mapping[str, str],
    spec: TaskSpec,
    items: Mapping[Any, Any] | None = None,
    options: Bootstrap = DEFAULT_BOOTSTRAP,
) -> pd.DataFrame:
    """:func:`frontier_probability` of a task's quality over experiments (rows grouped by
    ``experiment``), rows without per-item scores resampled as :func:`task_fallback` says."""
    return frontier_probability(
        data,
        objectives,
        quality=spec.quality.name,
        items=items,
        group="experiment",
        fallback=task_fallback(spec),
        options=options,
    )
