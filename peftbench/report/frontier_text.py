"""The words of the frontier chart: a quality with its interval (or none), the lead over the
next frontier point with its verdict, point labels, the quality axis title (which score) and the
subtitle lines."""

from __future__ import annotations

from typing import Any

import pandas as pd

from peftbench.analysis.comparable import SCORE_COLUMN
from peftbench.analysis.glossary import axis_title
from peftbench.analysis.noise import NO_INTERVAL, NO_NOISE, VERDICTS
from peftbench.analysis.summary import SOURCE_PUBLISHED


def interval_text(value: Any, low: Any, high: Any) -> str:
    """A value with its interval, e.g. ``0.412 [0.381, 0.444]``; "" when the value is missing."""
    if pd.isna(value):
        return ""
    if pd.isna(low) or pd.isna(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def lead_text(row: pd.Series) -> str:
    """A frontier point's lead over the next one with its verdict; "" without a next one."""
    if pd.isna(row.get("lead")):
        return ""
    if row.get("lead_verdict") == VERDICTS[2]:
        return f"+{row['lead']:.3f} over {row['next']}: noise cannot be judged"
    return (
        f"+{row['lead']:.3f} [{row['lead_low']:.3f}, {row['lead_high']:.3f}] over "
        f"{row['next']}, P(better) {row['lead_prob']:.0%}: {row['lead_verdict']}"
    )


def quality_text(value: Any, low: Any, high: Any, noise: Any) -> str:
    """The quality with its interval, or saying that it has none (no measured noise)."""
    if noise == NO_NOISE and not pd.isna(value):
        return f"{value:.3f} ({NO_INTERVAL})"
    return interval_text(value, low, high)


def point_label(row: pd.Series) -> str:
    """A frontier point's label: the experiment, its P(frontier) where known, ≈ within noise."""
    share = "" if pd.isna(row["frontier_prob"]) else f" · {row['frontier_prob']:.0%}"
    return f"{row['experiment']}{share}" + (" ≈" if row["within_noise_flag"] else "")


def score_title(table: pd.DataFrame, y: str) -> str:
    """Axis title of the quality: the title of the score this run's rows hold when it is not
    the quality itself (e.g. "Test accuracy (published parser)" beside published rows)."""
    if SCORE_COLUMN not in table.columns:
        return axis_title(y)
    ours = table.loc[table["source"] != SOURCE_PUBLISHED, SCORE_COLUMN].dropna()
    scores = set(ours) - {y}
    return axis_title(scores.pop()) if len(scores) == 1 else axis_title(y)


def subtitle_lines(
    data: pd.DataFrame, y_title: str, quality_title: str, not_drawn: int
) -> list[str]:
    """The chart's subtitle: how to read bars, shares and rings; which score the quality is
    when it is not the quality itself; what has no bar; how many rows are not drawn."""
    lines = [
        "Bars: 95% bootstrap interval (test items and seeds). Label %: share of bootstrap draws "
        "on the frontier. ≈ / dashed ring: lead over the next frontier point within noise.",
    ]
    if y_title != quality_title:
        lines.append(
            f"{y_title}: this run's rows scored by the published suite's rule, as the published "
            "rows are, so the two are comparable."
        )
    if "noise" in data.columns and (data["noise"] == NO_NOISE).any():
        lines.append(
            "No bar and no %: a single run without per-item scores (e.g. published); its noise, "
            "and whether its leads are within noise, cannot be judged."
        )
    if not_drawn:
        lines.append(f"{not_drawn} experiment(s) not drawn: failed, or no value for this axis.")
    return lines
