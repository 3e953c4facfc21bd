"""The decision page of a task (the report's first page): the budget slider and its chart layers,
the advice at every budget step (the same answer as ``peftbench advise``), one copy of the Vega
scripts per page, escaping, and, in headless Chromium, that moving the slider greys out what does
not fit while the greyed points keep their tooltips."""

import contextlib
import html
import io
import json
import re

import pytest
import vl_convert as vlc
from factories import make_base_result, make_result

from peftbench.analysis.published import import_published
from peftbench.analysis.summary import build_summary
from peftbench.analysis.tables import experiment_frontier
from peftbench.cli import main
from peftbench.report.advice import advise
from peftbench.report.browser import Browser, chromium
from peftbench.report.budget import (
    BUDGET_PARAM,
    VEIL_NAME,
    advice_steps,
    experiment_memory,
    slider_for,
    with_budget,
)
from peftbench.report.charts import frontier_chart, legend_colors
from peftbench.report.embed import charts_page_html
from peftbench.report.pages_decision import MEMORY, decision_page_for
from peftbench.tasks import registry

EVIL_NAME = "<script>alert(1)</script>"
#: experiment -> (test accuracy, training memory GB): the frontier is r8 < r16 < full.
RUNS = {
    "lora/r8": (0.40, 10),
    "lora/r16": (0.45, 12),
    "oft/b16": (0.30, 11),
    "full-finetuning/default": (0.50, 30),
}


def summarize(results):
    return build_summary(results, import_published({}), {})


def memory_chart(summary):
    """The frontier chart of the math rows on the memory axis (no budget)."""
    rows = summary[summary["task"] == "math"]
    table = experiment_frontier(rows, MEMORY, registry.get("math"))
    return frontier_chart(table, MEMORY, "test_accuracy", legend_colors(summary), "t")


@pytest.fixture(scope="module")
def summary():
    results = [make_base_result(test_accuracy=0.1)]
    for experiment, (accuracy, memory_gb) in RUNS.items():
        method, name = experiment.split("/")
        results.append(
            make_result(
                method, name, test_accuracy=accuracy, train_memory_peak_bytes=memory_gb * 10**9
            )
        )
    # Method "<script>alert(1)<", name "script>": a name that must stay text everywhere.
    results.append(
        make_result(
            "<script>alert(1)<", "script>", test_accuracy=0.2, train_memory_peak_bytes=20 * 10**9
        )
    )
    results.append(make_result("ia3", "broken", status="failed"))
    return summarize(results)


@pytest.fixture(scope="module")
def page(summary):
    return decision_page_for(summary, "math", {}, legend_colors(summary), n_boot=200)


def test_slider_spans_the_experiments_and_starts_where_all_fit():
    slider = slider_for([0.006838, 0.008171, 0.0082])
    assert slider.step == 1e-6
    assert slider.low < 0.006838 and slider.high > 0.0082
    # On a step of the range input and not below the largest: nothing is greyed at first.
    assert slider.default >= 0.0082 and round(slider.default / slider.step) == pytest.approx(
        slider.default / slider.step
    )
    gpu = slider_for([10, 11, 12, 30])
    assert (gpu.low, gpu.default, gpu.high, gpu.step) == (9.0, 30.0, 33.0, 0.01)


def test_budget_is_a_slider_parameter_that_veils_the_chart(summary):
    chart = memory_chart(summary)
    slider = slider_for([10, 30])
    spec = with_budget(chart, slider, "Memory budget (GB): ").to_dict()
    (param,) = [p for p in spec["params"] if p["name"] == BUDGET_PARAM]
    assert param["value"] == slider.default
    assert param["bind"]["input"] == "range"
    assert (param["bind"]["min"], param["bind"]["max"]) == (slider.low, slider.high)
    # It compiles to Vega: a signal bound to a range input, the veil a mark of its own.
    vega = vlc.vegalite_to_vega(spec)
    (signal,) = [s for s in vega["signals"] if s["name"] == BUDGET_PARAM]
    assert signal["bind"]["input"] == "range"
    marks = json.dumps(vega["marks"])
    assert f"{VEIL_NAME}_marks" in marks and f"scale('x', {BUDGET_PARAM})" in marks
    with pytest.raises(TypeError):
        with_budget(chart.properties(width=100) | chart, slider, "x")


def test_advise_checks_the_budget_on_the_memory_figure_asked_for():
    # A CPU run: peak RSS (train_memory_gb) 5 GB but 1 GB of live tensors (memory_gb).
    cpu = make_result(
        "lora",
        "cpu",
        memory_measure="cpu_rss_above_loaded_model",
        train_memory_peak_bytes=5 * 10**9,
        train_tensor_peak_bytes=10**9,
    )
    summary = summarize([cpu])
    assert advise(summary, "math", 2, n_boot=50)[0].empty  # RSS: over the budget
    frontier = advise(summary, "math", 2, n_boot=50, memory=MEMORY)[0]
    assert frontier["experiment"].tolist() == ["lora/cpu"]


def test_advice_steps_cover_every_budget_once(summary):
    steps = advice_steps(summary, "math", {}, memory=MEMORY, n_boot=200)
    memory = experiment_memory(summary, "math", MEMORY)
    assert [s.low for s in steps] == [0.0, *sorted(set(memory))]
    assert [s.high for s in steps] == [*sorted(set(memory)), None]
    assert "No experiment fits the budget." in steps[0].text
    # Between 12 and 20 GB: r8 and r16 on the frontier, full fine-tuning over the budget.
    (step,) = [s for s in steps if s.low == 12]
    assert "lora/r16" in step.text and "lora/r8" in step.text
    assert "full-finetuning/default" not in step.text.split("Note:")[0]
    assert "over the budget: " in step.text and "full-finetuning/default" in step.text


