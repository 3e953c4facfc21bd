"""Show why the embedded benchmark pins its CPU numerics, and that the pins work.

    python benchmarks/numerics_divergence.py [--steps 1000] [--seed 0]

Pretrains the embedded math base model (default config, ``--steps`` optimizer steps, one thread)
four times, each in its own process: twice unpinned under two different kernel choices (torch's
scalar kernels with MKL's generic path; torch's AVX2 kernels with MKL's automatic choice), and
twice under the same two outer choices with the config's ``cpu_numerics`` pins applied, as the
workflow does for every job. Prints the pretraining loss curves side by side and each run's
weight hash: the unpinned pair drifts apart, the pinned pair is byte-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from peftbench.core.config import deep_merge  # noqa: E402
from peftbench.core.numerics import apply  # noqa: E402
from peftbench.tasks.math.data import prepare_data  # noqa: E402

#: Two kernel choices that differ on every x86-64 machine torch supports.
CHOICES = {
    "scalar": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO"},
}

BUILD = """
import hashlib, json, sys
from pathlib import Path
from peftbench.tasks.math.embedded_lm import build_embedded_base
model_cfg, data, out = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
info = build_embedded_base(model_cfg, data, out, 1)
digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(out.glob("*.safetensors"))))
print(json.dumps({"curve": info["loss_curve"], "skill": info["skill"], "sha": digest.hexdigest()}))
"""


def build(model_cfg: dict, data: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, json.dumps(model_cfg), str(data), str(out)],
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="pretraining steps per run")
    parser.add_argument("--seed", type=int, default=0, help="base-model seed")
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    model_cfg = deep_merge(
        config["math"]["base_model"]["embedded"],
        {"seed": args.seed, "min_skill": 0.0, "pretraining": {"max_steps": args.steps}},
    )
    pins = config["cpu_numerics"]
    runs = {}
    for name, env in CHOICES.items():
        runs[f"{name} unpinned"] = env
        pinned = dict(env)
        apply(pins, pinned)  # what the workflow does to every job's environment
        runs[f"{name} + pins"] = pinned
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare_data(config["math"]["data"], data)
        results = {}
        names = list(runs)
        for pair in (names[0::2], names[1::2]):  # two at a time: one per core
            procs = {
                n: build(model_cfg, data, Path(tmp) / n.replace(" ", "_"), runs[n]) for n in pair
            }
            for n, proc in procs.items():
                out, _ = proc.communicate()
                if proc.returncode != 0:
                    print(f"{n}: pretraining failed (exit {proc.returncode})")
                    return 1
                results[n] = json.loads(out.strip().splitlines()[-1])
    print(f"pretraining loss of the embedded math base model (seed {args.seed}, 1 thread)")
    print(f"{'step':>6} " + " ".join(f"{n:>16}" for n in names))
    for i, point in enumerate(results[names[0]]["curve"]):  # every logged step
        losses = " ".join(f"{results[n]['curve'][i]['loss']:>16.6f}" for n in names)
        print(f"{point['step']:>6} {losses}")
    for n in names:
        print(f"{n:>16}: weights sha256 {results[n]['sha'][:16]}, skill {results[n]['skill']:.1%}")
    unpinned = results[names[0]]["sha"] != results[names[2]]["sha"]
    pinned = results[names[1]]["sha"] == results[names[3]]["sha"]
    print(f"unpinned kernel choices give different weights: {unpinned}")
    print(f"pinned kernel choices give byte-identical weights: {pinned}")
    return 0 if pinned else 1


if __name__ == "__main__":
    raise SystemExit(main())
