"""Tests of ``peftbench export --format hf-method-comparison``: results written in the published
suite's layout (peftbench.interop.suite_export), read back by this workflow's own importer of
published results, and holding the fields the suite's app reads."""

import json
import math
from pathlib import Path

import pytest
from factories import make_base_result, make_result
from paths import PUBLISHED, REPO
from tiny import run

from peftbench.analysis.aggregate import summarize
from peftbench.analysis.published import (
    FILE_SIZE_SENTINEL,
    detect_format,
    import_published,
    parse_published,
)
from peftbench.cli import main
from peftbench.core.configfile import load_config_file
from peftbench.core.io import write_json
from peftbench.core.layout import RESULT_FILE, run_dir
from peftbench.interop.run_results import ExportError
from peftbench.interop.suite_document import APP_INTEGERS
from peftbench.interop.suite_export import export_results
from peftbench.interop.suite_keys import NO_EFFECT, SUITE_CONSTANTS
from peftbench.tasks import registry

HUB_MODEL = "meta-llama/Llama-3.2-3B@13afe5124825b4f3751f836b40dafda64c1ed062"
#: What the suite's app reads of every successful document (its processing module), and per
#: suite task the last metrics entry's keys and the package versions it reads.
APP_FIELDS = {
    "run_info": ["experiment_name", "train_config", "peft_config", "total_time", "peft_branch",
                 "created_at"],
    "train_info": ["accelerator_memory_reserved_avg", "accelerator_memory_max",
                   "accelerator_memory_reserved_99th", "train_time", "file_size",
                   "num_trainable_params", "status"],
    "meta_info": ["package_info", "system_info"],
}  # fmt: skip
APP_FINAL = {
    "MetaMathQA": ["train loss", "train samples", "test accuracy", "train total tokens"],
    "image-gen": ["train loss", "train samples", "test dino_similarity"],
}
APP_PACKAGES = {
    "MetaMathQA": ["peft", "transformers", "datasets", "torch", "bitsandbytes"],
    "image-gen": ["peft", "transformers", "datasets", "torch", "diffusers"],
}


def results_of_every_kind() -> list[dict]:
    hub = make_result(
        "lora", "llama-3.2-3B-rank32", test_accuracy=0.5, test_accuracy_published=0.45
    )
    hub["provenance"]["base_model_hash"] = HUB_MODEL
    no_curves = make_result("oft", "broken", task="image", status="failed", peft_type="OFT")
    no_curves["curves"] = {"train_loss": [], "valid_similarity": []}
    return [
        make_base_result(),
        hub,
        make_result("lora", "seeds", 0, test_accuracy_published=0.30),
        make_result("lora", "seeds", 1, test_accuracy_published=0.34, train_memory_peak_bytes=11e9),
        make_result("full-finetuning", "lr", peft_type=None, file_size_bytes=None),
        make_result("lora", "own-parser", test_accuracy=0.2, test_accuracy_published=None),
        make_result("oft", "broken", status="failed", peft_type="OFT"),
        make_result("lora", "r8", task="image", similarity=0.7),
        no_curves,
    ]


def write_results(root: Path, results: list[dict]) -> Path:
    for result in results:
        write_json(run_dir(root, result["task"], result["experiment"], result["seed"]) / RESULT_FILE,
                   result)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    results = results_of_every_kind()
    root = write_results(tmp_path_factory.mktemp("results"), results)
    out = tmp_path_factory.mktemp("suite")
    report = export_results(root, out)
    return results, out, report


def documents(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): json.loads(p.read_text()) for p in out.rglob("*.json")}


def test_layout_is_the_suites(exported):
    _, out, report = exported
    assert report.ok
    assert sorted(documents(out)) == [
        "MetaMathQA/results/full-finetuning--lr.json",
        "MetaMathQA/results/lora--llama-3.2-3B-rank32.json",
        "MetaMathQA/results/lora--own-parser.json",
        "MetaMathQA/results/lora--seeds--seed0.json",
        "MetaMathQA/results/lora--seeds--seed1.json",
        "MetaMathQA/temporary_results/oft--broken--2025-01-01T00-00-00+00-00.json",
        "image-gen/results/lora--r8.json",
        "image-gen/temporary_results/oft--broken--2025-01-01T00-00-00+00-00.json",
    ]
    assert any("base-model reference" in s for s in report.skipped)  # no suite counterpart