def test_each_step_is_what_the_command_line_prints(summary, tmp_path):
    """No second implementation: on CUDA rows (memory_gb is the training peak), the page's
    advice at a budget is the output of ``peftbench advise`` but for the name of the figure
    (the command line still budgets train_memory_gb, which differs on a CPU)."""
    path = tmp_path / "summary.csv"
    summary.to_csv(path, index=False)
    steps = advice_steps(summary, "math", {}, memory=MEMORY, n_boot=200)
    for step in steps[1:]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(
                [
                    "advise",
                    "--task",
                    "math",
                    "--max-memory-gb",
                    repr(step.low),
                    "--summary",
                    str(path),
                    "--n-boot",
                    "200",
                ]
            )
        # The command line budgets train_memory_gb, the page memory_gb: the same numbers here.
        printed = out.getvalue().rstrip("\n")
        printed = printed.replace("training memory <= ", "memory <= ")
        assert printed.replace("train_memory_gb", "memory_gb") == step.text


def test_page_shows_the_default_advice_and_marks_rows(page, summary):
    # The default step (every experiment fits) is shown without script; the others are hidden.
    shown = re.findall(r'<pre class="advice" data-low="([^"]*)" data-high="([^"]*)">', page)
    assert shown == [("30.0", "")]
    assert len(re.findall(r'<pre class="advice"[^>]*hidden>', page)) == 5
    assert 'Budget: <span id="budget-value">30</span> GB.' in page
    # Every measured experiment's row carries its memory for the slider's script.
    for experiment, (_, memory_gb) in RUNS.items():
        row = re.search(rf'<tr[^>]*data-memory="([^"]+)"[^>]*><td[^>]*>{experiment}<', page)
        assert row and float(row.group(1)) == memory_gb, experiment
    # Captions are on the page.
    assert "Quality against peak training memory" in page


def test_page_escapes_names_and_carries_one_vega_bundle(page, summary):
    assert EVIL_NAME not in page
    assert html.escape(EVIL_NAME) in page  # in the table and the advice, as text
    assert page.count("<script>") == page.count("</script>")
    assert page.count("VEGA_BUNDLE_GZIP = ") == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    chart = memory_chart(summary)
    many = charts_page_html([("", "", chart)] * 6, "six charts")
    assert many.count("vegaEmbed('#chart") == 6
    assert many.count("VEGA_BUNDLE_GZIP = ") == 1
    # One copy weighs what one did before for a single chart, a third of it.
    assert len(many) < 600_000


@pytest.mark.skipif(chromium() is None, reason="needs chromium (apt-get install -y chromium)")
def test_chromium_slider_greys_out_what_does_not_fit(page, tmp_path):
    path = tmp_path / "decision.html"
    path.write_text(page, encoding="utf-8")
    with Browser(width=1400, height=1200) as browser:
        browser.open(path)
        browser.wait_for("document.querySelector('.chart[data-rendered], .chart[data-error]')")
        assert browser.evaluate("document.querySelectorAll('.chart[data-error]').length") == 0
        assert browser.evaluate("document.querySelectorAll('.chart[data-rendered]').length") == 1
        slider = "document.querySelector('input[type=range][name=budget]')"
        assert browser.evaluate(f"{slider}.value") == "30"
        assert browser.evaluate("document.querySelectorAll('tr.over-budget').length") == 0
        # Down to 12.5 GB: full fine-tuning (30) and the 20 GB experiment no longer fit.
        browser.evaluate(
            f"(function () {{ var s = {slider}; s.value = '12.5';"
            " s.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )
        browser.wait_for("document.getElementById('budget-value').textContent === '12.5'")
        over = browser.evaluate(
            "Array.from(document.querySelectorAll('tr.over-budget'))"
            ".map(function (r) { return r.cells[0].textContent; })"
        )
        assert sorted(over) == ["<script>alert(1)</script>", "full-finetuning/default"]
        visible = browser.evaluate(
            "Array.from(document.querySelectorAll('pre.advice'))"
            ".filter(function (p) { return !p.hidden; }).map(function (p) { return p.textContent; })"
        )
        assert len(visible) == 1 and "within memory <= 12 GB" in visible[0]
        # The veil lies right of the budget: its left edge is the budget's pixel position.
        veil = browser.evaluate(
            f"document.querySelector('.{VEIL_NAME}_marks path').getBoundingClientRect().left"
        )
        assert veil > 0
        # A greyed point keeps its tooltip: the veil lets the mouse through to it.
        box = browser.evaluate(
            "(function () { var best = null;"
            " document.querySelectorAll('.role-mark path, .role-mark circle')"
            ".forEach(function (node) { var b = node.getBoundingClientRect();"
            " if (b.width > 4 && b.width < 30 && (!best || b.left > best.left)) best = b; });"
            " return best && {x: best.left + best.width / 2, y: best.top + best.height / 2}; })()"
        )
        assert box is not None and box["x"] > veil  # the right-most point is under the veil
        browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=box["x"], y=box["y"])
        browser.wait_for(
            "document.querySelector('#vg-tooltip-element.visible') && "
            "document.querySelector('#vg-tooltip-element').textContent"
            ".indexOf('full-finetuning/default') >= 0"
        )
        browser.screenshot(tmp_path / "decision.png")
    assert (tmp_path / "decision.png").stat().st_size > 10_000
