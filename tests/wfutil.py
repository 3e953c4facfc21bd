"""Running the workflow in a throwaway copy of the repository, for the workflow-level tests."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPY = ["Snakefile", "rules", "scripts", "envs", "config", "experiments", "peftbench"]


def copy_workflow(dest: Path) -> Path:
    """Copy what the workflow needs into ``dest`` (so runs never touch the user's results/)."""
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, configfiles: tuple[str, ...] = ("config/test.yaml",),
              extra_config: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """Run Snakemake on the test profile in ``workdir``; ``extra_config`` is YAML laid on top."""
    files = list(configfiles)
    if extra_config is not None:
        (workdir / "extra.yaml").write_text(extra_config)
        files.append("extra.yaml")
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=1",
           "--configfile", *files, *args]  # fmt: skip
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts = {}
    for rule, count in re.findall(r"^(\w+)\s+(\d+)$", dry_run_output, flags=re.M):
        if rule != "total":
            counts[rule] = int(count)
    return counts
