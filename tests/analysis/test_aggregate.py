"""Tests of result loading, the summary table and its CSV output."""

import json
import math

import pandas as pd
import pytest
from factories import make_base_result, make_result

from peftbench.analysis.aggregate import (
    load_results,
    provenance_warnings,
    summarize,
    summary_columns,
    validate_result,
    write_summary,
)


def three_results():
    """Two successful LoRA runs (a trade-off) and one failed run."""
    return [
        make_result("lora", "r8", test_accuracy=0.40, train_memory_peak_bytes=10_000_000_000),
        make_result(
            "lora",
            "r16",
            seed=1,
            test_accuracy=0.45,
            test_accuracy_ci_low=0.42,
            test_accuracy_ci_high=0.48,
            train_memory_peak_bytes=12_500_000_000,
            train_time_s=900.0,
            trainable_params=2_000_000,
            total_params=400_000_000,
            file_size_bytes=8_000_000,
        ),
        make_result("ia3", "default", status="failed", error="RuntimeError: boom"),
    ]


def write_results(tmp_path, results):
    paths = []
    for result in results:
        path = (
            tmp_path
            / result["task"]
            / "runs"
            / result["method"]
            / result["name"]
            / f"seed{result['seed']}"
            / "result.json"
        )
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(result))
        paths.append(path)
    return paths


def test_factory_results_validate():
    for result in [*three_results(), make_base_result()]:
        validate_result(result)


def test_load_results_roundtrip(tmp_path):
    results = three_results()
    paths = write_results(tmp_path, results)
    assert load_results(paths) == results
    assert load_results([str(p) for p in paths]) == results


def test_load_results_names_file_and_field(tmp_path):
    bad = make_result(test_accuracy=1.5)
    (path,) = write_results(tmp_path, [bad])
    with pytest.raises(ValueError) as excinfo:
        load_results([path])
    message = str(excinfo.value)
    assert str(path) in message
    assert "metrics.test_accuracy" in message


def test_load_results_missing_field(tmp_path):
    bad = make_result()
    del bad["metrics"]["forgetting"]
    (path,) = write_results(tmp_path, [bad])
    with pytest.raises(ValueError, match=r"metrics\.forgetting"):
        load_results([path])


def test_load_results_invalid_json(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="result.json"):
        load_results([path])


def test_summarize_columns_units_and_order():
    df = summarize([*three_results(), make_base_result(test_accuracy=0.2)])
    assert list(df.columns) == summary_columns()
    assert len(df) == 4
    # Base first, then accuracy descending, failed (NaN accuracy) last.
    assert df["experiment"].tolist() == [
        "base/no-finetuning",
        "lora/r16",
        "lora/r8",
        "ia3/default",
    ]
    r16 = df.set_index("experiment").loc["lora/r16"]
    assert r16["seed"] == 1
    assert r16["train_memory_gb"] == pytest.approx(12.5)
    assert r16["train_memory_allocated_gb"] == pytest.approx(10.0)
    assert r16["eval_memory_gb"] == pytest.approx(4.0)
    assert r16["train_time_min"] == pytest.approx(15.0)
    assert r16["eval_time_min"] == pytest.approx(2.0)
    assert r16["trainable_pct"] == pytest.approx(0.5)
    assert r16["file_size_mb"] == pytest.approx(8.0)
    assert r16["test_n"] == 1000
    assert r16["lr"] == pytest.approx(1e-4)
    assert r16["max_steps"] == 100
    assert r16["peft_type"] == "LORA"
    assert r16["memory_measure"] == "cuda_reserved"
    assert r16["peft_version"] == "0.21.2"
    assert r16["torch_version"] == "2.13.0"
    assert r16["transformers_version"] == "5.24.0"
    assert r16["device"] == "cuda"
    assert r16["config_hash"] == "hash-lora-r16"
    assert r16["code_revision"] == "abc1234"


