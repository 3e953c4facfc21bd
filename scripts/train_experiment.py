"""Snakemake entry point: train and evaluate one experiment x seed (rules math_train, image_train).

A failure inside the run is recorded in result.json (status "failed") and the job still exits 0,
so the other experiments and the aggregation go on.
"""

import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.workflow import redirect_log  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
task = sm.rule.removesuffix("_train")
experiment_dir = Path(sm.params.experiments_dir) / sm.wildcards.method / sm.wildcards.name
common = dict(
    task=task,
    method=sm.wildcards.method,
    name=sm.wildcards.name,
    seed=int(sm.wildcards.seed),
    exp_dir=experiment_dir if experiment_dir.is_dir() else None,
    params=sm.params.training,
    model_cfg=sm.params.model,
    base_dir=Path(sm.input.base) if sm.input.base else None,
    out_dir=Path(sm.output.result).parent,
    threads=sm.threads,
)
if task == "image":
    from peftbench.tasks.image.run import run_experiment

    result = run_experiment(
        **common,
        encoder_cfg=sm.params.encoder,
        encoder_dir=Path(sm.input.encoder) if sm.input.encoder else None,
        data_dir=Path(sm.input.data),
    )
else:
    from peftbench.tasks.math.run import run_experiment

    result = run_experiment(**common, data_dir=Path(sm.input.data[0]).parent)
print(f"status: {result['status']}", result["error"] or "")
