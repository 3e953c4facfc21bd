"""Running the workflow in a throwaway copy of the repository, for the workflow-level tests."""

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from paths import REPO

COPY = ["Snakefile", "rules", "scripts", "envs", "config", "experiments", "peftbench"]


def copy_workflow(dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """Copy what the workflow needs into ``dest`` (so runs never touch the user's results/), plus
    the ``extra`` paths of the repository (e.g. ``tests/toy_task``)."""
    for name in [*COPY, *extra]:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    return dest


def snakemake(
    workdir: Path,
    *args: str,
    configfiles: tuple[str, ...] = ("config/test.yaml",),
    extra_config: str | None = None,
    targets: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Run Snakemake on the test profile in ``workdir``; ``extra_config`` is YAML laid on top.
    ``targets`` go first: after ``--configfile`` they would be read as more config files."""
    files = list(configfiles)
    if extra_config is not None:
        (workdir / "extra.yaml").write_text(extra_config)
        files.append("extra.yaml")
    options = ["--cores", "2", "--resources", "gpu=1", "--configfile", *files]
    cmd = [sys.executable, "-m", "snakemake", *targets, *options, *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts = {}
    for rule, count in re.findall(r"^(\w+)\s+(\d+)$", dry_run_output, flags=re.M):
        if rule != "total":
            counts[rule] = int(count)
    return counts


def job_blocks(dry_run_output: str) -> list[tuple[str, str]]:
    """(rule, text of its block) of every job a dry run lists, in its order."""
    blocks = []
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", dry_run_output, flags=re.M):
        head = re.match(r"(?:local)?rule (\w+):$", block, flags=re.M)
        if head is not None:
            blocks.append((head.group(1), block))
    return blocks


def block_wildcards(block: str) -> dict[str, str]:
    """The wildcards of one job block (empty when it has none)."""
    found = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
    return dict(p.split("=", 1) for p in found.group(1).split(", ")) if found else {}


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run lists, in its order."""
    return [(rule, block_wildcards(block)) for rule, block in job_blocks(dry_run_output)]


def task_jobs(dry_run_output: str, rule: str) -> Counter:
    """How many jobs of a generic ``rule`` (task wildcard) a dry run plans, per task."""
    return Counter(w.get("task") for r, w in planned_jobs(dry_run_output) if r == rule)