def expected_quality(result: dict) -> float | None:
    metrics = result["metrics"]
    if result["task"] == "math" and metrics["test_accuracy_published"] is not None:
        return metrics["test_accuracy_published"]  # the score the suite's parser gives
    return metrics[registry.get(result["task"]).quality.name]


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def same(a, b) -> bool:
    return missing(b) if missing(a) else b == pytest.approx(a)


def assert_round_trip(results: list[dict], rows: list[dict]) -> None:
    """The rows the importer of published results reads are the runs' own summary rows."""
    runs = [r for r in results if r["method"] != "base"]
    originals = {
        (row["experiment"], row["task"], row["seed"]): row
        for row in summarize(runs).to_dict("records")
    }
    imported = {(row["experiment"], row["task"], row["seed"]): row for row in rows}
    assert sorted(imported) == sorted(originals)
    for result in runs:
        key = (result["experiment"], result["task"], result["seed"])
        mine, row = originals[key], imported[key]
        quality = registry.get(result["task"]).quality.name
        assert row["status"] == mine["status"], key
        assert same(expected_quality(result), row[quality]), key
        for column in ("train_memory_gb", "trainable_params", "total_params", "train_time_min"):
            assert same(mine[column], row[column]), (key, column)
        assert row["peft_type"] == (None if missing(mine["peft_type"]) else mine["peft_type"])


def test_round_trip_through_the_published_importer(exported):
    results, out, _ = exported
    rows = []
    for task, folder in (("math", "MetaMathQA"), ("image", "image-gen")):
        imported = import_published({task: out / folder / "results"})
        assert imported.warnings == []
        rows += imported.rows
        rows += [
            parse_published(json.loads(p.read_text()))["row"]
            for p in sorted((out / folder / "temporary_results").glob("*.json"))
        ]
    assert_round_trip(results, rows)


def test_every_document_passes_the_suites_format_detection(exported):
    _, out, _ = exported
    for name, document in documents(out).items():
        expected = "metamathqa" if name.startswith("MetaMathQA") else "image-gen"
        assert detect_format(document) == expected, name


def test_documents_hold_what_the_suites_app_reads(exported):
    _, out, _ = exported
    for name, document in documents(out).items():
        if "temporary_results" in name:
            continue  # the app reads successful runs only
        suite_task = name.split("/")[0]
        for section, keys in APP_FIELDS.items():
            assert set(keys) <= set(document[section]), (name, section)
        assert "model_id" in document["run_info"]["train_config"]  # the app groups by it
        assert set(APP_FINAL[suite_task]) <= set(document["train_info"]["metrics"][-1])
        packages = document["meta_info"]["package_info"]
        assert {f"{p}-version" for p in APP_PACKAGES[suite_task]} <= set(packages)


@pytest.mark.parametrize(
    "published, ours",
    [
        ("lora--llama-3.2-3B-rank32.json", "MetaMathQA/results/lora--llama-3.2-3B-rank32.json"),
        ("oft--flux2-klein-default.json", "image-gen/results/lora--r8.json"),
    ],
)
def test_same_fields_as_a_document_the_suite_wrote(exported, published, ours):
    _, out, _ = exported
    theirs, mine = json.loads((PUBLISHED / published).read_text()), documents(out)[ours]
    assert set(theirs) <= set(mine)
    for section in ("run_info", "train_info", "meta_info"):
        assert set(theirs[section]) <= set(mine[section]), section
    for part in ("system_info", "dataset_info", "model_info"):
        assert set(theirs["meta_info"][part]) == set(mine["meta_info"][part]), part
    assert set(theirs["train_info"]["metrics"][-1]) == set(mine["train_info"]["metrics"][-1])


