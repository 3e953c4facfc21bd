"""A search grid through the whole workflow: every point is its own cached job, the summary keeps
the point chosen on validation, and the report shows the grid (tests/analysis for the rule)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from wfutil import copy_workflow, snakemake, task_jobs

GRID = "optimizer_kwargs.lr: [0.001, 0.01]"
EXTRA = (
    "tasks: [math]\nselect: {math: [lora/rank8-qv]}\n"
    f"math: {{search_points: all, search: {{{GRID}}}}}\n"
)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("grid"))
    proc = snakemake(workdir, extra_config=EXTRA)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir


def test_every_point_runs_and_the_summary_keeps_the_validation_choice(grid_run: Path) -> None:
    runs = grid_run / "results/math/runs/lora"
    assert sorted(p.name for p in runs.iterdir()) == ["rank8-qv@lr=0.001", "rank8-qv@lr=0.01"]
    for point in (0.001, 0.01):
        result = json.loads((runs / f"rank8-qv@lr={point:g}/seed0/result.json").read_text())
        assert result["config"]["optimizer_kwargs"] == {"lr": point, "weight_decay": 0.1}
        # The point trains the experiment folder's adapter, not every weight.
        assert result["peft_config"]["peft_type"] == "LORA"
        metrics = result["metrics"]
        assert 0 < metrics["trainable_params"] < metrics["total_params"] / 10
    # Written once, by the aggregate rule; the report's copy is the same table.
    grid_file = grid_run / "results/math/search.csv"
    assert (grid_run / "results/math/report/search.csv").read_bytes() == grid_file.read_bytes()
    grid = pd.read_csv(grid_file)
    assert list(grid["point"]) == ["lr=0.001", "lr=0.01"]
    chosen = grid[grid["chosen"]]
    assert len(chosen) == 1
    # The choice is the better validation accuracy (ties: same memory, smaller lr).
    best = grid["valid"].max()
    assert chosen["valid"].iloc[0] == best
    if (grid["valid"] == best).all():
        assert chosen["point"].iloc[0] == "lr=0.001"
    for summary in ("results/math/summary.csv", "results/summary.csv"):
        table = pd.read_csv(grid_run / summary)
        lora = table[table["method"] == "lora"]
        assert list(lora["experiment"]) == [chosen["run"].iloc[0]]
        assert lora["search_size"].iloc[0] == 2
        assert lora["search_point"].iloc[0] == chosen["point"].iloc[0]
    page = (grid_run / "results/math/report/search.html").read_text()
    assert "★" in page and "Sensitivity" in page and "lora/rank8-qv" in page


def test_a_new_grid_value_runs_only_the_new_point(grid_run: Path) -> None:
    extra = EXTRA.replace("[0.001, 0.01]", "[0.001, 0.01, 0.03]")
    proc = snakemake(grid_run, "-n", extra_config=extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert task_jobs(proc.stdout, "train") == {"math": 1}, proc.stdout
    assert "rank8-qv@lr=0.03" in proc.stdout


def test_a_bad_grid_fails_before_any_job(grid_run: Path) -> None:
    extra = EXTRA.replace(GRID, "optimizer_kwargs.lr: [0.001, -1]")
    proc = snakemake(grid_run, "-n", extra_config=extra)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "at point lr=-1 of the task's search (config)" in output, output[-3000:]
    assert "'optimizer_kwargs.lr' must be > 0" in output


FIRST_SEED = (
    "tasks: [math]\nselect: {math: [lora/rank8-qv]}\n"
    f"math: {{seeds: [0, 1], search_points: all, search_seeds: first, search: {{{GRID}}}}}\n"
)


def test_search_on_the_first_seed_runs_only_the_chosen_point_on_the_others(
    tmp_path: Path,
) -> None:
    workdir = copy_workflow(tmp_path)
    planned = snakemake(workdir, "-n", extra_config=FIRST_SEED)
    assert planned.returncode == 0, planned.stderr[-3000:]
    # Before the choice exists, only the grid's first-seed runs (and the base reference's two
    # seeds) are planned; the chosen point's second seed follows the checkpoint.
    assert task_jobs(planned.stdout, "train") == {"math": 4}, planned.stdout
    proc = snakemake(workdir, extra_config=FIRST_SEED)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    runs = workdir / "results/math/runs/lora"
    seeds = {p.name: sorted(s.name for s in p.iterdir()) for p in runs.iterdir()}
    choice = json.loads((workdir / "results/math/search/lora/rank8-qv.json").read_text())
    chosen = choice["run"].split("/", 1)[1]
    other = next(name for name in seeds if name != chosen)
    assert seeds == {chosen: ["seed0", "seed1"], other: ["seed0"]}
    # The summary keeps the checkpoint's choice, made on seed 0's validation alone.
    grid = pd.read_csv(workdir / "results/math/search.csv")
    assert grid.loc[grid["chosen"], "run"].tolist() == [choice["run"]]
    valid = grid.set_index("run")["valid"]
    seed0 = {
        name: json.loads((runs / name / "seed0/result.json").read_text())["metrics"]
        for name in seeds
    }
    assert valid[f"lora/{chosen}"] == seed0[chosen]["valid_accuracy_final"]
    assert valid[f"lora/{other}"] == seed0[other]["valid_accuracy_final"]
    table = pd.read_csv(workdir / "results/math/summary.csv")
    lora = table[table["method"] == "lora"]
    assert sorted(lora["seed"]) == [0, 1] and set(lora["experiment"]) == {choice["run"]}
    # Nothing left to do: the checkpoint's plan is stable.
    again = snakemake(workdir, "-n", extra_config=FIRST_SEED)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
