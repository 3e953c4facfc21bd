"""Snakemake entry point (rule report_samples): one task's samples page, each sample prompt's
images of every run side by side with the prompt's real image.

The inputs are the runs' result.json files; each run's sample grid (the task spec's
``samples_file``) sits next to its result.json and is read when present (a failed run has
none, so it cannot be an input). The prepared data (its manifest names the sample prompts and
the real images) is the rule's ``data`` input where the rule names one, else the task's data
folder beside its runs (``results/<task>/data``, which every run was trained from).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.workflow import forbid_imports  # noqa: E402

# Reads result files only: torch-free by contract, checked while it runs.
forbid_imports("report_samples")

from peftbench.analysis.aggregate import load_results  # noqa: E402
from peftbench.core.io import atomic_path  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402
from peftbench.report.pages_samples import samples_page  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)  # tasks outside the package (config task_packages)
task = sm.wildcards.task
results = load_results(sm.input.results)
runs = [(result, Path(path).parent) for result, path in zip(results, sm.input.results, strict=True)]
# results/<task>/runs/<method>/<name>/seed<k>/result.json -> results/<task>/data
data_dir = sm.input.get("data") or (runs[0][1].parents[3] / "data" if runs else None)
with atomic_path(sm.output.page) as tmp:
    tmp.write_text(samples_page(task, runs, data_dir), encoding="utf-8")
print(f"{task}: samples of {len(results)} runs (data: {data_dir}) -> {sm.output.page}")
