"""Run the embedded image-generation benchmark end to end and print its figures.

    python benchmarks/image_benchmark.py [--workdir DIR]

Copies the workflow to a fresh folder (so nothing is cached), runs the README's command
``snakemake --cores all --resources gpu=1`` there for the image task (``--config tasks=[image]``)
and prints the wall time, every method's similarity and drift (mean and range over seeds),
memory, train and generation time, and the checks of the embedded task's targets: the base model
clearly below the fine-tuned methods, at least three methods whose seed ranges do not overlap,
and the whole run under 15 minutes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from workflow_run import largest_separated_set, run_arguments, run_workflow


def per_method(table: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment: similarity mean, min and max over seeds, and the other figures."""
    ok = table[table["status"] == "success"]
    grouped = ok.groupby("experiment", sort=False)
    summary = grouped.agg(
        seeds=("seed", "count"),
        similarity=("similarity", "mean"),
        sim_min=("similarity", "min"),
        sim_max=("similarity", "max"),
        sim_seed_sd=("similarity", "std"),
        drift=("drift", "mean"),
        train_memory_gb=("train_memory_gb", "mean"),
        train_time_min=("train_time_min", "mean"),
        generation_time_min=("generation_time_min", "mean"),
        trainable_params=("trainable_params", "first"),
        file_size_mb=("file_size_mb", "first"),
    )
    return summary.sort_values("similarity", ascending=False).reset_index()


def main() -> int:
    args = run_arguments(__doc__.splitlines()[0])
    workdir, wall, code = run_workflow("image", args.workdir, args.cores, args.configfile)
    if code != 0:
        return code
    report(workdir, wall)
    return 0


def report(workdir: Path, wall: float | None) -> None:
    """Print the per-method table and the target checks of a finished run in ``workdir`` (the
    wall-time check only when ``wall`` is the image run's own)."""
    table = pd.read_csv(workdir / "results/image/summary.csv")
    methods = per_method(table)
    pd.set_option("display.width", 220)
    print(methods.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    base = methods[methods["experiment"] == "base/no-finetuning"].iloc[0]
    tuned = methods[methods["experiment"] != "base/no-finetuning"]
    above = tuned[tuned["sim_min"] > base["sim_max"]]
    print(
        f"\nbase model similarity: {base['similarity']:.3f} (seeds {base['sim_min']:.3f}-"
        f"{base['sim_max']:.3f}); methods whose every seed scores above every base seed: "
        f"{len(above)} of {len(tuned)}: {'PASS' if len(above) == len(tuned) else 'FAIL'}"
    )
    separated = largest_separated_set(
        [(r.experiment, r.sim_min, r.sim_max) for r in tuned.itertuples()]
    )
    print(
        f"methods whose seed ranges (min-max similarity) do not overlap: {len(separated)} "
        f"{separated} (target >= 3): {'PASS' if len(separated) >= 3 else 'FAIL'}"
    )
    if wall is not None:
        print(f"wall time target (< 15 min): {'PASS' if wall < 900 else 'FAIL'}")
    print(f"failed runs: {len(table[table['status'] == 'failed'])}")
    print(f"(results in {workdir})")


if __name__ == "__main__":
    raise SystemExit(main())
