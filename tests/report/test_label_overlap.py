"""No chart label collides: every chart of a crowded test run, rendered to SVG as the report
renders it (vl-convert), is measured in headless Chromium (``getBoundingClientRect`` of every
text element, legend and point marker).

The charts are those scripts/report_task.py and scripts/aggregate.py draw, over the crowded
summaries of :mod:`chart_scenarios`, with and without the published rows. Checked: no two texts
overlap or touch on a line (tick labels, titles, legend entries, point numbers); no text outside
a legend overlaps a legend; no point number covers a marker; every drawn point is numbered and
its number is in the legend. A control chart with labels printed on top of each other shows the
measurement finds what it looks for. Skipped without Chromium (apt-get install -y chromium).
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import altair as alt
import pandas as pd
import pytest
import vl_convert as vlc
from chart_scenarios import crowded_summary

from peftbench.analysis.noise import Bootstrap
from peftbench.analysis.summary import SOURCE_THIS_RUN, curves_table
from peftbench.analysis.tables import AXES, task_frontiers
from peftbench.report.browser import OFFLINE_FLAGS, chromium
from peftbench.report.charts import frontier_chart, learning_curves_chart, legend_colors
from peftbench.tasks import registry

#: Two texts on one line must keep this many pixels apart; boxes of stacked lines may touch
#: (a text's box is its font's full line height, taller than its glyphs).
MIN_GAP_PX = 2.0
MIN_DEPTH_PX = 1.0

MEASURE_JS = r"""
function box(node) {
  var r = node.getBoundingClientRect();
  return {x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};
}
function role(node) {
  var group = node.closest('g[class*="role-"]');
  var match = group ? group.getAttribute("class").match(/role-[\w-]+/) : null;
  return match ? match[0] : "";
}
var result = {};
document.querySelectorAll("div.chart").forEach(function (chart) {
  var texts = [];
  chart.querySelectorAll("text").forEach(function (node) {
    var b = box(node);
    if (node.textContent.trim() && b.x1 > b.x0) {
      b.text = node.textContent.trim();
      b.role = role(node);
      texts.push(b);
    }
  });
  var legends = Array.from(chart.querySelectorAll("g.role-legend")).map(box);
  var markers = Array.from(chart.querySelectorAll("g.mark-symbol.role-mark path")).map(box);
  result[chart.id] = {texts: texts, legends: legends, markers: markers};
});
document.getElementById("result").textContent = JSON.stringify(result);
"""


def measure(svgs: dict[str, str], tmp_path: Path) -> dict[str, dict]:
    """Text, legend and marker boxes of each SVG, as headless Chromium lays them out (one
    browser start for all)."""
    charts = "".join(f'<div class="chart" id="{name}">{svg}</div>' for name, svg in svgs.items())
    page = tmp_path / "charts.html"
    page.write_text(
        f'<!doctype html><html><body>{charts}<pre id="result"></pre>'
        f"<script>{MEASURE_JS}</script></body></html>",
        encoding="utf-8",
    )
    command = [
        chromium(),
        *OFFLINE_FLAGS,
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    assert found and found.group(1), proc.stdout[-2000:]
    return json.loads(html.unescape(found.group(1)))


def collide(a: dict, b: dict) -> bool:
    """Whether two boxes overlap (beyond ``MIN_DEPTH_PX`` one way) and come closer than
    ``MIN_GAP_PX`` the other way."""
    across = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
    down = min(a["y1"], b["y1"]) - max(a["y0"], b["y0"])
    return across > -MIN_GAP_PX and down > MIN_DEPTH_PX


def problems(boxes: dict) -> dict[str, list]:
    """Colliding text pairs, texts over a legend, point labels over a marker."""
    texts = boxes["texts"]
    labels = [t for t in texts if t["role"] == "role-mark"]
    return {
        "text pairs": [
            (a["text"], a["role"], b["text"], b["role"])
            for i, a in enumerate(texts)
            for b in texts[i + 1 :]
            if collide(a, b)
        ],
        "over legend": [
            (t["text"], t["role"])
            for t in texts
            if "legend" not in t["role"]
            for legend in boxes["legends"]
            if collide(t, legend)
        ],
        "over marker": [
            t["text"]
            for t in labels
            for marker in boxes["markers"]
            if min(t["x1"], marker["x1"]) - max(t["x0"], marker["x0"]) > MIN_DEPTH_PX
            and min(t["y1"], marker["y1"]) - max(t["y0"], marker["y0"]) > MIN_DEPTH_PX
        ],
    }


def report_charts(results, published, summary, label: str) -> dict[str, alt.TopLevelMixin]:
    """Every chart scripts/report_task.py and scripts/aggregate.py draw for both tasks."""
    colors = legend_colors(summary)
    charts = {}
    for task in ("math", "image"):
        quality = registry.get(task).quality.name
        frontiers = task_frontiers(summary, task, options=Bootstrap(n_boot=200))
        for axis, column in AXES.items():
            title = f"{task}: {quality} vs {column}"
            charts[f"{label}-{task}-{axis}"] = frontier_chart(
                frontiers[axis], column, quality, colors, title
            )
        curves = curves_table(results, published)
        curves = curves[(curves["task"] == task) & (curves["source"] == SOURCE_THIS_RUN)]
        charts[f"{label}-{task}-curves"] = learning_curves_chart(curves, colors, "curves")
    return charts


def control_chart() -> alt.TopLevelMixin:
    """Labels printed on each other and over a legend: what the check must catch."""
    data = pd.DataFrame(
        {"x": [1.0, 1.0, 2.0], "y": [1.0, 1.0, 1.0], "t": ["lora/a", "lora/b", "c"]}
    )
    points = alt.Chart(data).mark_point().encode(x="x:Q", y="y:Q", color="t:N")
    text = alt.Chart(data).mark_text().encode(x="x:Q", y="y:Q", text="t:N")
    return alt.layer(points, text)


@pytest.mark.skipif(chromium() is None, reason="needs chromium (apt-get install -y chromium)")
def test_no_label_collides_on_any_chart_of_a_crowded_run(tmp_path: Path):
    charts = report_charts(*crowded_summary(), "own")
    charts |= report_charts(*crowded_summary(tmp_path / "published"), "published")
    specs = {name: chart.to_dict() for name, chart in charts.items()}
    for spec in specs.values():
        # Strict JSON, as the report pages embed it (a NaN would break the page).
        json.dumps(spec, allow_nan=False)
        # Every label found a spot: no number and no base model line left unlabelled.
        subtitle = " ".join(spec["title"].get("subtitle", []))
        assert "no free spot" not in subtitle and "Black dashed line" not in subtitle
    svgs = {name: vlc.vegalite_to_svg(spec) for name, spec in specs.items()}
    svgs["control"] = vlc.vegalite_to_svg(control_chart().to_dict())
    measured = measure(svgs, tmp_path)

    control = problems(measured.pop("control"))
    assert control["text pairs"] and control["over marker"], control

    found = {}
    for name, boxes in measured.items():
        found[name] = {kind: items for kind, items in problems(boxes).items() if items}
        print(name, {kind: len(items) for kind, items in problems(boxes).items()})
    assert not any(found.values()), {name: items for name, items in found.items() if items}

    for name, spec in specs.items():
        if name.endswith("curves"):
            continue
        rows = [row for rows in spec["datasets"].values() for row in rows]
        drawn = {
            row["number"]
            for row in rows
            if row.get("has_x") and not row.get("is_base") and row.get("number") is not None
        }
        texts = {t["text"] for t in measured[name]["texts"] if t["role"] == "role-mark"}
        legend = {t["text"] for t in measured[name]["texts"] if t["role"] == "role-legend-label"}
        # Every drawn point is numbered in the plot and named in the legend.
        assert {str(n) for n in drawn} <= texts, name
        assert {entry.split("\u2002")[0] for entry in legend} == {str(n) for n in drawn}, name
