"""The advice of ``peftbench advise``: which experiments of a task are on the noise-aware Pareto
frontier within a memory (and time) budget (:func:`advise`, the base model as the reference
beside them: :func:`reference_row`), and the same as plain text (:func:`format_advice`): the
frontier methods best first, each with its quality interval (or none: a single run without
per-item scores), its P(frontier) and the verdict on its lead over the next one; which score the
quality is, where a comparison with the other source depends on it; then the notes.

The command line and the report's decision page both answer through these functions, so the
page says what the command would print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from peftbench.analysis.comparable import (
    SCORE_COLUMN,
    comparable_column,
    items_for,
    scored_column,
    with_score,
)
from peftbench.analysis.glossary import info
from peftbench.analysis.noise import NO_INTERVAL, NO_NOISE, VERDICTS, Bootstrap, task_frontier
from peftbench.analysis.summary import SOURCE_PUBLISHED, SOURCE_THIS_RUN
from peftbench.tasks import registry

#: The memory figure a budget is checked against, as ``advise`` has always read it: the
#: measured training peak (on a CPU, peak RSS). The report's decision page passes
#: ``memory_gb`` instead, the figure its chart and the frontiers plot.
ADVISE_MEMORY = "train_memory_gb"


def advise(
    summary: pd.DataFrame,
    task: str,
    max_memory_gb: float,
    max_time_min: float | None = None,
    *,
    source: str = SOURCE_THIS_RUN,
    items: Mapping[Any, np.ndarray] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.95,
    published_score: bool = False,
    comparable_items: Mapping[Any, np.ndarray] | None = None,
    memory: str = ADVISE_MEMORY,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Frontier experiments of ``task`` within the budget, best first.

    The frontier is computed among the experiments that fit the budget (mean over seeds of
    the ``memory`` column <= ``max_memory_gb`` and, when given, ``train_time_min`` <=
    ``max_time_min``), over quality (max), memory (min) and, with a time budget, time (min).
    Returns ``(frontier, all_experiments, notes)``: the frontier rows of
    :func:`peftbench.analysis.noise.frontier_probability` (best quality first), every
    experiment of the task and source with its frontier columns, and notes on what was left
    out and why. With ``published_score``, this run's rows are scored as the published suite
    scores (:mod:`peftbench.analysis.comparable`), resampled with ``comparable_items`` (their
    per-item scores of that score) instead of ``items``.
    """
    spec = registry.get(task)
    quality = spec.quality.name
    rows = summary[(summary["task"] == task) & (summary["source"] == source)]
    notes: list[str] = []
    rows = with_score(rows, spec, published_score)
    scored = scored_column(spec, published_score and source == SOURCE_THIS_RUN)
    if scored != quality and not comparable_items:
        notes.append(
            f"this run's rows are scored by {scored}, whose per-item scores are not recorded: "
            "their intervals cover seeds only, and a single run has none"
        )
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame(), [*notes, f"no {source} results for task {task}"]
    failed = rows[rows["status"] != "success"]
    if len(failed):
        names = ", ".join(sorted(set(failed["experiment"])))
        notes.append(f"{len(failed)} failed run(s) left out: {names}")
    ok = rows[rows["status"] == "success"]
    budget = {memory: max_memory_gb}
    if max_time_min is not None:
        budget["train_time_min"] = max_time_min
    means = ok.groupby("experiment")[list(budget)].mean()
    unmeasured = means[means.isna().any(axis=1)].index.tolist()
    if unmeasured:
        notes.append(
            f"no {'/'.join(budget)} measured (cannot check the budget): "
            + ", ".join(sorted(unmeasured))
        )
    fits = means.dropna()
    for column, limit in budget.items():
        fits = fits[fits[column] <= limit]
    over = sorted(set(means.dropna().index) - set(fits.index))
    if over:
        notes.append(f"{len(over)} experiment(s) over the budget: " + ", ".join(over))
    candidates = ok[ok["experiment"].isin(fits.index)]
    if candidates.empty:
        return pd.DataFrame(), pd.DataFrame(), notes
    if scored != quality and comparable_items:
        # Some runs have the item scores, others (e.g. results older than them) do not: those
        # stay in the comparison, resampled over seeds only, as when none has them.
        lacking = candidates[
            (candidates[SCORE_COLUMN] == scored) & ~candidates.index.isin(list(comparable_items))
        ]
        if not lacking.empty:
            runs = ", ".join(
                f"{row.experiment} seed {row.seed:g}"
                for row in lacking.sort_values(["experiment", "seed"]).itertuples()
            )
            notes.append(
                f"{len(lacking)} run(s) scored by {scored} have no per-item scores of it "
                f"recorded ({runs}): they are compared all the same, without resampling "
                "their test items (a single such run has no interval)"
            )
    objectives = {quality: "max", **{column: "min" for column in budget}}
    table = task_frontier(
        candidates,
        objectives,
        spec,
        items_for(candidates, spec, items, comparable_items),
        Bootstrap(n_boot=n_boot, seed=seed, threshold=threshold),
    )
    labels = ok.groupby("experiment")[["family", "score"]].first()
    table = table.join(labels, on="experiment")
    frontier = table[table["on_frontier"]].reset_index(drop=True)
    return frontier, table, notes


