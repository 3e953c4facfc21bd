"""Shared by the benchmark scripts: run the workflow in a fresh copy and time it."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPY = ["Snakefile", "rules", "scripts", "envs", "config", "experiments", "peftbench", "profiles"]


def copy_workflow(workdir: Path) -> Path:
    """Copy what the workflow needs into ``workdir`` (created if missing); returns it."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src, dst = REPO / name, workdir / name
        if src.is_dir():
            shutil.copytree(
                src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(src, dst)
    return workdir


def run_arguments(description: str) -> argparse.Namespace:
    """The options of the benchmark scripts that run the workflow: where, on how many cores,
    and config files over the default."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", type=Path, help="where to run (default: a fresh temp dir)")
    parser.add_argument("--cores", default="all")
    parser.add_argument(
        "--configfile",
        type=Path,
        action="append",
        default=[],
        help="config overrides over the default (repeatable), e.g. another base-model seed",
    )
    return parser.parse_args()


def run_workflow(
    task: str | None, workdir: Path | None, cores: str, configfiles: Sequence[Path] = ()
) -> tuple[Path, float, int]:
    """Copy the workflow to ``workdir`` (a fresh temp dir by default, so nothing is cached) and
    run the README's ``snakemake --cores all --resources gpu=1`` there for one task (every task
    of the config when ``task`` is None), with ``configfiles`` (e.g. another base-model seed)
    over the default config.

    Returns the folder, the wall time in seconds and snakemake's exit code.
    """
    workdir = copy_workflow(workdir or Path(tempfile.mkdtemp(prefix=f"peftbench-{task or 'all'}-")))
    cmd = [sys.executable, "-m", "snakemake", "--cores", cores, "--resources", "gpu=1"]
    if configfiles:
        cmd += ["--configfile", *(str(Path(f).resolve()) for f in configfiles)]
    if task is not None:
        cmd += ["--config", f"tasks=[{task}]"]
    print("running:", " ".join(cmd[2:]), "in", workdir, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir)
    wall = time.perf_counter() - start
    print(f"\nwall time: {wall:.0f} s ({wall / 60:.1f} min), exit code {proc.returncode}")
    return workdir, wall, proc.returncode


def largest_separated_set(intervals: Sequence[tuple[str, float, float]]) -> list[str]:
    """The largest set of named intervals (name, low, high) that are pairwise disjoint."""
    best: list[str] = [intervals[0][0]] if intervals else []
    for size in range(2, len(intervals) + 1):
        found = next(
            (
                group
                for group in combinations(intervals, size)
                if all(a[2] < b[1] or b[2] < a[1] for a, b in combinations(group, 2))
            ),
            None,
        )
        if found is None:
            break
        best = [name for name, _, _ in found]
    return best
