"""Pareto charts of the summary table (Altair), saved as offline HTML and PNG."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import altair as alt
import numpy as np
import pandas as pd
import vl_convert as vlc

from peftbench.analysis.aggregate import BASE_METHOD, ci_columns
from peftbench.analysis.pareto import METRIC_DIRECTIONS, Direction, frontier_line
from peftbench.core.io import atomic_path

#: Human-readable axis titles of summary columns; other columns use their own name.
AXIS_TITLES: dict[str, str] = {
    "test_accuracy": "Test accuracy",
    "similarity": "Test similarity",
    "valid_accuracy_final": "Final validation accuracy",
    "valid_similarity_final": "Final validation similarity",
    "valid_accuracy": "Validation accuracy",
    "valid_similarity": "Validation similarity",
    "train_memory_gb": "Peak training memory (GB)",
    "train_memory_allocated_gb": "Peak allocated training memory (GB)",
    "eval_memory_gb": "Peak evaluation memory (GB)",
    "train_time_min": "Training time (min)",
    "eval_time_min": "Evaluation time (min)",
    "generation_time_min": "Test image generation time (min)",
    "train_tokens_per_s": "Training throughput (tokens/s)",
    "train_samples": "Training samples (images)",
    "trainable_params": "Trainable parameters",
    "trainable_pct": "Trainable parameters (%)",
    "file_size_mb": "Checkpoint size (MB)",
    "forgetting": "Forgetting (held-out loss increase)",
    "drift": "Drift (lower is better)",
    "train_loss_final": "Final training loss",
}

# A remote <script src="http..."> would make the "offline" HTML need the network.
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)


def _title(column: str) -> str:
    return AXIS_TITLES.get(column, column)


def interval_text(value: Any, low: Any, high: Any) -> str:
    """A value with its interval, e.g. ``0.412 [0.381, 0.444]``; "" when the value is missing."""
    if pd.isna(value):
        return ""
    if pd.isna(low) or pd.isna(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _plot_data(
    df: pd.DataFrame, x: str, y: str, x_dir: Direction, y_dir: Direction
) -> pd.DataFrame:
    """Rows to draw, with flag columns that select each layer's subset.

    One table feeds every layer (filtered per layer) so the data is embedded in the
    HTML once. ``y_low`` / ``y_high`` are the run's stored interval of ``y`` (NaN without).
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
        "train_memory_gb",
        "train_time_min",
        "trainable_params",
        "lr",
        x,
        y,
    ]
    keep = list(dict.fromkeys(c for c in tooltip_columns if c in data.columns))
    plot = data[keep].copy()
    low, high = ci_columns(y)
    nan = pd.Series(np.nan, index=data.index)
    plot["y_low"] = data[low] if low in data.columns else nan
    plot["y_high"] = data[high] if high in data.columns else nan
    plot["is_base"] = (data["method"] == BASE_METHOD).to_numpy()
    plot["has_x"] = data[x].notna().to_numpy()
    plot["has_interval"] = (plot["y_low"].notna() & plot["y_high"].notna()).to_numpy()
    plot["quality_ci"] = [
        interval_text(v, lo, hi)
        for v, lo, hi in zip(plot[y], plot["y_low"], plot["y_high"], strict=True)
    ]
    frontier = frontier_line(plot[plot["has_x"]], x, y, x_dir, y_dir)
    plot["on_frontier"] = plot.index.isin(frontier.index)
    return plot


def _tooltips(plot: pd.DataFrame, x: str, y: str) -> list[alt.Tooltip]:
    """Tooltip fields that exist in the plotted data."""
    # (column, vega-lite type, title, d3 format)
    candidates = [
        ("experiment", "nominal", "Experiment", None),
        ("method", "nominal", "Method", None),
        ("seed", "quantitative", "Seed", None),
        ("quality_ci", "nominal", f"{_title(y)} [95% CI]", None),
        ("train_memory_gb", "quantitative", _title("train_memory_gb"), ".2f"),
        ("train_time_min", "quantitative", _title("train_time_min"), ".1f"),
        ("trainable_params", "quantitative", _title("trainable_params"), ","),
        ("lr", "quantitative", "Learning rate", ".3~e"),
    ]
    fields = [c[0] for c in candidates]
    # Custom axes (e.g. file size) also show their own value; y is in quality_ci.
    if x not in fields and x != y:
        candidates.append((x, "quantitative", _title(x), ".4~g"))
    tooltips = []
    for field, kind, title, fmt in candidates:
        if field in plot.columns:
            extra = {} if fmt is None else {"format": fmt}
            tooltips.append(alt.Tooltip(field=field, type=kind, title=title, **extra))
    return tooltips


