"""Run the whole embedded default (both tasks, every search grid) as the README does and print
its figures.

    python benchmarks/embedded_benchmark.py [--workdir DIR] [--configfile FILE ...]

Copies the workflow to a fresh folder (so nothing is cached), runs ``snakemake --cores all
--resources gpu=1`` there, and prints the wall time against the 30-minute target, per task the
learning rate chosen on validation for every experiment with the validation and test quality of
each grid point, and the targets of each task (benchmarks/math_benchmark.py and
benchmarks/image_benchmark.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import image_benchmark
import math_benchmark
import pandas as pd
from workflow_run import run_workflow

TARGET_S = 30 * 60


def print_search(workdir: Path, task: str) -> None:
    """Every experiment's grid: validation and test quality per point, the chosen one marked."""
    path = workdir / f"results/{task}/report/search.csv"
    grid = pd.read_csv(path)
    print(f"\n{task}: grid points chosen on validation ({len(grid)} points)")
    for experiment, points in grid.groupby("experiment", sort=True):
        cells = [
            f"{'*' if p.chosen else ' '}{p.point} valid {p.valid:.3f} test {p.quality:.3f}"
            for p in points.itertuples()
        ]
        edge = points.loc[points["chosen"], "edge"].fillna("").iloc[0]
        flag = f"  (chosen at an end of the grid: {edge})" if edge else ""
        print(f"  {experiment:28s} " + " | ".join(cells) + flag)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to run (default: a fresh temp dir)")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    args = parser.parse_args()
    workdir, wall, code = run_workflow(None, args.workdir, args.cores, args.configfile)
    if code != 0:
        return code
    for task, module in (("math", math_benchmark), ("image", image_benchmark)):
        print(f"\n===== {task} =====")
        print_search(workdir, task)
        module.report(workdir, None)
    print(
        f"\nboth tasks, grids included: {wall:.0f} s ({wall / 60:.1f} min), target < 30 min: "
        f"{'PASS' if wall < TARGET_S else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
