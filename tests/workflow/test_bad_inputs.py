"""The bad-input corpus (tests/bad_inputs/cases.yaml): every case is rejected before training
with a message naming the file and the field, without a traceback, and no result file appears."""

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml
from paths import REPO, TESTS
from wfutil import copy_workflow, snakemake

from peftbench.core import experiments as exps
from peftbench.core.config import deep_merge, training_table
from peftbench.core.validate import check_experiment
from peftbench.tasks import registry
from peftbench.tasks.math.embedded_lm import build_meta_model

CASES = yaml.safe_load((TESTS / "bad_inputs/cases.yaml").read_text())
MATH = deep_merge(
    yaml.safe_load((REPO / "config/config.yaml").read_text()),
    yaml.safe_load((REPO / "config/test.yaml").read_text()),
)["math"]
DEFAULTS = MATH["training"]
TABLE = training_table(registry.get("math").training_keys)


CATEGORIES = {"layout", "adapter", "training", "model", "config"}


def by_stage(stage: str) -> list[dict]:
    return [c for c in CASES if c["stage"] == stage]


def write_case(root: Path, case: dict) -> str:
    """Write a case's files and links below ``root``; return its experiment (method/name)."""
    for rel, text in case.get("files", {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel, target in case.get("links", {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / rel)
    return case.get("experiment", str(Path(next(iter(case["files"]))).parent))


def dag_problems(root: Path, experiment: str) -> str:
    """What the DAG-time file checks of rules/common.smk report for ``experiment``."""
    problems = exps.check_root(root)
    if experiment:
        problems += exps.file_problems(root, experiment, DEFAULTS, TABLE)
    return "\n".join(problems)


def assert_reported(case: dict, text: str) -> None:
    for expected in case["expect"]:
        assert expected in text, (case["id"], text[-3000:])
    for unwanted in case.get("absent", []):
        assert unwanted not in text, (case["id"], text[-3000:])


def assert_no_traceback(output: str) -> None:
    """The message is the report: no Python traceback, no frame of the package's modules."""
    assert "Traceback" not in output, output[-3000:]
    assert not re.search(r'File "[^"]*peftbench/', output), output[-3000:]


def test_corpus_size_and_categories():
    assert len(CASES) >= 60
    assert len({c["id"] for c in CASES}) == len(CASES)
    counts = Counter(c["category"] for c in CASES)
    assert set(counts) == CATEGORIES, counts
    # Every kind of mistake of issue 12 is covered by several cases.
    assert min(counts[c] for c in CATEGORIES - {"model"}) >= 10, counts


@pytest.mark.parametrize("case", by_stage("dag"), ids=lambda c: c["id"])
def test_dag_stage_case(case, tmp_path):
    experiment = write_case(tmp_path, case)
    assert_reported(case, dag_problems(tmp_path, experiment))


def test_a_misspelled_adapter_config_is_not_full_finetuning(tmp_path):
    """The worst case of issue 12: a PEFT experiment whose adapter config is misspelled or a
    dangling link must not be discovered as a (full fine-tuning) experiment that passes."""
    folder = tmp_path / "prompt_tuning/tokens20"
    folder.mkdir(parents=True)
    (folder / "training_params.json").write_text("{}")
    os.symlink(tmp_path / "gone.json", folder / "adapter_config.json")
    assert exps.discover(tmp_path) == ["prompt_tuning/tokens20"]
    assert "broken symbolic link" in dag_problems(tmp_path, "prompt_tuning/tokens20")
    (folder / "adapter_config.json").unlink()
    (folder / "adapter-config.json").write_text('{"peft_type": "PROMPT_TUNING"}')
    assert "did you mean 'adapter_config.json'" in dag_problems(tmp_path, "prompt_tuning/tokens20")


def test_full_finetuning_marker_allows_any_method_folder(tmp_path):
    folder = tmp_path / "my-baseline/full"
    folder.mkdir(parents=True)
    (folder / "training_params.json").write_text('{"max_steps": 5}')
    assert "no adapter_config.json" in dag_problems(tmp_path, "my-baseline/full")
    (folder / exps.FULL_FINETUNING_MARKER).write_text("")
    assert dag_problems(tmp_path, "my-baseline/full") == ""
    assert str(folder / exps.FULL_FINETUNING_MARKER) in exps.experiment_files(
        tmp_path, "my-baseline/full"
    )


@pytest.mark.parametrize("case", by_stage("model"), ids=lambda c: c["id"])
def test_model_stage_case(case, tmp_path):
    experiment = write_case(tmp_path, case)
    assert dag_problems(tmp_path, experiment) == "", "only the model can tell"
    model = build_meta_model(MATH)
    text = "\n".join(check_experiment(model, tmp_path, experiment, DEFAULTS, TABLE))
    for expected in case["expect"]:
        assert expected in text, text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("badwf"))


def run_workflow(workdir: Path, overlay: dict | str) -> subprocess.CompletedProcess:
    shutil.rmtree(workdir / "results", ignore_errors=True)
    text = overlay if isinstance(overlay, str) else yaml.safe_dump(overlay)
    return snakemake(workdir, extra_config=text)


def result_files(workdir: Path) -> list[Path]:
    return list((workdir / "results").glob("**/result.json"))


@pytest.mark.parametrize("stage", ["dag", "model"])
def test_workflow_rejects_all_before_training(stage, workdir):
    """All bad experiments of a stage next to a good one: the run fails while the DAG is built,
    every problem is reported, and no job ran."""
    root = workdir / f"experiments-{stage}"
    shutil.copytree(REPO / "experiments/math/lora/rank8-qv", root / "lora/rank8-qv")
    for case in by_stage(stage):
        write_case(root, case)
    proc = run_workflow(workdir, {"math": {"experiments_dir": str(root)}, "select": {"math": []}})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for case in by_stage(stage):
        assert_reported(case, output)
    assert_no_traceback(output)
    assert not (workdir / "results").exists(), "rejected before any job started"


@pytest.mark.parametrize("case", by_stage("config"), ids=lambda c: c["id"])
def test_config_stage_case(case, workdir):
    proc = run_workflow(workdir, case.get("config_text", case.get("config")))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert_reported(case, output)
    assert_no_traceback(output)
    assert result_files(workdir) == []
    assert not (workdir / "results").exists()


def test_corpus_files_are_what_they_claim():
    """Sanity: every JSON-looking payload that should parse does (so a case tests its stated
    problem, not an accidental syntax error)."""
    for case in CASES:
        if "JSON" in " ".join(case["expect"]) or case["stage"] == "config":
            continue
        for name, text in case.get("files", {}).items():
            if name.endswith(".json"):
                json.loads(text)