def test_nothing_is_invented(exported):
    results, out, report = exported
    document = documents(out)["MetaMathQA/results/lora--llama-3.2-3B-rank32.json"]
    metrics = results[1]["metrics"]
    train_info, block = document["train_info"], document["peftbench"]
    assert train_info["accelerator_memory_max"] == metrics["train_memory_peak_bytes"]
    for field in ("accelerator_memory_reserved_avg", "accelerator_memory_reserved_99th"):
        assert math.isnan(train_info[field])
        assert f"train_info.{field}" in block["unmeasured"]
    assert math.isnan(document["run_info"]["total_time"])
    # The math task counts tokens, not samples.
    assert math.isnan(train_info["metrics"][-1]["train samples"])
    assert train_info["metrics"][-1]["train total tokens"] == metrics["train_tokens"]
    assert block["memory_measure"] == metrics["memory_measure"]
    assert "train_info.accelerator_memory_reserved_avg" in block["app_missing"]
    assert report.app_missing and report.unmeasured["run_info.total_time"] == 8
    assert document["run_info"]["train_config"]["model_id"] == "meta-llama/Llama-3.2-3B"
    assert document["meta_info"]["model_info"]["sha"] == HUB_MODEL.split("@")[1]
    assert document["run_info"]["train_config"]["seed"] == 0
    # The published-compatible score is the suite's quality; which one it is, is recorded.
    assert train_info["metrics"][-1]["test accuracy"] == 0.45
    assert block["quality_column"] == "test_accuracy_published"
    full = documents(out)["MetaMathQA/results/full-finetuning--lr.json"]
    assert full["train_info"]["file_size"] == FILE_SIZE_SENTINEL  # the suite's "no size"
    assert parse_published(full)["row"]["file_size_mb"] is None
    assert full["run_info"]["peft_config"] is None


def test_fill_for_app_writes_named_stand_ins(tmp_path):
    root = write_results(tmp_path / "results", results_of_every_kind())
    report = export_results(root, tmp_path / "out", fill_for_app=True)
    assert report.app_missing == {}
    for name, document in documents(tmp_path / "out").items():
        if "temporary_results" in name:
            assert document["peftbench"]["filled"] == {}  # the app does not read failed runs
            continue
        for path in APP_INTEGERS:
            section, key = path.split(".")
            value = document[section][key]
            assert isinstance(value, int | float) and math.isfinite(value), (name, path)
        filled = document["peftbench"]["filled"]
        assert "upper bound" in filled["train_info.accelerator_memory_reserved_avg"]
        train_info = document["train_info"]
        assert (
            train_info["accelerator_memory_reserved_99th"] == train_info["accelerator_memory_max"]
        )
    document = documents(tmp_path / "out")["MetaMathQA/results/lora--llama-3.2-3B-rank32.json"]
    assert document["run_info"]["total_time"] == pytest.approx(600.0 + 120.0)
    assert document["train_info"]["metrics"][-1]["train samples"] == 100 * 4
    assert "--fill-for-app" in "\n".join(report.lines())


def test_existing_documents_are_not_overwritten_without_force(tmp_path):
    results = results_of_every_kind()
    root = write_results(tmp_path / "results", results)
    out = tmp_path / "out"
    export_results(root, out)
    again = export_results(root, out)
    assert again.ok and again.written == [] and len(again.unchanged) == 8
    target = out / "MetaMathQA/results/lora--own-parser.json"
    target.write_text("{}")
    (out / "MetaMathQA/results/lora--old.json").write_text("{}")
    clash = export_results(root, out)
    assert not clash.ok and str(target) in clash.refused[0]
    assert clash.others == [str(out / "MetaMathQA/results/lora--old.json")]
    assert target.read_text() == "{}"
    assert export_results(root, out, force=True).written == [str(target)]


