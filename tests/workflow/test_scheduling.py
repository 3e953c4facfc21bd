"""Threads and priorities of the workflow's jobs (issue 15), read from dry runs, and the fact that
allows sizing the math base model's threads from the cores: its bits do not depend on them.

Set-up jobs (data, embedded base models, encoders, shared references) go before training jobs,
data preparation before them, the math base model (the longest) first among them; the math
base model takes the cores the image builders (fixed at one thread: their bits depend on it)
leave, at least one.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from paths import REPO
from wfutil import block_wildcards, copy_workflow, job_blocks, snakemake

DEFAULT = yaml.safe_load((REPO / "config/config.yaml").read_text())
SETUP_RULES = {"math_base_model", "image_base_model", "image_encoder"}
# The threads a fixed set-up rule keeps on every machine.
FIXED = {"image_base_model": 1, "image_encoder": 1}


def planned(dry_run_output: str) -> list[dict]:
    """rule, task, threads and priority of every job of a dry run (Snakemake omits threads
    1 and priority 0)."""
    jobs = []
    for rule, block in job_blocks(dry_run_output):
        threads = re.search(r"^\s+threads: (\d+)$", block, flags=re.M)
        priority = re.search(r"^\s+priority: (-?\d+)$", block, flags=re.M)
        jobs.append(
            {
                "rule": rule,
                "task": block_wildcards(block).get("task"),
                "threads": int(threads.group(1)) if threads else 1,
                "priority": int(priority.group(1)) if priority else 0,
            }
        )
    return jobs


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory):
    """The planned jobs by rule of a run on ``cores`` cores with ``args`` (each dry run once)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("scheduling"))
    runs: dict[tuple, dict[str, list[dict]]] = {}

    def plan(cores: int, *args: str) -> dict[str, list[dict]]:
        if (cores, *args) not in runs:
            proc = snakemake(workdir, "-n", "--cores", str(cores), *args)
            assert proc.returncode == 0, proc.stderr + proc.stdout
            by_rule: dict[str, list[dict]] = {}
            for job in planned(proc.stdout):
                by_rule.setdefault(job["rule"], []).append(job)
            runs[(cores, *args)] = by_rule
        return runs[(cores, *args)]

    return plan


@pytest.mark.parametrize(
    ("cores", "args", "math_threads"),
    [
        # Both tasks on 2 cores: the two image builders are fixed at one thread each, so the
        # math base model gets one (with two it would wait for both cores: issue 15).
        (2, (), 1),
        (4, (), 2),
        # Math alone: nothing else can run before its base model, which gets every core.
        (2, ("--config", "tasks=[math]"), 2),
        # More threads than a model this small can use are left to the other jobs.
        (32, ("--config", "tasks=[math]"), 8),
    ],
)
def test_setup_threads_follow_the_cores(dry_run, cores, args, math_threads) -> None:
    jobs = dry_run(cores, *args)
    assert [j["threads"] for j in jobs["math_base_model"]] == [math_threads]
    for rule, threads in FIXED.items():
        assert [j["threads"] for j in jobs.get(rule, [])] == ([threads] if not args else [])
    # Training jobs keep the thread count of the task's resources (their numerics depend on it).
    assert {j["threads"] for j in jobs["train"]} == {1}


def test_setup_jobs_go_first(dry_run) -> None:
    jobs = dry_run(2)
    priority = {rule: {j["priority"] for j in rule_jobs} for rule, rule_jobs in jobs.items()}
    setup = [
        p
        for rule, ps in priority.items()
        if rule in SETUP_RULES or rule.endswith("_reference")
        for p in ps
    ]
    assert {"math_base_reference", "image_base_reference"} <= priority.keys()
    # Data first (every set-up job waits for it), then the set-up jobs, then training.
    assert min(priority["prepare_data"]) > max(setup)
    assert min(setup) > max(priority["train"])
    # The longest set-up job before the other set-up jobs.
    assert min(priority["math_base_model"]) > max(
        p for rule, ps in priority.items() if rule in SETUP_RULES - {"math_base_model"} for p in ps
    )


# Builds a base model at the default architecture (so that its tensors are large enough for
# torch to split work between threads) for a few steps, with the threads of the command line,
# as a Snakemake job does (thread variables set before torch starts); prints its hashes.
BUILD = """
import hashlib, json, sys
from pathlib import Path
import torch
kind, cfg, data, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
threads = int(sys.argv[5])
if kind == "math":
    from peftbench.tasks.math.embedded_lm import build_embedded_base
    build_embedded_base(cfg, data, out, threads)
else:
    from peftbench.tasks.image.similarity import train_embedded_encoder
    out.mkdir(parents=True)
    train_embedded_encoder(cfg, out, threads, progress=False)
weights = b"".join(p.read_bytes() for p in sorted(out.rglob("*.safetensors")))
print(json.dumps({"threads": torch.get_num_threads(), "weights": hashlib.sha256(weights).hexdigest()}))
"""


def build(kind: str, cfg: dict, data: Path, out: Path, threads: int) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": str(REPO),
    }
    # The workflow's pinned kernels (config cpu_numerics), as every job gets them.
    env.update(DEFAULT["cpu_numerics"] or {})
    args = [kind, json.dumps(cfg), str(data), str(out), str(threads)]
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, *args], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_math_base_model_bits_do_not_depend_on_threads(tiny: Path, tmp_path: Path) -> None:
    default = copy.deepcopy(DEFAULT)
    model = default["math"]["base_model"]["embedded"]
    model["min_skill"] = 0.0
    model["pretraining"].update(max_steps=30, log_steps=10)
    one, two = (build("math", model, tiny / "data", tmp_path / f"m{n}", n) for n in (1, 2))
    assert (one["threads"], two["threads"]) == (1, 2)
    assert one["weights"] == two["weights"]
    # Control: on this machine the comparison tells thread counts apart (the image encoder's
    # bits differ; that is why its rule keeps one thread), so the equality above means something.
    encoder = default["image"]["encoder"]["embedded"]
    encoder.update(max_steps=10, num_images=200)
    one, two = (build("image", encoder, tmp_path, tmp_path / f"e{n}", n) for n in (1, 2))
    assert one["weights"] != two["weights"], "image encoder: same bits on 1 and 2 threads"
