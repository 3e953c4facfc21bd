"""A third task that lives only under tests/ (tests/toy_task) runs through the whole workflow:
data, training, per-task and cross-task summary, report pages, with no generic file naming it.

The workflow is copied unchanged (what a user gets) and only the toy task's folder is added; the
config (tests/toy_task/config.yaml) registers the package with ``task_packages``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from wfutil import COPY, REPO, copy_workflow, snakemake

from peftbench.tasks import registry

TOY = "tests/toy_task"
CONFIG = (f"{TOY}/config.yaml",)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("toy"), extra=(TOY,))
    proc = snakemake(workdir, configfiles=CONFIG)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir


def test_toy_rows_in_the_summary(toy_run: Path) -> None:
    summary = pd.read_csv(toy_run / "results/summary.csv")
    toy = summary[summary["task"] == "toy"].set_index("experiment")
    assert set(toy.index) == {"base/no-finetuning", "lora/rank4", "full-finetuning/lr_0.01"}
    assert (toy["status"] == "success").all(), toy[["status", "error"]]
    assert toy["toy_accuracy"].between(0, 1).all()
    # Training on the fixture's separable problem beats the untrained base model.
    base = toy.loc["base/no-finetuning"]
    for experiment in ["lora/rank4", "full-finetuning/lr_0.01"]:
        row = toy.loc[experiment]
        assert row["toy_accuracy"] > base["toy_accuracy"]
        assert row["toy_accuracy_ci_low"] <= row["toy_accuracy"] <= row["toy_accuracy_ci_high"]
        assert row["trainable_params"] > 0
    assert toy.loc["lora/rank4", "trainable_params"] < toy.loc["lora/rank4", "total_params"]
    assert (pd.read_csv(toy_run / "results/toy/summary.csv")["task"] == "toy").all()


def test_toy_run_folder(toy_run: Path) -> None:
    run = toy_run / "results/toy/runs/lora/rank4/seed0"
    result = json.loads((run / "result.json").read_text())
    assert result["task"] == "toy" and result["peft_config"]["peft_type"] == "LORA"
    assert [p["step"] for p in result["curves"]["toy_valid_accuracy"]] == [30, 60]
    items = [json.loads(line) for line in (run / "test_items.jsonl").read_text().splitlines()]
    assert len(items) == result["metrics"]["test_n"] == 40
    assert sum(i["correct"] for i in items) == result["metrics"]["toy_correct"]
    assert (run / "adapter/adapter_model.safetensors").is_file()


def test_toy_report_pages(toy_run: Path) -> None:
    for page in ["charts.html", "frontier.html", "configs.html"]:
        assert "lora/rank4" in (toy_run / "results/toy/report" / page).read_text(), page
    assert (toy_run / "results/toy/pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_only_files_under_tests_were_needed(toy_run: Path) -> None:
    """The copy holds the generic workflow as shipped plus tests/toy_task: the toy task is not
    built in, and no generic file names it."""
    assert "toy" not in registry.BUILTIN
    assert not (REPO / "peftbench/tasks/toy").exists()
    named = re.compile(r"""["']toy["']""")
    for name in COPY:
        for path in [REPO / name] if (REPO / name).is_file() else (REPO / name).rglob("*"):
            if path.suffix in {".py", ".smk", ".yaml"} or path.name == "Snakefile":
                assert not named.search(path.read_text()), path


def test_rerun_plans_nothing(toy_run: Path) -> None:
    proc = snakemake(toy_run, "-n", configfiles=CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert not (toy_run / "results/math").exists() and not (toy_run / "results/image").exists()


def test_a_moved_run_folder_plans_nothing(toy_run: Path, tmp_path: Path) -> None:
    """A finished run copied elsewhere with its workflow (times kept) is still up to date: no
    input is named by an absolute path."""
    moved = tmp_path / "moved"
    shutil.copytree(toy_run, moved, symlinks=True)
    proc = snakemake(moved, "-n", configfiles=CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_advise_reads_a_task_package(toy_run: Path) -> None:
    """``advise`` knows a task outside the package once it is named with --task-package."""
    command = [sys.executable, "-m", "peftbench", "advise", "--task", "toy", "--max-memory-gb", "1"]
    command += ["--summary", str(toy_run / "results/summary.csv")]
    unknown = subprocess.run(command, capture_output=True, text=True, cwd=toy_run)
    assert unknown.returncode != 0
    known = subprocess.run(
        [*command, "--task-package", f"toy={REPO / 'tests/toy_task'}"],
        capture_output=True,
        text=True,
        cwd=toy_run,
    )
    assert known.returncode == 0, known.stderr
    assert "lora/rank4" in known.stdout or "full-finetuning/lr_0.01" in known.stdout
