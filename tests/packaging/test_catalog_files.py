"""The files the Snakemake workflow catalog and CI rely on (issue 16): the catalog's usage file,
the licence, the rule environments (which install the package itself) and the GitHub workflow,
plus the `--sdm conda` step of .ci/run, run with a stand-in conda and launcher."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from paths import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))
#: What every env file installs the package with: pip runs in the folder of Snakemake's copy of
#: the file, <conda-prefix>/<hash>.yaml, by default .snakemake/conda/ in the working directory.
PACKAGE_LINE = "-e ../.."
#: sha256 of the Apache License 2.0 as published (apache.org/licenses/LICENSE-2.0.txt).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
COPYRIGHT = "   Copyright 2026 The peftbench authors"
TEST_PROFILE = "--sdm conda --configfile config/test.yaml --cores 2 --resources gpu=1"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def readme_commands() -> str:
    """The README's first code block: the commands CI runs."""
    return (REPO / "README.md").read_text().split("```")[1]


def pip_specs(env_file: Path) -> list[str]:
    deps = yaml.safe_load(env_file.read_text())["dependencies"]
    specs = [spec for dep in deps if isinstance(dep, dict) for spec in dep.get("pip", [])]
    assert specs, f"{env_file.name}: no pip section"
    return specs


def test_catalog_file_names_conda_and_the_readme_flags() -> None:
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    stack = usage["software-stack-deployment"]
    assert stack["conda"] is True
    assert stack.get("report") is True
    flags = usage["mandatory-flags"]
    assert flags["desc"].strip()
    # No flag beyond what the README's own command passes.
    command = next(line for line in readme_commands().splitlines() if "snakemake" in line)
    for flag in re.findall(r"--\S+(?: [^-\s]\S*)?", flags["flags"]):
        assert flag in command, f"catalog flag {flag!r} is not in the README command {command!r}"
    assert (REPO / "config/README.md").is_file()


def test_config_readme_names_every_top_level_key() -> None:
    text = (REPO / "config/README.md").read_text()
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    schema = yaml.safe_load((REPO / "config/schemas/config.schema.yaml").read_text())
    for key in [*config, *schema["properties"]]:
        assert f"`{key}`" in text, f"config/README.md does not explain `{key}`"
    for key in ("search", "search_points", "training_merge", "config/test.yaml"):
        assert key in text
    for preset in (REPO / "config/presets").glob("*.yaml"):
        assert f"config/presets/{preset.name}" in text


def test_license_is_apache_2() -> None:
    text = (REPO / "LICENSE").read_text()
    assert COPYRIGHT + "\n" in text
    published = text.replace(COPYRIGHT + "\n", "   Copyright [yyyy] [name of copyright owner]\n")
    assert hashlib.sha256(published.encode()).hexdigest() == APACHE_2_SHA256, (
        "LICENSE differs from the Apache License 2.0 text (beyond the copyright line)"
    )
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project.get("license-files", ["LICENSE"]) == ["LICENSE"]


@pytest.mark.parametrize("env_file", ENVS, ids=[env.name for env in ENVS])
def test_env_installs_the_package_with_pyproject_pins(env_file: Path) -> None:
    specs = pip_specs(env_file)
    assert PACKAGE_LINE in specs, f"{env_file.name} does not install the package ({PACKAGE_LINE})"
    # The path as conda's pip sees it: from Snakemake's copy of the file in .snakemake/conda/.
    root = (REPO / ".snakemake/conda" / PACKAGE_LINE.split()[1]).resolve()
    assert root == REPO and (root / "pyproject.toml").is_file()
    pins = dict(dep.split("==", 1) for dep in pyproject()["project"]["dependencies"] if "==" in dep)
    for spec in specs:
        if spec == PACKAGE_LINE:
            continue
        name, _, version = spec.partition("==")
        assert version, f"{env_file.name}: {spec!r} is not pinned"
        assert pins.get(name) == version, (
            f"{env_file.name}: {spec} but pyproject has {pins.get(name)}"
        )


def test_rules_use_only_these_envs() -> None:
    rule_files = [*(REPO / "rules").glob("*.smk"), *(REPO / "peftbench/tasks").glob("*/rules.smk")]
    used = {
        (path.parent / env).resolve()
        for path in rule_files
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', path.read_text())
    }
    assert used and used <= {env.resolve() for env in ENVS}, used


