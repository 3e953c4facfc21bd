"""Run the embedded math benchmark end to end and print its figures.

    python benchmarks/math_benchmark.py [--workdir DIR] [--keep]

Copies the workflow to a fresh folder (so nothing is cached), runs the README's command
``snakemake --cores all --resources gpu=1`` there for the math task (``--config tasks=[math]``), and prints the wall
time, every method's accuracy (95% interval), memory and time, and the checks of the embedded
task's targets: base model under 10%, best method at least 30 points above it, and how many
methods are separated from each other by more than their 95% intervals.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from workflow_run import largest_separated_set, run_arguments, run_workflow


def separated_methods(ok: pd.DataFrame) -> int:
    """Size of the largest set of methods whose 95% intervals are pairwise disjoint."""
    intervals = [
        (r.experiment, r.test_accuracy_ci_low, r.test_accuracy_ci_high) for r in ok.itertuples()
    ]
    return len(largest_separated_set(intervals))


def main() -> int:
    args = run_arguments(__doc__.splitlines()[0])
    workdir, wall, code = run_workflow("math", args.workdir, args.cores, args.configfile)
    if code != 0:
        return code
    report(workdir, wall)
    return 0


def report(workdir: Path, wall: float | None) -> None:
    """Print the per-method table and the target checks of a finished run in ``workdir`` (the
    wall-time check only when ``wall`` is the math run's own)."""
    table = pd.read_csv(workdir / "results/math/summary.csv")
    pd.set_option("display.width", 200)
    columns = [
        "experiment",
        "status",
        "test_accuracy",
        "test_accuracy_ci_low",
        "test_accuracy_ci_high",
        "train_memory_gb",
        "train_time_min",
        "eval_time_min",
        "trainable_params",
        "file_size_mb",
        "forgetting",
        "on_frontier",
    ]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    pretraining = workdir / "results/math/base_model/pretraining.json"
    if pretraining.exists():  # embedded base: its seed and its own skill gate
        info = json.loads(pretraining.read_text())
        print(
            f"\nbase model: seed {info['config']['seed']}, pretraining final loss "
            f"{info['final_loss']:.4f}, skill {info['skill']:.1%} (gate {info['min_skill']:.0%})"
        )
    base = table[table["method"] == "base"]["test_accuracy"].iloc[0]
    ok = table[(table["method"] != "base") & (table["status"] == "success")]
    best = ok.loc[ok["test_accuracy"].idxmax()]
    print(f"\nbase model accuracy: {base:.1%} (target < 10%): {'PASS' if base < 0.10 else 'FAIL'}")
    gain = best["test_accuracy"] - base
    print(
        f"best method: {best['experiment']} {best['test_accuracy']:.1%}, gain {gain * 100:.1f} points "
        f"(target >= 30): {'PASS' if gain >= 0.30 else 'FAIL'}"
    )
    separated = separated_methods(ok)
    print(
        f"methods pairwise separated by their 95% intervals: {separated} (target >= 3): "
        f"{'PASS' if separated >= 3 else 'FAIL'}"
    )
    if wall is not None:
        print(f"wall time target (< 15 min): {'PASS' if wall < 900 else 'FAIL'}")
    print(f"failed experiments: {len(table[table['status'] == 'failed'])}")
    print(f"(results in {workdir})")


if __name__ == "__main__":
    raise SystemExit(main())
