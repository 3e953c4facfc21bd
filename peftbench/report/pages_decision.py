"""A task's decision page, the report's first page: which method to fine-tune with, for a
memory budget.

At the top, the frontier chart of this run's experiments (quality against memory, interactive,
with tooltips) with a budget slider under it that greys out what does not fit; the advice of
``peftbench advise`` for the budget the slider is at, in words; the frontier table, its rows
over the budget greyed too. Below, every other chart of the task on the same page, so that one
copy of the Vega scripts serves them all. Captions are on the page, not behind an icon.

Only this run's experiments take part in the decision: published results come from another
model, test set and GPU, so their memory says nothing about what fits here (they are in the
charts below and in the frontier tables).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from peftbench.analysis.glossary import axis_title
from peftbench.analysis.summary import SOURCE_THIS_RUN
from peftbench.analysis.tables import AXES, experiment_frontier
from peftbench.report.budget import (
    VEIL_NAME,
    BudgetAdvice,
    Slider,
    advice_steps,
    experiment_memory,
    slider_for,
    with_budget,
)
from peftbench.report.captions import chart_caption
from peftbench.report.charts import frontier_chart
from peftbench.report.embed import charts_page_html
from peftbench.report.html import glossary_html, html_table, row_class
from peftbench.report.pages_frontier import table_columns
from peftbench.tasks import registry

#: The memory figure of the decision: the frontiers' memory axis.
MEMORY = AXES["memory"]

#: Greyed rows, the veil transparent to the mouse (tooltips of the points under it), a slider
#: wide enough to set a budget precisely.
_STYLE = f"""<style>
tr.over-budget td {{ color: #999; background: #f4f4f4; }}
.{VEIL_NAME}_marks {{ pointer-events: none; }}
.vega-bind {{ font-size: 0.95rem; font-weight: bold; margin: 0.3rem 0; }}
.vega-bind input[type=range] {{ width: 28rem; max-width: 80vw; vertical-align: middle; }}
pre.advice {{ white-space: pre-wrap; font-size: 0.8rem; }}
.budget-now {{ font-size: 1rem; margin: 1rem 0 0.3rem 0; }}
</style>"""

#: Follows the slider: the budget in words, the advice of its step, the greyed table rows.
_SCRIPT = """<script>
(function () {
  function number(text) { return text === "" ? Infinity : parseFloat(text); }
  function show(budget) {
    document.getElementById("budget-value").textContent = budget.toPrecision(4) * 1;
    document.querySelectorAll("pre.advice").forEach(function (pre) {
      pre.hidden = !(budget >= number(pre.dataset.low) && budget < number(pre.dataset.high));
    });
    document.querySelectorAll(".advice-range").forEach(function (node) {
      node.hidden = !(budget >= number(node.dataset.low) && budget < number(node.dataset.high));
    });
    document.querySelectorAll("tr[data-memory]").forEach(function (row) {
      row.classList.toggle("over-budget", parseFloat(row.dataset.memory) > budget);
    });
  }
  document.addEventListener("chart-rendered", function (event) {
    if (event.detail !== "chart0") return;
    var view = chartViews.chart0;
    view.addSignalListener("budget", function (name, value) { show(value); });
    show(view.signal("budget"));
  });
})();
</script>"""


def _gb(value: float) -> str:
    return f"{value:.4g}"


def _advice_html(steps: Sequence[BudgetAdvice], slider: Slider) -> str:
    """One block per budget step, only the one holding the slider's start shown (the page's
    script shows the step the slider is in)."""
    parts = [
        f'<p class="budget-now"><b>Budget: <span id="budget-value">{_gb(slider.default)}</span>'
        " GB.</b> The advice for it (as <code>peftbench advise</code> gives it, on the memory "
        "figure of the chart):</p>"
    ]
    for step in steps:
        low, high = _gb(step.low), "" if step.high is None else repr(step.high)
        shown = step.low <= slider.default and (step.high is None or slider.default < step.high)
        hidden = "" if shown else " hidden"
        if step.high is None:
            span = f"every budget of {low} GB or more"
        else:
            span = f"every budget from {low} GB up to (not including) {_gb(step.high)} GB"
        attributes = f'data-low="{step.low!r}" data-high="{high}"{hidden}'
        parts.append(
            f'<p class="caption advice-range" {attributes}>The same answer holds for '
            f"{span}: the advice only changes where the budget passes an experiment's "
            "memory.</p>"
        )
        parts.append(f'<pre class="advice" {attributes}>{html.escape(step.text)}</pre>')
    return "\n".join(parts)


def _memory_data(row: pd.Series) -> dict[str, str]:
    """A table row's memory for the page's script (none when it was not measured)."""
    value = row.get(MEMORY)
    return {} if value is None or pd.isna(value) else {"memory": repr(float(value))}


def decision_page(
    task: str,
    chart: alt.LayerChart | None,
    table: pd.DataFrame,
    steps: Sequence[BudgetAdvice],
    slider: Slider,
    more: Sequence[tuple[str, str, alt.TopLevelMixin | None]] = (),
) -> str:
    """The decision page of ``task`` (a complete HTML document).

    ``chart`` is the frontier chart of this run's experiments on the memory axis with the
    budget (:func:`~peftbench.report.budget.with_budget`; None when there is none) and ``table``
    its frontier table (:func:`peftbench.analysis.tables.experiment_frontier`); ``steps`` the
    advice per budget step and ``slider`` the budget slider (:mod:`peftbench.report.budget`);
    ``more`` the task's other charts, ``(heading, caption_html, chart)``, drawn below with the
    same copy of Vega.
    """
    spec = registry.get(task)
    quality = spec.quality.name
    intro = (
        '<p class="caption">'
        + html.escape(
            f"Which method to fine-tune with, given the memory you have: every experiment of "
            f"this run with its {spec.quality.title} against the peak memory its training "
            "needed. Move the slider under the chart to your budget: what needs more memory "
            "is greyed out, in the chart and the table, and the advice below says which "
            "methods remain on the noise-aware frontier, best first, and whether the extra "
            "memory of each buys a lead beyond noise. The slider starts where every "
            "experiment fits; it moves from below the smallest experiment to past the largest."
        )
        + "</p>"
    )
    below = [
        _advice_html(steps, slider),
        "<h3>The chart</h3>",
        chart_caption("memory", task),
        "<h2>Frontier table (this run, memory axis)</h2>",
    ]
    if table.empty:
        below.append("<p>No experiment of this run has a result for this task.</p>")
    else:
        columns = table_columns("memory", MEMORY, quality, table)
        below.append(
            html_table(
                table,
                columns,
                quality=quality,
                row_class=row_class,
                table_id="decision-frontier",
                row_data=_memory_data,
            )
        )
        below.append(glossary_html(columns, quality))
    sections: list[tuple[str, str, alt.TopLevelMixin | None]] = [("", "\n".join(below), chart)]
    for number, (heading, caption, other) in enumerate(more):
        # The first of the others opens the section of every other chart.
        title = heading or ("Every chart of the task" if number == 0 else "")
        sections.append((title, caption, other))
    return charts_page_html(
        sections,
        f"{task}: which method, for your memory budget",
        intro_html=intro,
        extra_html=_SCRIPT,
        head=_STYLE,
    )


def decision_page_for(
    summary: pd.DataFrame,
    task: str,
    items: Mapping[Any, np.ndarray] | None,
    colors: Mapping[str, str],
    more: Sequence[tuple[str, str, alt.TopLevelMixin | None]] = (),
    *,
    n_boot: int = 1000,
) -> str:
    """:func:`decision_page` of ``task`` from the summary table: this run's rows, their
    per-item scores ``items`` (keyed by summary index, as
    :func:`peftbench.analysis.summary.table_item_scores` gives them) and the report's method
    colours."""
    spec = registry.get(task)
    quality = spec.quality.name
    rows = summary[(summary["task"] == task) & (summary["source"] == SOURCE_THIS_RUN)]
    table = experiment_frontier(rows, MEMORY, spec, items) if not rows.empty else pd.DataFrame()
    slider = slider_for(experiment_memory(summary, task, MEMORY))
    steps = advice_steps(summary, task, items, memory=MEMORY, n_boot=n_boot)
    chart = None
    if not table.empty:
        title = f"{task}: {axis_title(quality)} vs {axis_title(MEMORY)} (this run)"
        chart = with_budget(
            frontier_chart(table, MEMORY, quality, colors, title),
            slider,
            f"Memory budget (GB) of {task}: ",
        )
    return decision_page(task, chart, table, steps, slider, more)
