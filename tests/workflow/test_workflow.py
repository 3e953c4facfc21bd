"""The workflow end to end on the test profile (config/test.yaml), and its caching behaviour.

The repository is copied to a temporary folder so the runs never touch the user's results/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from wfutil import REPO, copy_workflow, job_counts, snakemake, task_jobs


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("wf"))
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir


def test_end_to_end_outputs(workflow_run: Path) -> None:
    summary = pd.read_csv(workflow_run / "results/math/summary.csv")
    expected = {"base/no-finetuning", "lora/rank8-qv"}
    assert expected <= set(summary["experiment"])
    assert (summary["status"] == "success").all(), summary[["experiment", "error"]]
    base = summary[summary["method"] == "base"].iloc[0]
    assert base["trainable_params"] == 0
    lora = summary[summary["experiment"] == "lora/rank8-qv"].iloc[0]
    assert 0 < lora["trainable_params"] < lora["total_params"]
    assert lora["train_memory_gb"] > 0 and lora["train_time_min"] > 0
    assert lora["file_size_mb"] > 0
    assert (
        0 <= lora["test_accuracy_ci_low"] <= lora["test_accuracy"] <= lora["test_accuracy_ci_high"]
    )
    assert (workflow_run / "results/math/pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (workflow_run / "results/math/pareto.html").read_text()
    assert "cdn.jsdelivr" not in html and "lora/rank8-qv" in html

    result = json.loads(
        (workflow_run / "results/math/runs/lora/rank8-qv/seed0/result.json").read_text()
    )
    # The effective config records the deep-merged overrides and the defaults they kept.
    assert result["config"]["optimizer_kwargs"]["weight_decay"] == 0.1
    assert result["peft_config"]["peft_type"] == "LORA"
    assert result["provenance"]["packages"]["peft"]
    assert len(result["curves"]["valid_accuracy"]) == 2  # eval_steps 3 of max_steps 6
    adapter = workflow_run / "results/math/runs/lora/rank8-qv/seed0/adapter"
    assert (adapter / "adapter_model.safetensors").exists()


def test_image_task_end_to_end(workflow_run: Path) -> None:
    summary = pd.read_csv(workflow_run / "results/image/summary.csv")
    assert set(summary["experiment"]) == {
        "base/no-finetuning",
        "lora/rank4",
        "full-finetuning/default",
    }
    assert (summary["status"] == "success").all(), summary[["experiment", "error"]]
    base = summary.set_index("experiment").loc["base/no-finetuning"]
    assert base["trainable_params"] == 0 and base["drift"] == 0
    for experiment in ["lora/rank4", "full-finetuning/default"]:
        row = summary.set_index("experiment").loc[experiment]
        assert -1 <= row["similarity_ci_low"] <= row["similarity"] <= row["similarity_ci_high"] <= 1
        # Training changed the model: its images of unrelated prompts differ from the base's.
        assert 0 < row["drift"] <= 1
        assert row["train_memory_gb"] > 0 and row["trainable_params"] > 0
    run = workflow_run / "results/image/runs/lora/rank4/seed0"
    result = json.loads((run / "result.json").read_text())
    assert result["task"] == "image" and result["peft_config"]["peft_type"] == "LORA"
    assert result["provenance"]["encoder_hash"] and result["provenance"]["base_model_hash"]
    # 3 test prompts x test_repeats 2, each scored against its reference image.
    scores = [json.loads(line) for line in (run / "test_similarity.jsonl").read_text().splitlines()]
    assert len(scores) == 6 and {s["repeat"] for s in scores} == {0, 1}
    assert (run / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p["step"] for p in result["curves"]["valid_similarity"]] == [2, 4]
    assert (workflow_run / "results/image/pareto.png").exists()
    assert (workflow_run / "results/image/report/samples.html").exists()


def test_each_task_runs_alone(workflow_run: Path) -> None:
    shutil.rmtree(workflow_run / "results/image/runs/lora")
    proc = snakemake(workflow_run, "-n", "--config", "tasks=[math]")
    assert proc.returncode == 0, proc.stderr
    # Only the cross-task summary and report (their inputs changed) may rerun, no training.
    counts = job_counts(proc.stdout)
    assert not any(r.startswith(("image", "math")) for r in counts), proc.stdout
    assert not {"train", "prepare_data"} & set(counts), proc.stdout
    proc = snakemake(workflow_run, "-n", "--config", "tasks=[image]")
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    assert task_jobs(proc.stdout, "train") == {"image": 1}, proc.stdout
    assert not any(r.startswith("math") for r in counts)
    # Rebuild what was deleted with both tasks, as the other tests expect it. Named: Snakemake
    # does not rebuild a missing intermediate file whose downstream outputs are up to date.
    deleted = "results/image/runs/lora/rank4/seed0/result.json"
    proc = snakemake(workflow_run, targets=("all", deleted))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workflow_run / deleted).is_file()


def test_editing_one_image_experiment_reruns_only_it(workflow_run: Path) -> None:
    config_path = workflow_run / "experiments/image/lora/rank4/adapter_config.json"
    original = config_path.read_text()
    cfg = json.loads(original)
    cfg["lora_alpha"] = cfg["lora_alpha"] * 2
    config_path.write_text(json.dumps(cfg, indent=2))
    try:
        proc = snakemake(workflow_run, "-n")
    finally:
        config_path.write_text(original)
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    assert task_jobs(proc.stdout, "train") == {"image": 1}, proc.stdout
    assert task_jobs(proc.stdout, "aggregate") == {"image": 1}, proc.stdout
    assert not {"image_base_model", "image_encoder", "image_base_reference", "prepare_data"} & set(
        counts
    )
    assert not any(rule.startswith("math") for rule in counts)


def test_rerun_schedules_nothing(workflow_run: Path) -> None:
    proc = snakemake(workflow_run, "-n")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_editing_one_experiment_reruns_only_it(workflow_run: Path) -> None:
    config_path = workflow_run / "experiments/math/lora/rank8-qv/adapter_config.json"
    cfg = json.loads(config_path.read_text())
    cfg["lora_alpha"] = cfg["lora_alpha"] * 2
    config_path.write_text(json.dumps(cfg, indent=2))
    proc = snakemake(workflow_run, "-n")
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    assert task_jobs(proc.stdout, "train") == {"math": 1}, proc.stdout
    assert task_jobs(proc.stdout, "aggregate") == {"math": 1}, proc.stdout
    assert not {"math_base_model", "math_base_reference", "prepare_data"} & set(counts)


def test_changing_a_task_default_reruns_every_experiment(workflow_run: Path) -> None:
    summary = pd.read_csv(workflow_run / "results/math/summary.csv")
    proc = snakemake(workflow_run, "-n", extra_config="math: {training: {max_steps: 7}}\n")
    assert proc.returncode == 0, proc.stderr
    assert task_jobs(proc.stdout, "train") == {"math": len(summary)}, proc.stdout


def test_changing_training_code_reruns_training_only(workflow_run: Path) -> None:
    """The run module is imported by training jobs only (the base model's skill gate imports the
    evaluation module, so editing that one rightly rebuilds the base too)."""
    code = workflow_run / "peftbench/tasks/math/run.py"
    original = code.read_text()
    code.write_text(original + "\n# a change to the training code\n")
    try:
        proc = snakemake(workflow_run, "-n")
    finally:
        code.write_text(original)
    assert proc.returncode == 0, proc.stderr
    counts = job_counts(proc.stdout)
    summary = pd.read_csv(workflow_run / "results/math/summary.csv")
    assert task_jobs(proc.stdout, "train") == {"math": len(summary)}, proc.stdout
    assert "prepare_data" not in counts and "math_base_model" not in counts


def test_changing_data_code_reruns_data_and_training(workflow_run: Path) -> None:
    """The math run module imports the data module (its data hash): editing it reruns the data
    preparation and every math training job, and nothing of the image task."""
    code = workflow_run / "peftbench/tasks/math/data.py"
    original = code.read_text()
    code.write_text(original + "\n# a change to the data code\n")
    try:
        proc = snakemake(workflow_run, "-n")
    finally:
        code.write_text(original)
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(workflow_run / "results/math/summary.csv")
    assert task_jobs(proc.stdout, "prepare_data") == {"math": 1}, proc.stdout
    assert task_jobs(proc.stdout, "train") == {"math": len(summary)}, proc.stdout
    assert not any(rule.startswith("image") for rule in job_counts(proc.stdout))


def test_failed_experiment_next_to_a_good_one(tmp_path: Path) -> None:
    """A NaN experiment fails alone: the run exits 0, its row says failed, the rest succeed."""
    copy_workflow(tmp_path)
    root = tmp_path / "nan-experiments"
    shutil.copytree(REPO / "experiments/math/lora/rank8-qv", root / "lora/rank8-qv")
    (root / "lora/nan").mkdir(parents=True)
    # A valid but absurd learning rate (an infinite lora_alpha is now rejected before training):
    # the first update blows the adapter weights up, and a later loss is not finite.
    (root / "lora/nan/adapter_config.json").write_text(
        '{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "target_modules": ["q_proj", "v_proj"]}'
    )
    (root / "lora/nan/training_params.json").write_text('{"optimizer_kwargs": {"lr": 1e30}}')
    proc = snakemake(
        tmp_path,
        extra_config=f"tasks: [math]\nmath: {{experiments_dir: {root}}}\nselect: {{math: []}}\n",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "results/math/summary.csv").set_index("experiment")
    assert summary.loc["lora/nan", "status"] == "failed"
    assert "NonFiniteLossError" in summary.loc["lora/nan", "error"]
    assert summary.loc["lora/rank8-qv", "status"] == "success"
    assert summary.loc["base/no-finetuning", "status"] == "success"
    assert "peftbench math: 2 succeeded, 1 failed" in proc.stdout + proc.stderr
