"""Snakemake entry point (rule estimate_memory): the peak GPU training memory of every selected
experiment of one task, predicted before any run, without a GPU and without weights.

:func:`peftbench.core.estimate.estimate_config` builds the task's base architecture on the meta
device (through the task's memory probe), wraps it with each experiment's adapter and accounts a
few training steps; the estimates go to ``results/<task>/memory_estimate.json`` (the format of
:func:`~peftbench.core.estimate.write_estimates`), which the summary reads for
``predicted_memory_gb``. An experiment that cannot be estimated is recorded with its error, and
so is every experiment when the task cannot be estimated at all (its probe fails to load): a
prediction never fails the job.
"""

import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

# A local run hands the job to the workflow's worker, which has the training stack imported
# already (peftbench/core/worker.py); without one, delegate returns and the job runs here.
from peftbench.core.worker import delegate  # noqa: E402

delegate(__real_file__)  # noqa: F821 - set by Snakemake's preamble: this job's script file

from peftbench.core.io import atomic_path  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)  # tasks outside the package (config task_packages)
task = sm.wildcards.task
output = Path(sm.output[0])
started = time.perf_counter()
try:
    import torch

    from peftbench.core.estimate import estimate_config, write_estimates

    torch.set_num_threads(max(1, sm.threads))

    def progress(estimate: object) -> None:
        outcome = (
            f"failed: {estimate.error}" if estimate.error is not None else f"{estimate.gb():.4f} GB"
        )
        print(f"  {estimate.experiment}: {outcome} ({estimate.seconds:.1f} s)", flush=True)

    estimates = estimate_config(sm.config, [task], progress)
    with atomic_path(output) as tmp:
        write_estimates(tmp, estimates)
    items = estimates.get(task, [])
    failed = sum(e.error is not None for e in items)
except Exception as exc:  # noqa: BLE001 - the task's probe itself failed: record it, go on
    traceback.print_exc()
    error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    records = [
        {"experiment": experiment, "peak_bytes": None, "error": error}
        for experiment in sm.params.experiments
    ]
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps({task: records}, indent=1) + "\n", encoding="utf-8")
    items, failed = records, len(records)
print(
    f"{task}: {len(items)} experiments estimated in {time.perf_counter() - started:.1f} s, "
    f"{failed} could not be estimated -> {output}"
)