def test_summarize_failed_row_kept_with_nan_metrics():
    df = summarize(three_results())
    failed = df[df["status"] == "failed"].iloc[0]
    assert failed["error"] == "RuntimeError: boom"
    for column in ["test_accuracy", "train_memory_gb", "train_time_min", "forgetting"]:
        assert math.isnan(failed[column])
    assert pd.isna(failed["trainable_params"])
    assert not failed["on_frontier"]


def test_summarize_frontier_only_successful_rows():
    results = three_results()
    # A failed run that somehow recorded great numbers must not enter the frontier.
    results.append(
        make_result(
            "vera",
            "default",
            status="failed",
            test_accuracy=0.99,
            train_memory_peak_bytes=1_000_000_000,
        )
    )
    # Dominated by lora/r8: same memory, lower accuracy.
    results.append(make_result("oft", "default", test_accuracy=0.3, train_memory_peak_bytes=10**10))
    df = summarize(results).set_index("experiment")
    assert df["on_frontier"].dtype == bool
    assert df["on_frontier"].to_dict() == {
        "lora/r16": True,
        "lora/r8": True,
        "oft/default": False,
        "ia3/default": False,
        "vera/default": False,
    }


def test_summarize_base_without_training_not_on_frontier():
    df = summarize([make_base_result(test_accuracy=0.9), *three_results()])
    assert df.loc[0, "method"] == "base"
    assert not df.loc[0, "on_frontier"]
    assert math.isnan(df.loc[0, "lr"])
    assert pd.isna(df.loc[0, "peft_type"])


def test_summarize_empty():
    df = summarize([])
    assert list(df.columns) == summary_columns()
    assert df.empty


def test_provenance_warnings():
    results = three_results()
    assert provenance_warnings(summarize(results)) == []
    results.append(
        make_result(
            "oft",
            "default",
            packages={"peft": "0.20.0", "torch": "2.13.0", "transformers": "5.24.0"},
            code_revision="def5678+dirty",
        )
    )
    warnings = provenance_warnings(summarize(results))
    assert len(warnings) == 2
    assert any("peft_version" in w and "0.20.0" in w and "0.21.2" in w for w in warnings)
    assert any("code_revision" in w and "def5678+dirty" in w for w in warnings)


def test_write_summary_atomic(tmp_path):
    df = summarize(three_results())
    csv_path = tmp_path / "out" / "summary.csv"
    write_summary(df, csv_path)
    assert [p.name for p in csv_path.parent.iterdir()] == ["summary.csv"]
    back = pd.read_csv(csv_path)
    assert list(back.columns) == summary_columns()
    assert back["experiment"].tolist() == df["experiment"].tolist()
    # Counts are written as integers even though the failed row has none.
    assert "2000000.0" not in csv_path.read_text()
    assert back["trainable_params"].tolist()[:2] == [2_000_000, 1_000_000]
    # Overwriting replaces the file and leaves no temporary files behind.
    write_summary(df.head(1), csv_path)
    assert len(pd.read_csv(csv_path)) == 1
    assert [p.name for p in csv_path.parent.iterdir()] == ["summary.csv"]