def reference_row(
    summary: pd.DataFrame, task: str, source: str = SOURCE_THIS_RUN, published_score: bool = False
) -> pd.Series | None:
    """The base model without fine-tuning of ``task`` and ``source`` (its quality the mean
    over seeds), in the same score as the methods it is read against; None without one."""
    spec = registry.get(task)
    rows = summary[
        (summary["task"] == task) & (summary["family"] == "base") & (summary["source"] == source)
    ]
    rows = with_score(rows, spec, published_score)
    if rows.empty:
        return None
    reference = rows.iloc[0].copy()
    quality = spec.quality.name
    reference[quality] = float(np.nanmean(rows[quality].to_numpy(dtype=float)))
    return reference


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _noise_text(frontier: pd.DataFrame, name: str) -> str:
    """What the bootstrap resampled, from the noise models of the frontier rows."""
    items = int(frontier["n_items"].max())
    if items:
        return f"{items} test items (paired across methods) and seeds"
    models = set(frontier["noise"])
    if "normal" in models:
        return f"each run's stored 95% interval of its {name} (no per-item scores found)"
    return "seeds only (no per-item scores or intervals found)"


def _noise_header(frontier: pd.DataFrame, name: str, n_boot: int, threshold: float) -> str:
    """The line that says how noise was judged, or that it could not be."""
    unmeasured = frontier["noise"] == NO_NOISE
    if unmeasured.all():
        return (
            f"{name.capitalize()} of single runs without per-item scores: no intervals, no "
            "P(frontier), and no lead can be judged against noise (one run cannot tell its "
            "noise)."
        )
    text = (
        f"{name.capitalize()} with 95% bootstrap intervals ({n_boot} draws over "
        f"{_noise_text(frontier[~unmeasured], name)}); P(frontier): share of draws on the "
        f"frontier; a lead is within noise when the method beats the next one in fewer than "
        f"{threshold:.0%} of draws."
    )
    if unmeasured.any():
        text += " Single runs without per-item scores have no interval; their leads are not judged."
    return text


def _score_line(task: str, source: str, frontier: pd.DataFrame) -> str | None:
    """Which score the quality is, where a task scores its own rows differently from the
    published suite: published rows, or this run's rows scored as published; None otherwise
    (our own score, the default)."""
    comparable = comparable_column(registry.get(task))
    if comparable is None:
        return None
    if source == SOURCE_PUBLISHED:
        return (
            "Scores as published (the suite's own scoring). This run's rows scored the same "
            "way: peftbench advise --source this-run --published-score."
        )
    if "score" in frontier.columns and (frontier["score"] == comparable).all():
        return f"Scores: this run's {comparable}. {info(comparable)[1]}"
    return None


