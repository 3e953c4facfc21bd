"""The report's charts (Altair): quality against a cost with the noise-aware Pareto frontier,
and learning curves. One palette everywhere (:mod:`peftbench.report.chart_palette`): a colour
per method, shaded by family, and a marker shape per experiment, distinct within its family.

One frontier chart, :func:`frontier_chart`, draws both ``results/<task>/pareto.*`` and the
report's trade-off charts; axis titles and directions come from the glossary. Its points carry
numbers, placed in Python so that no two labels ever overlap
(:mod:`peftbench.report.chart_layout`); the legend, one per source and never truncated, names
each number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import altair as alt
import numpy as np
import pandas as pd

from peftbench.analysis.comparable import SCORE_COLUMN
from peftbench.analysis.frontier import Direction
from peftbench.analysis.glossary import axis_title, direction, fraction_columns, side_effect_columns
from peftbench.analysis.noise import NO_NOISE
from peftbench.analysis.summary import SOURCE_PUBLISHED, SOURCE_THIS_RUN, families_of
from peftbench.report.chart_layout import (
    COMPACT_LABEL_EXPR,
    Box,
    Label,
    Scale,
    compact_number,
    linear_ticks,
    log_ticks,
    marker_box,
    marker_radius,
    padded_domain,
    place_labels,
    place_line_label,
    text_size,
)
from peftbench.report.chart_palette import (
    DASHES,
    MARKERS,
    experiment_markers,
    experiment_order,
    method_color,
)
from peftbench.report.frontier_text import (
    lead_text,
    point_label,
    quality_text,
    score_title,
    subtitle_lines,
)

_title = axis_title

#: The sources in the order they are numbered and drawn.
SOURCES: tuple[str, ...] = (SOURCE_THIS_RUN, SOURCE_PUBLISHED)

# Marker areas (square pixels) of the points, the base model's diamond and the within-noise
# ring; the label placement keeps clear of each.
_POINT_SIZE, _BASE_SIZE, _RING_SIZE = 80, 160, 320
_NUMBER_FONT, _BASE_FONT = 11, 10
_BASE_TEXT = "base model (no fine-tuning)"
# Legend rows per column before a legend wraps into another column.
_LEGEND_ROWS = 32


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
        ("number", "quantitative", "Number", None),
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


def _use_log(values: pd.Series) -> bool:
    """A log axis for positive values spanning more than two orders of magnitude."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(values) > 1 and (values > 0).all() and values.max() / values.min() > 100)


def _overlap(a: pd.Series, b: pd.Series) -> bool:
    """Whether two value ranges overlap (so both sources can share an axis)."""
    a, b = a.dropna(), b.dropna()
    return bool(len(a) and len(b) and a.min() <= b.max() and b.min() <= a.max())


def _styles(data: pd.DataFrame, colors: Mapping[str, str]) -> pd.DataFrame:
    """Number, legend entry, colour and marker of every experiment of ``data``.

    Numbers follow the source, family, method and experiment over every row of the table,
    drawn or not, so one experiment has the same number in every chart of one table's task;
    markers are distinct within a family and source (:func:`experiment_markers`).
    """
    data = data.copy()
    ordered = experiment_order(data[~data["is_base"]], SOURCES)
    numbers = {pair: i + 1 for i, pair in enumerate(ordered)}
    markers = {
        source: experiment_markers(data[(data["source"] == source) & ~data["is_base"]])
        for source in SOURCES
    }
    pairs = list(zip(data["source"], data["experiment"], strict=True))
    data["number"] = pd.array([numbers.get(pair) for pair in pairs], dtype="Int64")
    data["shape"] = [markers.get(s, {}).get(e, MARKERS[0]) for s, e in pairs]
    data["color"] = [
        colors.get(method_key(m, f)) or method_color(m, f)
        for m, f in zip(data["method"], data["family"], strict=True)
    ]
    # The legend entry: the number, then the experiment with its P(frontier) and ≈. An en
    # space, since SVG collapses a run of ordinary spaces.
    data["key"] = [
        None if pd.isna(n) else f"{int(n)}\u2002{label}"
        for n, label in zip(data["number"], data["label"], strict=True)
    ]
    return data


