"""Tests of ``peftbench advise`` (python -m peftbench advise)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from factories import make_base_result, make_result
from paths import PUBLISHED, REPO

from peftbench.analysis.published import import_published
from peftbench.analysis.summary import build_summary, read_summary, write_summary_files
from peftbench.cli import advise, default_summary, main, results_root
from peftbench.core.layout import run_dir

FIXTURES = PUBLISHED
N = 200


def vector(correct: int, seed: int) -> np.ndarray:
    """A 0/1 vector of N items with ``correct`` ones at random places."""
    out = np.zeros(N)
    out[np.random.default_rng(seed).permutation(N)[:correct]] = 1
    return out


# experiment -> (correctness vector, training memory in GB, training time in s)
RUNS = {
    "lora/big": (vector(120, 1), 15, 900),  # 0.600
    "lora/small": (vector(116, 2), 10, 600),  # 0.580: independent items, within noise of big
    "oft/cheap": (vector(80, 3), 8, 1200),  # 0.400: clearly worse than small
    "full-finetuning/all": (vector(140, 4), 30, 3000),  # 0.700 but over a 20 GB budget
}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    results = [make_base_result(test_accuracy=0.05, test_n=N)]
    for experiment, (scores, memory_gb, time_s) in RUNS.items():
        method, name = experiment.split("/")
        results.append(
            make_result(
                method,
                name,
                test_accuracy=float(scores.mean()),
                test_correct=int(scores.sum()),
                test_n=N,
                train_memory_peak_bytes=memory_gb * 10**9,
                train_time_s=float(time_s),
            )
        )
        folder = run_dir(root, "math", experiment, 0)
        folder.mkdir(parents=True)
        with open(folder / "test_predictions.jsonl", "w") as handle:
            for score in scores:
                parsed = "1" if score else "2"
                handle.write(json.dumps({"query": "q", "answer": "1", "parsed": parsed}) + "\n")
    results.append(make_result("ia3", "broken", status="failed"))
    table = build_summary(results, import_published({"math": FIXTURES}))
    write_summary_files(table, root / "summary.parquet", root / "summary.csv")
    return root


def run_advise(capsys, *args: str) -> tuple[int, str]:
    code = main(["advise", "--task", "math", "--n-boot", "300", *args])
    return code, capsys.readouterr().out


def test_advise_frontier_within_budget(results_dir, capsys):
    code, out = run_advise(
        capsys, "--max-memory-gb", "20", "--summary", str(results_dir / "summary.csv")
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(
        "Task math (this run): Pareto-optimal methods within training memory <= 20 GB"
    )
    assert f"over {N} test items (paired across methods)" in out
    ranked = [line for line in lines if line[:2] in ("1 ", "2 ", "3 ")]
    assert [line.split()[1] for line in ranked] == ["lora/big", "lora/small", "oft/cheap"]
    big, small, cheap = ranked
    assert "0.600 [" in big and "15.000" in big
    assert "over lora/small" in big and "WITHIN NOISE" in big
    assert "over oft/cheap" in small and "beyond noise" in small
    assert "(lowest quality on the frontier)" in cheap
    assert "full-finetuning/all" not in "".join(ranked)
    assert "1 experiment(s) over the budget: full-finetuning/all" in out
    assert "1 failed run(s) left out: ia3/broken" in out
    assert "Reference: base/no-finetuning (no fine-tuning): test accuracy 0.050" in out
    assert "WITHIN NOISE: the next method is cheaper" in out


def test_advise_time_budget_and_parquet(results_dir, capsys):
    code, out = run_advise(
        capsys,
        "--max-memory-gb",
        "20",
        "--max-time-min",
        "16",
        "--summary",
        str(results_dir / "summary.parquet"),
    )
    assert code == 0
    assert "and training time <= 16 min" in out and "time min" in out
    ranked = [line.split()[1] for line in out.splitlines() if line[:2] in ("1 ", "2 ", "3 ")]
    # oft/cheap takes 20 minutes: over the time budget.
    assert ranked == ["lora/big", "lora/small"]


def test_advise_nothing_fits(results_dir, capsys):
    code, out = run_advise(
        capsys, "--max-memory-gb", "1", "--summary", str(results_dir / "summary.csv")
    )
    assert code == 1
    assert "No experiment fits the budget." in out


def test_advise_published_source(results_dir, capsys):
    code, out = run_advise(
        capsys,
        "--max-memory-gb",
        "40",
        "--source",
        "published",
        "--summary",
        str(results_dir / "summary.csv"),
    )
    assert code == 0
    assert "Task math (published)" in out and "binomial noise" in out
    assert "miss/llama-3.2-3B-default" in out
    assert "1 failed run(s) left out: prompt_tuning/llama-3.2-3B-default" in out


def test_advise_errors(tmp_path, results_dir, capsys):
    assert (
        main(
            [
                "advise",
                "--task",
                "math",
                "--max-memory-gb",
                "20",
                "--summary",
                str(tmp_path / "none.csv"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "advise",
                "--task",
                "speech",
                "--max-memory-gb",
                "20",
                "--summary",
                str(results_dir / "summary.csv"),
            ]
        )
        == 2
    )
    assert "no task 'speech'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["advise", "--task", "math"])  # the memory budget is required


def test_advise_function_returns_tables(results_dir):
    summary = read_summary(results_dir / "summary.csv")
    frontier, table, notes = advise(summary, "math", 20, n_boot=100)
    assert frontier["experiment"].tolist() == ["lora/big", "lora/small", "oft/cheap"]
    assert set(table["experiment"]) == {"lora/big", "lora/small", "oft/cheap"}
    assert frontier["noise"].tolist() == ["binomial"] * 3  # no item scores passed
    assert any("base/no-finetuning" in note for note in notes)


def test_default_paths(results_dir, tmp_path):
    assert default_summary("math", results_dir) == results_dir / "summary.csv"
    assert default_summary("math", tmp_path) == tmp_path / "math" / "summary.csv"
    assert results_root(results_dir / "summary.csv", "math") == results_dir.resolve()
    assert results_root(tmp_path / "summary.csv", "math") is None


def test_python_dash_m(results_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftbench",
            "advise",
            "--task",
            "math",
            "--max-memory-gb",
            "20",
            "--n-boot",
            "50",
            "--summary",
            str(results_dir / "summary.csv"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "lora/big" in proc.stdout


@pytest.fixture(scope="module")
def image_results_dir(tmp_path_factory):
    """An image task: per-image similarity of 40 test images; the published FLUX.2 row too."""
    root = tmp_path_factory.mktemp("image-results")
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.1, 40)
    results = [make_base_result(task="image", similarity=0.3)]
    for experiment, similarity, memory_gb in [
        ("lora/r8", 0.70, 12),
        ("oft/b16", 0.50, 8),
        ("full-finetuning/all", 0.80, 30),
    ]:
        method, name = experiment.split("/")
        results.append(
            make_result(
                method,
                name,
                task="image",
                similarity=similarity,
                train_memory_peak_bytes=memory_gb * 10**9,
            )
        )
        noise = shared + rng.normal(0, 0.05, 40)
        folder = run_dir(root, "image", experiment, 0)
        folder.mkdir(parents=True)
        with open(folder / "test_similarity.jsonl", "w") as handle:
            for i, value in enumerate(similarity + noise - noise.mean()):
                line = {"prompt": f"prompt {i // 4}", "repeat": i % 4, "similarity": value}
                handle.write(json.dumps(line) + "\n")
    table = build_summary(results, import_published({"image": FIXTURES}))
    write_summary_files(table, root / "summary.parquet", root / "summary.csv")
    return root


def test_advise_image_task(image_results_dir, capsys):
    code = main(
        [
            "advise",
            "--task",
            "image",
            "--max-memory-gb",
            "20",
            "--n-boot",
            "300",
            "--summary",
            str(image_results_dir / "summary.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("Task image (this run): Pareto-optimal methods within training memory")
    assert "Similarity with 95% bootstrap intervals" in out
    assert "over 40 test items (paired across methods)" in out
    ranked = [line.split()[1] for line in out.splitlines() if line[:2] in ("1 ", "2 ")]
    assert ranked == ["lora/r8", "oft/b16"]
    assert "similarity [95% CI]" in out and "beyond noise" in out
    assert "full-finetuning/all" in out  # over the budget, said in a note
    assert "Reference: base/no-finetuning (no fine-tuning): similarity 0.300" in out


def test_advise_image_task_published_and_without_items(image_results_dir, capsys):
    code = main(
        [
            "advise",
            "--task",
            "image",
            "--max-memory-gb",
            "20",
            "--n-boot",
            "100",
            "--source",
            "published",
            "--summary",
            str(image_results_dir / "summary.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "oft/flux2-klein-default" in out
    assert "seeds only (no per-item scores or intervals found)" in out
    summary = read_summary(image_results_dir / "summary.csv")
    frontier, _, _ = advise(summary, "image", 20, n_boot=100)
    # Without per-image scores, each run's stored similarity interval is the noise.
    assert set(frontier["noise"]) == {"normal"}


def test_advise_predicted_answers_from_the_allocator_reserve(tmp_path, capsys):
    """--predicted reads an estimate file alone; an experiment fits by what the CUDA caching
    allocator is predicted to reserve (training and evaluation), not by its live tensors."""
    from peftbench.core.estimate import MemoryEstimate, write_estimates

    estimates = tmp_path / "estimates.json"
    write_estimates(
        estimates,
        {
            "math": [
                MemoryEstimate("lora/small", peak_bytes=8 * 10**9, reserved_bytes=9 * 10**9),
                # Live tensors fit 10 GB, but the allocator's reserve in evaluation does not.
                MemoryEstimate(
                    "lora/evaluation-heavy",
                    peak_bytes=9 * 10**9,
                    reserved_bytes=9 * 10**9,
                    eval_reserved_bytes=11 * 10**9,
                ),
                MemoryEstimate("boft/meta", error="NotImplementedError: no meta kernel"),
            ]
        },
    )
    args = ["advise", "--predicted", "--task", "math", "--max-memory-gb", "10"]
    assert main([*args, "--estimates", str(estimates)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PREDICTED")
    assert "lora/small" in out and "9.00 GB predicted" in out
    assert "Over the budget: lora/evaluation-heavy (11.0)" in out
    assert "Not estimated: boft/meta" in out
