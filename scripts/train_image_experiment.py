"""Snakemake entry point: train and evaluate one image experiment x seed (rule image_train).

A failure inside the run is recorded in result.json (status "failed") and the job still exits 0,
so the other experiments and the aggregation go on.
"""

import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.image_task import run_experiment  # noqa: E402
from peftbench.workflow import redirect_log  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
experiment_dir = Path(sm.params.experiments_dir) / sm.wildcards.method / sm.wildcards.name
result = run_experiment(
    task="image",
    method=sm.wildcards.method,
    name=sm.wildcards.name,
    seed=int(sm.wildcards.seed),
    exp_dir=experiment_dir if experiment_dir.is_dir() else None,
    params=sm.params.training,
    model_cfg=sm.params.model,
    encoder_cfg=sm.params.encoder,
    base_dir=Path(sm.input.base) if sm.input.base else None,
    encoder_dir=Path(sm.input.encoder) if sm.input.encoder else None,
    data_dir=Path(sm.input.data),
    out_dir=Path(sm.output.result).parent,
    threads=sm.threads,
)
print(f"status: {result['status']}", result["error"] or "")
