"""Snakemake entry point (rule report_task): one task's report charts and pages.

The decision page (this run's frontier on the memory axis with a budget slider, the advice for
the budget, the frontier table, then every other chart); trade-off charts (quality vs training
memory, time, trainable parameters, file size) with the noise-aware frontier and learning curves,
on one page and as PNG and SVG; the frontier tables, the effective configs and the search page,
from the search grids rule aggregate wrote (``results/<task>/search.csv``, copied to
``results/<task>/report/search.csv`` beside the page).
"""

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.workflow import forbid_imports  # noqa: E402

# Reads result files only: torch-free by contract, checked while it runs.
forbid_imports("report_task")

import pandas as pd  # noqa: E402

from peftbench.analysis.aggregate import load_results  # noqa: E402
from peftbench.analysis.glossary import axis_title  # noqa: E402
from peftbench.analysis.published import import_published  # noqa: E402
from peftbench.analysis.search import read_grid  # noqa: E402
from peftbench.analysis.summary import (  # noqa: E402
    SOURCE_THIS_RUN,
    curves_table,
    read_summary,
    table_item_scores,
)
from peftbench.analysis.tables import AXES, multi_objective_table, task_frontiers  # noqa: E402
from peftbench.core.io import atomic_path  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402
from peftbench.report.captions import chart_caption  # noqa: E402
from peftbench.report.charts import frontier_chart, learning_curves_chart, legend_colors  # noqa: E402
from peftbench.report.embed import charts_page_html, save_chart  # noqa: E402
from peftbench.report.pages import configs_page  # noqa: E402
from peftbench.report.pages_decision import decision_page_for  # noqa: E402
from peftbench.report.pages_frontier import frontier_page  # noqa: E402
from peftbench.report.pages_search import search_page  # noqa: E402
from peftbench.tasks import registry  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)  # tasks outside the package (config task_packages)
task = sm.wildcards.task
summary = read_summary(sm.input.summary)
results = load_results(sm.input.results)
published = import_published(sm.params.published)
spec = registry.get(task)
quality = spec.quality.name
colors = legend_colors(summary)
task_rows = summary[summary["task"] == task]
# results/<task>/runs/... sits two levels above the task folder's runs.
results_root = Path(sm.input.summary).parent
items = table_item_scores(task_rows, results_root)
print(f"per-item scores for {len(items)} of {len(task_rows)} rows")

# Beside published rows our rows hold the published-compatible score: its own per-item scores.
frontiers = task_frontiers(
    summary,
    task,
    items,
    comparable_items=table_item_scores(task_rows, results_root, comparable=True),
)
sections = []
for axis, column in AXES.items():
    title = f"{task}: {axis_title(quality)} vs {axis_title(column)}"
    chart = frontier_chart(frontiers[axis], column, quality, colors, title)
    caption = chart_caption(axis, task)
    save_chart(chart, None, sm.output[f"{axis}_png"], sm.output[axis])
    sections.append(("", caption, chart))
curves = curves_table(results, published)
# Only the runs the summary kept: the chosen point of each search grid.
curves = curves[
    (curves["task"] == task)
    & (curves["source"] == SOURCE_THIS_RUN)
    & curves["experiment"].isin(set(task_rows["experiment"]))
]
title = f"{task}: learning curves (this run)"
validation_title = f"Validation {spec.valid_value}"
chart = learning_curves_chart(curves, colors, title, validation_title=validation_title)
caption = chart_caption("curves", task)
save_chart(chart, None, sm.output.curves_png, sm.output.curves)
sections.append(("", caption, chart))

with atomic_path(sm.output.charts) as tmp:
    tmp.write_text(charts_page_html(sections, f"{task}: charts"), encoding="utf-8")
# The decision page draws this run's memory frontier itself (with the budget); the memory chart
# with published results beside them is among the others only where there are some.
published_rows = (task_rows["source"] != SOURCE_THIS_RUN).any()
others = sections if published_rows else sections[1:]
with atomic_path(sm.output.decision) as tmp:
    tmp.write_text(decision_page_for(summary, task, items, colors, others), encoding="utf-8")
frontier_table = pd.concat([frontiers[axis].assign(axis=axis) for axis in AXES], ignore_index=True)
with atomic_path(sm.output.frontier_csv) as tmp:
    frontier_table.to_csv(tmp, index=False)
with atomic_path(sm.output.frontier) as tmp:
    tmp.write_text(
        frontier_page(task, frontiers, multi_objective_table(summary, task)), encoding="utf-8"
    )
with atomic_path(sm.output.configs) as tmp:
    tmp.write_text(configs_page(task, results, published), encoding="utf-8")
with atomic_path(sm.output.search_csv) as tmp:
    shutil.copyfile(sm.input.search, tmp)
with atomic_path(sm.output.search) as tmp:
    tmp.write_text(search_page(task, read_grid(sm.input.search)), encoding="utf-8")
print(f"{task}: charts and pages written")
