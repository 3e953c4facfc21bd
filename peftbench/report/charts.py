"""The report's charts (Altair): quality against a cost with the noise-aware Pareto frontier,
and learning curves. Colours are per method, shaded by family, the same in every chart.

One frontier chart, :func:`frontier_chart`, draws both ``results/<task>/pareto.*`` and the
report's trade-off charts; axis titles and directions come from the glossary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import altair as alt
import numpy as np
import pandas as pd

from peftbench.analysis.comparable import SCORE_COLUMN
from peftbench.analysis.families import method_colors
from peftbench.analysis.frontier import Direction
from peftbench.analysis.glossary import axis_title, direction, fraction_columns, side_effect_columns
from peftbench.analysis.noise import NO_NOISE
from peftbench.analysis.summary import SOURCE_PUBLISHED, SOURCE_THIS_RUN, families_of
from peftbench.report.frontier_text import (
    lead_text,
    point_label,
    quality_text,
    score_title,
    subtitle_lines,
)

_title = axis_title


def _interval_layer(
    base: alt.Chart, x_enc: alt.X, y_title: str, y_scale: alt.Scale, color: alt.Color, **mark: Any
) -> alt.Chart:
    """Error bars from ``y_low`` to ``y_high`` (interval columns of the data)."""
    return (
        base.transform_filter("datum.has_x && datum.has_interval && !datum.is_base")
        .mark_rule(**mark)
        .encode(
            x=x_enc,
            # The same scale as the points: a rule's y otherwise defaults to including zero.
            y=alt.Y("y_low:Q", title=y_title, scale=y_scale),
            y2="y_high:Q",
            color=color,
        )
    )


def _frontier_step_layer(
    base: alt.Chart, x_enc: alt.X, y_enc: alt.Y, x_dir: Direction, **encoding: Any
) -> alt.Chart:
    """The dashed step line joining the frontier points (``on_frontier`` and ``has_x``)."""
    # For a minimised x the attainment boundary holds y until the next point (step-after);
    # for a maximised x it changes at the current point (step-before).
    step = "step-after" if x_dir == "min" else "step-before"
    return (
        base.transform_filter("datum.on_frontier && datum.has_x")
        .mark_line(interpolate=step, color="gray", strokeDash=[6, 3], opacity=0.8)
        .encode(x=x_enc, y=y_enc, **encoding)
    )


def _base_layers(
    base: alt.Chart, x_enc: alt.X, y_enc: alt.Y, tooltips: list[alt.Tooltip]
) -> list[alt.Chart]:
    """The base model: a black diamond where it has an x value, else a dashed reference line."""
    return [
        base.transform_filter("datum.has_x && datum.is_base")
        .mark_point(shape="diamond", filled=True, size=160, color="black")
        .encode(x=x_enc, y=y_enc, tooltip=tooltips),
        base.transform_filter("!datum.has_x && datum.is_base")
        .mark_rule(color="black", strokeDash=[4, 4])
        .encode(y=y_enc, tooltip=tooltips),
        base.transform_filter("!datum.has_x && datum.is_base")
        .mark_text(align="left", baseline="bottom", dx=4, dy=-3, fontSize=10)
        .encode(x=alt.value(0), y=y_enc, text=alt.value("base model (no fine-tuning)")),
    ]


#: Mark of each result source: this workflow's runs and imported published results.
SOURCE_SHAPES: dict[str, str] = {SOURCE_THIS_RUN: "circle", SOURCE_PUBLISHED: "triangle-up"}


def _tooltip_fields(y_title: str) -> list[tuple[str, str, str, str | None]]:
    """(column, vega-lite type, title, d3 format) of the tooltips, where the data has them."""
    costs = [
        ("train_memory_gb", ".3f"),
        ("train_time_min", ".2f"),
        ("trainable_params", ","),
        ("file_size_mb", ".3f"),
        *((column, ".3f") for column in side_effect_columns()),
    ]
    return [
        ("experiment", "nominal", "Experiment", None),
        ("family", "nominal", "Family", None),
        ("source", "nominal", "Source", None),
        ("quality_text", "nominal", f"{y_title} [95% interval]", None),
        ("frontier_prob", "quantitative", "P(on frontier)", ".0%"),
        ("lead_text", "nominal", "Lead over next frontier point", None),
        ("n_seeds", "quantitative", "Seeds", None),
        ("noise", "nominal", "Noise model", None),
        (SCORE_COLUMN, "nominal", "Score", None),
        *((column, "quantitative", _title(column), fmt) for column, fmt in costs),
        ("key_settings", "nominal", "Key settings", None),
    ]


def method_key(method: str, family: str) -> str:
    """Legend entry of a method: its family first, so the legend reads grouped by family."""
    return f"{family} · {method}"


def _color_scale(colors: Mapping[str, str]) -> alt.Scale:
    return alt.Scale(domain=list(colors), range=list(colors.values()))


def _use_log(values: pd.Series) -> bool:
    """A log axis for positive values spanning more than two orders of magnitude."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(values) > 1 and (values > 0).all() and values.max() / values.min() > 100)


