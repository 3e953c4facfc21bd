"""Pinned CPU numerics (issue 11): the same bits whatever kernels the machine would pick.

The control shows that the kernel choice changes the bits of a training on this machine at all
(otherwise the workflow check below could not fail); the workflow check builds the embedded base
model and trains one experiment under two different outer kernel choices and asserts identical
bytes, because the workflow pins the choice (config ``cpu_numerics``) for every job.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
from wfutil import copy_workflow, snakemake

from peftbench.core.numerics import apply

# Metrics that measure time or memory, which no pin makes repeatable.
TIMING = re.compile(r"time|memory|per_s|peak|latency|overhead")
X86 = platform.machine().lower() in {"x86_64", "amd64"}

# Two kernel choices that differ on every x86-64 machine torch supports: the scalar fallback
# and the AVX2 kernels, with MKL's generic path against its AVX2 one.
KERNEL_CHOICES = [
    {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
    {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO"},
]

TINY_TRAINING = """
import hashlib, torch
torch.manual_seed(0)
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
x = torch.randn(128, 64)
for _ in range(20):
    loss = torch.nn.functional.mse_loss(model(x), x.flip(1))
    loss.backward()
    opt.step()
    opt.zero_grad()
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest())
"""


def test_apply_pins_only_x86_and_wins_over_the_shell():
    environ = {"MKL_CBWR": "COMPATIBLE", "HOME": "/root"}
    pins = {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"}
    assert apply(pins, environ, machine="x86_64") == pins
    assert environ == {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2", "HOME": "/root"}
    arm = {"HOME": "/root"}
    assert apply(pins, arm, machine="aarch64") == {} and arm == {"HOME": "/root"}
    assert apply({}, environ, machine="x86_64") == {} and apply(None, environ) == {}


def _tiny_training_hash(env: dict[str, str]) -> str:
    import os

    proc = subprocess.run(
        [sys.executable, "-c", TINY_TRAINING],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def _sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.skipif(not X86, reason="the pins apply to x86-64 only")
def test_kernel_choice_changes_bits_unless_pinned(tmp_path, monkeypatch):
    # Control: unpinned, the two kernel choices train to different weights on this machine.
    assert _tiny_training_hash(KERNEL_CHOICES[0]) != _tiny_training_hash(KERNEL_CHOICES[1])

    # The workflow under each choice: base model and one fine-tuning run, byte-identical.
    target = "results/math/runs/lora/rank8-qv/seed0/result.json"
    outcomes = []
    for i, env in enumerate(KERNEL_CHOICES):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        workdir = copy_workflow(tmp_path / f"run{i}")
        proc = snakemake(
            workdir,
            extra_config="tasks: [math]\nselect: {math: [lora/rank8-qv]}\n",
            targets=(target,),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads((workdir / target).read_text())
        assert result["status"] == "success", result["error"]
        numerics = result["provenance"]["hardware"]["numerics"]
        assert numerics["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
        assert numerics["env"]["MKL_CBWR"] == "AVX2,STRICT"
        outcomes.append(
            (
                _sha256(workdir / "results/math/base_model"),
                _sha256(workdir / Path(target).parent / "adapter"),
                {k: v for k, v in result["metrics"].items() if not TIMING.search(k)},
                result["curves"]["train_loss"],
                numerics["key"],
            )
        )
    assert outcomes[0] == outcomes[1]
