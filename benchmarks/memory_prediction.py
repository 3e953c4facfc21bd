"""Validate the GPU-memory prediction against the published results, and print the figures.

    python benchmarks/memory_prediction.py --published ../shared/published [--save FILE]

For every published result file of the Hugging Face PEFT method comparison (MetaMathQA on
Llama-3.2-3B, image-gen on FLUX.2-klein-base-4B), the published run's adapter config and
training settings (``run_info.peft_config`` / ``train_config``) become an experiment folder, and
:mod:`peftbench.core.estimate` predicts its peak on the matching preset's architecture, built
from the shipped config files on the meta device. The prediction is compared with the published
``train_info.accelerator_memory_max`` (peak reserved memory above the pre-load baseline, so
weights included). Printed per task: each experiment's predicted and published figure, the
Spearman rank correlation and the median absolute relative error (targets: >= 0.85 and <= 10%),
and the five largest misses. The allocator reserves more than the live tensors (caching, block
rounding, the CUDA context's workspace), so a calibration factor (published / predicted, the
median over a fitting half of the experiments, every other one by name) is fitted and the
error reported on the other half.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from peftbench.core.config import deep_merge, training_table  # noqa: E402
from peftbench.core.estimate import estimate_experiment, load_probe  # noqa: E402
from peftbench.tasks import registry  # noqa: E402

#: Published folder -> (task, preset whose architecture and settings the runs used).
SUITES = {
    "MetaMathQA": ("math", "config/presets/metamathqa-llama-3.2-3b.yaml"),
    "image-gen": ("image", "config/presets/dreambooth-flux2-klein.yaml"),
}
#: Published train_config keys that shape memory, carried into the experiment's overrides.
MEMORY_KEYS = (
    "batch_size",
    "max_seq_length",
    "dtype",
    "use_gc",
    "optimizer_type",
    "optimizer_kwargs",
    "grad_norm_clip",
    "autocast_adapter_dtype",
    "attn_implementation",
)


def experiment_folder(root: Path, document: dict, defaults: dict) -> str:
    """Write the published run as ``root/<method>/<name>/``; returns ``method/name``."""
    run_info = document["run_info"]
    experiment = run_info["experiment_name"]
    folder = root / experiment
    folder.mkdir(parents=True, exist_ok=True)
    train_config = run_info["train_config"]
    overrides = {k: train_config[k] for k in MEMORY_KEYS if k in train_config and k in defaults}
    overrides = {k: v for k, v in overrides.items() if v is not None or defaults[k] is None}
    (folder / "training_params.json").write_text(json.dumps(overrides))
    if run_info.get("peft_config"):
        (folder / "adapter_config.json").write_text(json.dumps(run_info["peft_config"]))
    return experiment


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Rank correlation (ties get their mean rank)."""
    return float(np.corrcoef(a.rank(), b.rank())[0, 1])


def predict_suite(folder: Path, task: str, preset: str) -> pd.DataFrame:
    """One row per published result: experiment, published and predicted bytes, error text."""
    spec = registry.get(task)
    defaults = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config = deep_merge(defaults, yaml.safe_load((REPO / preset).read_text()))
    probe, table = load_probe(spec.memory_probe), training_table(spec.training_keys)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        task_cfg = {**config[task], "experiments_dir": tmp}
        for path in sorted(folder.glob("*.json")):
            document = json.loads(path.read_text())
            info = document.get("train_info") or {}
            if info.get("status") != "success" or not info.get("accelerator_memory_max"):
                continue
            experiment = experiment_folder(Path(tmp), document, task_cfg["training"])
            estimate = estimate_experiment(probe, task_cfg, experiment, table)
            print(f"  {task} {experiment}: {estimate.seconds:.1f} s", file=sys.stderr, flush=True)
            rows.append(
                {
                    "task": task,
                    "experiment": experiment,
                    "published": info["accelerator_memory_max"] / 1e9,
                    "predicted": estimate.gb(),
                    "seconds": estimate.seconds,
                    "error": estimate.error,
                }
            )
    return pd.DataFrame(rows)


def report(rows: pd.DataFrame) -> list[str]:
    """The comparison of one task, as printed lines."""
    task = rows["task"].iloc[0]
    ok = rows[rows["error"].isna()].sort_values("experiment").reset_index(drop=True)
    failed = rows[rows["error"].notna()]
    fit, held_out = ok.iloc[::2], ok.iloc[1::2]
    factor = float((fit["published"] / fit["predicted"]).median())
    ok["calibrated"] = ok["predicted"] * factor
    ok["rel_error"] = (ok["predicted"] - ok["published"]) / ok["published"]
    ok["cal_error"] = (ok["calibrated"] - ok["published"]) / ok["published"]
    lines = [f"== {task}: {len(ok)} published experiments predicted, {len(failed)} not"]
    lines.append(f"{'experiment':48} {'published':>9} {'predicted':>9} {'rel.err':>8}")
    for r in ok.sort_values("published").itertuples():
        lines.append(f"{r.experiment:48} {r.published:9.2f} {r.predicted:9.2f} {r.rel_error:+8.1%}")
    held = ok.loc[held_out.index]
    lines += [
        f"Spearman rank correlation (all): {spearman(ok['predicted'], ok['published']):.3f}",
        f"median |relative error|, uncalibrated (all): {ok['rel_error'].abs().median():.1%}",
        f"calibration factor (published / predicted, median over {len(fit)} fitting "
        f"experiments): {factor:.3f}",
        f"median |relative error|, calibrated, held-out half ({len(held)}): "
        f"{held['cal_error'].abs().median():.1%}",
        f"Spearman on the held-out half: {spearman(held['predicted'], held['published']):.3f}",
        "worst five (calibrated):",
    ]
    worst = ok.reindex(ok["cal_error"].abs().sort_values(ascending=False).index).head(5)
    for r in worst.itertuples():
        lines.append(
            f"  {r.experiment:46} published {r.published:6.2f} GB, calibrated prediction "
            f"{r.calibrated:6.2f} GB ({r.cal_error:+.1%})"
        )
    for r in failed.itertuples():
        lines.append(f"  not predicted: {r.experiment}: {r.error}")
    lines.append(f"estimate time: {rows['seconds'].sum():.0f} s for {len(rows)} experiments")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", required=True, help="folder with MetaMathQA/, image-gen/")
    parser.add_argument("--save", default=None, help="write the per-experiment table (CSV)")
    parser.add_argument(
        "--load", default=None, help="reuse a table --save wrote instead of predicting again"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.load:
        table = pd.read_csv(args.load)
        table["error"] = table["error"].where(table["error"].notna(), None)
    else:
        parts = [
            predict_suite(Path(args.published) / name, task, preset)
            for name, (task, preset) in SUITES.items()
            if (Path(args.published) / name).is_dir()
        ]
        table = pd.concat(parts, ignore_index=True)
    if args.save:
        table.to_csv(args.save, index=False)
    for _, rows in table.groupby("task", sort=False):
        print("\n".join(report(rows)), end="\n\n")
    print(f"benchmark wall time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
