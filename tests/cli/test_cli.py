"""Tests of ``peftbench advise`` (python -m peftbench advise)."""

import argparse
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from factories import make_base_result, make_result
from paths import PUBLISHED, REPO

from peftbench.analysis.published import import_published
from peftbench.analysis.summary import (
    build_summary,
    read_summary,
    table_item_scores,
    write_summary_files,
)
from peftbench.cli import advise, build_parser, default_summary, main, results_root
from peftbench.core.layout import run_dir
from peftbench.tasks import registry

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
# The same runs scored by the published parser: lora/small beats lora/big by that rule.
PUBLISHED_SCORES = {
    "lora/big": 0.55,
    "lora/small": 0.57,
    "oft/cheap": 0.35,
    "full-finetuning/all": 0.6,
}


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() registers the tasks of --task-package and --configfile for good (as a command
    does); here they go with the test, so later tests still see only the built-in tasks."""
    monkeypatch.setattr(registry, "_LOADED", dict(registry._LOADED))


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    results = [make_base_result(test_accuracy=0.05, test_accuracy_published=0.04, test_n=N)]
    for experiment, (scores, memory_gb, time_s) in RUNS.items():
        method, name = experiment.split("/")
        results.append(
            make_result(
                method,
                name,
                test_accuracy=float(scores.mean()),
                test_accuracy_published=PUBLISHED_SCORES[experiment],
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
    assert "Task math (published)" in out and "miss/llama-3.2-3B-default" in out
    # One run each, no per-item scores: no interval, no P(frontier), nothing beyond noise.
    assert "Test accuracy of single runs without per-item scores: no intervals" in out
    assert "(no interval: 1 run, no per-item scores)" in out and "[95% CI]" not in out
    assert "beyond noise" not in out and "WITHIN NOISE" not in out and "%" not in out
    assert "Scores as published" in out and "--published-score" in out
    assert "1 failed run(s) left out: prompt_tuning/llama-3.2-3B-default" in out


def test_advise_published_leads_cannot_be_judged(results_dir, tmp_path, capsys):
    """Published rows far apart (0.9, 0.5, 0.1 on 1319 problems) are still single runs without
    per-item scores: every lead is "noise cannot be judged", never "beyond noise"."""
    summary = read_summary(results_dir / "summary.csv")
    miss = summary[summary["experiment"] == "miss/llama-3.2-3B-default"].iloc[0]
    rows = []
    for name, accuracy, memory in [("top", 0.9, 30.0), ("mid", 0.5, 20.0), ("low", 0.1, 10.0)]:
        row = miss.copy()
        row["experiment"], row["test_accuracy"], row["train_memory_gb"] = (
            f"lora/{name}",
            accuracy,
            memory,
        )
        rows.append(row)
    published = pd.DataFrame(rows)
    path = tmp_path / "summary.csv"
    write_summary_files(published, csv_path=path)
    code, out = run_advise(
        capsys, "--max-memory-gb", "40", "--source", "published", "--summary", str(path)
    )
    assert code == 0
    lines = [line for line in out.splitlines() if line[:2] in ("1 ", "2 ", "3 ")]
    assert [line.split()[1] for line in lines] == ["lora/top", "lora/mid", "lora/low"]
    assert "+0.400 over lora/mid: noise cannot be judged" in lines[0]
    assert "+0.400 over lora/low: noise cannot be judged" in lines[1]
    assert all(" n/a " in line for line in lines)  # P(frontier)
    assert "beyond noise" not in out and "WITHIN NOISE" not in out
    frontier, _, _ = advise(read_summary(path), "math", 40, source="published", n_boot=50)
    assert set(frontier["noise"]) == {"none"} and frontier["test_accuracy_low"].isna().all()
    assert frontier["lead_verdict"].tolist() == ["cannot be judged", "cannot be judged", None]


def test_advise_published_score(results_dir, capsys):
    """--published-score: this run's rows scored as the published rows are, so the two
    advices compare; by that rule lora/small beats lora/big (by ours it is the reverse)."""
    code, out = run_advise(
        capsys,
        "--max-memory-gb",
        "20",
        "--published-score",
        "--summary",
        str(results_dir / "summary.csv"),
    )
    assert code == 0
    ranked = [line.split()[1] for line in out.splitlines() if line[:2] in ("1 ", "2 ", "3 ")]
    assert ranked == ["lora/small", "oft/cheap"]
    assert "Scores: this run's test_accuracy_published." in out and "0.570 (no interval" in out
    # Our per-item scores are of our own parser: not used for the published-compatible score.
    assert "test_accuracy_published, whose per-item scores are not recorded" in out
    assert "beyond noise" not in out
    assert "Reference: base/no-finetuning (no fine-tuning): test accuracy 0.040." in out
    # Without the flag: our own score, as before (and no score line).
    code, own = run_advise(
        capsys, "--max-memory-gb", "20", "--summary", str(results_dir / "summary.csv")
    )
    assert "Scores:" not in own and own.splitlines()[4].split()[1] == "lora/big"


@pytest.fixture(scope="module")
def published_items_dir(results_dir, tmp_path_factory):
    """The same runs, their item files recording the published rule's correctness too (as a
    run writes it): as many correct items as test_accuracy_published says."""
    root = tmp_path_factory.mktemp("published-items") / "results"
    shutil.copytree(results_dir, root)
    for experiment, share in PUBLISHED_SCORES.items():
        path = run_dir(root, "math", experiment, 0) / "test_predictions.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        correct = vector(round(share * N), 10 + len(experiment))
        with open(path, "w") as handle:
            for line, published in zip(lines, correct, strict=True):
                handle.write(json.dumps({**line, "published_correct": bool(published)}) + "\n")
    return root


def test_advise_published_score_resamples_the_published_items(published_items_dir, capsys):
    """With the published rule's per-item correctness recorded, this run's rows scored as
    published get an item-bootstrap interval, and their leads are judged against noise."""
    summary = str(published_items_dir / "summary.csv")
    code, out = run_advise(
        capsys, "--max-memory-gb", "20", "--published-score", "--summary", summary
    )
    assert code == 0
    ranked = [line for line in out.splitlines() if line[:2] in ("1 ", "2 ", "3 ")]
    assert [line.split()[1] for line in ranked] == ["lora/small", "oft/cheap"]
    assert "0.570 [" in ranked[0] and "no interval" not in out
    assert f"over {N} test items (paired across methods)" in out
    assert "whose per-item scores are not recorded" not in out
    assert "over oft/cheap" in ranked[0] and "beyond noise" in ranked[0]
    frontier, _, notes = advise(
        read_summary(summary),
        "math",
        20,
        published_score=True,
        comparable_items=table_item_scores(read_summary(summary), published_items_dir, True),
        n_boot=100,
    )
    assert set(frontier["noise"]) == {"items"} and frontier["test_accuracy_low"].notna().all()
    assert not any("not recorded" in note for note in notes)


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
    with pytest.raises(SystemExit) as exit_info:
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
    assert exit_info.value.code == 2
    assert "invalid choice: 'speech'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["advise", "--task", "math"])  # the memory budget is required


def test_advise_function_returns_tables(results_dir):
    summary = read_summary(results_dir / "summary.csv")
    frontier, table, notes = advise(summary, "math", 20, n_boot=100)
    assert frontier["experiment"].tolist() == ["lora/big", "lora/small", "oft/cheap"]
    assert set(table["experiment"]) == {"lora/big", "lora/small", "oft/cheap"}
    # No item scores passed: each run's stored (Wilson) interval is its noise.
    assert frontier["noise"].tolist() == ["normal"] * 3
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
    assert "Similarity of single runs without per-item scores: no intervals" in out
    assert "0.708 (no interval: 1 run, no per-item scores)" in out
    assert "Scores" not in out  # the image similarity has one score: nothing to say
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


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_help_lists_every_command_with_a_line(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    commands = _subparsers(build_parser())
    assert set(commands) >= {"advise", "estimate-memory", "import-experiments", "export"}
    lines = top.splitlines()
    for name in commands:
        # Each command on a line of its own, followed by its one-line description.
        (line,) = [line for line in lines if line.split()[:1] == [name]]
        assert len(line.split()) > 1, line


def test_every_help_reads_as_plain_text(capsys):
    parser = build_parser()
    texts = {"peftbench": parser.format_help()}
    texts |= {name: sub.format_help() for name, sub in _subparsers(parser).items()}
    for name, text in texts.items():
        assert "%%" not in text and "%(" not in text, name  # escaped or unfilled % placeholders
        assert "`" not in text, name  # RST or Markdown markup
        assert ":mod:" not in text and ":func:" not in text, name
    assert "95% bootstrap" in " ".join(texts["advise"].split())
    # --help through main prints the same text.
    with pytest.raises(SystemExit):
        main(["advise", "--help"])
    assert capsys.readouterr().out == texts["advise"]


def test_source_choices_have_no_spaces(results_dir, capsys):
    advise_parser = _subparsers(build_parser())["advise"]
    (source,) = [a for a in advise_parser._actions if a.dest == "source"]
    assert list(source.choices) == ["this-run", "published"]
    assert all(" " not in choice for choice in source.choices)
    assert "--source {this-run,published}" in advise_parser.format_help()
    with pytest.raises(SystemExit) as exit_info:
        main(["advise", "--task", "math", "--max-memory-gb", "20", "--source", "mine"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'mine' (choose from 'this-run', 'published')" in (
        capsys.readouterr().err
    )
    # The earlier spelling (the tables' "this run") still works, with a note.
    args = ["advise", "--task", "math", "--max-memory-gb", "20", "--n-boot", "50"]
    args += ["--summary", str(results_dir / "summary.csv")]
    assert main([*args, "--source", "this-run"]) == 0
    new = capsys.readouterr()
    assert main([*args, "--source", "this run"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out
    assert "earlier spelling of this-run" in old.err and "earlier spelling" not in new.err


@pytest.mark.parametrize("command", ["advise", "estimate-memory"])
def test_task_is_a_choice_of_the_known_tasks(command, capsys):
    args = [command, "--task", "maths"] + (["--max-memory-gb", "1"] if command == "advise" else [])
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    # argparse's error, listing the choices, and how to add a task from outside the package.
    assert "argument --task: invalid choice: 'maths' (choose from 'math', 'image'" in err
    assert "--task-package NAME=FOLDER" in err
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--task {math,image" in capsys.readouterr().out


def test_an_external_task_is_a_choice_once_registered(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # task_packages folders are relative to the workflow folder
    missing = str(tmp_path / "none.csv")
    args = ["advise", "--task", "toy", "--max-memory-gb", "1", "--summary", missing]
    # Named by --task-package, or by the task_packages of --configfile: then a choice.
    for extra in (
        ["--task-package", "toy=tests/toy_task"],
        ["--configfile", "tests/toy_task/config.yaml"],
    ):
        assert main([*args, *extra]) == 2  # past the parser: the summary is missing
        assert "does not exist" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            main(["advise", "--help", *extra])
        assert "--task {math,image,toy}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["advise", "--task-package", "toy", "--task", "toy"])
    assert main(["advise", "--task-package", "other=nowhere", "--task", "other"]) == 2
    assert "nowhere/__init__.py does not exist" in capsys.readouterr().err
