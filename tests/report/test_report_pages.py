"""Tests of the report charts and pages: layers, layouts, colours, and HTML escaping."""

import base64
import html
import io
import json
import re

import numpy as np
import pytest
from factories import make_base_result, make_result
from paths import PUBLISHED, REPO
from PIL import Image

from peftbench.analysis.noise import Bootstrap
from peftbench.analysis.published import import_published
from peftbench.analysis.summary import build_summary, curves_table, table_item_scores
from peftbench.analysis.tables import experiment_frontier, multi_objective_table, task_frontiers
from peftbench.core.layout import run_dir
from peftbench.report.captions import CHARTS, chart_caption, rst_caption
from peftbench.report.charts import frontier_chart, learning_curves_chart, legend_colors
from peftbench.report.embed import charts_page_html, save_chart
from peftbench.report.environment import environment_page
from peftbench.report.html import html_table, script_json
from peftbench.report.pages import configs_page, summary_page
from peftbench.report.pages_frontier import frontier_page
from peftbench.report.pages_samples import samples_page
from peftbench.tasks import registry

FIXTURES = PUBLISHED
CAPTIONS = REPO / "rules" / "captions"
EVIL_NAME = "<script>alert(1)</script>"
EVIL_ERROR = '<img src=x onerror="alert(2)"> & </script><script>alert(3)</script>'


def results():
    # test_accuracy_published: the same runs scored by the published parser (lower: it rejects
    # some answers ours accepts), what they are compared by beside published rows.
    return [
        make_base_result(
            test_accuracy=0.1,
            test_accuracy_ci_low=0.08,
            test_accuracy_ci_high=0.12,
            test_accuracy_published=0.08,
        ),
        make_result(
            "lora",
            "r8",
            test_accuracy=0.40,
            test_accuracy_published=0.36,
            train_memory_peak_bytes=10**10,
        ),
        make_result(
            "lora",
            "r16",
            test_accuracy=0.45,
            test_accuracy_published=0.42,
            train_memory_peak_bytes=12 * 10**9,
        ),
        make_result(
            "oft",
            "b16",
            test_accuracy=0.30,
            test_accuracy_published=0.27,
            train_memory_peak_bytes=11 * 10**9,
        ),
        # Experiment "<script>alert(1)</script>": method "<script>alert(1)<", name "script>".
        make_result(
            "<script>alert(1)<",
            "script>",
            test_accuracy=0.5,
            test_accuracy_published=0.47,
            train_memory_peak_bytes=13 * 10**9,
            trainable_params=10**9,
            total_params=2 * 10**9,
        ),
        make_result("ia3", "broken", status="failed", error=EVIL_ERROR),
    ]


@pytest.fixture(scope="module")
def published():
    return import_published({"math": FIXTURES})


@pytest.fixture(scope="module")
def summary(published):
    return build_summary(results(), published)


def write_items(root, summary, published: bool = True) -> None:
    """Item files of this run's rows, as a run writes them: 200 items each, as many correct by
    the published rule (``published_correct``, left out when not ``published``: a run older
    than it) as its test_accuracy_published says, and every one correct by our parser."""
    rows = summary[(summary["source"] == "this run") & summary["test_accuracy_published"].notna()]
    for _, row in rows.iterrows():
        folder = run_dir(root, "math", row["experiment"], row["seed"])
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "test_predictions.jsonl", "w") as handle:
            for i in range(200):
                item = {"query": "q", "answer": "1", "output": "o", "parsed": "1"}
                if published:
                    item["published_correct"] = i < round(row["test_accuracy_published"] * 200)
                handle.write(json.dumps(item) + "\n")


@pytest.fixture(scope="module")
def frontiers(summary, tmp_path_factory):
    # Read back as the report reads them (scripts/report_task.py).
    root = tmp_path_factory.mktemp("results")
    write_items(root, summary)
    rows = summary[summary["task"] == "math"]
    return task_frontiers(
        summary,
        "math",
        table_item_scores(rows, root),
        comparable_items=table_item_scores(rows, root, comparable=True),
        options=Bootstrap(n_boot=200),
    )