def _frontier_data(
    table: pd.DataFrame, x: str, y: str, log_x: bool, colors: Mapping[str, str]
) -> tuple[pd.DataFrame, int]:
    """Rows to draw, with flag columns that select each layer's subset and the style of each
    experiment; and how many rows of ``table`` are not drawn."""
    data = table.copy()
    if log_x:
        # A log axis cannot place 0 (the base model's trainable parameters): such rows are
        # drawn like rows without the value (the base model becomes a reference line).
        data.loc[pd.to_numeric(data[x], errors="coerce") <= 0, x] = np.nan
    data["is_base"] = (data["family"] == "base").to_numpy()
    data["within_noise_flag"] = data["within_noise"].fillna(False).astype(bool).to_numpy()
    data["label"] = [point_label(row) for _, row in data.iterrows()]
    data = _styles(data, colors)
    data = data[data[y].notna() & (data[x].notna() | data["is_base"])].reset_index(drop=True)
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
    data["method_key"] = [
        method_key(m, f) for m, f in zip(data["method"], data["family"], strict=True)
    ]
    keep = {c for c, *_ in _tooltip_fields("")} | {
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
        "key",
        "shape",
        "color",
    }
    return data[[c for c in data.columns if c in keep]], len(table) - len(data)


def _quality_domain(data: pd.DataFrame, y: str) -> tuple[float, float]:
    """The y domain: padded around the values and intervals, clipped to [0, 1] for share-like
    metrics (the glossary's fractions) whose values are within those bounds."""
    # The base model's interval is not drawn, so it does not widen the axis.
    bars = data[~data["is_base"]]
    values = pd.concat([data[y], bars["y_low"], bars["y_high"]])
    values = [float(v) for v in pd.to_numeric(values, errors="coerce").dropna()]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    margin = 0.08 * (high - low) if high > low else 0.05
    bottom, top = low - margin, high + margin
    if y in fraction_columns():
        # Clipped to the bounds only when the data is within them (a cosine similarity can
        # dip below 0), so no point falls outside the axis.
        bottom = max(0.0, bottom) if low >= 0 else bottom
        top = min(1.0, top) if high <= 1 else top
    return bottom, top


def _axis(scale: Scale, title: str, vertical: bool) -> tuple[alt.Scale, alt.Axis]:
    """The Vega-Lite scale (the explicit domain the pixel geometry assumes) and an axis whose
    tick labels fit side by side (or stacked) without touching."""
    room = 24.0 if vertical else None
    ticks: list[float] = []
    max_ticks = 12
    while max_ticks >= 2:
        if scale.log:
            ticks = log_ticks(scale.low, scale.high, max_ticks)
            labels = [compact_number(t) for t in ticks]
            decimals = 0
        else:
            ticks, decimals = linear_ticks(scale.low, scale.high, max_ticks)
            labels = [f"{t:,.{decimals}f}" for t in ticks]
        widest = max(text_size(label, 10)[0] for label in labels)
        need = (room or widest + 14) * len(ticks)
        if need <= scale.pixels:
            break
        max_ticks -= 1
    vl_scale = alt.Scale(
        type="log" if scale.log else "linear",
        domain=[scale.low, scale.high],
        nice=False,
        padding=0,
        # A log scale has no zero to include (Vega-Lite warns on the setting).
        **({} if scale.log else {"zero": False}),
    )
    options: dict[str, Any] = {"values": ticks, "title": title, "labelOverlap": True}
    if scale.log:
        options["labelExpr"] = COMPACT_LABEL_EXPR
    else:
        options["format"] = f",.{decimals}f"
    return vl_scale, alt.Axis(**options)