def _lead_cell(row: dict) -> str:
    """The lead over the next frontier method with its verdict."""
    if pd.isna(row["lead"]):
        return "(lowest quality on the frontier)"
    if row["lead_verdict"] == VERDICTS[2]:
        return f"+{row['lead']:.3f} over {row['next']}: noise cannot be judged"
    verdict = "WITHIN NOISE" if row["lead_verdict"] == VERDICTS[0] else "beyond noise"
    return (
        f"+{row['lead']:.3f} [{row['lead_low']:.3f}, {row['lead_high']:.3f}] over "
        f"{row['next']}, P(better) {row['lead_prob']:.0%}: {verdict}"
    )


def _quality_cell(row: dict, quality: str) -> str:
    if row["noise"] == NO_NOISE:
        return f"{_fmt(row[quality])} ({NO_INTERVAL})"
    return f"{_fmt(row[quality])} [{_fmt(row[f'{quality}_low'])}, {_fmt(row[f'{quality}_high'])}]"


def format_advice(
    frontier: pd.DataFrame,
    task: str,
    max_memory_gb: float,
    max_time_min: float | None,
    notes: Sequence[str],
    *,
    source: str = SOURCE_THIS_RUN,
    reference: pd.Series | None = None,
    n_boot: int = 1000,
    threshold: float = 0.95,
    memory: str = ADVISE_MEMORY,
) -> str:
    """The advice as plain text: a header, one line per frontier method, notes. ``memory`` is
    the memory column the budget was checked against (:func:`advise`)."""
    spec = registry.get(task)
    quality, name = spec.quality.name, spec.quality.title
    # Says which figure it is when it is not the measured training peak (the CLI's).
    figure = "training memory" if memory == ADVISE_MEMORY else info(memory)[0].split(" (")[0]
    budget = f"{figure} <= {max_memory_gb:g} GB"
    if max_time_min is not None:
        budget += f" and training time <= {max_time_min:g} min"
    lines = [f"Task {task} ({source}): Pareto-optimal methods within {budget}, best first."]
    if frontier.empty:
        lines.append("No experiment fits the budget.")
    else:
        lines.append(_noise_header(frontier, name, n_boot, threshold))
        score = _score_line(task, source, frontier)
        if score is not None:
            lines.append(score)
        lines.append("")
        measured = (frontier["noise"] != NO_NOISE).any()
        header = ["#", "experiment", "family", f"{name} [95% CI]" if measured else name]
        header.append("memory GB")
        if max_time_min is not None:
            header.append("time min")
        header += ["P(frontier)", "lead over next"]
        body = []
        for rank, row in enumerate(frontier.itertuples(index=False), start=1):
            row = row._asdict()
            cells = [
                str(rank),
                str(row["experiment"]),
                str(row["family"]),
                _quality_cell(row, quality),
                _fmt(row[memory]),
            ]
            if max_time_min is not None:
                cells.append(_fmt(row["train_time_min"], 2))
            probability = row["frontier_prob"]
            cells.append("n/a" if pd.isna(probability) else f"{probability:.0%}")
            cells.append(_lead_cell(row))
            body.append(cells)
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        for cells in [header, *body]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if frontier["within_noise"].fillna(False).astype(bool).any():
            lines.append("")
            lines.append(
                "WITHIN NOISE: the next method is cheaper (in memory or time) and, as far as "
                "this test set can tell, as good: the extra cost may buy nothing."
            )
    if reference is not None and not pd.isna(reference.get(quality)):
        low, high = (reference.get(column) for column in spec.ci_columns)
        interval = f" [{_fmt(low)}, {_fmt(high)}]" if not pd.isna(low) and not pd.isna(high) else ""
        lines.append(
            f"Reference: {reference['experiment']} (no fine-tuning): {name} "
            f"{_fmt(reference[quality])}{interval}."
        )
    for note in notes:
        lines.append(f"Note: {note}.")
    return "\n".join(lines)
