"""Snakemake entry point (rule aggregate): one task's summary table, its search grids and its
Pareto chart.

``results/<task>/summary.csv`` (one row per run, of a search grid only the point chosen on
validation), ``results/<task>/search.csv`` (every point of every search grid with the choice,
:func:`peftbench.analysis.search.grid_table`, which the report's search page reads) and
``results/<task>/pareto.html`` / ``.png``: the task's quality against training memory with the
noise-aware frontier, drawn by the same chart as the report.
"""

import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.workflow import forbid_imports  # noqa: E402

# Reads result files only: torch-free by contract, checked while it runs.
forbid_imports("aggregate")

from peftbench.analysis.aggregate import (  # noqa: E402
    load_results,
    provenance_warnings,
    summarize_with_grid,
    write_summary,
)
from peftbench.analysis.summary import normalize, table_item_scores  # noqa: E402
from peftbench.analysis.tables import AXES, experiment_frontier  # noqa: E402
from peftbench.core.io import atomic_path  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402
from peftbench.report.captions import chart_caption  # noqa: E402
from peftbench.report.charts import frontier_chart, legend_colors  # noqa: E402
from peftbench.report.embed import save_chart  # noqa: E402
from peftbench.tasks import registry  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)  # tasks outside the package (config task_packages)
task = sm.wildcards.task
spec = registry.get(task)
results = load_results(sm.input)
# The summary keeps each grid's chosen point only; the grid table has every point.
table, grid = summarize_with_grid(results)
for warning in provenance_warnings(table):
    print(f"WARNING: {warning}")
write_summary(table, sm.output.summary)
with atomic_path(sm.output.search) as tmp:
    grid.to_csv(tmp, index=False)

rows = normalize(table)  # with family and source, as the report's frontier reads them
# results/<task>/summary.csv: the run folders are below results/<task>/runs.
items = table_item_scores(rows, Path(sm.output.summary).parent.parent)
frontier = experiment_frontier(rows, AXES["memory"], spec, items)
chart = frontier_chart(
    frontier,
    AXES["memory"],
    spec.quality.name,
    legend_colors(rows),
    f"{spec.title}: {spec.quality.axis} vs. training peak memory",
)
caption = chart_caption("memory", task)
save_chart(chart, sm.output.html, sm.output.png, caption_html=caption)
failed = table[table["status"] == "failed"]
print(f"{len(table)} results, {len(failed)} failed")
for row in failed.itertuples():
    print(f"FAILED {row.experiment} seed {row.seed}: {row.error}")
