"""The advice of ``peftbench advise`` as plain text: the frontier methods within a budget, best
first, each with its quality interval (or none: a single run without per-item scores), its
P(frontier) and the verdict on its lead over the next one; which score the quality is, where a
comparison with the other source depends on it; then the notes."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from peftbench.analysis.comparable import comparable_column
from peftbench.analysis.glossary import info
from peftbench.analysis.noise import NO_INTERVAL, NO_NOISE, VERDICTS
from peftbench.analysis.summary import SOURCE_PUBLISHED, SOURCE_THIS_RUN
from peftbench.tasks import registry


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
) -> str:
    """The advice as plain text: a header, one line per frontier method, notes."""
    spec = registry.get(task)
    quality, name = spec.quality.name, spec.quality.title
    budget = f"training memory <= {max_memory_gb:g} GB"
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
                _fmt(row["train_memory_gb"]),
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
