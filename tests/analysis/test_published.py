"""Tests of the import of published (Hugging Face PEFT method-comparison) result files."""

import copy
import json
import shutil

import pytest
from paths import PUBLISHED

from peftbench.analysis.published import (
    FILE_SIZE_SENTINEL,
    PublishedFormatError,
    detect_format,
    import_published,
    parse_published,
    published_files,
)
from peftbench.tasks import registry

FIXTURES = PUBLISHED
# The published MetaMathQA suite scores the whole GSM8K test split (the math spec says so).
GSM8K_TEST_N = registry.get("math").published.test_n


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def imported():
    return import_published({"math": FIXTURES})


def test_fixture_folder_import(imported):
    rows = {row["experiment"]: row for row in imported.rows}
    assert set(rows) == {
        "lora/llama-3.2-3B-rank32",
        "miss/llama-3.2-3B-default",
        "full-finetuning/llama-3.2-3B-lr_0.00001",
        "prompt_tuning/llama-3.2-3B-default",
        "oft/flux2-klein-default",
    }
    assert all(row["source"] == "published" for row in rows.values())
    # Every file of the folder is accounted for: imported or warned about.
    assert len(imported.files) == len(published_files(FIXTURES)) == 8
    assert len(imported.rows) + len(imported.warnings) - 1 == len(imported.files)


def test_bad_files_are_warnings_naming_file_and_reason(imported):
    warnings = "\n".join(imported.warnings)
    assert "lora--llama-3.2-3B-rank64--truncated.json: skipped, not valid JSON" in warnings
    assert "dashboard-export.json: skipped, unknown format" in warnings
    assert "README.md: skipped, not a .json result file" in warnings
    # The image-generation file in the math folder is imported, under its own task, and said.
    assert (
        "oft--flux2-klein-default.json: result of task image in the published folder of task math; imported under task image"
        in warnings
    )


def test_metamathqa_units_and_interval(imported):
    row = next(r for r in imported.rows if r["experiment"] == "lora/llama-3.2-3B-rank32")
    assert (
        row["task"] == "math" and row["method"] == "lora" and row["name"] == "llama-3.2-3B-rank32"
    )
    assert row["family"] == "lora-like" and row["peft_type"] == "LORA"
    assert row["status"] == "success" and row["error"] is None
    assert row["test_accuracy"] == pytest.approx(0.47839272175890827)
    assert row["test_n"] == GSM8K_TEST_N
    # One run without per-item scores: no interval is made up for it (e.g. Wilson from test_n).
    assert row["test_accuracy_ci_low"] is None and row["test_accuracy_ci_high"] is None
    assert row["train_memory_gb"] == pytest.approx(22.29008896)  # GB = 1e9 bytes
    assert row["train_time_min"] == pytest.approx(942.3 / 60)
    assert row["file_size_mb"] == pytest.approx(36.715816)  # MB = 1e6 bytes
    assert row["trainable_params"] == 9_175_040
    assert row["trainable_pct"] == pytest.approx(100 * 9_175_040 / 3_221_924_864)
    assert row["forgetting"] == pytest.approx(0.05)
    assert row["train_loss_final"] == pytest.approx(0.6068)
    assert row["valid_accuracy_final"] == pytest.approx(0.4784)
    assert row["lr"] == 1e-4 and row["max_steps"] == 5000 and row["seed"] == 0
    assert row["peft_version"] == "0.19.2.dev0" and row["device"] == "NVIDIA L40S"
    assert len(row["config_hash"]) == 64
    curves = [c for c in imported.curves if c["experiment"] == row["experiment"]]
    assert {c["metric"] for c in curves} == {"validation", "train loss"}
    assert max(c["step"] for c in curves) == 5000


def test_full_finetuning_and_cancelled(imported):
    rows = {row["experiment"]: row for row in imported.rows}
    full = rows["full-finetuning/llama-3.2-3B-lr_0.00001"]
    assert full["family"] == "full" and full["peft_type"] is None
    cancelled = rows["prompt_tuning/llama-3.2-3B-default"]
    # Kept with its own status, no test accuracy: it can never be on a frontier.
    assert cancelled["status"] == "canceled"
    assert cancelled["test_accuracy"] is None and cancelled["family"] == "prompt-based"


def test_image_generation_format(imported):
    row = next(r for r in imported.rows if r["experiment"] == "oft/flux2-klein-default")
    assert row["task"] == "image" and row["family"] == "orthogonal"
    assert row["similarity"] == pytest.approx(0.7077637513478597)
    assert row["drift"] == pytest.approx(0.2619)
    assert row["test_accuracy"] is None and row["forgetting"] is None
    assert row["train_memory_gb"] == pytest.approx(9.669967872)


def test_nan_drift_and_file_size_sentinel():
    document = load("oft--flux2-klein-default.json")
    document["train_info"]["metrics"][-1]["drift"] = float("nan")
    document["train_info"]["file_size"] = FILE_SIZE_SENTINEL
    row = parse_published(json.loads(json.dumps(document)))["row"]
    assert row["drift"] is None  # NaN in the file means "not measured"
    assert row["file_size_mb"] is None  # the dummy size written when saving failed


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.pop("train_info"), "missing train_info"),
        (lambda d: d["run_info"].pop("experiment_name"), "missing run_info.experiment_name"),
        (
            lambda d: d["train_info"].update(accelerator_memory_max="22 GB"),
            "train_info.accelerator_memory_max must be a number",
        ),
        (
            lambda d: d["train_info"]["metrics"][-1].update({"test accuracy": True}),
            "must be a number",
        ),
        (
            lambda d: d["train_info"]["metrics"][-1].update({"test accuracy": 47.8}),
            "not in [0, 1]",
        ),
        (lambda d: d["train_info"]["metrics"].pop(), "has no 'test accuracy'"),
        (lambda d: d["train_info"].update(metrics={}), "train_info.metrics must be a list"),
        (lambda d: d["run_info"].update(train_config=[]), "run_info.train_config must be"),
    ],
)
def test_malformed_documents(change, reason):
    document = copy.deepcopy(load("lora--llama-3.2-3B-rank32.json"))
    change(document)
    with pytest.raises(PublishedFormatError) as excinfo:
        parse_published(document)
    assert reason in str(excinfo.value)


def test_detect_format():
    assert detect_format(load("miss--llama-3.2-3B-default.json")) == "metamathqa"
    assert detect_format(load("oft--flux2-klein-default.json")) == "image-gen"
    with pytest.raises(PublishedFormatError, match="top level"):
        detect_format([1, 2])
    cancelled_early = load("miss--llama-3.2-3B-default.json")
    cancelled_early["train_info"]["metrics"] = []
    # No metrics yet: the config still tells the format.
    assert detect_format(cancelled_early) == "metamathqa"


def test_malformed_file_among_good_ones_is_not_fatal(tmp_path):
    shutil.copy(FIXTURES / "miss--llama-3.2-3B-default.json", tmp_path)
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / ".hidden.json").write_text("{")
    imported = import_published({"math": tmp_path, "other": None})
    assert [r["experiment"] for r in imported.rows] == ["miss/llama-3.2-3B-default"]
    assert len(imported.warnings) == 2  # hidden files are ignored
    assert any("empty.json: skipped, not valid JSON" in w for w in imported.warnings)
    assert any("list.json: skipped, top level must be an object" in w for w in imported.warnings)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_published({"math": tmp_path / "nope"})
    assert import_published(None).rows == []
    assert published_files(None) == []
