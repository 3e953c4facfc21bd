"""The memory prediction as a step of the DAG (rule estimate_memory, issue 13).

Dry runs on a copy of the workflow (test profile): one estimate job per configured task with a
memory probe, an input of the summary and of nothing that trains; a task without a probe (the
toy task of tests/toy_task) gets none. One real run of the step on the test profile checks the
file the summary reads, and a run with the task's probe broken checks that a prediction that
cannot be made is recorded, not fatal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from wfutil import copy_workflow, planned_jobs, snakemake, task_jobs

from peftbench.analysis.predicted import read_predictions

ESTIMATES = ("results/math/memory_estimate.json", "results/image/memory_estimate.json")
# The experiments config/test.yaml selects.
SELECTED = {
    "math": {"lora/rank8-qv", "full-finetuning/default", "prompt_tuning/tokens20"},
    "image": {"lora/rank4", "full-finetuning/default"},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("estimate"), extra=("tests/toy_task",))


def dag_edges(dot: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """(node id -> label, edges) of ``snakemake --dag`` output; a label is the rule and its
    wildcards, e.g. ``estimate_memory task=math``."""
    labels = {
        node: " ".join(part.replace(": ", "=") for part in label.replace("\\n", "\n").splitlines())
        for node, label in re.findall(r'^\s*(\d+)\[label = "([^"]*)"', dot, flags=re.M)
    }
    edges = set(re.findall(r"^\s*(\d+) -> (\d+)$", dot, flags=re.M))
    return labels, edges


def test_dry_run_plans_an_estimate_per_task_before_the_summary(workdir: Path) -> None:
    proc = snakemake(workdir, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert task_jobs(proc.stdout, "estimate_memory") == {"math": 1, "image": 1}, proc.stdout

    proc = snakemake(workdir, "--dag")
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels, edges = dag_edges(proc.stdout)
    estimates = {n for n, label in labels.items() if label.startswith("estimate_memory ")}
    assert {labels[n] for n in estimates} == {
        "estimate_memory task=math",
        "estimate_memory task=image",
    }
    # The summary (and through it the report and `all`) depends on every estimate, and nothing
    # else does: no training job waits for a prediction.
    summary = next(n for n, label in labels.items() if label == "summary")
    downstream = {labels[b] for a, b in edges if a in estimates}
    assert downstream == {"summary"}
    assert all((n, summary) in edges for n in estimates)
    assert not any(labels[b].startswith("train") for a, b in edges if a in estimates)


def test_one_task_and_a_task_without_probe(workdir: Path) -> None:
    proc = snakemake(workdir, "-n", "--config", "tasks=[math]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert task_jobs(proc.stdout, "estimate_memory") == {"math": 1}, proc.stdout
    # The toy task's spec names no memory probe: no estimate, and the summary still runs.
    proc = snakemake(workdir, "-n", configfiles=("tests/toy_task/config.yaml",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = {rule for rule, _ in planned_jobs(proc.stdout)}
    assert "summary" in rules and "estimate_memory" not in rules, proc.stdout


def test_the_step_writes_every_selected_experiments_prediction(workdir: Path) -> None:
    proc = snakemake(workdir, targets=ESTIMATES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = read_predictions([workdir / path for path in ESTIMATES])
    assert set(predictions) == {(t, e) for t, names in SELECTED.items() for e in names}
    # The embedded default's tiny models: a few MB each, all predicted.
    assert all(value is not None and 0 < value < 0.1 for value in predictions.values())
    log = (workdir / "logs/math/estimate_memory.log").read_text()
    assert "3 experiments estimated" in log and "0 could not be estimated" in log
    # Nothing changed: nothing to predict again.
    proc = snakemake(workdir, "-n", targets=ESTIMATES)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr


def test_a_prediction_that_cannot_be_made_is_recorded(workdir: Path) -> None:
    probe = workdir / "peftbench/tasks/math/memory_probe.py"
    original = probe.read_text()
    probe.write_text(original + '\nraise ImportError("probe broken on purpose")\n')
    try:
        proc = snakemake(workdir, "--config", "tasks=[math]", targets=ESTIMATES[:1])
    finally:
        probe.write_text(original)
    # The probe is in the rule's code hash: the edit reran the step, which did not fail.
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads((workdir / ESTIMATES[0]).read_text())
    records = {r["experiment"]: r for r in document["math"]}
    assert set(records) == SELECTED["math"]
    for record in records.values():
        assert record["peak_bytes"] is None
        assert record["error"] == "ImportError: probe broken on purpose"
    assert set(read_predictions([workdir / ESTIMATES[0]]).values()) == {None}