def _overlap(a: pd.Series, b: pd.Series) -> bool:
    """Whether two value ranges overlap (so both sources can share an axis)."""
    a, b = a.dropna(), b.dropna()
    return bool(len(a) and len(b) and a.min() <= b.max() and b.min() <= a.max())


def _frontier_data(table: pd.DataFrame, x: str, y: str, log_x: bool) -> pd.DataFrame:
    """Rows to draw, with flag columns that select each layer's subset."""
    data = table.copy()
    if log_x:
        # A log axis cannot place 0 (the base model's trainable parameters): such rows are
        # drawn like rows without the value (the base model becomes a reference line).
        data.loc[pd.to_numeric(data[x], errors="coerce") <= 0, x] = np.nan
    is_base = data["family"] == "base"
    data = data[data[y].notna() & (data[x].notna() | is_base)].reset_index(drop=True)
    data["is_base"] = (data["family"] == "base").to_numpy()
    data["has_x"] = data[x].notna().to_numpy()
    # The bootstrap interval, under the names the shared interval layer reads; a row without
    # measured noise (one run, no item scores or stored interval) has none, not a zero-width
    # one.
    noise = data["noise"] if "noise" in data.columns else pd.Series("", index=data.index)
    noisy = noise != NO_NOISE
    data["y_low"], data["y_high"] = data[f"{y}_low"].where(noisy), data[f"{y}_high"].where(noisy)
    data["has_interval"] = (data["y_low"].notna() & data["y_high"].notna()).to_numpy()
    data["quality_text"] = [
        quality_text(v, lo, hi, n)
        for v, lo, hi, n in zip(data[y], data["y_low"], data["y_high"], noise, strict=True)
    ]
    data["lead_text"] = [lead_text(row) for _, row in data.iterrows()]
    data["within_noise_flag"] = data["within_noise"].fillna(False).astype(bool).to_numpy()
    data["label"] = [point_label(row) for _, row in data.iterrows()]
    data["method_key"] = [
        method_key(m, f) for m, f in zip(data["method"], data["family"], strict=True)
    ]
    # Frontier labels alternate above and below their point (in x order, per source), so
    # neighbours on a crowded frontier do not print over each other.
    data["label_below"] = False
    frontier = data[data["on_frontier"].astype(bool) & data["has_x"]]
    for _, rows in frontier.groupby("source"):
        ordered = rows.sort_values([x, y]).index
        data.loc[ordered[1::2], "label_below"] = True
    keep = {c for c, *_ in _tooltip_fields("")} | {
        "label_below",
        x,
        y,
        "y_low",
        "y_high",
        "method",
        "method_key",
        "on_frontier",
        "is_base",
        "has_x",
        "has_interval",
        "within_noise_flag",
        "label",
    }
    return data[[c for c in data.columns if c in keep]]


