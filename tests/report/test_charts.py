"""Tests of the frontier chart (results/<task>/pareto.* and the report) and its offline HTML /
PNG output, on per-experiment frontier tables built from summaries."""

import re

import altair as alt
import pytest
from chart_scenarios import MATH_RUNS, PUBLISHED_MATH, crowded_summary
from factories import make_base_result, make_result

from peftbench.analysis.aggregate import summarize
from peftbench.analysis.noise import Bootstrap
from peftbench.analysis.summary import normalize
from peftbench.analysis.tables import AXES, experiment_frontier, task_frontiers
from peftbench.report.chart_palette import method_color
from peftbench.report.charts import frontier_chart, legend_colors
from peftbench.report.embed import save_chart
from peftbench.report.frontier_text import interval_text
from peftbench.tasks import registry

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


def chart_of(summary, x="train_memory_gb", title="t", task="math"):
    """The frontier chart of ``x`` over a per-run summary, as scripts/aggregate.py draws it;
    also returns the frontier table it drew."""
    rows = normalize(summary)
    table = experiment_frontier(rows, x, registry.get(task), options=Bootstrap(n_boot=200))
    quality = registry.get(task).quality.name
    return frontier_chart(table, x, quality, legend_colors(rows), title), table


def chart_rows(chart):
    """All data rows embedded in a chart's spec."""
    spec = chart.to_dict()
    return [row for rows in spec["datasets"].values() for row in rows]


def test_frontier_chart_data_and_frontier(summary):
    chart, table = chart_of(summary, title="Math: accuracy vs memory")
    assert isinstance(chart, alt.TopLevelMixin)
    spec = chart.to_dict()
    assert spec["title"]["text"] == "Math: accuracy vs memory"
    rows = {row["experiment"]: row for row in chart_rows(chart)}
    # Failed rows and rows without x are left out; the base is kept as a reference line.
    assert set(rows) == {"base/no-finetuning", "lora/r8", "lora/r16", "full-finetuning/default"}
    assert {name for name, row in rows.items() if row["on_frontier"]} == {"lora/r8", "lora/r16"}
    # The quality with its bootstrap interval (binomial from test_n without item scores).
    r16 = table.set_index("experiment").loc["lora/r16"]
    low, high = r16["test_accuracy_low"], r16["test_accuracy_high"]
    assert low < 0.45 < high
    assert rows["lora/r16"]["quality_text"] == interval_text(0.45, low, high)
    assert rows["base/no-finetuning"]["is_base"] and not rows["base/no-finetuning"]["has_x"]


def test_frontier_chart_layers(summary):
    chart, _ = chart_of(summary)
    spec = chart.to_dict()
    marks = [
        (layer["mark"]["type"], layer["mark"].get("shape"), layer["mark"].get("interpolate"))
        for layer in spec["layer"]
    ]
    assert ("line", None, "step-after") in marks  # frontier
    assert ("rule", None, None) in marks  # error bars / base reference / leader lines
    assert ("text", None, None) in marks  # point numbers
    assert ("point", "diamond", None) in marks  # base marker
    text_fields = {
        layer["encoding"]["text"].get("field")
        for layer in spec["layer"]
        if layer["mark"]["type"] == "text"
    }
    assert text_fields == {"label_text"}
    rows = {row["experiment"]: row for row in chart_rows(chart)}
    # Numbered by family, method and experiment over the whole table (failed rows too), so
    # an experiment keeps its number in every chart of the task.
    assert {name: row["number"] for name, row in rows.items()} == {
        "base/no-finetuning": None,
        "lora/r16": 1,
        "lora/r8": 2,
        "full-finetuning/default": 5,
    }
    assert rows["lora/r8"]["label_text"] == "2" and rows["lora/r16"]["label_text"] == "1"
    assert rows["base/no-finetuning"]["label_text"] == "base model (no fine-tuning)"
    # The legend entry: number, experiment, P(frontier) (the label column).
    assert rows["lora/r16"]["key"] == "1\u2002" + rows["lora/r16"]["label"]
    assert rows["lora/r16"]["label"].startswith("lora/r16 · ")
    points = [
        layer
        for layer in spec["layer"]
        if layer["mark"]["type"] == "point" and "shape" not in layer["mark"]
    ]
    assert len(points) == 1  # this run only: one legend, no "published" entry
    color = points[0]["encoding"]["color"]
    # The legend lists what the chart draws, all of it, in full: not the failed ia3 run, not
    # the unmeasured oft run, not another task's methods.
    assert color["scale"]["domain"] == [rows[e]["key"] for e in ("lora/r16", "lora/r8")] + [
        rows["full-finetuning/default"]["key"]
    ]
    assert color["scale"]["range"] == [
        method_color("lora", "lora-like"),
        method_color("lora", "lora-like"),
        method_color("full-finetuning", "full"),
    ]
    legend = color["legend"]
    assert legend["symbolLimit"] >= 3 and legend["labelLimit"] == 0
    # Two experiments of one method: one colour, two shapes.
    shapes = points[0]["encoding"]["shape"]["scale"]["range"]
    assert shapes[0] != shapes[1]
    tooltip_fields = {t["field"] for t in points[0]["encoding"]["tooltip"]}
    assert {
        "number",
        "experiment",
        "family",
        "quality_text",
        "frontier_prob",
        "train_memory_gb",
        "train_time_min",
        "trainable_params",
        "key_settings",
    } <= tooltip_fields


