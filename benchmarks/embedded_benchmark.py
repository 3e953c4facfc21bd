"""Run the whole embedded default (both tasks, every search grid) as the README does and print
its figures.

    python benchmarks/embedded_benchmark.py [--workdir DIR] [--configfile FILE ...]

Copies the workflow to a fresh folder (so nothing is cached), runs ``snakemake --cores all
--resources gpu=1`` there, and prints the wall time against the 30-minute target (10 minutes
when a config file turns the grids off, ``search_points: middle``), per task the
learning rate chosen on validation for every experiment with the validation and test quality of
each grid point, and the targets of each task (benchmarks/math_benchmark.py and
benchmarks/image_benchmark.py).
"""

from __future__ import annotations

from pathlib import Path

import image_benchmark
import math_benchmark
import pandas as pd
from workflow_run import run_arguments, run_workflow

#: Wall-time targets (issue 15): with the search grids, and with each grid's middle point only.
TARGET_S = {"grids included": 30 * 60, "without grids": 10 * 60}


def print_search(workdir: Path, task: str) -> int:
    """Every experiment's grid: validation and test quality per point, the chosen one marked;
    returns the number of grid points (0 without a search)."""
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
    return len(grid)


def main() -> int:
    args = run_arguments(__doc__.splitlines()[0])
    workdir, wall, code = run_workflow(None, args.workdir, args.cores, args.configfile)
    if code != 0:
        return code
    searched = 0
    for task, module in (("math", math_benchmark), ("image", image_benchmark)):
        print(f"\n===== {task} =====")
        searched += print_search(workdir, task)
        module.report(workdir, None)
    kind = "grids included" if searched else "without grids"
    target = TARGET_S[kind]
    print(
        f"\nboth tasks, {kind}: {wall:.0f} s ({wall / 60:.1f} min), target < {target // 60} "
        f"min: {'PASS' if wall < target else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
