"""The code hash of a rule covers exactly the code its jobs run (peftbench.core.codehash).

(a) Every package module a job imports at run time is in the static import closure the workflow
hashes: checked by importing, in a fresh interpreter, what the entry script imports plus the
task's module the spec names, and listing ``sys.modules``.
(b) On a copy of the workflow (the toy task of tests/toy_task, for speed), editing a module in
the training closure plans exactly the jobs that run it, and editing a report-only module plans
no training job.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import toy_task
from wfutil import REPO, copy_workflow, job_counts, snakemake, task_jobs

from peftbench.core import codehash
from peftbench.tasks import registry

TOY = "tests/toy_task"
TOY_CONFIG = (f"{TOY}/config.yaml",)
# For the static closure the toy package's name only has to resolve its relative imports; it is
# imported here as a plain package, so that it does not join the registry of the other tests.
PACKAGES = {"toy_task": REPO / TOY}
SPECS = {"math": registry.get("math"), "image": registry.get("image"), "toy": toy_task.SPEC}

# Entry script and the spec field naming the module it hands the job to.
ENTRIES = [
    ("scripts/train_experiment.py", "run_module"),
    ("scripts/prepare_data.py", "data_module"),
]


def script_imports(script: Path) -> list[str]:
    """The modules a script imports at its top level (what it runs before the task's module)."""
    tree = ast.parse(script.read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def imported_at_run_time(task: str, script: Path, module: str) -> set[Path]:
    """Files of the package modules loaded by importing what a job of ``task`` imports."""
    # As in a job: the config registers external task packages (only the toy task's has one).
    packages = {"toy": TOY} if task == "toy" else {}
    program = f"""
import importlib, json, sys
from peftbench.tasks import registry
registry.register_packages({packages!r}, {str(REPO)!r})
for name in {script_imports(script)!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # "from package import name" of a function, not a module
registry.import_module({module!r}, {task!r})
ours = ("peftbench", registry.import_module(".", {task!r}).__name__.split(".")[0])
files = [m.__file__ for n, m in list(sys.modules.items())
         if n.split(".")[0] in ours and getattr(m, "__file__", None)]
print(json.dumps(files))
"""
    proc = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(f).resolve() for f in json.loads(proc.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize("task", ["math", "image", "toy"])
@pytest.mark.parametrize(("script", "field"), ENTRIES, ids=["train", "prepare_data"])
def test_static_closure_covers_what_a_job_imports(task: str, script: str, field: str) -> None:
    module = getattr(SPECS[task], field)
    entry = REPO / script
    # The toy spec names its modules relative to its package; the built-in ones in full.
    resolved = REPO / TOY / f"{module[1:]}.py" if task == "toy" else codehash.module_file(module)
    static = set(codehash.closure([entry, resolved], PACKAGES))
    loaded = imported_at_run_time(task, entry, module)
    assert loaded, "the subprocess imported nothing"
    missing = sorted(str(p.relative_to(REPO)) for p in loaded - static)
    assert not missing, f"imported by a {task} job but not hashed: {missing}"


def test_closure_follows_an_external_task_package() -> None:
    files = codehash.closure([REPO / TOY / "run.py"], PACKAGES)
    assert {REPO / TOY / name for name in ("__init__.py", "model.py", "data.py")} <= set(files)
    # Without the package named, its relative imports lead nowhere.
    assert REPO / TOY / "model.py" not in codehash.closure([REPO / TOY / "run.py"])


def test_an_edited_import_is_followed_in_the_same_process(tmp_path: Path) -> None:
    """Parsed imports are kept per file content, not per timestamp: an edit of the same size
    made within the file system's clock tick still changes the closure."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("a", "b", "c"):
        (package / f"{name}.py").write_text("")
    entry = package / "entry.py"
    entry.write_text("import pkg.a\n")
    assert package / "a.py" in codehash.closure([entry], {"pkg": package})
    entry.write_text("import pkg.b\n")  # same size, likely the same mtime
    after = codehash.closure([entry], {"pkg": package})
    assert package / "b.py" in after and package / "a.py" not in after


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy task's data and training jobs, run once in a copy of the workflow."""
    workdir = copy_workflow(tmp_path_factory.mktemp("codehash"), extra=(TOY,))
    proc = snakemake(workdir, "--until", "train", configfiles=TOY_CONFIG)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir


def planned_after_edit(workdir: Path, module: str) -> str:
    """The dry run's output after appending a comment to ``module`` (restored afterwards)."""
    path = workdir / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        proc = snakemake(workdir, "-n", "--until", "train", configfiles=TOY_CONFIG)
    finally:
        path.write_text(original)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_untouched_code_plans_nothing(toy_runs: Path) -> None:
    proc = snakemake(toy_runs, "-n", "--until", "train", configfiles=TOY_CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "total        0" in proc.stdout and job_counts(proc.stdout) == {}, proc.stdout


@pytest.mark.parametrize(
    ("module", "data_jobs"),
    [
        # Imported by the training jobs only (the Wilson interval), not by data preparation.
        ("peftbench/core/stats.py", 0),
        # The task's own model module, outside the package: imported by the run module.
        (f"{TOY}/model.py", 0),
        # The data module: both the data preparation and (for the data hash) the training.
        (f"{TOY}/data.py", 1),
    ],
)
def test_editing_training_code_reruns_exactly_its_jobs(
    toy_runs: Path, module: str, data_jobs: int
) -> None:
    output = planned_after_edit(toy_runs, module)
    runs = len(list((toy_runs / "results/toy/runs").glob("*/*/seed*/result.json")))
    assert runs == 3
    assert task_jobs(output, "train") == {"toy": runs}, output
    assert sum(task_jobs(output, "prepare_data").values()) == data_jobs, output


def test_editing_report_code_reruns_no_training(toy_runs: Path) -> None:
    module = "peftbench/report/charts.py"
    training = codehash.closure([REPO / "scripts/train_experiment.py", "peftbench.core.runs"])
    assert (REPO / module).is_file() and REPO / module not in training
    output = planned_after_edit(toy_runs, module)
    assert "total        0" in output and job_counts(output) == {}, output