def test_frontier_chart_other_axis_and_empty(summary):
    spec = chart_of(summary, x="file_size_mb")[0].to_dict()
    assert any(
        layer["encoding"].get("x", {}).get("field") == "file_size_mb" for layer in spec["layer"]
    )
    # A table of only failed runs still gives a (empty) chart.
    only_failed = summarize([make_result("ia3", "x", status="failed")])
    chart_of(only_failed)[0].to_dict()


def test_save_chart_offline_html_and_png(summary, tmp_path):
    html_path = tmp_path / "charts" / "pareto.html"
    png_path = tmp_path / "charts" / "pareto.png"
    save_chart(chart_of(summary)[0], html_path, png_path)

    html = html_path.read_text(encoding="utf-8")
    assert "https://cdn" not in html
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert "vegaEmbed" in html
    assert "lora/r16" in html and "full-finetuning/default" in html
    assert "ia3/broken-run" not in html

    assert png_path.read_bytes().startswith(PNG_MAGIC)
    # Only the two outputs: no temporary files left behind.
    assert sorted(p.name for p in html_path.parent.iterdir()) == ["pareto.html", "pareto.png"]


def test_frontier_chart_base_with_x_is_a_diamond_point(summary):
    # The base model has 0 trainable parameters, so on this axis it is a real point.
    chart, _ = chart_of(summary, x="trainable_params")
    rows = {row["experiment"]: row for row in chart_rows(chart)}
    base = rows["base/no-finetuning"]
    assert base["is_base"] and base["has_x"] and base["on_frontier"]
    spec = chart.to_dict()
    diamond = next(layer for layer in spec["layer"] if layer["mark"].get("shape") == "diamond")
    assert "is_base" in diamond["transform"][0]["filter"]


def test_frontier_chart_maximised_x_uses_step_before(summary):
    # Throughput is better when higher (the math spec says so): the frontier maximises it.
    spec = chart_of(summary, x="train_tokens_per_s")[0].to_dict()
    lines = [layer["mark"] for layer in spec["layer"] if layer["mark"]["type"] == "line"]
    assert lines[0]["interpolate"] == "step-before"


