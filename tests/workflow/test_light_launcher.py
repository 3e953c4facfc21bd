"""A launcher without torch (issue 16): Snakemake with only the light dependencies
(envs/launcher.txt) builds the DAG, runs the pre-flight checks that need no torch, and leaves the
others to each task's preflight job, which every training job of the task waits for.

The fast tests hide torch, transformers and peft from the launcher process only (a
sitecustomize on PYTHONPATH that removes itself from the environment, so the jobs it starts have
them); the slow one installs envs/launcher.txt into a fresh virtual environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from paths import REPO
from wfutil import block_wildcards, copy_workflow, job_blocks, planned_jobs, snakemake

from peftbench.core.task_checks import CHECK_LIBRARIES

#: Hides the check libraries from the process that imports it (Python runs sitecustomize at
#: start-up) and records every import of one that was attempted anyway; the jobs that process
#: starts see neither the hiding nor the record (both leave the environment here).
SHIM = """
import importlib.abc, os, sys, traceback

HIDDEN = {hidden!r}
LOG = os.environ.pop("PEFTBENCH_TEST_IMPORT_LOG")
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in os.environ["PYTHONPATH"].split(os.pathsep) if p != {folder!r}
)


class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in HIDDEN:
            return None
        stack = traceback.extract_stack()
        if any(frame.name == "_find_and_load" for frame in stack):  # an import, not a probe
            with open(LOG, "a") as log:
                log.write(name + "\\n" + "".join(traceback.format_list(stack[-8:])) + "\\n")
        raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)