def _frontier_layers(
    data: pd.DataFrame,
    x: str,
    y: str,
    x_dir: Direction,
    colors: Mapping[str, str],
    log_x: bool,
    y_title: str,
) -> list[alt.Chart]:
    """Layers of one trade-off panel (one or both sources)."""
    x_scale = alt.Scale(type="log") if log_x else alt.Scale(zero=False, padding=16)
    x_enc = alt.X(f"{x}:Q", title=_title(x), scale=x_scale)
    y_scale = _quality_scale(data, y)
    y_enc = alt.Y(f"{y}:Q", title=y_title, scale=y_scale)
    color = alt.Color("method_key:N", title="Method (family · method)", scale=_color_scale(colors))
    shape = alt.Shape(
        "source:N",
        title="Source",
        scale=alt.Scale(domain=list(SOURCE_SHAPES), range=list(SOURCE_SHAPES.values())),
    )
    fields = _tooltip_fields(y_title)
    tooltips = [
        alt.Tooltip(field=f, type=t, title=title, **({} if fmt is None else {"format": fmt}))
        for f, t, title, fmt in fields
        if f in data.columns
    ]
    for column in (x, y):
        if column not in {c for c, *_ in fields} and column in data.columns:
            title = y_title if column == y else _title(column)
            tooltips.append(alt.Tooltip(f"{column}:Q", title=title, format=".4~g"))
    base = alt.Chart(data)
    layers = []
    if data["has_interval"].any():
        layers.append(
            _interval_layer(base, x_enc, y_title, y_scale, color, opacity=0.55, strokeWidth=1.5)
        )
    return [
        *layers,
        _frontier_step_layer(base, x_enc, y_enc, x_dir, detail="source:N"),
        base.transform_filter("datum.has_x && !datum.is_base")
        .mark_point(filled=True, size=80, opacity=0.9)
        .encode(x=x_enc, y=y_enc, color=color, shape=shape, tooltip=tooltips),
        # Frontier points whose lead over the next one is within noise: a dashed ring.
        base.transform_filter("datum.on_frontier && datum.has_x && datum.within_noise_flag")
        .mark_point(shape="circle", size=320, filled=False, color="#555", strokeDash=[2, 2])
        .encode(x=x_enc, y=y_enc, tooltip=tooltips),
        *_base_layers(base, x_enc, y_enc, tooltips),
        base.transform_filter("datum.on_frontier && datum.has_x && !datum.label_below")
        .mark_text(align="left", baseline="bottom", dx=7, dy=-5, fontSize=10)
        .encode(x=x_enc, y=y_enc, text="label:N"),
        base.transform_filter("datum.on_frontier && datum.has_x && datum.label_below")
        .mark_text(align="left", baseline="top", dx=7, dy=5, fontSize=10)
        .encode(x=x_enc, y=y_enc, text="label:N"),
    ]


def _quality_scale(data: pd.DataFrame, y: str) -> alt.Scale:
    """The y scale: padded around the data, clipped to [0, 1] for share-like metrics (the
    glossary's fractions), whose axis never extends past the bounds."""
    if y not in fraction_columns() or data.empty:
        return alt.Scale(zero=False, padding=16)
    values = pd.concat([data[y], data.get("y_low", data[y]), data.get("y_high", data[y])])
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return alt.Scale(zero=False, padding=16)
    low, high = float(values.min()), float(values.max())
    margin = 0.08 * (high - low) if high > low else 0.05
    # Clipped to the bounds only when the data is within them (a cosine similarity can
    # dip below 0), so no point falls outside the axis.
    bottom = max(0.0, low - margin) if low >= 0 else low - margin
    top = min(1.0, high + margin) if high <= 1 else high + margin
    return alt.Scale(domain=[bottom, top], nice=False)