def _place(
    data: pd.DataFrame, x: str, y: str, xs: Scale, ys: Scale
) -> tuple[pd.DataFrame, list[str]]:
    """Label positions (data coordinates) of the panel's points and base model, with leader
    lines where a label sits away from its point; and the labels that found no free spot."""
    data = data.copy()
    px = [xs.to_px(v) if has else math.nan for v, has in zip(data[x], data["has_x"], strict=True)]
    py = [ys.to_px(v) for v in data[y]]
    obstacles: list[Box] = []
    for i, row in enumerate(data.itertuples()):
        if not row.has_x:
            continue
        size = _BASE_SIZE if row.is_base else _POINT_SIZE
        obstacles.append(marker_box(px[i], py[i], marker_radius(size)))
        if row.on_frontier and row.within_noise_flag:
            obstacles.append(marker_box(px[i], py[i], marker_radius(_RING_SIZE)))
        if row.has_interval and not row.is_base:
            top, bottom = ys.to_px(row.y_high), ys.to_px(row.y_low)
            obstacles.append(Box(px[i] - 2, min(top, bottom), px[i] + 2, max(top, bottom)))
    # Built as plain lists: a missing label must be None in the spec, never NaN (which strict
    # JSON, and so the report's pages, refuse).
    texts: list[str | None] = [None] * len(data)
    spots: list[tuple[float, float] | None] = [None] * len(data)
    leaders: list[tuple[float, float, float, float] | None] = [None] * len(data)
    taken = list(obstacles)
    # The base model first (its line spans the plot), then the frontier points, then the rest,
    # each by number: the important labels get the spots nearest their points.
    order = sorted(
        range(len(data)),
        key=lambda i: (
            not data["is_base"].iloc[i],
            not bool(data["on_frontier"].iloc[i]),
            0 if pd.isna(data["number"].iloc[i]) else int(data["number"].iloc[i]),
        ),
    )
    missing = []
    for i in order:
        row = data.iloc[i]
        if row["is_base"] and not row["has_x"]:
            text = _BASE_TEXT
            spot = place_line_label(text, py[i], taken, xs.pixels, ys.pixels, _BASE_FONT)
        else:
            text = "base model" if row["is_base"] else str(int(row["number"]))
            size = _BASE_SIZE if row["is_base"] else _POINT_SIZE
            font = _BASE_FONT if row["is_base"] else _NUMBER_FONT
            bold = bool(row["on_frontier"]) and not row["is_base"]
            label = Label(text, px[i], py[i], marker_radius(size), font, bold)
            spot = place_labels([label], taken, xs.pixels, ys.pixels)[0]
        if spot is None:
            missing.append(text)
            continue
        taken.append(spot.box)
        texts[i] = text
        spots[i] = (xs.from_px(spot.cx), ys.from_px(spot.cy))
        if spot.leader:
            end_x, end_y = spot.box.nearest_point(px[i], py[i])
            leaders[i] = (row[x], row[y], xs.from_px(end_x), ys.from_px(end_y))
    data["label_text"] = pd.Series(texts, index=data.index, dtype=object)
    data["label_x"] = [np.nan if s is None else s[0] for s in spots]
    data["label_y"] = [np.nan if s is None else s[1] for s in spots]
    data["leader"] = [lead is not None for lead in leaders]
    for k, column in enumerate(("leader_x0", "leader_y0", "leader_x1", "leader_y1")):
        data[column] = [np.nan if lead is None else float(lead[k]) for lead in leaders]
    return data, missing


def _legend(title: str, count: int) -> alt.Legend:
    """A legend that lists every entry in full (Vega drops entries past 30 and cuts labels
    at 160 pixels by default), wrapping into columns when long."""
    columns = max(1, math.ceil(count / _LEGEND_ROWS))
    return alt.Legend(
        title=title,
        symbolLimit=max(count, 1),
        labelLimit=0,
        columns=columns,
        orient="right",
    )