def assert_escaped(text: str) -> None:
    """No raw markup from the data; the names are there, escaped."""
    assert EVIL_NAME not in text
    assert "<img src=x" not in text
    assert "alert(3)</script>" not in text


def test_experiment_frontier_lists_failed_and_base(summary):
    rows = summary[(summary["task"] == "math") & (summary["source"] == "this run")]
    table = experiment_frontier(
        rows, "train_memory_gb", registry.get("math"), options=Bootstrap(n_boot=100)
    )
    by_name = table.set_index("experiment")
    assert by_name.loc["ia3/broken", "missing"] == "test_accuracy,train_memory_gb"
    assert by_name.loc["ia3/broken", "failed_seeds"] == 1
    # The base model did not train: it shows its accuracy but is not on the memory frontier.
    assert by_name.loc["base/no-finetuning", "test_accuracy"] == pytest.approx(0.1)
    assert by_name.loc["base/no-finetuning", "missing"] == "train_memory_gb"
    assert set(by_name.index[by_name["on_frontier"]]) == {"lora/r8", "lora/r16", EVIL_NAME}
    assert by_name.loc["lora/r16", "family"] == "lora-like"
    # No per-item scores given: the run's stored (Wilson) interval is its noise.
    assert by_name.loc["lora/r16", "noise"] == "normal"
    assert by_name.loc["lora/r16", "score"] == "test_accuracy"  # no published rows here


def test_frontier_chart_two_sources_side_by_side(frontiers, summary):
    colors = legend_colors(summary)
    chart = frontier_chart(
        frontiers["memory"], "memory_gb", "test_accuracy", colors, "Accuracy vs memory"
    )
    spec = chart.to_dict()
    # Published memory (20-40 GB) does not overlap this run's (10-12 GB): two panels.
    assert len(spec["hconcat"]) == 2
    assert [p["title"] for p in spec["hconcat"]] == ["this run", "published"]
    layers = spec["hconcat"][0]["layer"]
    marks = [(layer["mark"]["type"], layer["mark"].get("shape")) for layer in layers]
    assert ("rule", None) in marks  # error bars and the base reference line
    assert ("line", None) in marks  # frontier
    assert ("point", "circle") in marks  # within-noise ring
    assert ("point", "diamond") in marks  # base with a value on the axis
    assert ("text", None) in marks  # frontier labels
    points = next(
        layer
        for layer in layers
        if layer["mark"]["type"] == "point" and "shape" not in layer["mark"]
    )
    # Each panel's legend lists that panel's experiments only, numbered, in their method's
    # colour; the two LoRA experiments differ in shape; published marks are hollow.
    color, shape = points["encoding"]["color"], points["encoding"]["shape"]
    assert color["legend"]["title"] == "This run" and points["mark"]["filled"] is True
    named = [key.split("\u2002", 1)[1].split(" · ")[0] for key in color["scale"]["domain"]]
    assert sorted(named) == sorted(["lora/r8", "lora/r16", "oft/b16", EVIL_NAME])
    lora = [named.index("lora/r8"), named.index("lora/r16")]
    assert {color["scale"]["range"][i] for i in lora} == {colors["lora-like · lora"]}
    assert len({shape["scale"]["range"][i] for i in lora}) == 2
    theirs = next(
        layer
        for layer in spec["hconcat"][1]["layer"]
        if layer["mark"]["type"] == "point" and "legend" in layer["encoding"].get("color", {})
    )
    assert theirs["mark"]["filled"] is False
    assert theirs["encoding"]["color"]["legend"]["title"] == "Published"
    tooltip_fields = {t["field"] for t in points["encoding"]["tooltip"]}
    assert {
        "experiment",
        "family",
        "quality_text",
        "frontier_prob",
        "key_settings",
    } <= tooltip_fields
    rows = {
        row["experiment"]: row
        for rows in spec["datasets"].values()
        for row in rows
        if "experiment" in row
    }
    assert rows["lora/r16"]["label"].startswith("lora/r16 · ")
    assert rows["miss/llama-3.2-3B-default"]["source"] == "published"
    # Forced overlay puts both sources on one panel.
    overlay = frontier_chart(
        frontiers["memory"], "memory_gb", "test_accuracy", colors, "t", layout="overlay"
    ).to_dict()
    assert "layer" in overlay and "hconcat" not in overlay


