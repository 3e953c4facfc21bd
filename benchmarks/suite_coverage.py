"""How many of the published suite's experiment folders this workflow accepts, offline.

    python benchmarks/suite_coverage.py --suite PATH/method_comparison

Imports the suite's MetaMathQA and image-gen experiment folders with ``peftbench
import-experiments`` into a fresh copy of the workflow, then dry-runs (``snakemake -n``, with
``HF_HUB_OFFLINE=1``) the math and image presets and the embedded default on them, and prints per
combination how many folders are accepted and, for each rejected one, the first problem named.
The suite's folders come from a checkout of huggingface/peft (``method_comparison/``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from workflow_run import copy_workflow

COMBINATIONS = [
    # (task, suite folder, preset config or None for the embedded default)
    ("math", "MetaMathQA", "config/presets/metamathqa-llama-3.2-3b.yaml"),
    ("image", "image-gen", "config/presets/dreambooth-flux2-klein.yaml"),
    ("math", "MetaMathQA", None),
    ("image", "image-gen", None),
]


def import_folders(suite: Path, into: Path) -> None:
    cmd = [sys.executable, "-m", "peftbench", "import-experiments", str(suite), "--into", str(into)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"import failed:\n{proc.stdout}\n{proc.stderr}")


def rejected(output: str, root: Path) -> dict[str, list[str]]:
    """Experiment id -> the problem lines of the dry run that name its folder."""
    found: dict[str, list[str]] = defaultdict(list)
    pattern = re.compile(re.escape(str(root)) + r"/([^/\s:]+/[^/\s:]+)")
    for line in output.splitlines():
        match = pattern.search(line)
        # Notes (a check skipped, a key ignored) name folders that are accepted.
        if match and "pre-flight note" not in line:
            found[match.group(1)].append(line.strip())
    return dict(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, required=True, help="the suite's method_comparison/")
    args = parser.parse_args()
    workdir = copy_workflow(Path(tempfile.mkdtemp(prefix="peftbench-suite-")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for task, folder, preset in COMBINATIONS:
        root = workdir / "imported" / folder
        if not root.exists():
            import_folders(args.suite / folder / "experiments", root)
        total = len([p for p in root.glob("*/*") if p.is_dir()])
        overlay = workdir / f"overlay-{task}.yaml"
        overlay.write_text(f"tasks: [{task}]\n{task}: {{experiments_dir: {root}, search: null}}\n")
        files = ([preset] if preset else []) + [str(overlay)]
        cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", *files]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        output = proc.stdout + proc.stderr
        bad = rejected(output, root) if proc.returncode != 0 else {}
        if proc.returncode != 0 and not bad:
            print(output[-3000:])
            raise SystemExit(f"{task} {preset}: the dry run failed without naming a folder")
        label = preset or "embedded default"
        print(f"\n{folder} on {label}: {total - len(bad)} of {total} accepted ({seconds:.0f} s)")
        for experiment, lines in sorted(bad.items()):
            print(f"  rejected {experiment}: {lines[0][:220]}")
        for line in output.splitlines():
            if "pre-flight note" in line:
                print(f"  {line.strip()[:220]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