def _points_layers(
    base: alt.Chart, data: pd.DataFrame, x_enc: alt.X, y_enc: alt.Y, tooltips: list
) -> list[alt.Chart]:
    """One layer of numbered points per source, with its own legend: this run's filled,
    published ones hollow."""
    layers = []
    for source in SOURCES:
        rows = data[(data["source"] == source) & data["has_x"] & ~data["is_base"]]
        if rows.empty:
            continue
        rows = rows.sort_values("number")
        keys = rows["key"].tolist()
        color = alt.Color(
            "key:N",
            scale=alt.Scale(domain=keys, range=rows["color"].tolist()),
            legend=_legend(source.capitalize(), len(keys)),
            sort=keys,
        )
        shape = alt.Shape(
            "key:N",
            scale=alt.Scale(domain=keys, range=rows["shape"].tolist()),
            legend=_legend(source.capitalize(), len(keys)),
            sort=keys,
        )
        filled = source != SOURCE_PUBLISHED
        mark: dict[str, Any] = {"filled": filled, "size": _POINT_SIZE, "opacity": 0.9}
        if not filled:
            mark["strokeWidth"] = 1.8
        test = f"datum.source === {source!r} && datum.has_x && !datum.is_base"
        layers.append(
            base.transform_filter(test)
            .mark_point(**mark)
            .encode(x=x_enc, y=y_enc, color=color, shape=shape, tooltip=tooltips)
        )
    return layers


def _panel(
    data: pd.DataFrame,
    x: str,
    y: str,
    x_dir: Direction,
    log_x: bool,
    y_title: str,
    size: tuple[int, int],
) -> tuple[alt.LayerChart, list[str]]:
    """One trade-off panel (one or both sources) and the labels that found no spot."""
    width, height = size
    x_values = pd.to_numeric(data.loc[data["has_x"], x], errors="coerce").tolist()
    xs = Scale(*padded_domain(x_values, log_x), width, log=log_x)
    ys = Scale(*_quality_domain(data, y), height, flip=True)
    data, missing = _place(data, x, y, xs, ys)
    x_scale, x_axis = _axis(xs, _title(x), vertical=False)
    y_scale, y_axis = _axis(ys, y_title, vertical=True)

    def x_at(field: str) -> alt.X:
        return alt.X(f"{field}:Q", scale=x_scale, axis=x_axis, title=_title(x))

    def y_at(field: str) -> alt.Y:
        return alt.Y(f"{field}:Q", scale=y_scale, axis=y_axis, title=y_title)

    x_enc, y_enc = x_at(x), y_at(y)
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
    # Marks coloured straight from the data (no scale, no legend): the colour is the method's.
    own_color = alt.Color("color:N", scale=None)
    step = "step-after" if x_dir == "min" else "step-before"
    layers: list[alt.Chart] = []
    if data["has_interval"].any():
        layers.append(
            base.transform_filter("datum.has_x && datum.has_interval && !datum.is_base")
            .mark_rule(opacity=0.55, strokeWidth=1.5)
            .encode(x=x_enc, y=y_at("y_low"), y2="y_high:Q", color=own_color)
        )
    layers += [
        # For a minimised x the attainment boundary holds y until the next point (step-after);
        # for a maximised x it changes at the current point (step-before).
        base.transform_filter("datum.on_frontier && datum.has_x")
        .mark_line(interpolate=step, color="gray", strokeDash=[6, 3], opacity=0.8)
        .encode(x=x_enc, y=y_enc, detail="source:N"),
        base.transform_filter("datum.leader")
        .mark_rule(color="#777", strokeWidth=0.8)
        .encode(x=x_at("leader_x0"), y=y_at("leader_y0"), x2="leader_x1:Q", y2="leader_y1:Q"),
        *_points_layers(base, data, x_enc, y_enc, tooltips),
        # Frontier points whose lead over the next one is within noise: a dashed ring.
        base.transform_filter("datum.on_frontier && datum.has_x && datum.within_noise_flag")
        .mark_point(shape="circle", size=_RING_SIZE, filled=False, color="#555", strokeDash=[2, 2])
        .encode(x=x_enc, y=y_enc, tooltip=tooltips),
        # The base model: a black diamond where it has an x value, else a dashed line.
        base.transform_filter("datum.has_x && datum.is_base")
        .mark_point(shape="diamond", filled=True, size=_BASE_SIZE, color="black")
        .encode(x=x_enc, y=y_enc, tooltip=tooltips),
        base.transform_filter("!datum.has_x && datum.is_base")
        .mark_rule(color="black", strokeDash=[4, 4])
        .encode(y=y_enc, tooltip=tooltips),
    ]
    # The labels: bold numbers on the frontier, plain ones off it, the base model's words.
    for test, weight, font in (
        ("datum.label_text && datum.on_frontier && !datum.is_base", "bold", _NUMBER_FONT),
        ("datum.label_text && !datum.on_frontier && !datum.is_base", "normal", _NUMBER_FONT),
        ("datum.label_text && datum.is_base", "normal", _BASE_FONT),
    ):
        layers.append(
            base.transform_filter(test)
            .mark_text(align="center", baseline="middle", fontSize=font, fontWeight=weight)
            .encode(
                x=x_at("label_x"), y=y_at("label_y"), text="label_text:N", color=alt.value("#222")
            )
        )
    chart = alt.layer(*layers).resolve_scale(color="independent", shape="independent")
    return chart.properties(width=width, height=height), missing


