"""`snakemake --report` on a finished tiny run (test profile) with published results imported.

One workflow run is shared by the module (copying the repository and running the test profile
takes about a minute); its report is built once before the published results are imported (to
measure its size) and once after. A published result named ``<script>alert(1)</script>`` checks
that names and error texts are escaped everywhere in the report. The Chromium checks open the
report offline as a user does, click through to the decision page and move its budget slider
(skipped without a ``chromium`` binary).

The test profile runs the math task only; the image task's report (similarity charts, per-image
bootstrap, sample grids) is built by ``rules/report.smk`` alone on stand-in result files.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import make_base_result, make_result
from paths import PUBLISHED
from PIL import Image
from wfutil import copy_workflow, job_counts
from wfutil import snakemake as run_snakemake

from peftbench.report.browser import OFFLINE_FLAGS, Browser, chromium

FIXTURES = PUBLISHED
EVIL_NAME = "<script>alert(1)</script>"
EVIL_ERROR = '<img src=x onerror="alert(2)"> </script><script>alert(3)</script>'
# The math task alone: the image task's report is tested below on stand-in results, without
# its (slow on a CPU) training.
EXTRA_CONFIG = "tasks: [math]\npublished: {math: published}\n"
WITHOUT_PUBLISHED = "tasks: [math]\n"
#: Where the report built before the published results were imported is kept.
REPORT_WITHOUT_PUBLISHED = "results/report-without-published.html"


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, configfiles=("config/test.yaml", "extra.yaml"))


def embedded_files(report_html: str) -> dict[str, dict]:
    """The report's result entries (path -> entry), each with its decoded ``content``."""
    match = re.search(
        r'<script id="results">\s*var results = (.*?);\s*</script>', report_html, re.S
    )
    assert match, "no results block in the report"
    entries = json.loads(match.group(1))
    for entry in entries.values():
        entry["content"] = base64.b64decode(entry["data_uri"].split("base64,", 1)[1])
    return entries


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("report"))
    shutil.copytree(FIXTURES, workdir / "published")
    evil = json.loads((FIXTURES / "miss--llama-3.2-3B-default.json").read_text())
    evil["run_info"]["experiment_name"] = EVIL_NAME
    evil["run_info"]["error_msg"] = EVIL_ERROR
    evil["train_info"]["status"] = "canceled"
    (workdir / "published" / "evil.json").write_text(json.dumps(evil))
    # First this run alone (the report whose size the issue sets a budget for), then with the
    # published results imported: only the summary and the report pages are built again.
    for extra, report_path in (
        (WITHOUT_PUBLISHED, REPORT_WITHOUT_PUBLISHED),
        (EXTRA_CONFIG, "results/report.html"),
    ):
        (workdir / "extra.yaml").write_text(extra)
        proc = snakemake(workdir)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        proc = snakemake(workdir, "--report", report_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir


@pytest.fixture(scope="module")
def report(workflow_run: Path) -> tuple[str, dict[str, dict]]:
    text = (workflow_run / "results/report.html").read_text(encoding="utf-8")
    return text, embedded_files(text)


def test_report_is_one_self_contained_file(report):
    text, entries = report
    # Everything is inline: no script, stylesheet or image is loaded from anywhere.
    assert not re.search(r"<script[^>]*\bsrc\s*=", text)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", text)
    expected = {
        "results/summary.csv",
        "results/summary.html",
        "results/environment.html",
        "results/reference.html",
        "results/math/report/decision.html",
        "results/math/report/frontier.html",
        "results/math/report/configs.html",
        "results/math/report/search.html",
    }
    assert set(entries) == expected
    for path, entry in entries.items():
        assert entry["caption"].strip(), f"{path} has no caption"
        if path.endswith(".html"):
            page = entry["content"].decode()
            assert not re.search(r"<script[^>]*\bsrc\s*=", page), path
    # The reference page explains the metrics and their units.
    reference = entries["results/reference.html"]["content"].decode()
    for phrase in ("Metrics and units", "10^9 bytes", "Noise-aware frontier", "P(frontier)"):
        assert phrase in reference


def test_report_opens_on_the_decision(report):
    """The start page links each task's decision page, and the decision category comes first:
    Snakemake's report lists categories by name, so their numbers set the order."""
    text, entries = report
    description = json.loads(re.search(r"var workflow_desc = (.*?);\s*</script>", text, re.S)[1])
    links = re.findall(r'<a href="javascript:app\.setView\(([^"]*)\)">(.*?)</a>', description)
    assert [html.unescape(label) for _, label in links] == [
        "<b>math</b>: which method, for your memory budget"
    ]
    call = html.unescape(links[0][0])
    assert call.count('"results/math/report/decision.html"') == 2 and "content: 'html'" in call
    # Short: Snakemake centres the start page vertically, so a long one loses its top.
    assert len(re.sub(r"<[^>]+>", "", description).split()) < 300
    categories = json.loads(re.search(r"var categories = (.*?);\s*</script>", text, re.S)[1])
    assert sorted(categories) == [
        "1. Decision",
        "2. Tables",
        "4. Configurations",
        "5. Reference",
        "6. Environment",
    ]
    assert categories["1. Decision"] == {"Other": ["results/math/report/decision.html"]}
    decision = entries["results/math/report/decision.html"]
    assert decision["labels"]["task"] == "math"
    assert "memory-budget slider" in " ".join(decision["caption"].split())


def test_report_escapes_names_and_errors(report, workflow_run: Path):
    text, entries = report
    assert EVIL_NAME not in text and 'onerror="alert(2)"' not in text
    for path, entry in entries.items():
        if path.endswith(".csv"):
            continue  # data for download (text/csv), kept as is; never rendered as HTML
        content = entry["content"].decode()
        assert EVIL_NAME not in content, path
        assert "<img src=x" not in content, path
        assert "alert(3)</script>" not in content, path
    summary = entries["results/summary.html"]["content"].decode()
    assert html.escape(EVIL_NAME) in summary and html.escape(EVIL_ERROR) in summary
    configs = entries["results/math/report/configs.html"]["content"].decode()
    assert html.escape(EVIL_NAME) in configs
    csv = pd.read_csv(workflow_run / "results/summary.csv")
    assert EVIL_NAME in set(csv["experiment"])  # the data itself is kept as is


def test_summary_tables(workflow_run: Path):
    table = pd.read_parquet(workflow_run / "results/summary.parquet")
    assert {"family", "source", "status", "error", "config_hash"} <= set(table.columns)
    ours = table[table["source"] == "this run"]
    assert set(ours["experiment"]) >= {"base/no-finetuning", "lora/rank8-qv"}
    assert ours.set_index("experiment").loc["lora/rank8-qv", "family"] == "lora-like"
    published = table[table["source"] == "published"]
    assert "lora/llama-3.2-3B-rank32" in set(published["experiment"])
    # The published image-generation file is imported under the image task.
    assert "image" in set(published["task"]) and "image-gen" not in set(published["task"])
    csv = pd.read_csv(workflow_run / "results/summary.csv")
    assert csv["experiment"].tolist() == table["experiment"].tolist()
    log = (workflow_run / "logs/summary.log").read_text()
    assert "lora--llama-3.2-3B-rank64--truncated.json: skipped, not valid JSON" in log
    assert "dashboard-export.json: skipped, unknown format" in log


def test_decision_charts_and_frontier_pages(report, workflow_run: Path):
    _, entries = report
    decision = entries["results/math/report/decision.html"]["content"].decode()
    # The memory frontier with the budget, the memory chart with the published rows, time,
    # parameters, file size, learning curves: one copy of Vega for all six.
    assert decision.count("vegaEmbed('#chart") == 6
    assert decision.count("VEGA_BUNDLE_GZIP = ") == 1
    assert "lora/rank8-qv" in decision and "miss/llama-3.2-3B-default" in decision
    assert '"name": "budget"' in decision and '"input": "range"' in decision
    frontier = entries["results/math/report/frontier.html"]["content"].decode()
    assert "P(frontier)" in frontier and "Several objectives at once" in frontier
    table = pd.read_csv(workflow_run / "results/math/report/frontier.csv")
    assert set(table["axis"]) == {"memory", "time", "params", "file_size"}
    ours = table[(table["source"] == "this run") & (table["axis"] == "memory")]
    # The test profile keeps per-item predictions: the bootstrap resamples test items.
    assert "items" in set(ours["noise"])
    folder = workflow_run / "results/math/report"
    for name in ("quality_vs_memory", "learning_curves"):
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (folder / f"{name}.svg").read_text()[:500]
        # No page per chart (each carried its own copy of Vega): they are all on one page.
        assert not (folder / f"{name}.html").exists()
    charts = (folder / "charts.html").read_text()
    assert charts.count("vegaEmbed('#chart") == 5 and charts.count("VEGA_BUNDLE_GZIP = ") == 1


def test_report_size(report, workflow_run: Path):
    """Snakemake's report page weighs about 3.1 MB before any result (its own copies of Vega,
    React and Tailwind, the rules' code, licences): the issue's 3 MB for the whole file cannot
    be met with it. What the results add is measured here, printed, and held small: each task's
    pages carry the Vega scripts once, compressed."""
    sizes = {}
    for name, path in (
        ("without published rows", workflow_run / REPORT_WITHOUT_PUBLISHED),
        ("with published rows", workflow_run / "results/report.html"),
    ):
        text = path.read_text(encoding="utf-8")
        block = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', text, re.S)
        total, ours = len(text.encode()), len(block[1].encode())
        sizes[name] = (total, ours)
        print(
            f"report {name}: {total / 1e6:.2f} MB = Snakemake's own page {(total - ours) / 1e6:.2f}"
            f" MB + the results {ours / 1e6:.2f} MB"
        )
        bundles = sum(
            entry["content"].count(b"VEGA_BUNDLE_GZIP = ")
            for entry in embedded_files(text).values()
        )
        assert bundles == 1, name  # one task, one copy of Vega
    # Before issue 16 the results of this run alone were 1.7 MB, 1.3 MB of it the one chart
    # page's own Vega; the per-chart SVGs and the chart page are no longer in the report.
    assert sizes["without published rows"][1] < 1_200_000


def test_environment_page(report):
    _, entries = report
    page = entries["results/environment.html"]["content"].decode()
    for text in ("torch", "transformers", "peft", "cpu_count", "NVIDIA L40S", "altair"):
        assert text in page


def test_rerun_nothing_and_published_edit_reruns_report_only(workflow_run: Path):
    proc = snakemake(workflow_run, "-n")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr
    path = workflow_run / "published/miss--llama-3.2-3B-default.json"
    original = path.read_text()
    path.write_text(original.replace('"test accuracy": 0.48', '"test accuracy": 0.49'))
    try:
        proc = snakemake(workflow_run, "-n")
    finally:
        path.write_text(original)
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    assert counts.get("summary") == 1 and counts.get("report_task") == 1
    assert "train" not in counts and "aggregate" not in counts


def test_missing_published_folder_fails_early(workflow_run: Path):
    (workflow_run / "extra.yaml").write_text("tasks: [math]\npublished: {math: no/such/folder}\n")
    try:
        proc = snakemake(workflow_run, "-n")
    finally:
        (workflow_run / "extra.yaml").write_text(EXTRA_CONFIG)
    assert proc.returncode != 0
    assert "published.math" in proc.stdout + proc.stderr
    assert "does not exist" in proc.stdout + proc.stderr


def test_advise_on_the_run(workflow_run: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftbench",
            "advise",
            "--task",
            "math",
            "--max-memory-gb",
            "20",
            "--n-boot",
            "200",
        ],
        cwd=workflow_run,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Task math (this run)" in proc.stdout and "test items (paired" in proc.stdout


def render(page: Path, tmp_path: Path, *, screenshot: Path | None = None) -> str:
    """The DOM of ``page`` after its scripts ran, loaded by headless Chromium without network."""
    args = [
        chromium(),
        *OFFLINE_FLAGS,
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=15000",
        "--window-size=1600,1200",
    ]
    if screenshot is not None:
        subprocess.run(
            [*args, f"--screenshot={screenshot}", page.as_uri()],
            capture_output=True,
            timeout=180,
        )
    proc = subprocess.run(
        [*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


NEEDS_CHROMIUM = pytest.mark.skipif(
    chromium() is None, reason="needs chromium (apt-get install -y chromium)"
)


@NEEDS_CHROMIUM
def test_chromium_renders_decision_and_frontier_pages_offline(report, tmp_path: Path):
    _, entries = report
    decision = tmp_path / "decision.html"
    decision.write_bytes(entries["results/math/report/decision.html"]["content"])
    dom = render(decision, tmp_path, screenshot=tmp_path / "decision.png")
    # Every chart rendered (vega-embed resolved) and none reported an error.
    assert dom.count('data-rendered="1"') == 6, dom[-3000:]
    assert not re.search(r"<div[^>]*data-error=", dom)
    assert len(re.findall(r'class="mark-symbol role-mark', dom)) >= 5  # scatter points
    assert 'class="mark-line role-mark' in dom  # frontier lines and learning curves
    assert "<script>alert(1)" not in dom
    assert (tmp_path / "decision.png").stat().st_size > 10_000

    frontier = tmp_path / "frontier.html"
    frontier.write_bytes(entries["results/math/report/frontier.html"]["content"])
    dom = render(frontier, tmp_path)
    assert "<table" in dom and 'class="sortable"' in dom
    assert html.escape(EVIL_NAME, quote=False) in dom  # shown as text...
    assert "<script>alert(1)" not in dom  # ...never as an element


@NEEDS_CHROMIUM
def test_chromium_report_opens_on_the_decision(workflow_run: Path, tmp_path: Path):
    """As a user: open report.html offline, click the decision link of the start page, and the
    task's first page, inside Snakemake's result frame, shows the frontier and the budget
    slider; moving the slider below every experiment greys every row out."""
    with Browser(width=1600, height=1000) as browser:
        browser.open(workflow_run / "results/report.html")
        browser.wait_for("document.querySelector('#app ul')")
        link = "document.querySelector('a[href^=\"javascript:app.setView\"]')"
        assert (
            browser.evaluate(f"{link}.textContent") == "math: which method, for your memory budget"
        )
        # Inside the window (Snakemake centres a long start page, cutting off its top).
        box = browser.evaluate(f"{link}.getBoundingClientRect().toJSON()")
        assert 0 <= box["top"] and box["bottom"] <= 1000, box
        assert "<script>alert(1)" not in browser.evaluate("document.documentElement.outerHTML")
        # One click, where the user would click.
        x, y = box["left"] + box["width"] / 2, box["top"] + box["height"] / 2
        for event in ("mousePressed", "mouseReleased"):
            browser.send(
                "Input.dispatchMouseEvent", type=event, x=x, y=y, button="left", clickCount=1
            )
        browser.wait_for("document.querySelector('iframe')")
        (frame,) = browser.child_frames()

        def page(expression: str):
            """The value of ``expression`` in the result page."""
            return browser.evaluate(expression, frame=frame)

        charts, done = ".chart", ".chart[data-rendered], .chart[data-error]"
        browser.wait_for(
            f"document.querySelectorAll('{charts}').length > 0 && "
            f"document.querySelectorAll('{charts}').length === "
            f"document.querySelectorAll('{done}').length",
            frame=frame,
        )
        assert page("document.title").startswith("math: which method")
        assert page("document.querySelectorAll('.chart[data-error]').length") == 0
        # The frontier: its points and step line, drawn in the first chart, and the slider.
        first = "document.getElementById('chart0')"
        assert page(f"{first}.querySelectorAll('.mark-symbol path').length") >= 3
        assert page(f"{first}.querySelector('.mark-line path') !== null")
        slider = f"{first}.querySelector('input[type=range][name=budget]')"
        assert page(f"{slider} !== null")
        advice = (
            "Array.from(document.querySelectorAll('pre.advice'))"
            ".filter(function (p) { return !p.hidden; })"
            ".map(function (p) { return p.textContent; })"
        )
        (shown,) = page(advice)
        assert shown.startswith("Task math (this run): Pareto-optimal methods within memory")
        assert "lora/rank8-qv" in shown or "prompt_tuning/tokens20" in shown
        over = "document.querySelectorAll('tr.over-budget').length"
        assert page(over) == 0
        browser.screenshot(tmp_path / "report-math.png")
        page(
            f"(function () {{ var s = {slider}; s.value = s.min;"
            " s.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        rows = "document.querySelectorAll('tr[data-memory]').length"
        browser.wait_for(f"{over} === {rows} && {rows} > 0", frame=frame)
        (shown,) = page(advice)
        assert "No experiment fits the budget." in shown
    assert (tmp_path / "report-math.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# The image task's report, on stand-in run results (no training): rules/report.smk alone.
# ---------------------------------------------------------------------------------------------

IMAGE_SNAKEFILE = """
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
config.update({"tasks": ["image"], "seeds": [0], "published": {"image": "published"}})


def run_results(task):
    return sorted(str(p) for p in Path("results", task, "runs").glob("*/*/seed*/result.json"))


# What rules/report.smk takes from common.smk: no task package outside peftbench, no predictions.
from peftbench.tasks import registry

EXTERNAL_PACKAGES = {}


def task_folder(task):
    return Path(registry.import_module(".", task).__file__).parent


def memory_estimates():
    return []


rule all:
    input:
        "results/summary.parquet",
        "results/image/pareto.png",
        "results/environment.html",
        expand(
            "results/image/report/{page}",
            page=["decision.html", "frontier.html", "configs.html", "samples.html"],
        ),


include: "rules/report.smk"
"""
IMAGE_RUNS = {"lora/r8": (0.70, 12), "oft/b16": (0.60, 8), "full-finetuning/all": (0.65, 30)}


def write_image_runs(workdir: Path) -> None:
    """Image-task result files with per-image similarity scores and sample grids."""
    rng = np.random.default_rng(0)
    runs = [make_base_result(task="image", similarity=0.3)]
    for experiment, (similarity, memory_gb) in IMAGE_RUNS.items():
        method, name = experiment.split("/")
        runs.append(
            make_result(
                method,
                name,
                task="image",
                similarity=similarity,
                train_memory_peak_bytes=memory_gb * 10**9,
            )
        )
    runs.append(make_result("ia3", "broken", task="image", status="failed"))
    for result in runs:
        folder = workdir / "results/image/runs" / result["experiment"] / f"seed{result['seed']}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(result))
        if result["status"] != "success":
            continue  # a failed run leaves neither scores nor samples
        Image.new("RGB", (64, 32), (200, 40, 40)).save(folder / "samples.png")
        scores = result["metrics"]["similarity"] + rng.normal(0, 0.05, 40)
        with open(folder / "test_similarity.jsonl", "w") as handle:
            for i, value in enumerate(scores):
                line = {"prompt": f"prompt {i // 2}", "repeat": i % 2, "similarity": value}
                handle.write(json.dumps(line) + "\n")


@pytest.fixture(scope="module")
def image_workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("image-report"))
    (workdir / "published").mkdir()
    shutil.copy(FIXTURES / "oft--flux2-klein-default.json", workdir / "published")
    (workdir / "image.smk").write_text(IMAGE_SNAKEFILE)
    write_image_runs(workdir)
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "-s", "image.smk"]
    for extra in ([], ["--report", "results/report.html"]):
        proc = subprocess.run(
            [*command, *extra], cwd=workdir, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir


def test_image_report_pages(image_workflow: Path):
    text = (image_workflow / "results/report.html").read_text(encoding="utf-8")
    entries = embedded_files(text)
    assert {
        "results/image/report/decision.html",
        "results/image/report/frontier.html",
        "results/image/report/samples.html",
    } <= set(entries)
    samples = entries["results/image/report/samples.html"]
    assert "sample images of every run" in samples["caption"]
    assert "Samples" in re.search(r"var categories = (.*?);\s*</script>", text, re.S).group(1)
    page = samples["content"].decode()
    assert page.count('<img src="data:image/png;base64,') == 1 + len(IMAGE_RUNS)
    assert "<h2>ia3/broken</h2>" in page and "No sample grid" in page
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    decision = entries["results/image/report/decision.html"]["content"].decode()
    # This run's memory frontier with the budget, then every chart with the published row.
    assert decision.count("vegaEmbed('#chart") == 6 and "Test similarity" in decision
    assert "oft/flux2-klein-default" in decision  # the published FLUX.2 row, next to ours
    # The decision is this run's: at every budget, the advice names no published experiment.
    advice = re.findall(r'<pre class="advice"[^>]*>(.*?)</pre>', decision, re.S)
    assert len(advice) == 1 + len(IMAGE_RUNS)  # nothing fits, then one step per experiment
    assert all("flux2-klein" not in text for text in advice)
    frontier = pd.read_csv(image_workflow / "results/image/report/frontier.csv")
    ours = frontier[(frontier["source"] == "this run") & (frontier["axis"] == "memory")]
    # The per-image similarity scores drive the bootstrap; the frontier is on similarity.
    assert set(ours.loc[ours["experiment"] != "ia3/broken", "noise"]) >= {"items"}
    assert set(ours.loc[ours["on_frontier"], "experiment"]) == {"lora/r8", "oft/b16"}
    assert "similarity_low" in frontier.columns
    # The generic aggregate rule: the task's own summary and the same frontier chart.
    per_task = pd.read_csv(image_workflow / "results/image/summary.csv")
    assert len(per_task) == 2 + len(IMAGE_RUNS) and per_task["similarity"].notna().sum() == 4
    pareto = (image_workflow / "results/image/pareto.html").read_text(encoding="utf-8")
    assert "Image generation (DreamBooth style): Test similarity vs. training peak memory" in pareto
    assert "lora/r8" in pareto and "P(on frontier)" in pareto
    assert (image_workflow / "results/image/pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = pd.read_parquet(image_workflow / "results/summary.parquet")
    assert set(summary["task"]) == {"image"}
    assert set(summary.loc[summary["on_frontier"], "experiment"]) == {
        "lora/r8",
        "oft/b16",
        "oft/flux2-klein-default",
    }


@pytest.mark.skipif(chromium() is None, reason="needs chromium (apt-get install -y chromium)")
def test_chromium_renders_image_charts_and_samples(image_workflow: Path, tmp_path: Path):
    folder = image_workflow / "results/image/report"
    dom = render(folder / "decision.html", tmp_path)
    assert dom.count('data-rendered="1"') == 6, dom[-3000:]
    assert not re.search(r"<div[^>]*data-error=", dom)
    dom = render(folder / "samples.html", tmp_path)
    assert dom.count("<img") == 1 + len(IMAGE_RUNS)