sys.meta_path.insert(0, Hide())
"""

BAD_TARGET = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "target_modules": ["nope"]}


def without_torch(
    work: Path, *args: str, **kwargs: object
) -> tuple[subprocess.CompletedProcess, str]:
    """Snakemake in ``work`` with the check libraries hidden from its own process; its output
    and what it tried to import of them."""
    shim = work.parent / f"{work.name}-shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM.format(hidden=CHECK_LIBRARIES, folder=str(shim)))
    log = shim / "imports.log"
    log.write_text("")
    env = {
        "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]),
        "PEFTBENCH_TEST_IMPORT_LOG": str(log),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        proc = snakemake(work, *args, **kwargs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return proc, log.read_text()


def jobs(dry_run: str) -> list[tuple[str, str, dict[str, str]]]:
    """(kind: rule or checkpoint, name, wildcards) of every job a dry run lists."""
    blocks = re.split(r"^(?=(?:local)?(?:rule|checkpoint) \w+:$)", dry_run, flags=re.M)
    found = []
    for block in blocks:
        head = re.match(r"(?:local)?(rule|checkpoint) (\w+):$", block, flags=re.M)
        if head is not None:
            found.append((head.group(1), head.group(2), block_wildcards(block)))
    return found


def preflight_jobs(dry_run: str) -> list[str]:
    """The tasks of the preflight jobs (a checkpoint) a dry run plans."""
    return sorted(w["task"] for kind, name, w in jobs(dry_run) if name == "preflight")


def assert_training_waits_for_preflight(dry_run: str) -> None:
    """Every training job of the plan waits for a checkpoint: its task's preflight job (a dry
    run shows the input a pending checkpoint decides as <TBD>)."""
    trains = [block for rule, block in job_blocks(dry_run) if rule == "train"]
    assert trains, dry_run
    for block in trains:
        inputs = re.search(r"^\s+input: (.*)$", block, flags=re.M).group(1).split(", ")
        assert "<TBD>" in inputs, block


def test_a_dry_run_without_torch_leaves_the_model_check_to_a_job(tmp_path: Path) -> None:
    work = copy_workflow(tmp_path / "work")
    proc, imported = without_torch(work, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert imported == "", f"the DAG build imported a check library:\n{imported}"
    output = proc.stdout
    assert preflight_jobs(output) == ["image", "math"], output
    assert_training_waits_for_preflight(output)
    # The same plan as a launcher with torch but for the preflight jobs: the training jobs'
    # inputs do not depend on it.
    with_torch = snakemake(work, "-n")
    assert with_torch.returncode == 0, with_torch.stderr[-3000:]
    plans = [
        sorted((name, sorted(w.items())) for _, name, w in jobs(run) if name != "preflight")
        for run in (with_torch.stdout, output)
    ]
    assert plans[0] == plans[1]
    assert not preflight_jobs(with_torch.stdout), with_torch.stdout


def test_without_torch_a_bad_experiment_fails_its_preflight_job(tmp_path: Path) -> None:
    """What only the model can tell passes the launcher's checks and fails the task's preflight
    job, in the training environment, with the message the DAG build gives with torch."""
    work = copy_workflow(tmp_path / "work")
    bad = work / "experiments/math/lora/bad-target"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps(BAD_TARGET))
    extra = 'tasks: [math]\nselect: {math: ["lora/rank8-qv", "lora/bad-target"]}\n'
    planned, imported = without_torch(work, "-n", extra_config=extra)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert imported == ""
    trained = {w["name"] for rule, w in planned_jobs(planned.stdout) if rule == "train"}
    assert "bad-target" in trained, planned.stdout
    proc, _ = without_torch(work, extra_config=extra, targets=("results/math/preflight.json",))
    assert proc.returncode != 0, proc.stdout[-3000:]
    log = (work / "logs/math/preflight.log").read_text()
    assert "1 problem(s) found before training" in log, log
    assert "lora/bad-target" in log and "nope" in log, log
    assert not (work / "results/math/preflight.json").exists()
    # With torch the dry run says the same while building the DAG.
    dag = snakemake(work, "-n", extra_config=extra)
    assert dag.returncode != 0
    problem = next(line for line in log.splitlines() if "lora/bad-target" in line)
    assert problem.strip() in dag.stdout + dag.stderr, (problem, dag.stderr[-3000:])


def test_without_torch_an_edited_experiment_retrains_alone(tmp_path: Path) -> None:
    """A real run with a launcher without torch: the preflight job checks, the training jobs
    run after it; then one edited experiment reruns the check and only its own training (the
    toy task of tests/toy_task, for speed)."""
    toy = ("tests/toy_task/config.yaml",)
    work = copy_workflow(tmp_path / "work", extra=("tests/toy_task",))
    proc, imported = without_torch(work, configfiles=toy)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert imported == "", imported
    record = json.loads((work / "results/toy/preflight.json").read_text())
    assert record["libraries"]["torch"], record  # the job's own versions: it had torch
    results = sorted((work / "results/toy/runs").glob("*/*/seed*/result.json"))
    assert len(results) == 3, results
    before = {path: path.stat().st_mtime_ns for path in results}
    edited = work / "tests/toy_task/experiments/lora/rank4/adapter_config.json"
    adapter = json.loads(edited.read_text())
    edited.write_text(json.dumps({**adapter, "lora_alpha": 4}))
    proc, imported = without_torch(work, configfiles=toy)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert imported == "", imported
    rerun = [path for path in results if path.stat().st_mtime_ns != before[path]]
    assert [path.relative_to(work / "results/toy/runs").parts[:2] for path in rerun] == [
        ("lora", "rank4")
    ], proc.stderr[-3000:]


def test_launcher_requirements_are_pinned_as_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = dict(dep.split("==", 1) for dep in project["dependencies"] if "==" in dep)
    lines = (REPO / "envs/launcher.txt").read_text().splitlines()
    specs = [line for line in lines if line.strip() and not line.startswith("#")]
    assert specs
    for spec in specs:
        name, _, version = spec.partition("==")
        assert pins.get(name) == version, f"envs/launcher.txt: {spec}, pyproject: {pins.get(name)}"
        assert name not in CHECK_LIBRARIES


def test_a_venv_with_only_the_launcher_requirements_runs_a_dry_run(tmp_path: Path) -> None:
    """The issue's acceptance test, so in the default run: about a minute, most of it the
    install (from the pip cache or the index)."""
    env = tmp_path / "launcher-venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "-r"]
        + [str(REPO / "envs/launcher.txt")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0:
        pytest.skip(
            f"envs/launcher.txt could not be installed (no index?): {install.stderr[-800:]}"
        )
    probe = [str(python), "-c", "import importlib.util as u; print(u.find_spec('torch'))"]
    assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "None"
    work = copy_workflow(tmp_path / "work")
    proc = subprocess.run(
        [str(python), "-m", "snakemake", "-n", "--cores", "2", "--resources", "gpu=1"]
        + ["--configfile", "config/test.yaml"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert preflight_jobs(proc.stdout) == ["image", "math"], proc.stdout
    assert_training_waits_for_preflight(proc.stdout)
