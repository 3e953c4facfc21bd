"""Unusual but valid inputs pass every pre-flight check (issue 12): experiment names with
unicode, spaces and HTML characters, a huge LoRA rank, full fine-tuning by marker file. The
checks must stop mistakes, not odd-looking experiments."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from paths import REPO
from wfutil import copy_workflow, planned_jobs, snakemake

from peftbench.core import experiments as exps

LORA = json.loads((REPO / "experiments/math/lora/rank8-qv/adapter_config.json").read_text())
#: method/name -> (adapter config or None, training_params or None, marker file)
UNUSUAL = {
    "lora/ränk-8 日本語": (LORA, None, False),
    "lora/with spaces": (LORA, {"optimizer_kwargs": {"lr": 0.01}}, False),
    # Snakemake reads "<b>" as a path variable (rejected, see cases.yaml); other HTML is text.
    "lora/<B>bold & 'single' \"double\" a<b": (LORA, None, False),
    "lora/huge-rank": ({**LORA, "r": 4096, "lora_alpha": 8192}, None, False),
    "my-baseline/full by marker": (None, {"max_steps": 2}, True),
}


def write_experiments(root: Path) -> None:
    for experiment, (adapter, params, marker) in UNUSUAL.items():
        folder = root / experiment
        folder.mkdir(parents=True)
        if adapter is not None:
            (folder / exps.ADAPTER_CONFIG).write_text(json.dumps(adapter))
        if params is not None:
            (folder / exps.TRAINING_PARAMS).write_text(json.dumps(params))
        if marker:
            (folder / exps.FULL_FINETUNING_MARKER).write_text("")


def test_unusual_names_pass_the_file_checks(tmp_path):
    write_experiments(tmp_path)
    found = exps.discover(tmp_path)
    assert len(found) == len(UNUSUAL)
    assert exps.check_root(tmp_path) == []
    for experiment in found:
        assert exps.check_folder(tmp_path, experiment) == [], experiment
        assert exps.check_adapter_config(tmp_path, experiment) == [], experiment


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> str:
    workdir = copy_workflow(tmp_path_factory.mktemp("unusual"))
    root = workdir / "experiments-unusual"
    write_experiments(root)
    shutil.copytree(REPO / "experiments/math/full-finetuning", root / "full-finetuning")
    overlay = {"tasks": ["math"], "math": {"experiments_dir": str(root)}, "select": {"math": []}}
    proc = snakemake(workdir, "-n", extra_config=yaml.safe_dump(overlay))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def test_dry_run_plans_every_unusual_experiment(dry_run):
    """The whole pre-flight (config, files, the adapters wrapped on the meta model) accepts them,
    and Snakemake plans one training job for each, with the name intact."""
    trained = {f"{w['method']}/{w['name']}" for rule, w in planned_jobs(dry_run) if rule == "train"}
    for experiment in UNUSUAL:
        assert experiment in trained, sorted(trained)


def test_dry_run_prints_no_warning(dry_run):
    """A clean run prints nothing a user would need to act on (issue 12, point 6)."""
    assert "Warning" not in dry_run, dry_run[-3000:]
