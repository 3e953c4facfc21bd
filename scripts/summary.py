"""Snakemake entry point (rule summary): the cross-task summary table, its HTML page, the
environment page and the reference page, with imported published results (config
``published``) and the memory predicted before the runs (rule estimate_memory)."""

import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.workflow import forbid_imports  # noqa: E402

# Reads result files only: torch-free by contract, checked while it runs.
forbid_imports("summary")

from peftbench.analysis.aggregate import load_results, provenance_warnings  # noqa: E402
from peftbench.analysis.predicted import read_predictions  # noqa: E402
from peftbench.analysis.published import import_published  # noqa: E402
from peftbench.analysis.summary import SOURCE_THIS_RUN, build_summary, write_summary_files  # noqa: E402
from peftbench.core.io import atomic_path  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402
from peftbench.report.environment import environment_page  # noqa: E402
from peftbench.report.pages import summary_page  # noqa: E402
from peftbench.report.reference import reference_page  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)  # tasks outside the package (config task_packages)
results = load_results(sm.input.results)
published = import_published(sm.params.published)
for warning in published.warnings:
    print(f"WARNING: published results: {warning}")
# Predicted memory per experiment (rule estimate_memory), joined as predicted_memory_gb.
table = build_summary(results, published, read_predictions(sm.input.get("estimates", [])))
write_summary_files(table, sm.output.parquet, sm.output.csv)
this_run = table[table["source"] == SOURCE_THIS_RUN]
mixed = provenance_warnings(this_run)
for warning in mixed:
    print(f"WARNING: {warning}")
notes = [
    f"{len(this_run)} runs of this workflow, "
    f"{int((this_run['status'] != 'success').sum())} failed; "
    f"{len(table) - len(this_run)} published results imported from "
    f"{len(published.files)} file(s)."
]
with atomic_path(sm.output.html) as tmp:
    tmp.write_text(
        summary_page(table, [f"published results: {w}" for w in published.warnings] + mixed, notes),
        encoding="utf-8",
    )
with atomic_path(sm.output.environment) as tmp:
    tmp.write_text(environment_page(results, published, warnings=mixed), encoding="utf-8")
with atomic_path(sm.output.reference) as tmp:
    text = Path(sm.input.reference).read_text(encoding="utf-8")
    tmp.write_text(reference_page(text), encoding="utf-8")
print(f"{len(table)} rows ({len(this_run)} this run) -> {sm.output.csv}")