def test_selection_and_bad_input(tmp_path, capsys):
    root = write_results(tmp_path / "results", results_of_every_kind())
    report = export_results(root, tmp_path / "out", patterns=["lora/seeds"])
    assert len(report.written) == 2
    with pytest.raises(ExportError, match="--select: pattern 'lora/sedes' matches no"):
        export_results(root, tmp_path / "out", patterns=["lora/sedes"])
    with pytest.raises(ExportError, match="does not exist"):
        export_results(tmp_path / "missing", tmp_path / "out")
    broken = run_dir(root, "math", "lora/broken-file", 0) / RESULT_FILE
    broken.parent.mkdir(parents=True)
    broken.write_text('{"task": "math"}')
    args = ["export", "--format", "hf-method-comparison", str(tmp_path / "out2")]
    assert main([*args, "--results", str(root)]) == 1
    output = capsys.readouterr().out
    assert f"INVALID {broken}: skipped, not a valid result file" in output
    assert "Fields written without a value" in output and "run_info.total_time: 8" in output
    assert main([*args, "--results", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_real_tiny_runs_round_trip(tiny, tmp_path):
    """Results of real (tiny) training runs, exported and read back by the published importer."""
    root = tmp_path / "results"
    results = []
    for experiment, adapter in (
        ("lora/interop-r4", {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"]}),
        ("full-finetuning/interop", None),
    ):
        # An absolute run folder: tiny.run puts it below the shared tiny root otherwise.
        result = run(tiny, experiment, str(run_dir(root, "math", experiment, 0)), adapter=adapter)
        assert result["status"] == "success", result["error"]
        results.append(result)
    report = export_results(root, tmp_path / "suite")
    assert report.ok and len(report.written) == 2
    imported = import_published({"math": tmp_path / "suite" / "MetaMathQA" / "results"})
    assert imported.warnings == []
    assert_round_trip(results, imported.rows)
    for document in documents(tmp_path / "suite").values():
        assert detect_format(document) == "metamathqa"
        assert document["peftbench"]["memory_measure"] == "cpu_rss_above_loaded_model"
        assert document["meta_info"]["system_info"]["accelerator"] is None  # a CPU run
        # The embedded base model: no hub id, its weights' hash as the sha.
        assert document["run_info"]["train_config"]["model_id"] == "peftbench-embedded-math"
        assert (
            document["meta_info"]["model_info"]["sha"]
            == results[0]["provenance"]["base_model_hash"]
        )


def test_only_the_point_chosen_on_validation_is_exported(tmp_path):
    grid = [
        make_result("lora", f"r8@lr={lr}", lr=lr, valid_accuracy_final=v, test_accuracy=t)
        for lr, v, t in ((0.001, 0.2, 0.9), (0.01, 0.6, 0.1))
    ]
    results = write_results(tmp_path / "results", [make_base_result(), *grid])
    export_results(results, tmp_path / "out")
    names = sorted(documents(tmp_path / "out"))
    assert len(names) == 1 and "r8@lr=0.01" in names[0], names
    export_results(results, tmp_path / "all", all_points=True)
    assert len(documents(tmp_path / "all")) == 2


def _keys(config: dict) -> set[str]:
    """Keys of a train_config; generation_kwargs' as ``generation_kwargs.<key>``."""
    keys = set(config) - {"generation_kwargs"}
    return keys | {f"generation_kwargs.{key}" for key in config.get("generation_kwargs", {})}


@pytest.mark.parametrize(
    "task, suite, published",
    [
        ("math", "MetaMathQA", "lora--llama-3.2-3B-rank32.json"),
        ("image", "image-gen", "oft--flux2-klein-default.json"),
    ],
)
def test_train_config_has_the_suites_names_only(tmp_path, task, suite, published):
    """A run with every training key of the task's defaults is exported under the names and
    value conventions of a train_config the suite wrote; our other keys go to the peftbench
    block, under our names."""
    training = load_config_file(REPO / "config/config.yaml")[task]["training"]
    config = {**training, "lr_scheduler": "constant"}
    if task == "math":
        config |= {"generation_max_length": 800, "max_new_tokens": 300}
    result = make_result("lora", "all-keys", task=task)
    result["config"] = config
    export_results(write_results(tmp_path / "results", [result]), tmp_path / "out")
    (document,) = documents(tmp_path / "out").values()
    mine = document["run_info"]["train_config"]
    theirs = json.loads((PUBLISHED / published).read_text())["run_info"]["train_config"]
    assert _keys(mine) <= _keys(theirs)
    assert mine["lr_scheduler"] is None  # the suite's constant rate
    assert mine["compile"] is False and mine["use_amp"] is False
    assert mine["optimizer_kwargs"] == training["optimizer_kwargs"]
    outside = document["peftbench"]["training_outside_suite"]
    assert "warmup_ratio" in outside and "warmup_ratio" not in mine
    # Exactly the keys the suite has no name for: its constants, and those without effect.
    nameless = {k.removeprefix("training.") for k in SUITE_CONSTANTS[suite].keys() | NO_EFFECT}
    assert set(outside) == set(config) & nameless
    if task == "math":
        assert mine["generation_kwargs"] == {"max_length": 800, "max_new_tokens": 300}
        assert mine["init_kv_cache_prefix"] is None  # the key's default: no prefix
        assert detect_format({**document, "train_info": {"metrics": []}}) == "metamathqa"