def test_frontier_chart_log_axis_for_parameters(frontiers, summary):
    this_run = frontiers["params"][frontiers["params"]["source"] == "this run"]
    spec = frontier_chart(
        this_run, "trainable_params", "test_accuracy", legend_colors(summary), "params"
    ).to_dict()
    x_scales = [
        layer["encoding"]["x"].get("scale", {})
        for layer in spec["layer"]
        if "x" in layer["encoding"] and "field" in layer["encoding"]["x"]
    ]
    # 1e6 to 1e9 trainable parameters and a base model with 0: log axis, base as a line.
    assert any(s.get("type") == "log" for s in x_scales)
    rows = [row for rows in spec["datasets"].values() for row in rows]
    base = next(row for row in rows if row.get("experiment") == "base/no-finetuning")
    assert base["is_base"] and not base["has_x"]


def test_beside_published_rows_this_run_is_scored_as_published(frontiers, summary):
    memory = frontiers["memory"].set_index(["source", "experiment"])
    ours, theirs = memory.loc["this run"], memory.loc["published"]
    # Our rows hold the published-compatible score, resampled from its per-item scores.
    assert ours.loc["lora/r16", "test_accuracy"] == pytest.approx(0.42)
    assert ours.loc["lora/r16", "score"] == "test_accuracy_published"
    assert ours.loc["lora/r16", "noise"] == "items"
    assert (
        ours.loc["lora/r16", "test_accuracy_low"]
        < 0.42
        < ours.loc["lora/r16", "test_accuracy_high"]
    )
    # Published rows: one run, no per-item scores: no interval, no P(frontier).
    assert set(theirs["score"]) == {"published result"} and set(theirs["noise"]) == {"none"}
    assert theirs["test_accuracy_low"].isna().all()
    measured = theirs["missing"] == ""  # a cancelled run is never on the frontier: P = 0
    assert theirs.loc[measured, "frontier_prob"].isna().all()
    assert (theirs.loc[~measured, "frontier_prob"] == 0).all() and (~measured).any()
    # (Leads between published rows: tests/cli and tests/analysis/test_pareto_noise.py.)
    # The chart says which score it shows, and draws no share or interval for published rows.
    chart = frontier_chart(
        frontiers["memory"], "memory_gb", "test_accuracy", legend_colors(summary), "t"
    ).to_dict()
    assert any("published suite's rule" in line for line in chart["title"]["subtitle"])
    layers = [layer for panel in chart["hconcat"] for layer in panel["layer"]]
    y_titles = {layer["encoding"]["y"].get("title") for layer in layers if "y" in layer["encoding"]}
    assert y_titles == {"Test accuracy (published parser)"}
    rows = [row for rows in chart["datasets"].values() for row in rows if "experiment" in row]
    published = [row for row in rows if row["source"] == "published"]
    assert published and all("%" not in row["label"] for row in published)
    assert all("no interval" in row["quality_text"] for row in published)
    assert not any("beyond noise" in row["lead_text"] for row in published)
    # The frontier page says so too, with the score column in the tables.
    page = frontier_page("math", frontiers, multi_objective_table(summary, "math"))
    assert "this run&#x27;s test_accuracy column holds its test_accuracy_published" in page
    assert "published parser" in page and ">score</th>" in page
    assert "cannot be judged" in page
    # The several-objectives table compares the same score.
    multi = multi_objective_table(summary, "math").set_index(["source", "experiment"])
    assert multi.loc[("this run", "lora/r16"), "test_accuracy"] == pytest.approx(0.42)


