"""Pareto charts of the summary table (Altair), saved as offline HTML and PNG."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import altair as alt
import pandas as pd

from peftbench.aggregate import BASE_METHOD
from peftbench.io import atomic_path
from peftbench.pareto import METRIC_DIRECTIONS, Direction, frontier_line

#: Human-readable axis titles of summary columns; other columns use their own name.
AXIS_TITLES: dict[str, str] = {
    "test_accuracy": "Test accuracy",
    "valid_accuracy_final": "Final validation accuracy",
    "train_memory_gb": "Peak training memory (GB)",
    "train_memory_allocated_gb": "Peak allocated training memory (GB)",
    "eval_memory_gb": "Peak evaluation memory (GB)",
    "train_time_min": "Training time (min)",
    "eval_time_min": "Evaluation time (min)",
    "train_tokens_per_s": "Training throughput (tokens/s)",
    "trainable_params": "Trainable parameters",
    "trainable_pct": "Trainable parameters (%)",
    "file_size_mb": "Checkpoint size (MB)",
    "forgetting": "Forgetting (held-out loss increase)",
    "train_loss_final": "Final training loss",
}

CI_LOW, CI_HIGH = "test_accuracy_ci_low", "test_accuracy_ci_high"

# A remote <script src="http..."> would make the "offline" HTML need the network.
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)


def _title(column: str) -> str:
    return AXIS_TITLES.get(column, column)


def _accuracy_text(row: pd.Series) -> str:
    """Accuracy with its confidence interval, e.g. ``0.412 [0.381, 0.444]``."""
    accuracy = row.get("test_accuracy")
    if pd.isna(accuracy):
        return ""
    low, high = row.get(CI_LOW), row.get(CI_HIGH)
    if pd.isna(low) or pd.isna(high):
        return f"{accuracy:.3f}"
    return f"{accuracy:.3f} [{low:.3f}, {high:.3f}]"


def _plot_data(
    df: pd.DataFrame, x: str, y: str, x_dir: Direction, y_dir: Direction
) -> pd.DataFrame:
    """Rows to draw, with flag columns that select each layer's subset.

    One table feeds every layer (filtered per layer) so the data is embedded in the
    HTML once.
    """
    data = df
    if "status" in data.columns:
        data = data[data["status"] == "success"]
    data = data[data[y].notna()].reset_index(drop=True)
    is_base = data["method"] == BASE_METHOD
    has_x = data[x].notna()
    # Rows without an x value are not drawn as points; only the base model is kept, as a
    # horizontal reference line (it has no training memory/time, the default x axes).
    data = data[has_x | is_base].reset_index(drop=True)

    tooltip_columns = [
        "experiment",
        "method",
        "seed",
        "test_accuracy",
        CI_LOW,
        CI_HIGH,
        "train_memory_gb",
        "train_time_min",
        "trainable_params",
        "lr",
        x,
        y,
    ]
    keep = list(dict.fromkeys(c for c in tooltip_columns if c in data.columns))
    plot = data[keep].copy()
    plot["is_base"] = (data["method"] == BASE_METHOD).to_numpy()
    plot["has_x"] = data[x].notna().to_numpy()
    plot["has_ci"] = (
        (data[CI_LOW].notna() & data[CI_HIGH].notna()).to_numpy()
        if {CI_LOW, CI_HIGH} <= set(data.columns)
        else False
    )
    plot["accuracy_ci"] = data.apply(_accuracy_text, axis=1) if len(data) else []
    frontier = frontier_line(plot[plot["has_x"]], x, y, x_dir, y_dir)
    plot["frontier"] = plot.index.isin(frontier.index)
    return plot


def _tooltips(plot: pd.DataFrame, x: str, y: str) -> list[alt.Tooltip]:
    """Tooltip fields that exist in the plotted data."""
    # (column, vega-lite type, title, d3 format)
    candidates = [
        ("experiment", "nominal", "Experiment", None),
        ("method", "nominal", "Method", None),
        ("seed", "quantitative", "Seed", None),
        ("accuracy_ci", "nominal", "Test accuracy [95% CI]", None),
        ("train_memory_gb", "quantitative", _title("train_memory_gb"), ".2f"),
        ("train_time_min", "quantitative", _title("train_time_min"), ".1f"),
        ("trainable_params", "quantitative", _title("trainable_params"), ","),
        ("lr", "quantitative", "Learning rate", ".3~e"),
    ]
    fields = [c[0] for c in candidates]
    # Custom axes (e.g. file size) also show their own value.
    for column in (x, y):
        if column not in fields and column != "test_accuracy":
            candidates.append((column, "quantitative", _title(column), ".4~g"))
            fields.append(column)
    tooltips = []
    for field, kind, title, fmt in candidates:
        if field in plot.columns:
            extra = {} if fmt is None else {"format": fmt}
            tooltips.append(alt.Tooltip(field=field, type=kind, title=title, **extra))
    return tooltips


def pareto_chart(
    df: pd.DataFrame,
    x: str = "train_memory_gb",
    y: str = "test_accuracy",
    title: str | None = None,
    *,
    x_dir: Direction | None = None,
    y_dir: Direction | None = None,
    methods: Sequence[str] | None = None,
) -> alt.LayerChart:
    """Scatter of ``y`` against ``x`` with the Pareto frontier drawn and labelled.

    ``df`` is a summary table (``peftbench.aggregate.summarize``). Failed rows and rows
    missing ``x`` or ``y`` are not drawn; the exception is a base-model row that lacks only
    ``x`` (it did not train), drawn as a dashed horizontal reference line. Base rows with
    both values are drawn as black diamonds. Directions default to ``METRIC_DIRECTIONS``
    (x "min", y "max" for unknown columns). The colour domain is ``methods``, by default
    the sorted methods of the whole table (failed rows included) so colours stay the same
    across charts made from one table.
    """
    x_dir = x_dir or METRIC_DIRECTIONS.get(x, "min")
    y_dir = y_dir or METRIC_DIRECTIONS.get(y, "max")
    if methods is None:
        methods = sorted(set(df["method"].dropna()) - {BASE_METHOD})
    plot = _plot_data(df, x, y, x_dir, y_dir)

    color = alt.Color(
        "method:N",
        title="Method",
        scale=alt.Scale(
            domain=list(methods), scheme="tableau20" if len(methods) > 10 else "tableau10"
        ),
    )
    x_enc = alt.X(f"{x}:Q", title=_title(x), scale=alt.Scale(zero=False, padding=16))
    y_enc = alt.Y(f"{y}:Q", title=_title(y), scale=alt.Scale(zero=False, padding=16))
    tooltips = _tooltips(plot, x, y)
    base = alt.Chart(plot)

    layers: list[alt.Chart] = []
    if y == "test_accuracy" and plot["has_ci"].any():
        layers.append(
            base.transform_filter("datum.has_x && datum.has_ci && !datum.is_base")
            .mark_rule(opacity=0.6)
            .encode(
                x=x_enc,
                y=alt.Y(f"{CI_LOW}:Q", title=_title(y), scale=alt.Scale(zero=False, padding=16)),
                y2=f"{CI_HIGH}:Q",
                color=color,
            )
        )
    # For a minimised x the attainment boundary holds y until the next point (step-after);
    # for a maximised x it changes at the current point (step-before).
    step = "step-after" if x_dir == "min" else "step-before"
    layers += [
        base.transform_filter("datum.frontier")
        .mark_line(interpolate=step, color="gray", strokeDash=[6, 3], opacity=0.8)
        .encode(x=x_enc, y=y_enc),
        base.transform_filter("datum.has_x && !datum.is_base")
        .mark_point(filled=True, size=70, opacity=0.9)
        .encode(x=x_enc, y=y_enc, color=color, tooltip=tooltips),
        base.transform_filter("datum.has_x && datum.is_base")
        .mark_point(shape="diamond", filled=True, size=160, color="black")
        .encode(x=x_enc, y=y_enc, tooltip=tooltips),
        base.transform_filter("!datum.has_x && datum.is_base")
        .mark_rule(color="black", strokeDash=[4, 4])
        .encode(y=y_enc, tooltip=tooltips),
        base.transform_filter("!datum.has_x && datum.is_base")
        .mark_text(align="left", baseline="bottom", dx=4, dy=-3, fontSize=10)
        .encode(x=alt.value(0), y=y_enc, text=alt.value("base model (no fine-tuning)")),
        base.transform_filter("datum.frontier")
        .mark_text(align="left", baseline="bottom", dx=6, dy=-4, fontSize=10)
        .encode(x=x_enc, y=y_enc, text="experiment:N"),
    ]
    return alt.layer(*layers).properties(
        title=title or f"{_title(y)} vs {_title(x)}", width=640, height=420
    )


def save_chart(chart: alt.TopLevelMixin, html_path: Path | str, png_path: Path | str) -> None:
    """Save ``chart`` as self-contained HTML (works offline) and as PNG, each atomically.

    The HTML inlines the Vega, Vega-Lite and vega-embed JavaScript (via vl-convert), so it
    opens without network access; RuntimeError is raised if it would still load a remote
    script. The PNG is rendered by vl-convert at twice the nominal size.
    """
    with atomic_path(html_path) as tmp:
        chart.save(tmp, format="html", inline=True)
        if _REMOTE_SCRIPT.search(tmp.read_text(encoding="utf-8")):
            raise RuntimeError(f"{html_path}: chart HTML references a remote script")
    with atomic_path(png_path) as tmp:
        chart.save(tmp, format="png", scale_factor=2)