def frontier_chart(
    table: pd.DataFrame,
    x: str,
    y: str,
    colors: Mapping[str, str],
    title: str,
    *,
    x_dir: Direction | None = None,
    layout: Literal["auto", "overlay", "side"] = "auto",
) -> alt.TopLevelMixin:
    """Quality ``y`` against cost ``x`` with the noise-aware Pareto frontier.

    ``table`` has one row per experiment as returned by
    :func:`peftbench.analysis.tables.experiment_frontier` (``y``, ``y_low``/``y_high``, ``x``,
    ``on_frontier``, ``frontier_prob``, ``within_noise``, ``lead``...) plus ``experiment``,
    ``method``, ``family`` and ``source`` ("this run" | "published"). Error bars are the
    bootstrap intervals; frontier points are joined by a step line and labelled with how
    often they are on the frontier; a dashed ring (and "≈" in the label) marks a frontier
    point whose lead over the next one is within noise. An experiment without measured noise
    (one run, no per-item scores: published rows) has no bar and no share, and its leads are
    not judged. The y axis is titled by the score this run's rows hold (``score`` column: the
    published-compatible score beside published rows). Published rows are triangles; when
    their ``x`` range does not overlap this run's (a different model or hardware), they get
    their own panel side by side (``layout="auto"``). ``colors`` maps :func:`method_key`
    values to colours, so every chart of one report uses the same colours. A positive ``x``
    spanning more than two orders of magnitude gets a log axis.
    """
    x_dir = x_dir or direction(x) or "min"
    log_x = _use_log(table.loc[table["family"] != "base", x])
    data = _frontier_data(table, x, y, log_x)
    y_title = score_title(table, y)
    not_drawn = len(table) - len(data)
    subtitle = subtitle_lines(data, y_title, axis_title(y), not_drawn)
    sources = [s for s in SOURCE_SHAPES if (data["source"] == s).any()]
    if layout == "auto":
        layout = "overlay"
        if len(sources) == 2:
            this_run = data.loc[data["source"] == SOURCE_THIS_RUN, x]
            published = data.loc[data["source"] == SOURCE_PUBLISHED, x]
            layout = "overlay" if _overlap(this_run, published) else "side"
    title_params = alt.TitleParams(text=title, subtitle=subtitle, anchor="start")
    if layout == "side" and len(sources) == 2:
        panels = []
        for source in sources:
            subset = data[data["source"] == source].reset_index(drop=True)
            log_panel = _use_log(subset.loc[~subset["is_base"], x])
            layers = _frontier_layers(subset, x, y, x_dir, colors, log_panel, y_title)
            panels.append(alt.layer(*layers).properties(title=f"{source}", width=460, height=380))
        return (
            alt.hconcat(*panels)
            .resolve_scale(x="independent", y="independent", color="shared", shape="shared")
            .properties(title=title_params)
        )
    return alt.layer(*_frontier_layers(data, x, y, x_dir, colors, log_x, y_title)).properties(
        title=title_params, width=640, height=420
    )


def learning_curves_chart(
    curves: pd.DataFrame,
    colors: Mapping[str, str],
    title: str,
    *,
    validation_title: str = "Validation accuracy",
) -> alt.TopLevelMixin:
    """Training loss and the validation metric against the step, one line per run.

    ``curves`` is the long table of :func:`peftbench.analysis.summary.curves_table` (one task and
    source). Colours as in :func:`frontier_chart`; clicking a legend entry highlights that
    method.
    """
    data = curves.copy()
    data["method_key"] = [
        method_key(m, f) for m, f in zip(data["method"], data["family"], strict=True)
    ]
    data["run"] = [f"{e} seed {s}" for e, s in zip(data["experiment"], data["seed"], strict=True)]
    data = data[["experiment", "method_key", "family", "seed", "run", "step", "metric", "value"]]
    pick = alt.selection_point(fields=["method_key"], bind="legend")
    color = alt.Color("method_key:N", title="Method (family · method)", scale=_color_scale(colors))
    tooltips = [
        alt.Tooltip("experiment:N", title="Experiment"),
        alt.Tooltip("seed:Q", title="Seed"),
        alt.Tooltip("step:Q", title="Step"),
        alt.Tooltip("value:Q", title="Value", format=".4f"),
    ]
    panels = []
    for metric, axis in (("train loss", "Training loss"), ("validation", validation_title)):
        subset = data[data["metric"] == metric]
        panel = (
            alt.Chart(subset)
            .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=1.6)
            .encode(
                x=alt.X("step:Q", title="Step"),
                y=alt.Y("value:Q", title=axis, scale=alt.Scale(zero=False)),
                color=color,
                detail="run:N",
                opacity=alt.condition(pick, alt.value(0.95), alt.value(0.12)),
                tooltip=tooltips,
            )
            .properties(title=axis, width=420, height=300)
        )
        # The legend selection is defined once (first panel) and used by both: Vega-Lite
        # lifts it to the top level, so one click highlights the method in both panels.
        panels.append(panel.add_params(pick) if not panels else panel)
    return alt.hconcat(*panels).properties(
        title=alt.TitleParams(
            text=title,
            subtitle="One line per run (experiment x seed). Click a legend entry to highlight it.",
            anchor="start",
        )
    )


def legend_colors(summary: pd.DataFrame) -> dict[str, str]:
    """Colour of every ``method_key`` in ``summary`` (all tasks and sources), stable order."""
    pairs = families_of(summary)
    colors = method_colors(pairs)
    return {method_key(m, f): colors[m] for m, f in pairs.items()}