def test_scored_as_published_rows_drop_our_items_and_interval(summary, tmp_path):
    # Per-item scores of our own parser do not resample the published-compatible score: with
    # none of the latter (runs older than it), a single run has no interval (its stored
    # interval is of our score).
    write_items(tmp_path, summary, published=False)
    this_run = summary[summary["source"] == "this run"]
    own = table_item_scores(this_run, tmp_path)
    # Every successful run has our own item scores, none the published-compatible ones.
    assert set(own) == set(this_run.index[this_run["status"] == "success"])
    assert table_item_scores(this_run, tmp_path, comparable=True) == {}
    frontiers = task_frontiers(
        summary,
        "math",
        own,
        comparable_items=table_item_scores(this_run, tmp_path, comparable=True),
        options=Bootstrap(n_boot=50),
    )
    ours = frontiers["memory"].set_index(["source", "experiment"]).loc["this run"]
    assert ours.loc["lora/r16", "noise"] == "none"
    assert ours.loc["lora/r16", "test_accuracy"] == pytest.approx(0.42)
    # Without published rows, our own score and its items stay (behaviour unchanged).
    alone = task_frontiers(this_run, "math", own, options=Bootstrap(n_boot=50))["memory"]
    alone = alone.set_index("experiment")
    assert alone.loc["lora/r16", "test_accuracy"] == pytest.approx(0.45)
    assert alone.loc["lora/r16", "noise"] == "items" and alone.loc["lora/r16", "score"] == (
        "test_accuracy"
    )
    page = frontier_page(
        "math", {"memory": alone.reset_index()}, multi_objective_table(this_run, "math")
    )
    assert ">score</th>" not in page and "test_accuracy_published" not in page


def test_learning_curves_chart(summary, published):
    curves = curves_table(results(), published)
    curves = curves[(curves["task"] == "math") & (curves["source"] == "this run")]
    spec = learning_curves_chart(curves, legend_colors(summary), "curves").to_dict()
    assert len(spec["hconcat"]) == 2
    # One legend selection shared by both panels.
    assert len(spec["params"]) == 1 and spec["params"][0]["bind"] == "legend"