def test_frontier_chart_similarity_draws_its_interval():
    table = summarize(
        [
            make_base_result(task="image", similarity=0.3),
            make_result(
                "lora",
                "r8",
                task="image",
                similarity=0.70,
                similarity_ci_low=0.66,
                similarity_ci_high=0.73,
                train_memory_peak_bytes=10**10,
            ),
            make_result(
                "oft",
                "b16",
                task="image",
                similarity=0.60,
                similarity_ci_low=None,
                similarity_ci_high=None,
                train_memory_peak_bytes=8 * 10**9,
            ),
        ]
    )
    chart, frontier = chart_of(table, title="Image: similarity vs memory", task="image")
    spec = chart.to_dict()
    rows = {row["experiment"]: row for row in chart_rows(chart)}
    # A similarity is not a proportion: its stored interval is the noise (a normal).
    lora = frontier.set_index("experiment").loc["lora/r8"]
    assert lora["noise"] == "normal"
    assert lora["similarity_low"] == pytest.approx(0.66, abs=0.02)
    assert lora["similarity_high"] == pytest.approx(0.73, abs=0.02)
    assert rows["lora/r8"]["quality_text"] == interval_text(
        0.70, lora["similarity_low"], lora["similarity_high"]
    )
    # Without an interval there is no noise model, and no (zero-width) interval drawn; the
    # tooltip says so, the label gives no share of draws.
    assert rows["oft/b16"]["quality_text"] == "0.600 (no interval: 1 run, no per-item scores)"
    assert not rows["oft/b16"]["has_interval"] and rows["oft/b16"]["label"] == "oft/b16"
    assert rows["lora/r8"]["label"].startswith("lora/r8 · ")
    # lora/r8's lead over oft/b16 (no noise measured) is not judged: no ring, no ≈.
    assert rows["lora/r8"]["lead_text"] == "+0.100 over oft/b16: noise cannot be judged"
    assert not rows["lora/r8"]["within_noise_flag"] and "≈" not in rows["lora/r8"]["label"]
    assert any("No bar and no %" in line for line in spec["title"]["subtitle"])
    assert {name for name, row in rows.items() if row["on_frontier"]} == {"lora/r8", "oft/b16"}
    whiskers = [
        layer
        for layer in spec["layer"]
        if layer["mark"]["type"] == "rule"
        and "y2" in layer["encoding"]
        and "leader" not in layer["encoding"]["y"]["field"]
    ]
    assert len(whiskers) == 1
    assert whiskers[0]["encoding"]["y"]["field"] == "y_low"
    assert whiskers[0]["encoding"]["y2"]["field"] == "y_high"
    assert whiskers[0]["encoding"]["y"]["title"] == "Test similarity"
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    titles = {t["field"]: t["title"] for t in points["encoding"]["tooltip"]}
    assert titles["quality_text"] == "Test similarity [95% interval]"
    # Without any interval there are no whiskers.
    no_ci = summarize(
        [
            make_result(
                "lora",
                "r8",
                task="image",
                similarity=0.70,
                similarity_ci_low=None,
                similarity_ci_high=None,
                train_memory_peak_bytes=10**10,
            ),
        ]
    )
    spec = chart_of(no_ci, task="image")[0].to_dict()
    assert not any(
        layer["encoding"].get("y", {}).get("field") == "y_low" for layer in spec["layer"]
    )


# ---------------------------------------------------------------------------------------------
# Legends, palette, numbers and axes on the crowded run of tests/report/chart_scenarios.py.
# ---------------------------------------------------------------------------------------------


def points_layers(spec):
    """(legend title, colour encoding, shape encoding) of every points layer with a legend."""
    panels = spec.get("hconcat", [spec])
    return [
        (
            layer["encoding"]["color"]["legend"]["title"],
            layer["encoding"]["color"],
            layer["encoding"]["shape"],
        )
        for panel in panels
        for layer in panel["layer"]
        if layer["mark"]["type"] == "point" and "legend" in layer["encoding"].get("color", {})
    ]


def styles(spec):
    """experiment -> (number, colour, shape) of every numbered point of a chart."""
    rows = [row for rows in spec["datasets"].values() for row in rows]
    return {
        (row["source"], row["experiment"]): (row["number"], row["color"], row["shape"])
        for row in rows
        if row.get("number") is not None
    }


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    return crowded_summary(tmp_path_factory.mktemp("published"))


def test_legends_list_the_task_and_its_sources_only_and_in_full(crowded):
    _, _, summary = crowded
    colors = legend_colors(summary)  # every task and source, as the report passes it
    own = summary[summary["source"] == "this run"]
    frontiers = task_frontiers(own, "math", options=Bootstrap(n_boot=50))
    legends = points_layers(
        frontier_chart(frontiers["memory"], "memory_gb", "test_accuracy", colors, "t").to_dict()
    )
    # Without published rows: one legend, this run's drawn math experiments, nothing else.
    assert [title for title, *_ in legends] == ["This run"]
    entries = [e.split("\u2002")[1].split(" · ")[0] for e in legends[0][1]["scale"]["domain"]]
    assert sorted(entries) == sorted(e for e, *_ in MATH_RUNS)

    frontiers = task_frontiers(summary, "math", options=Bootstrap(n_boot=50))
    spec = frontier_chart(frontiers["memory"], "memory_gb", "test_accuracy", colors, "t").to_dict()
    legends = {title: (color, shape) for title, color, shape in points_layers(spec)}
    assert set(legends) == {"This run", "Published"}
    published, _ = legends["Published"]
    count = len(published["scale"]["domain"])
    assert count == len(PUBLISHED_MATH)  # every published row, none cut to "...12 entries"
    assert published["legend"]["symbolLimit"] >= count and published["legend"]["labelLimit"] == 0
    assert published["legend"]["columns"] >= 2  # long legends wrap into columns


