"""Snakemake entry point: summary table and Pareto chart of one task (rule <task>_aggregate).

Params: ``title`` of the chart, and ``quality``, the summary column drawn on its y axis (math:
test_accuracy, image: similarity); without it, the task's quality column. The task is the
folder of the summary output, ``results/<task>/summary.csv``.
"""

import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.analysis.aggregate import (  # noqa: E402
    load_results,
    provenance_warnings,
    quality_column,
    summarize,
    write_summary,
)
from peftbench.core.workflow import redirect_log  # noqa: E402
from peftbench.report.charts import pareto_chart, save_chart  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
task = Path(sm.output.summary).parent.name
quality = sm.params.get("quality") or quality_column(task)
table = summarize(load_results(sm.input))
for warning in provenance_warnings(table):
    print(f"WARNING: {warning}")
write_summary(table, sm.output.summary)
save_chart(pareto_chart(table, y=quality, title=sm.params.title), sm.output.html, sm.output.png)
failed = table[table["status"] == "failed"]
print(f"{len(table)} results, {len(failed)} failed")
for row in failed.itertuples():
    print(f"FAILED {row.experiment} seed {row.seed}: {row.error}")