def test_script_json_cannot_close_the_script():
    text = script_json({"name": EVIL_NAME, "amp": "a&b", "sep": "x\u2028y"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"name": EVIL_NAME, "amp": "a&b", "sep": "x\u2028y"}


def test_chart_html_escapes_experiment_names(frontiers, summary, tmp_path):
    chart = frontier_chart(
        frontiers["memory"], "memory_gb", "test_accuracy", legend_colors(summary), EVIL_NAME
    )
    html_path, png_path, svg_path = (tmp_path / f"c.{ext}" for ext in ("html", "png", "svg"))
    save_chart(chart, html_path, png_path, svg_path)
    page = html_path.read_text()
    assert_escaped(page)
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page  # in the chart data
    assert f"<title>{html.escape(EVIL_NAME)}</title>" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert page.count("<script>") == page.count("</script>")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg_path.read_text().lstrip().startswith("<svg")
    # Vega draws text as SVG text nodes, escaped by the XML writer.
    assert_escaped(svg_path.read_text())
    multi = charts_page_html([(EVIL_NAME, "<p>caption</p>", chart), ("empty", "", None)], "t")
    assert_escaped(multi)
    assert multi.count('class="chart"') == 1


def test_pages_escape_names_and_errors(summary, frontiers, published):
    pages = {
        "summary": summary_page(summary, [f"warning about {EVIL_NAME}"], ["note"]),
        "frontier": frontier_page("math", frontiers, multi_objective_table(summary, "math")),
        "configs": configs_page("math", results(), published),
        "environment": environment_page(results(), published, warnings=[EVIL_ERROR]),
    }
    for name, page in pages.items():
        assert_escaped(page), name
        assert page.count("<script>") == page.count("</script>") == 1, name
    escaped_name = html.escape(EVIL_NAME)
    assert escaped_name in pages["summary"] and escaped_name in pages["frontier"]
    assert escaped_name in pages["configs"]
    assert (
        html.escape(EVIL_ERROR) in pages["summary"] and html.escape(EVIL_ERROR) in pages["configs"]
    )


def test_html_table_sort_keys_and_missing(summary):
    table = html_table(summary, ["experiment", "test_accuracy", "trainable_params", "error"])
    assert 'class="sortable"' in table
    # Numbers sort by their raw value, missing values are "n/a" and sort last (empty key).
    assert 'data-v="0.45">0.450</td>' in table
    assert 'data-v="1000000">1,000,000</td>' in table
    assert '<td data-v="">n/a</td>' in table
    assert "title=" in table  # every header explains itself


def test_summary_page_lists_failed_rows_and_warnings(summary, published):
    page = summary_page(summary, published.warnings)
    assert 'class="failed"' in page and 'class="published' in page
    assert "lora--llama-3.2-3B-rank64--truncated.json: skipped, not valid JSON" in page


def test_configs_page_content(published):
    page = configs_page("math", results(), published)
    assert "lora/r16" in page and "&quot;max_steps&quot;: 100" in page
    assert "miss/llama-3.2-3B-default" in page  # published configs too
    assert "oft/flux2-klein-default" not in page  # another task


def test_environment_page_groups_runs(published):
    mixed = [*results(), make_result("vera", "x", packages={"peft": "0.20.0"})]
    page = environment_page(mixed, published, report_versions={"python": "3.11"})
    assert page.count("<h3>Environment") == 2 + 1  # two local environments, one published
    assert "NVIDIA L40S" in page and "0.20.0" in page


# ---------------------------------------------------------------------------------------------
# The image task: similarity frontiers with per-image scores, captions, sample grids
# ---------------------------------------------------------------------------------------------

N_IMAGES = 40


def image_results():
    rng = np.random.default_rng(0)
    runs = [make_base_result(task="image", similarity=0.3, test_n=N_IMAGES)]
    for method, name, similarity, memory in [
        ("lora", "r8", 0.70, 10),
        ("oft", "b16", 0.69, 8),
        ("full-finetuning", "all", 0.50, 30),
    ]:
        runs.append(
            make_result(
                method,
                name,
                task="image",
                similarity=similarity,
                test_n=N_IMAGES,
                train_memory_peak_bytes=memory * 10**9,
                peft_type=None if method == "full-finetuning" else method.upper(),
            )
        )
    runs.append(make_result("ia3", "broken", task="image", status="failed", error=EVIL_ERROR))
    # Per-image similarity scores over the same 40 test images: a difficulty shared by every
    # run plus the run's own noise, centred so that their mean is the run's similarity.
    shared = rng.normal(0, 0.1, N_IMAGES)
    items = {}
    for run in runs:
        if run["status"] == "success":
            noise = shared + rng.normal(0, 0.05, N_IMAGES)
            items[run["experiment"]] = run["metrics"]["similarity"] + noise - noise.mean()
    return runs, items


@pytest.fixture(scope="module")
def image_summary(published):
    return build_summary(image_results()[0], published)


def test_image_frontier_resamples_per_image_similarity(image_summary):
    _, vectors = image_results()
    this_run = image_summary[image_summary["source"] == "this run"]
    items = {label: vectors[e] for label, e in this_run["experiment"].items() if e in vectors}
    frontiers = task_frontiers(image_summary, "image", items, options=Bootstrap(n_boot=300))
    memory = frontiers["memory"].set_index(["source", "experiment"])
    ours = memory.loc["this run"]
    assert ours.loc["lora/r8", "noise"] == "items" and ours.loc["lora/r8", "n_items"] == N_IMAGES
    assert set(ours.index[ours["on_frontier"]]) == {"lora/r8", "oft/b16"}
    # lora/r8 leads oft/b16 by about 0.01 on 40 images: within noise.
    assert ours.loc["lora/r8", "next"] == "oft/b16" and bool(ours.loc["lora/r8", "within_noise"])
    assert ours.loc["lora/r8", "similarity_low"] < 0.70 < ours.loc["lora/r8", "similarity_high"]
    assert ours.loc["ia3/broken", "missing"] == "similarity,memory_gb"
    # The published FLUX.2 row is in the image task, resampled on its own (no interval: none).
    assert memory.loc[("published", "oft/flux2-klein-default"), "noise"] == "none"
    # Without per-image scores the stored similarity interval is the noise model.
    without = task_frontiers(image_summary, "image", options=Bootstrap(n_boot=100))["memory"]
    assert set(without.loc[without["source"] == "this run", "noise"]) == {"normal", "none"}
    page = frontier_page("image", frontiers, multi_objective_table(image_summary, "image"))
    assert_escaped(page)
    assert "quality (similarity)" in page and "cosine similarity" in page
    assert "drift" in page and "binomial from the accuracy" not in page
    assert "Runs without per-item scores are resampled from their stored 95% interval" in page


def test_image_multi_objective_table_uses_drift(image_summary):
    table = multi_objective_table(image_summary, "image")
    assert {"similarity", "drift"} <= set(table.columns)
    assert "forgetting" not in table.columns and "test_accuracy" not in table.columns


def test_image_captions_and_learning_curves(image_summary):
    caption = chart_caption("memory", "image")
    assert "image: mean cosine similarity" in caption and "exact-match" not in caption
    assert "exact-match accuracy" in chart_caption("memory", "math")
    assert "validation similarity" in chart_caption("curves", "image")
    assert "validation accuracy" in chart_caption("curves", "math")
    curves = curves_table(image_results()[0])
    spec = learning_curves_chart(
        curves, legend_colors(image_summary), "curves", validation_title="Validation similarity"
    ).to_dict()
    assert spec["hconcat"][1]["title"] == "Validation similarity"
    rows = [row for rows in spec["datasets"].values() for row in rows]
    assert {row["value"] for row in rows if row["metric"] == "validation"} == {0.61}
    glossary = summary_page(image_summary)
    assert "DINOv2-base CLS" in glossary and "small encoder trained by the workflow" in glossary


def test_rst_captions_are_generated_from_the_chart_captions():
    # One source: rules/captions/<chart>.rst is written by peftbench.report.captions.write_rst.
    for chart in CHARTS:
        assert (CAPTIONS / f"{chart}.rst").read_text(encoding="utf-8") == rst_caption(chart), chart
    assert "peak training memory" in rst_caption("memory")
    assert "{{ snakemake.wildcards.task }}" in rst_caption("curves")


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_samples_page_embeds_each_runs_grid(tmp_path):
    results, _ = image_results()
    evil = make_result("<script>alert(1)<", "script>", task="image")
    runs = []
    for number, result in enumerate([*results, evil]):
        folder = tmp_path / f"run{number}"
        folder.mkdir()
        if result["status"] == "success":
            (folder / "samples.png").write_bytes(png_bytes((number * 40, 0, 0)))
        runs.append((result, folder))
    # A file that is not a PNG is not embedded as one.
    (runs[3][1] / "samples.png").write_text("<svg onload=alert(4)>")
    math_run = (make_result("lora", "math-only"), tmp_path / "math")
    page = samples_page("image", [*runs, math_run])
    assert_escaped(page)
    assert "alert(4)" not in page and "lora/math-only" not in page
    assert not re.search(r"<(script|img)[^>]*\bsrc\s*=\s*[\"']?https?:", page)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page)
    assert len(images) == 4  # base, lora/r8, oft/b16 and the evil name; not the failed run
    decoded = Image.open(io.BytesIO(base64.b64decode(images[0][0])))
    assert decoded.size == (8, 4) and decoded.getpixel((0, 0)) == (0, 0, 0)
    assert images[0][1] == "base/no-finetuning · seed 0 · success: sample grid"
    # Base model first, then by experiment; each with its seed, similarity and drift.
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings[0] == "base/no-finetuning" and headings[1] == html.escape(EVIL_NAME)
    lora = page[page.index("<h2>lora/r8</h2>") :]
    assert lora.startswith(
        "<h2>lora/r8</h2>\n<figure><figcaption><b>seed 0 · success</b> · "
        "similarity 0.700 [0.680, 0.720], drift 0.050"
    )
    assert "full-finetuning/all" in page and "is not a PNG image; not shown." in page
    assert "<h2>ia3/broken</h2>\n<figure><figcaption><b>seed 0 · failed</b>" in page
    assert f"No sample grid: {html.escape(EVIL_ERROR)}" in page
    assert page.count("<script>") == page.count("</script>") == 1