def test_experiments_of_a_family_differ_in_colour_or_shape(crowded):
    _, _, summary = crowded
    for task in ("math", "image"):
        quality = registry.get(task).quality.name
        frontiers = task_frontiers(summary, task, options=Bootstrap(n_boot=50))
        spec = frontier_chart(
            frontiers["memory"], "memory_gb", quality, legend_colors(summary), "t"
        ).to_dict()
        rows = [row for rows in spec["datasets"].values() for row in rows]
        for title, color, shape in points_layers(spec):
            keys = color["scale"]["domain"]
            assert keys == shape["scale"]["domain"]
            family = {row["key"]: row["family"] for row in rows if row.get("key")}
            seen = {}
            styles_of = zip(keys, color["scale"]["range"], shape["scale"]["range"], strict=True)
            for key, hue, marker in styles_of:
                assert (family[key], hue, marker) not in seen, (title, key, seen)
                seen[(family[key], hue, marker)] = key


def test_one_palette_and_numbering_for_pareto_html_and_the_report(crowded):
    results, _, summary = crowded
    spec = registry.get("math")
    # scripts/aggregate.py: this run's rows of the task only.
    rows = normalize(summarize([r for r in results if r["task"] == "math"]))
    table = experiment_frontier(rows, "memory_gb", spec, options=Bootstrap(n_boot=50))
    pareto = frontier_chart(table, "memory_gb", "test_accuracy", legend_colors(rows), "p")
    # scripts/report_task.py: the cross-task summary, published rows beside.
    frontiers = task_frontiers(summary, "math", options=Bootstrap(n_boot=50))
    report = frontier_chart(
        frontiers["memory"], "memory_gb", "test_accuracy", legend_colors(summary), "r"
    )
    ours = styles(pareto.to_dict())
    theirs = styles(report.to_dict())
    assert ours and all(theirs[key] == style for key, style in ours.items())
    assert legend_colors(rows).items() <= legend_colors(summary).items()
    # The same experiment keeps its number (and style) on every axis of the report.
    for axis, column in AXES.items():
        chart = frontier_chart(
            frontiers[axis], column, "test_accuracy", legend_colors(summary), axis
        ).to_dict()
        assert all(theirs[key] == style for key, style in styles(chart).items())


def x_axes(spec):
    panels = spec.get("hconcat", [spec])
    return [
        panel["layer"][0]["encoding"]["x"]
        for panel in panels
        if "x" in panel["layer"][0]["encoding"]
    ]


def test_axes_have_round_ticks_that_fit(crowded):
    _, _, summary = crowded
    own = summary[summary["source"] == "this run"]
    frontiers = task_frontiers(own, "math", options=Bootstrap(n_boot=50))
    colors = legend_colors(summary)
    params = frontier_chart(
        frontiers["params"], "trainable_params", "test_accuracy", colors, "p"
    ).to_dict()
    (x,) = x_axes(params)
    # 192 to 35,008 parameters: a log axis with ticks at 1, 2 and 5 times powers of ten,
    # labelled short (no "20,00030,000"), inside the explicit domain.
    assert x["scale"]["type"] == "log" and x["scale"]["nice"] is False
    values = x["axis"]["values"]
    low, high = x["scale"]["domain"]
    assert all(low <= v <= high for v in values) and len(values) >= 3
    assert all(re.fullmatch(r"[125]0*", f"{v:.0f}") for v in values), values
    assert "'k'" in x["axis"]["labelExpr"]
    memory = frontier_chart(
        frontiers["memory"], "memory_gb", "test_accuracy", colors, "m"
    ).to_dict()
    (x,) = x_axes(memory)
    values = x["axis"]["values"]
    steps = {round(b - a, 12) for a, b in zip(values, values[1:], strict=False)}
    assert len(steps) == 1 and len(values) <= 640 // 50  # even steps, room for each label
