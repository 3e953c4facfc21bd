"""Tests of the Pareto chart and its offline HTML / PNG output."""

import re

import altair as alt
import pytest
from factories import make_base_result, make_result

from peftbench.analysis.aggregate import summarize
from peftbench.report.charts import pareto_chart, save_chart

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def summary():
    return summarize(
        [
            make_base_result(
                test_accuracy=0.2, test_accuracy_ci_low=0.18, test_accuracy_ci_high=0.23
            ),
            make_result("lora", "r8", test_accuracy=0.40, train_memory_peak_bytes=10**10),
            make_result(
                "lora",
                "r16",
                test_accuracy=0.45,
                test_accuracy_ci_low=0.42,
                test_accuracy_ci_high=0.48,
                train_memory_peak_bytes=12 * 10**9,
            ),
            make_result(
                "full-finetuning",
                "default",
                test_accuracy=0.44,
                train_memory_peak_bytes=30 * 10**9,
                peft_type=None,
            ),
            make_result("ia3", "broken-run", status="failed"),
            # Successful but without a memory figure: not drawn.
            make_result("oft", "no-memory", test_accuracy=0.5, train_memory_peak_bytes=None),
        ]
    )


def chart_rows(chart):
    """All data rows embedded in a chart's spec."""
    spec = chart.to_dict()
    return [row for rows in spec["datasets"].values() for row in rows]


def test_pareto_chart_data_and_frontier(summary):
    chart = pareto_chart(summary, title="Math: accuracy vs memory")
    assert isinstance(chart, alt.TopLevelMixin)
    spec = chart.to_dict()
    assert spec["title"] == "Math: accuracy vs memory"
    rows = {row["experiment"]: row for row in chart_rows(chart)}
    # Failed rows and rows without x are left out; the base is kept as a reference line.
    assert set(rows) == {"base/no-finetuning", "lora/r8", "lora/r16", "full-finetuning/default"}
    assert {name for name, row in rows.items() if row["on_frontier"]} == {"lora/r8", "lora/r16"}
    assert rows["lora/r16"]["quality_ci"] == "0.450 [0.420, 0.480]"
    assert rows["base/no-finetuning"]["is_base"] and not rows["base/no-finetuning"]["has_x"]


def test_pareto_chart_layers(summary):
    spec = pareto_chart(summary).to_dict()
    marks = [
        (layer["mark"]["type"], layer["mark"].get("shape"), layer["mark"].get("interpolate"))
        for layer in spec["layer"]
    ]
    assert ("line", None, "step-after") in marks  # frontier
    assert ("rule", None, None) in marks  # error bars / base reference
    assert ("text", None, None) in marks  # frontier labels
    assert ("point", "diamond", None) in marks  # base marker
    text_fields = [
        layer["encoding"]["text"].get("field")
        for layer in spec["layer"]
        if layer["mark"]["type"] == "text"
    ]
    assert "experiment" in text_fields
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    assert points["encoding"]["color"]["scale"]["domain"] == [
        "full-finetuning",
        "ia3",
        "lora",
        "oft",
    ]
    tooltip_fields = {t["field"] for t in points["encoding"]["tooltip"]}
    assert {
        "experiment",
        "method",
        "quality_ci",
        "train_memory_gb",
        "train_time_min",
        "trainable_params",
        "lr",
    } <= tooltip_fields


def test_pareto_chart_other_axis_and_empty(summary):
    spec = pareto_chart(summary, x="file_size_mb").to_dict()
    assert any(
        layer["encoding"].get("x", {}).get("field") == "file_size_mb" for layer in spec["layer"]
    )
    # A table of only failed runs still gives a (empty) chart.
    only_failed = summarize([make_result("ia3", "x", status="failed")])
    pareto_chart(only_failed).to_dict()


def test_save_chart_offline_html_and_png(summary, tmp_path):
    html_path = tmp_path / "charts" / "pareto.html"
    png_path = tmp_path / "charts" / "pareto.png"
    save_chart(pareto_chart(summary), html_path, png_path)

    html = html_path.read_text(encoding="utf-8")
    assert "https://cdn" not in html
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert "vegaEmbed" in html
    assert "lora/r16" in html and "full-finetuning/default" in html
    assert "ia3/broken-run" not in html

    assert png_path.read_bytes().startswith(PNG_MAGIC)
    # Only the two outputs: no temporary files left behind.
    assert sorted(p.name for p in html_path.parent.iterdir()) == ["pareto.html", "pareto.png"]


def test_pareto_chart_base_with_x_is_a_diamond_point(summary):
    # The base model has 0 trainable parameters, so on this axis it is a real point.
    chart = pareto_chart(summary, x="trainable_params")
    rows = {row["experiment"]: row for row in chart_rows(chart)}
    base = rows["base/no-finetuning"]
    assert base["is_base"] and base["has_x"] and base["on_frontier"]
    spec = chart.to_dict()
    diamond = next(layer for layer in spec["layer"] if layer["mark"].get("shape") == "diamond")
    assert "is_base" in diamond["transform"][0]["filter"]


def test_pareto_chart_maximised_x_uses_step_before(summary):
    spec = pareto_chart(summary, x="train_tokens_per_s").to_dict()
    lines = [layer["mark"] for layer in spec["layer"] if layer["mark"]["type"] == "line"]
    assert lines[0]["interpolate"] == "step-before"


def test_pareto_chart_similarity_draws_its_interval():
    table = summarize(
        [
            make_base_result(task="image", similarity=0.3),
            make_result("lora", "r8", task="image", similarity=0.70, similarity_ci_low=0.66,
                        similarity_ci_high=0.73, train_memory_peak_bytes=10**10),
            make_result("oft", "b16", task="image", similarity=0.60, similarity_ci_low=None,
                        similarity_ci_high=None, train_memory_peak_bytes=8 * 10**9),
        ]
    )  # fmt: skip
    chart = pareto_chart(table, y="similarity", title="Image: similarity vs memory")
    spec = chart.to_dict()
    rows = {row["experiment"]: row for row in chart_rows(chart)}
    assert rows["lora/r8"]["quality_ci"] == "0.700 [0.660, 0.730]"
    assert rows["oft/b16"]["quality_ci"] == "0.600" and not rows["oft/b16"]["has_interval"]
    assert {name for name, row in rows.items() if row["on_frontier"]} == {"lora/r8", "oft/b16"}
    whiskers = [
        layer
        for layer in spec["layer"]
        if layer["mark"]["type"] == "rule" and "y2" in layer["encoding"]
    ]
    assert len(whiskers) == 1
    assert whiskers[0]["encoding"]["y"]["field"] == "y_low"
    assert whiskers[0]["encoding"]["y2"]["field"] == "y_high"
    assert whiskers[0]["encoding"]["y"]["title"] == "Test similarity"
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    titles = {t["field"]: t["title"] for t in points["encoding"]["tooltip"]}
    assert titles["quality_ci"] == "Test similarity [95% CI]"
    # Without any interval there are no whiskers.
    no_ci = pareto_chart(table, y="drift").to_dict()
    assert not any("y2" in layer["encoding"] for layer in no_ci["layer"])
