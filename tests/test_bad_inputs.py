"""The bad-input corpus (tests/bad_inputs/cases.yaml): every case is rejected before training
with a message naming the file and the field, and no result file appears."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from wfutil import copy_workflow, snakemake

from peftbench.core import experiments as exps
from peftbench.core.config import ConfigError, deep_merge, training_table
from peftbench.core.validate import check_experiment
from peftbench.tasks import registry
from peftbench.tasks.math.embedded_lm import build_meta_model

REPO = Path(__file__).resolve().parent.parent
CASES = yaml.safe_load((Path(__file__).parent / "bad_inputs/cases.yaml").read_text())
MATH = deep_merge(
    yaml.safe_load((REPO / "config/config.yaml").read_text()),
    yaml.safe_load((REPO / "config/test.yaml").read_text()),
)["math"]
DEFAULTS = MATH["training"]
TABLE = training_table(registry.get("math").training_keys)


def by_stage(stage: str) -> list[dict]:
    return [c for c in CASES if c["stage"] == stage]


def write_files(root: Path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return str(Path(next(iter(files))).parent)


def dag_problems(root: Path, experiment: str) -> str:
    problems = exps.check_adapter_config(root, experiment)
    try:
        exps.effective_params(DEFAULTS, root, experiment, TABLE)
    except ConfigError as exc:
        problems.append(str(exc))
    return "\n".join(problems)


def test_corpus_size():
    assert len(CASES) >= 20
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", by_stage("dag"), ids=lambda c: c["id"])
def test_dag_stage_case(case, tmp_path):
    experiment = write_files(tmp_path, case["files"])
    text = dag_problems(tmp_path, experiment)
    for expected in case["expect"]:
        assert expected in text, text


@pytest.mark.parametrize("case", by_stage("model"), ids=lambda c: c["id"])
def test_model_stage_case(case, tmp_path):
    experiment = write_files(tmp_path, case["files"])
    assert dag_problems(tmp_path, experiment) == "", "only the model can tell"
    model = build_meta_model(MATH)
    text = "\n".join(check_experiment(model, tmp_path, experiment, DEFAULTS, TABLE))
    for expected in case["expect"]:
        assert expected in text, text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("badwf"))


def run_workflow(workdir: Path, overlay: dict) -> subprocess.CompletedProcess:
    shutil.rmtree(workdir / "results", ignore_errors=True)
    return snakemake(workdir, extra_config=yaml.safe_dump(overlay))


def result_files(workdir: Path) -> list[Path]:
    return list((workdir / "results").glob("**/result.json"))


@pytest.mark.parametrize("stage", ["dag", "model"])
def test_workflow_rejects_all_before_training(stage, workdir):
    """All bad experiments of a stage next to a good one: the run fails while the DAG is built,
    every problem is reported, and no job ran."""
    root = workdir / f"experiments-{stage}"
    shutil.copytree(REPO / "experiments/math/lora/rank8-qv", root / "lora/rank8-qv")
    for case in by_stage(stage):
        write_files(root, case["files"])
    proc = run_workflow(workdir, {"math": {"experiments_dir": str(root)}, "select": {"math": []}})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for case in by_stage(stage):
        for expected in case["expect"]:
            assert expected in output, (case["id"], output[-3000:])
    assert not (workdir / "results").exists(), "rejected before any job started"


@pytest.mark.parametrize("case", by_stage("config"), ids=lambda c: c["id"])
def test_config_stage_case(case, workdir):
    proc = run_workflow(workdir, case["config"])
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for expected in case["expect"]:
        assert expected in output, output[-3000:]
    assert result_files(workdir) == []
    assert not (workdir / "results").exists()


def test_corpus_files_are_what_they_claim():
    """Sanity: every JSON-looking payload that should parse does (so a case tests its stated
    problem, not an accidental syntax error)."""
    for case in CASES:
        if "JSON" in " ".join(case["expect"]) or case["stage"] == "config":
            continue
        for text in case.get("files", {}).values():
            json.loads(text)
