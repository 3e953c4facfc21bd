"""A tiny embedded setup shared by the tests that really train (see conftest.py's ``tiny``)."""

import json
from pathlib import Path

import yaml
from paths import REPO

from peftbench.core.config import deep_merge
from peftbench.core.runs import RunContext
from peftbench.tasks.math import run as math_task

CONFIG = deep_merge(
    yaml.safe_load((REPO / "config/config.yaml").read_text()),
    yaml.safe_load((REPO / "config/test.yaml").read_text()),
)["math"]
PARAMS = CONFIG["training"]
TIMING_KEYS = {
    "train_memory_peak_bytes",
    "train_memory_allocated_peak_bytes",
    "eval_memory_peak_bytes",
    "eval_memory_allocated_peak_bytes",
    "train_time_s",
    "eval_time_s",
    "train_tokens_per_s",
}


def run(tiny: Path, experiment: str, out: str, params=PARAMS, adapter: dict | None = None) -> dict:
    method, name = experiment.split("/")
    exp_dir = REPO / "experiments/math" / experiment
    if adapter is not None:
        exp_dir = tiny / "experiments" / experiment
        exp_dir.mkdir(parents=True, exist_ok=True)
        (exp_dir / "adapter_config.json").write_text(json.dumps(adapter))
    ctx = RunContext(
        task="math",
        method=method,
        name=name,
        seed=0,
        exp_dir=exp_dir if method != "base" else None,
        params=params,
        task_cfg=CONFIG,
        inputs={"data": tiny / "data", "base": tiny / "base"},
        out_dir=tiny / out,
        threads=1,
        progress=False,
    )
    return math_task.run_experiment(ctx)