def test_write_summary_failure_keeps_old_file(tmp_path, monkeypatch):
    csv_path = tmp_path / "summary.csv"
    csv_path.write_text("old\n")

    def broken_to_csv(self, path, **kwargs):
        with open(path, "w") as handle:
            handle.write("partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(OSError, match="disk full"):
        write_summary(summarize(three_results()), csv_path)
    assert csv_path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


# ---------------------------------------------------------------------------------------------
# The image task: same schema and summary, its own quality (similarity)
# ---------------------------------------------------------------------------------------------


def image_results():
    """Image-task runs: a similarity trade-off, a dominated run, a failed run and the base."""
    return [
        make_base_result(
            task="image", similarity=0.30, similarity_ci_low=0.28, similarity_ci_high=0.32
        ),
        make_result("lora", "r8", task="image", similarity=0.70, train_memory_peak_bytes=10**10),
        make_result("oft", "b16", task="image", similarity=0.60, train_memory_peak_bytes=8 * 10**9),
        make_result(
            "full-finetuning",
            "default",
            task="image",
            peft_type=None,
            similarity=0.65,
            train_memory_peak_bytes=30 * 10**9,
            drift=0.2,
        ),
        make_result("ia3", "default", task="image", status="failed"),
    ]


def test_image_results_validate_and_schema_checks_image_fields():
    for result in image_results():
        validate_result(result)
    assert make_result(task="image")["metrics"]["test_accuracy"] is None
    with pytest.raises(ValueError, match=r"metrics\.drift"):
        validate_result(make_result(task="image", drift=1.5))
    with pytest.raises(ValueError, match=r"metrics\.train_samples"):
        validate_result(make_result(task="image", train_samples=1.5))
    # Every result has a validation curve: math's accuracy or the image task's similarity.
    no_curve = make_result(task="image")
    del no_curve["curves"]["valid_similarity"]
    with pytest.raises(ValueError, match="curves"):
        validate_result(no_curve)
    bad_point = make_result(task="image")
    bad_point["curves"]["valid_similarity"] = [{"step": 1, "accuracy": 0.5}]
    with pytest.raises(ValueError, match="similarity"):
        validate_result(bad_point)


def test_summarize_mixed_tasks_each_frontier_on_its_own_quality():
    df = summarize([*three_results(), *image_results()])
    assert list(df.columns) == summary_columns()
    for column in ("similarity", "similarity_ci_low", "drift", "generation_time_min"):
        assert df[column].dtype == "float64"
    assert df["train_samples"].dtype == "Int64"
    # Grouped by task; within a task base first, then the task's quality descending.
    assert df["experiment"].tolist() == [
        "base/no-finetuning",
        "lora/r8",
        "full-finetuning/default",
        "oft/b16",
        "ia3/default",
        "lora/r16",
        "lora/r8",
        "ia3/default",
    ]
    image = df[df["task"] == "image"].set_index("experiment")
    # Image runs have no test accuracy: a frontier over test_accuracy would be empty.
    assert image.index[image["on_frontier"]].tolist() == ["lora/r8", "oft/b16"]
    math = df[df["task"] == "math"].set_index("experiment")
    assert math.index[math["on_frontier"]].tolist() == ["lora/r16", "lora/r8"]
    lora = image.loc["lora/r8"]
    assert lora["similarity"] == pytest.approx(0.70)
    assert lora["similarity_ci_low"] == pytest.approx(0.68)
    assert lora["drift"] == pytest.approx(0.05)
    assert lora["valid_similarity_final"] == pytest.approx(0.61)
    assert lora["generation_time_min"] == pytest.approx(1.5)
    assert lora["train_samples"] == 800 and lora["test_n"] == 40
    assert math.loc["lora/r16", "train_samples"] is pd.NA
    assert math["similarity"].isna().all() and math["drift"].isna().all()
    assert image.loc["full-finetuning/default", "drift"] == pytest.approx(0.2)


def test_write_summary_image_counts_are_integers(tmp_path):
    path = tmp_path / "summary.csv"
    write_summary(summarize(image_results()), path)
    back = pd.read_csv(path)
    assert list(back.columns) == summary_columns()
    assert "800.0" not in path.read_text()
    assert back.set_index("experiment").loc["lora/r8", "train_samples"] == 800


def test_mixed_cpu_numerics_warn():
    """Runs whose CPU kernels or BLAS settings differ may differ in every digit (issue 11)."""
    results = three_results()
    for result, key in zip(
        results, ["AVX2/mkl/unpinned/threads=1", "AVX512/mkl/unpinned/threads=1"] * 2, strict=False
    ):  # noqa: E501
        result["provenance"]["hardware"] = {"numerics": {"key": key}}
    table = summarize(results)
    assert set(table["cpu_numerics"].dropna()) == {
        "AVX2/mkl/unpinned/threads=1",
        "AVX512/mkl/unpinned/threads=1",
    }
    warnings = provenance_warnings(table)
    assert len(warnings) == 1 and "cpu_numerics" in warnings[0] and "AVX512" in warnings[0]
    # Unrecorded numerics (older results, published rows) never warn on their own.
    for result in results:
        result["provenance"]["hardware"] = {}
    assert provenance_warnings(summarize(results)) == []