def _interval_layer(
    base: alt.Chart, x_enc: alt.X, y: str, y_scale: alt.Scale, color: alt.Color, **mark: Any
) -> alt.Chart:
    """Error bars from ``y_low`` to ``y_high`` (interval columns of the data)."""
    return (
        base.transform_filter("datum.has_x && datum.has_interval && !datum.is_base")
        .mark_rule(**mark)
        .encode(
            x=x_enc,
            # The same scale as the points: a rule's y otherwise defaults to including zero.
            y=alt.Y("y_low:Q", title=_title(y), scale=y_scale),
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

    ``df`` is a summary table (``peftbench.analysis.aggregate.summarize``) of one task; ``y`` is its
    quality column (e.g. ``test_accuracy`` or ``similarity``), with error bars where the
    summary has the run's interval ``<y>_ci_low`` / ``<y>_ci_high``. Failed rows and rows
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
    y_scale = alt.Scale(zero=False, padding=16)
    y_enc = alt.Y(f"{y}:Q", title=_title(y), scale=y_scale)
    tooltips = _tooltips(plot, x, y)
    base = alt.Chart(plot)

    layers: list[alt.Chart] = []
    if plot["has_interval"].any():
        layers.append(_interval_layer(base, x_enc, y, y_scale, color, opacity=0.6))
    layers += [
        _frontier_step_layer(base, x_enc, y_enc, x_dir),
        base.transform_filter("datum.has_x && !datum.is_base")
        .mark_point(filled=True, size=70, opacity=0.9)
        .encode(x=x_enc, y=y_enc, color=color, tooltip=tooltips),
        *_base_layers(base, x_enc, y_enc, tooltips),
        base.transform_filter("datum.on_frontier && datum.has_x")
        .mark_text(align="left", baseline="bottom", dx=6, dy=-4, fontSize=10)
        .encode(x=x_enc, y=y_enc, text="experiment:N"),
    ]
    return alt.layer(*layers).properties(
        title=title or f"{_title(y)} vs {_title(x)}", width=640, height=420
    )


def save_chart(
    chart: alt.TopLevelMixin,
    html_path: Path | str,
    png_path: Path | str | None = None,
    svg_path: Path | str | None = None,
    *,
    caption_html: str = "",
) -> None:
    """Save ``chart`` as self-contained HTML (works offline), PNG and SVG, each atomically.

    The HTML inlines the Vega, Vega-Lite and vega-embed JavaScript (via vl-convert), so it
    opens without network access; RuntimeError is raised if it would still load a remote
    script. Text from the data (experiment names, errors) is escaped (see
    :func:`charts_page_html`). The PNG is rendered by vl-convert at twice the nominal size;
    ``caption_html`` (trusted HTML) is shown under the chart.
    """
    with atomic_path(html_path) as tmp:
        page = charts_page_html([("", caption_html, chart)], title=_chart_title(chart))
        if _REMOTE_SCRIPT.search(page):
            raise RuntimeError(f"{html_path}: chart HTML references a remote script")
        tmp.write_text(page, encoding="utf-8")
    if png_path is not None:
        with atomic_path(png_path) as tmp:
            chart.save(tmp, format="png", scale_factor=2)
    if svg_path is not None:
        with atomic_path(svg_path) as tmp:
            chart.save(tmp, format="svg")


def _chart_title(chart: alt.TopLevelMixin) -> str:
    """Plain-text title of a chart (for the HTML page title), or "Chart"."""
    title = chart.to_dict().get("title")
    if isinstance(title, dict):
        title = title.get("text")
    if isinstance(title, list):
        title = " ".join(map(str, title))
    return str(title) if title else "Chart"


@cache
def _vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one inline script (no network), built once."""
    bundle = vlc.javascript_bundle()
    # Inlined into a <script> element, the bundle must not contain its closing tag.
    if re.search(r"</script", bundle, re.IGNORECASE):
        raise RuntimeError("vl-convert JavaScript bundle contains '</script'")
    return bundle


def script_json(value: Any) -> str:
    """JSON for a ``<script>`` block: ``<``, ``>``, ``&`` and line separators as \\u escapes.

    Plain json.dumps would let a string such as ``</script><script>...`` (an experiment
    name, an error message) end the script element and inject markup.
    """
    text = json.dumps(value, allow_nan=False, default=str)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


#: Embed options of every chart: SVG rendering (crisp, and testable in the DOM) and an
#: actions menu without the links that need the network (Vega editor).
EMBED_OPTIONS: dict[str, Any] = {
    "renderer": "svg",
    "actions": {"export": True, "source": True, "compiled": False, "editor": False},
}

PAGE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem;
       color: #222; max-width: 1400px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
.caption { max-width: 70rem; font-size: 0.9rem; color: #444; }
.chart { margin: 0.5rem 0 1.5rem 0; }
.chart-error { color: #b00; font-weight: bold; }
table.sortable { border-collapse: collapse; font-size: 0.8rem; margin: 0.5rem 0 1.5rem 0; }
table.sortable th, table.sortable td { border: 1px solid #ccc; padding: 2px 6px; text-align: left;
       vertical-align: top; }
table.sortable th { background: #f0f0f0; cursor: pointer; position: sticky; top: 0; }
table.sortable th:after { content: " \\2195"; color: #999; }
table.sortable td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fff0f0; } tr.published td { background: #f4f8ff; }
tr.frontier td:first-child { font-weight: bold; }
details { margin: 0.3rem 0; } summary { cursor: pointer; }
pre { background: #f7f7f7; padding: 0.5rem; overflow-x: auto; font-size: 0.75rem; }
.warning { color: #8a4b00; }
"""


def charts_page_html(
    sections: Sequence[tuple[str, str, alt.TopLevelMixin | None]],
    title: str,
    *,
    intro_html: str = "",
    extra_html: str = "",
) -> str:
    """A self-contained HTML page with several charts sharing one inline copy of Vega.

    ``sections`` are ``(heading, caption_html, chart)``; the heading and ``title`` are plain
    text (escaped here), captions and ``intro_html`` / ``extra_html`` are trusted HTML built by
    the caller with escaped data. Chart specs are embedded with :func:`script_json`, so no
    data value can break out of its script element. A chart that fails to render shows an
    error message in the page (and sets ``data-error`` on its element).
    """
    blocks = []
    specs = []
    for number, (heading, caption, chart) in enumerate(sections):
        if heading:
            blocks.append(f"<h2>{html.escape(heading)}</h2>")
        if chart is not None:
            blocks.append(f'<div class="chart" id="chart{number}"></div>')
            specs.append((f"chart{number}", chart.to_dict()))
        if caption:
            blocks.append(f'<div class="caption">{caption}</div>')
    calls = "\n".join(
        f"vegaEmbed('#{element}', {script_json(spec)}, embedOptions)"
        f".then(function () {{ document.getElementById('{element}').dataset.rendered = '1'; }})"
        f".catch(function (e) {{ showError('{element}', e); }});"
        for element, spec in specs
    )
    body = f"""{intro_html}
{"".join(blocks)}
{extra_html}
<script>
var embedOptions = {script_json(EMBED_OPTIONS)};
function showError(element, error) {{
  var node = document.getElementById(element);
  node.dataset.error = String(error);
  node.className = "chart chart-error";
  node.textContent = "Chart failed to render: " + error;
}}
{calls}
</script>"""
    return page_html(title, body, head=f"<script>{_vega_bundle()}</script>")


def page_html(title: str, body: str, head: str = "") -> str:
    """A self-contained HTML page: inline style, the table-sorting script, extra ``head``.

    ``title`` is plain text (escaped here); ``body`` and ``head`` are trusted HTML."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{PAGE_STYLE}</style>
{head}
</head>
<body>
<h1>{html.escape(title)}</h1>
{body}
{SORTABLE_SCRIPT}
</body>
</html>
"""


#: Click a column header of a ``table.sortable`` to sort by it (again to reverse). Cells
#: sort by their ``data-v`` value when present (raw numbers), else by text; empty last.
SORTABLE_SCRIPT = """<script>
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = th.dataset.order !== "asc";
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = ascending ? "asc" : "desc";
      function key(row) {
        var cell = row.cells[column];
        var raw = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
        var number = parseFloat(raw);
        return raw === "" ? null : (isNaN(number) || !/^[-+0-9.eE]+$/.test(raw) ? raw : number);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) return y === null ? 0 : 1;
        if (y === null) return -1;
        var order = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                            : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
</script>"""


# ---------------------------------------------------------------------------------------------
# Report charts: noise-aware trade-offs and learning curves, coloured by method family.
# ---------------------------------------------------------------------------------------------

#: Mark of each result source: this workflow's runs and imported published results.
SOURCE_SHAPES: dict[str, str] = {"this run": "circle", "published": "triangle-up"}

_TRADEOFF_TOOLTIPS = [
    # (column, vega-lite type, title, d3 format)
    ("experiment", "nominal", "Experiment", None),
    ("family", "nominal", "Family", None),
    ("source", "nominal", "Source", None),
    ("quality_text", "nominal", "Quality [95% interval]", None),
    ("frontier_prob", "quantitative", "P(on frontier)", ".0%"),
    ("lead_text", "nominal", "Lead over next frontier point", None),
    ("n_seeds", "quantitative", "Seeds", None),
    ("noise", "nominal", "Noise model", None),
    ("train_memory_gb", "quantitative", AXIS_TITLES["train_memory_gb"], ".3f"),
    ("train_time_min", "quantitative", AXIS_TITLES["train_time_min"], ".2f"),
    ("trainable_params", "quantitative", AXIS_TITLES["trainable_params"], ","),
    ("file_size_mb", "quantitative", AXIS_TITLES["file_size_mb"], ".3f"),
    ("forgetting", "quantitative", AXIS_TITLES["forgetting"], ".3f"),
    ("drift", "quantitative", AXIS_TITLES["drift"], ".3f"),
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


def _lead_text(row: pd.Series) -> str:
    if pd.isna(row.get("lead")):
        return ""
    verdict = "within noise" if bool(row.get("within_noise")) else "beyond noise"
    return (
        f"+{row['lead']:.3f} [{row['lead_low']:.3f}, {row['lead_high']:.3f}] over "
        f"{row['next']}, P(better) {row['lead_prob']:.0%}: {verdict}"
    )


def _tradeoff_data(table: pd.DataFrame, x: str, y: str, log_x: bool) -> pd.DataFrame:
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
    # The bootstrap interval, under the names the shared interval layer reads.
    data["y_low"], data["y_high"] = data[f"{y}_low"], data[f"{y}_high"]
    data["has_interval"] = (data["y_low"].notna() & data["y_high"].notna()).to_numpy()
    data["quality_text"] = [
        interval_text(v, lo, hi)
        for v, lo, hi in zip(data[y], data["y_low"], data["y_high"], strict=True)
    ]
    data["lead_text"] = [_lead_text(row) for _, row in data.iterrows()]
    data["within_noise_flag"] = data["within_noise"].fillna(False).astype(bool).to_numpy()
    data["label"] = [
        f"{row['experiment']} · {row['frontier_prob']:.0%}"
        + (" ≈" if row["within_noise_flag"] else "")
        for _, row in data.iterrows()
    ]
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
    keep = {c for c, *_ in _TRADEOFF_TOOLTIPS} | {
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


def _tradeoff_layers(
    data: pd.DataFrame,
    x: str,
    y: str,
    x_dir: Direction,
    colors: Mapping[str, str],
    log_x: bool,
) -> list[alt.Chart]:
    """Layers of one trade-off panel (one or both sources)."""
    x_scale = alt.Scale(type="log") if log_x else alt.Scale(zero=False, padding=16)
    x_enc = alt.X(f"{x}:Q", title=_title(x), scale=x_scale)
    y_scale = _quality_scale(data, y)
    y_enc = alt.Y(f"{y}:Q", title=_title(y), scale=y_scale)
    color = alt.Color("method_key:N", title="Method (family · method)", scale=_color_scale(colors))
    shape = alt.Shape(
        "source:N",
        title="Source",
        scale=alt.Scale(domain=list(SOURCE_SHAPES), range=list(SOURCE_SHAPES.values())),
    )
    tooltips = [
        alt.Tooltip(field=f, type=t, title=title, **({} if fmt is None else {"format": fmt}))
        for f, t, title, fmt in _TRADEOFF_TOOLTIPS
        if f in data.columns
    ]
    for column in (x, y):
        if column not in {c for c, *_ in _TRADEOFF_TOOLTIPS} and column in data.columns:
            tooltips.append(alt.Tooltip(f"{column}:Q", title=_title(column), format=".4~g"))
    base = alt.Chart(data)
    return [
        _interval_layer(base, x_enc, y, y_scale, color, opacity=0.55, strokeWidth=1.5),
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


#: Quality metrics bounded to [0, 1]: their axis never extends past the bounds.
_UNIT_INTERVAL = {"test_accuracy", "similarity", "valid_accuracy_final"}


def _quality_scale(data: pd.DataFrame, y: str) -> alt.Scale:
    """The y scale: padded around the data, clipped to [0, 1] for bounded metrics."""
    if y not in _UNIT_INTERVAL or data.empty:
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


def tradeoff_chart(
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
    :func:`peftbench.analysis.pareto.frontier_probability` (``y``, ``y_low``/``y_high``, ``x``,
    ``on_frontier``, ``frontier_prob``, ``within_noise``, ``lead``...) plus ``experiment``,
    ``method``, ``family`` and ``source`` ("this run" | "published"). Error bars are the
    bootstrap intervals; frontier points are joined by a step line and labelled with how
    often they are on the frontier; a dashed ring (and "≈" in the label) marks a frontier
    point whose lead over the next one is within noise. Published rows are triangles; when
    their ``x`` range does not overlap this run's (a different model or hardware), they get
    their own panel side by side (``layout="auto"``). ``colors`` maps :func:`method_key`
    values to colours, so every chart of one report uses the same colours. A positive ``x``
    spanning more than two orders of magnitude gets a log axis.
    """
    x_dir = x_dir or METRIC_DIRECTIONS.get(x, "min")
    log_x = _use_log(table.loc[table["family"] != "base", x])
    data = _tradeoff_data(table, x, y, log_x)
    not_drawn = len(table) - len(data)
    subtitle = [
        "Bars: 95% bootstrap interval (test items and seeds). Label %: share of bootstrap draws "
        "on the frontier. ≈ / dashed ring: lead over the next frontier point within noise.",
    ]
    if not_drawn:
        subtitle.append(f"{not_drawn} experiment(s) not drawn: failed, or no value for this axis.")
    sources = [s for s in SOURCE_SHAPES if (data["source"] == s).any()]
    if layout == "auto":
        layout = "overlay"
        if len(sources) == 2:
            this_run = data.loc[data["source"] == "this run", x]
            published = data.loc[data["source"] == "published", x]
            layout = "overlay" if _overlap(this_run, published) else "side"
    title_params = alt.TitleParams(text=title, subtitle=subtitle, anchor="start")
    if layout == "side" and len(sources) == 2:
        panels = []
        for source in sources:
            subset = data[data["source"] == source].reset_index(drop=True)
            log_panel = _use_log(subset.loc[~subset["is_base"], x])
            panels.append(
                alt.layer(*_tradeoff_layers(subset, x, y, x_dir, colors, log_panel)).properties(
                    title=f"{source}", width=460, height=380
                )
            )
        return (
            alt.hconcat(*panels)
            .resolve_scale(x="independent", y="independent", color="shared", shape="shared")
            .properties(title=title_params)
        )
    return alt.layer(*_tradeoff_layers(data, x, y, x_dir, colors, log_x)).properties(
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
    source). Colours as in :func:`tradeoff_chart`; clicking a legend entry highlights that
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
