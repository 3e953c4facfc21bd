"""Snakemake entry point: train and evaluate one experiment x seed of any task (rule train).

The task's spec names its run module; this script builds the run's context and hands it over, so
it never names a task. A failure inside the run is recorded in result.json (status "failed") and
the job still exits 0, so the other experiments and the aggregation go on; only a run folder that
cannot take even that result.json fails the job.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

# A local run hands the job to the workflow's worker, which has the training stack imported
# already (peftbench/core/worker.py); without one, delegate returns and the job runs here.
from peftbench.core.worker import delegate  # noqa: E402

delegate(__real_file__)  # noqa: F821 - set by Snakemake's preamble: this job's script file

from peftbench.core.layout import BASE_METHOD  # noqa: E402
from peftbench.core.runs import RunContext, RunOutputError  # noqa: E402
from peftbench.core.search import split_run_name  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402
from peftbench.tasks import registry  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)
task = sm.wildcards.task
spec = registry.get(task)
task_cfg = sm.params.task_cfg
# A grid point's run (name@point) trains the experiment folder's config at that point.
folder = split_run_name(sm.wildcards.name)[0]
experiment_dir = Path(task_cfg["experiments_dir"]) / sm.wildcards.method / folder
if sm.wildcards.method != BASE_METHOD and not experiment_dir.is_dir():
    # Never train something else under this label (no folder would mean full fine-tuning).
    raise FileNotFoundError(f"{experiment_dir}: experiment folder of this run is missing")
# Every named input but the experiment's own files: the data folder and the spec's extras.
inputs = {key: Path(value) for key, value in sm.input.items() if key != "experiment"}
ctx = RunContext(
    task=task,
    method=sm.wildcards.method,
    name=sm.wildcards.name,
    seed=int(sm.wildcards.seed),
    exp_dir=experiment_dir if experiment_dir.is_dir() else None,
    params=sm.params.training,
    task_cfg=task_cfg,
    inputs=inputs,
    out_dir=Path(sm.output.result).parent,
    threads=sm.threads,
)
try:
    result = registry.import_module(spec.run_module, task).run_experiment(ctx)
except RunOutputError as exc:
    # Not even a failed result.json fits in the run folder (full disk, read-only folder): this
    # job fails, with the reason in its log; the others go on (keep-going, profiles/default).
    sys.exit(f"peftbench: {exc}")
print(f"status: {result['status']}", result["error"] or "")