def _size(data: pd.DataFrame, width: int, height: int) -> tuple[int, int]:
    """A panel's size: the nominal one, grown with the number of points past 30 (four pixels
    each way per point, up to 50% more), so that a crowded panel keeps room for its labels."""
    extra = min(4 * max(0, int(data["has_x"].sum()) - 30), width // 2, height // 2)
    return width + extra, height + extra


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
    bootstrap intervals; frontier points are joined by a step line. Every point carries a
    number (bold on the frontier), placed where it overlaps no other label, marker or bar,
    with a leader line when it had to move away; the legend (one per source, every entry,
    never truncated) names each number's experiment with how often it is on the frontier and
    "≈" where its lead over the next frontier point is within noise (also a dashed ring). An
    experiment without measured noise (one run, no per-item scores: published rows) has no
    bar and no share, and its leads are not judged. The y axis is titled by the score this
    run's rows hold (``score`` column: the published-compatible score beside published rows).
    Published rows are hollow; when their ``x`` range does not overlap this run's (a
    different model or hardware), they get their own panel side by side (``layout="auto"``).
    ``colors`` maps :func:`method_key` values to colours (:func:`legend_colors`); a method
    missing from it gets its palette colour. A positive ``x`` spanning more than two orders of
    magnitude gets a log axis.
    """
    x_dir = x_dir or direction(x) or "min"
    log_x = _use_log(table.loc[table["family"] != "base", x])
    data, not_drawn = _frontier_data(table, x, y, log_x, colors)
    y_title = score_title(table, y)
    sources = [s for s in SOURCES if (data["source"] == s).any()]
    if layout == "auto":
        layout = "overlay"
        if len(sources) == 2:
            this_run = data.loc[data["source"] == SOURCE_THIS_RUN, x]
            published = data.loc[data["source"] == SOURCE_PUBLISHED, x]
            layout = "overlay" if _overlap(this_run, published) else "side"
    missing: list[str] = []
    if layout == "side" and len(sources) == 2:
        panels = []
        for source in sources:
            subset = data[data["source"] == source].reset_index(drop=True)
            log_panel = _use_log(subset.loc[~subset["is_base"], x])
            panel, lost = _panel(subset, x, y, x_dir, log_panel, y_title, _size(subset, 460, 380))
            missing += lost
            panels.append(panel.properties(title=f"{source}"))
        chart: alt.TopLevelMixin = alt.hconcat(*panels).resolve_scale(
            x="independent", y="independent", color="independent", shape="independent"
        )
    else:
        chart, missing = _panel(data, x, y, x_dir, log_x, y_title, _size(data, 640, 420))
    subtitle = subtitle_lines(data, y_title, axis_title(y), not_drawn)
    subtitle.append(
        "Numbers: the experiments of the legend (bold: on the frontier); hollow marks: "
        "published results."
        if (data["source"] == SOURCE_PUBLISHED).any()
        else "Numbers: the experiments of the legend (bold: on the frontier)."
    )
    if _BASE_TEXT in missing:
        subtitle.append(f"Black dashed line: the {_BASE_TEXT}.")
    numbers = [text for text in missing if text != _BASE_TEXT]
    if numbers:
        subtitle.append(
            f"Point(s) {', '.join(numbers)} unnumbered: no free spot; hover the points."
        )
    return chart.properties(title=alt.TitleParams(text=title, subtitle=subtitle, anchor="start"))


def learning_curves_chart(
    curves: pd.DataFrame,
    colors: Mapping[str, str],
    title: str,
    *,
    validation_title: str = "Validation accuracy",
) -> alt.TopLevelMixin:
    """Training loss and the validation metric against the step, one line per run.

    ``curves`` is the long table of :func:`peftbench.analysis.summary.curves_table` (one task and
    source). Colours as in :func:`frontier_chart` (the method's); every experiment has its own
    marker and dash, distinct within its family; the legend lists the experiments of
    ``curves`` only. Clicking a legend entry highlights that experiment.
    """
    data = curves.copy()
    data["method_key"] = [
        method_key(m, f) for m, f in zip(data["method"], data["family"], strict=True)
    ]
    data["run"] = [f"{e} seed {s}" for e, s in zip(data["experiment"], data["seed"], strict=True)]
    columns = ["experiment", "method", "method_key", "family", "seed", "run", "step", "metric"]
    data = data[[*columns, "value"]]
    experiments = data.drop_duplicates("experiment")
    markers = experiment_markers(experiments)
    order = list(markers)  # by family, method and experiment, as the frontier charts number
    first = experiments.set_index("experiment")
    palette = [
        colors.get(first.loc[e, "method_key"])
        or method_color(first.loc[e, "method"], first.loc[e, "family"])
        for e in order
    ]
    shapes = [markers[e] for e in order]
    dashes = [DASHES[MARKERS.index(s)] for s in shapes]
    legend = _legend("Experiment", len(order))
    pick = alt.selection_point(fields=["experiment"], bind="legend")
    color = alt.Color(
        "experiment:N", scale=alt.Scale(domain=order, range=palette), legend=legend, sort=order
    )
    shape = alt.Shape(
        "experiment:N", scale=alt.Scale(domain=order, range=shapes), legend=legend, sort=order
    )
    dash = alt.StrokeDash(
        "experiment:N", scale=alt.Scale(domain=order, range=dashes), legend=legend, sort=order
    )
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
            .mark_line(point=alt.OverlayMarkDef(size=30, filled=True), strokeWidth=1.6)
            .encode(
                x=alt.X("step:Q", title="Step"),
                y=alt.Y("value:Q", title=axis, scale=alt.Scale(zero=False)),
                color=color,
                shape=shape,
                strokeDash=dash,
                detail="run:N",
                opacity=alt.condition(pick, alt.value(0.95), alt.value(0.12)),
                tooltip=tooltips,
            )
            .properties(title=axis, width=420, height=300)
        )
        # The legend selection is defined once (first panel) and used by both: Vega-Lite
        # lifts it to the top level, so one click highlights the experiment in both panels.
        panels.append(panel.add_params(pick) if not panels else panel)
    return alt.hconcat(*panels).properties(
        title=alt.TitleParams(
            text=title,
            subtitle="One line per run (experiment x seed). Click a legend entry to highlight it.",
            anchor="start",
        )
    )


def legend_colors(summary: pd.DataFrame) -> dict[str, str]:
    """Colour of every ``method_key`` in ``summary``, stable order. A method's colour depends
    on the method and its family only (:func:`~peftbench.report.chart_palette.method_color`),
    so every chart and page gives it the same colour, whatever else the table holds."""
    return {method_key(m, f): method_color(m, f) for m, f in families_of(summary).items()}