def test_github_workflow_runs_ci_script_and_conda_profile() -> None:
    workflow = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    jobs = workflow["jobs"]
    for job in jobs.values():
        assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] == 90

    def runs(job: dict) -> list[str]:
        return [step.get("run", "") for step in job["steps"]]

    assert any(re.search(r"\bsudo -E\b.*\bbash \.ci/run$", run) for run in runs(jobs["ci"]))
    python = [s for s in jobs["ci"]["steps"] if "setup-python" in s.get("uses", "")]
    assert python and python[0]["with"]["python-version"] == "3.11"
    conda = jobs["conda"]
    assert any("setup-miniconda" in step.get("uses", "") for step in conda["steps"])
    assert any(run.strip() == f"snakemake {TEST_PROFILE}" for run in runs(conda))


def ci_conda_block() -> str:
    text = (REPO / ".ci/run").read_text()
    block = re.search(r"^# ---- --sdm conda.*?^# ---- end --sdm conda", text, re.M | re.S)
    assert block, ".ci/run has no --sdm conda block"
    assert text.index(block.group(0)) > text.index("# ---- end SLURM")
    assert text.index(block.group(0)) < text.index("ruff check")
    return block.group(0)


def run_block(tmp_path: Path, path: str, **env: str) -> subprocess.CompletedProcess:
    """The .ci/run block in a scratch git checkout whose launcher only reports how it ran."""
    repo = tmp_path / "repo"
    (repo / ".venv/bin").mkdir(parents=True)
    (repo / ".gitignore").write_text(".venv/\nignored.txt\n")
    (repo / "tracked.txt").write_text("x")
    (repo / "untracked.txt").write_text("x")
    (repo / "ignored.txt").write_text("x")
    launcher = repo / ".venv/bin/snakemake"
    launcher.write_text('#!/bin/sh\necho "launcher in $PWD: $*"; ls -A\nexit "${FAKE_RC:-0}"\n')
    launcher.chmod(0o755)
    git = ["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", ".gitignore", "tracked.txt"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    script = tmp_path / "block.sh"
    script.write_text("set -euo pipefail\n" + ci_conda_block() + "\necho after\n")
    environ = {**os.environ, "PATH": path, "TMPDIR": str(tmp_path)}
    environ.pop("PEFTBENCH_CONDA_TEST", None)
    environ.update(env)
    bash = shutil.which("bash")
    return subprocess.run(
        [bash, str(script)], cwd=repo, env=environ, capture_output=True, text=True
    )


def tools_path(tmp_path: Path, *fakes: str) -> str:
    """A PATH with git, tar and the shell tools, plus stand-ins for ``fakes`` (conda, mamba)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("git", "tar", "mktemp", "ls", "head", "rm"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for fake in fakes:
        (bin_dir / fake).write_text('#!/bin/sh\necho "conda 25.1.0"\n')
        (bin_dir / fake).chmod(0o755)
    return str(bin_dir)


def test_ci_conda_step_skips_without_conda(tmp_path: Path) -> None:
    proc = run_block(tmp_path, tools_path(tmp_path, "mamba"))
    assert proc.returncode == 0, proc.stderr
    assert "== --sdm conda skipped: no conda on PATH" in proc.stdout
    assert "launcher" not in proc.stdout and "after" in proc.stdout


@pytest.mark.parametrize("launcher_rc", [0, 3])
def test_ci_conda_step_runs_the_test_profile_in_a_copy(tmp_path: Path, launcher_rc: int) -> None:
    proc = run_block(tmp_path, tools_path(tmp_path, "conda"), FAKE_RC=str(launcher_rc))
    assert proc.returncode == launcher_rc, proc.stdout + proc.stderr
    ran = re.search(r"^launcher in (\S+): (.*)$", proc.stdout, re.M)
    assert ran and ran.group(2) == TEST_PROFILE
    copy = Path(ran.group(1))
    assert copy.parent == tmp_path and copy.name.startswith("peftbench-conda.")
    listing = proc.stdout[ran.end() :].split("==")[0].split()
    assert sorted(listing) == [".gitignore", "tracked.txt", "untracked.txt"]
    # A failed run keeps its copy for inspection and stops .ci/run; a passing one cleans up.
    assert copy.exists() == bool(launcher_rc)
    assert ("after" in proc.stdout) == (launcher_rc == 0)
