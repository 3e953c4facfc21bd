"""Tests of ``peftbench import-experiments``: the published suite's experiment folders copied
into this workflow's layout (peftbench.interop.suite_import)."""

import json
import shutil
from pathlib import Path

import pytest
from paths import TESTS

from peftbench.cli import main
from peftbench.core.experiments import FULL_FINETUNING_MARKER, check_folder, check_root, discover
from peftbench.interop.suite_import import ImportSourceError, import_experiments

SUITE = TESTS / "interop" / "data" / "suite"
MATH = SUITE / "MetaMathQA" / "experiments"
IMAGE = SUITE / "image-gen" / "experiments"
C3A = "c3a/llama-3.2-3B-default"


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A writable copy of the math fixtures, to spoil."""
    return Path(shutil.copytree(MATH, tmp_path / "suite" / "experiments"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, dict]:
    into = tmp_path_factory.mktemp("experiments")
    reports = {
        task: import_experiments(source, into / task)
        for task, source in (("math", MATH), ("image", IMAGE))
    }
    return into, reports


@pytest.mark.parametrize("task, source", [("math", MATH), ("image", IMAGE)])
def test_every_folder_is_imported_under_the_suites_id(imported, task, source):
    into, reports = imported
    assert reports[task].ok
    assert discover(into / task) == discover(source)
    assert sorted(reports[task].copied) == discover(source)
    assert check_root(into / task) == []
    for experiment in discover(source):
        assert check_folder(into / task, experiment) == [], experiment


def test_files_are_copied_as_the_suite_wrote_them(imported):
    into, _ = imported
    for task, source in (("math", MATH), ("image", IMAGE)):
        for experiment in discover(source):
            assert files(into / task / experiment) == files(source / experiment), experiment
    # Keys this workflow may not support stay, for the dry run to judge.
    riemannian = json.loads(
        (into / "math/lora/llama-3.2-3B-rank32-riemannian/training_params.json").read_text()
    )
    assert riemannian["optimizer_type"] == "riemannian"
    adamss = json.loads((into / "math/adamss/llama-3.2-3B-rank32/training_params.json").read_text())
    assert adamss["model_id"] == "meta-llama/Llama-3.2-3B"
    c3a = json.loads((into / "math" / C3A / "adapter_config.json").read_text())
    assert c3a["exclude_modules"] is None  # a field of another peft version, kept as written


def test_full_finetuning_folder_stays_as_it_is(imported):
    into, reports = imported
    folder = into / "math/full-finetuning/llama-3.2-3B-lr_0.00001"
    assert sorted(p.name for p in folder.iterdir()) == ["training_params.json"]
    assert reports["math"].notes["full-finetuning/llama-3.2-3B-lr_0.00001"] == []


def test_folder_without_adapter_config_becomes_explicit_full_finetuning(suite, tmp_path):
    # The suite runs such a folder as full fine-tuning; this layout wants that said.
    folder = suite / "lora" / "no-adapter"
    folder.mkdir()
    (folder / "training_params.json").write_text('{"optimizer_kwargs": {"lr": 1e-5}}')
    report = import_experiments(suite, tmp_path / "into", ["lora/no-adapter"])
    target = tmp_path / "into" / "lora" / "no-adapter"
    assert (target / FULL_FINETUNING_MARKER).is_file()
    assert check_folder(tmp_path / "into", "lora/no-adapter") == []
    assert "FULL_FINETUNING" in report.notes["lora/no-adapter"][0]


def test_second_import_is_unchanged_and_a_different_folder_needs_force(suite, tmp_path):
    into = tmp_path / "into"
    import_experiments(suite, into)
    again = import_experiments(suite, into)
    assert again.ok and again.copied == [] and sorted(again.unchanged) == discover(suite)

    mine = into / "lora" / "llama-3.2-3B-rank32" / "adapter_config.json"
    mine.write_text('{"peft_type": "LORA", "r": 4}')
    clash = import_experiments(suite, into)
    assert not clash.ok
    assert "lora/llama-3.2-3B-rank32" in clash.refused
    assert "--force" in clash.refused["lora/llama-3.2-3B-rank32"][0]
    assert json.loads(mine.read_text())["r"] == 4  # not overwritten

    forced = import_experiments(suite, into, force=True)
    assert forced.ok and forced.replaced == ["lora/llama-3.2-3B-rank32"]
    assert (
        mine.read_bytes() == (suite / "lora/llama-3.2-3B-rank32/adapter_config.json").read_bytes()
    )


def test_stray_file_refuses_that_folder_only(suite, tmp_path):
    bad = suite / "lora" / "llama-3.2-3B-rank32"
    (bad / "adapter_config.json").rename(bad / "adapter-config.json")
    report = import_experiments(suite, tmp_path / "into")
    assert not report.ok
    problems = " ".join(report.refused["lora/llama-3.2-3B-rank32"])
    assert str(bad / "adapter-config.json") in problems
    assert "did you mean 'adapter_config.json'" in problems
    assert not (tmp_path / "into" / "lora" / "llama-3.2-3B-rank32").exists()
    assert len(report.copied) == len(discover(suite)) - 1


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda f: (f / "checkpoints").mkdir(), "unexpected folder"),
        (lambda f: (f / "adapter_config.json").write_text("{not json"), "invalid JSON"),
        (lambda f: (f / "adapter_config.json").write_text("[1]"), "expected a JSON object"),
    ],
)
def test_broken_folder_is_refused_naming_the_file(suite, tmp_path, spoil, message):
    folder = suite / "lora" / "llama-3.2-3B-rank32"
    spoil(folder)
    report = import_experiments(suite, tmp_path / "into", ["lora/llama-3.2-3B-rank32"])
    (problem,) = report.refused["lora/llama-3.2-3B-rank32"]
    assert message in problem and str(folder) in problem
    assert report.copied == []


def test_unusable_names_are_refused(suite, tmp_path):
    for name in ("base/no-finetuning", "lora/rank{8}"):
        shutil.copytree(suite / "lora" / "llama-3.2-3B-rank32", suite / name)
    report = import_experiments(suite, tmp_path / "into", ["base/*", "lora/rank*"])
    assert "reserved for the base-model reference" in report.refused["base/no-finetuning"][0]
    assert "brace" in report.refused["lora/rank{8}"][0]
    assert not (tmp_path / "into" / "base").exists()


def test_entries_outside_experiments_are_skipped_and_listed(suite, tmp_path):
    (suite / "lora" / "notes.txt").write_text("todo")
    report = import_experiments(suite, tmp_path / "into")
    assert report.ok
    assert any(str(suite / "lora" / "notes.txt") in entry for entry in report.skipped)
    assert not (tmp_path / "into" / "lora" / "notes.txt").exists()


def test_target_that_is_a_file_is_refused(suite, tmp_path):
    into = tmp_path / "into"
    (into / "lora").mkdir(parents=True)
    (into / "lora" / "llama-3.2-3B-rank32").write_text("")
    report = import_experiments(suite, into, force=True)
    assert "is not a folder" in report.refused["lora/llama-3.2-3B-rank32"][0]


def test_selection_and_dry_run(suite, tmp_path):
    report = import_experiments(suite, tmp_path / "into", ["lora/*"], dry_run=True)
    assert sorted(report.copied) == [e for e in discover(suite) if e.startswith("lora/")]
    assert not (tmp_path / "into").exists()
    assert "would be copied" in "\n".join(report.lines())
    with pytest.raises(ImportSourceError, match=r"--select: pattern 'lorra/\*' matches no"):
        import_experiments(suite, tmp_path / "into", ["lorra/*"])


def test_bad_source_and_target(suite, tmp_path):
    with pytest.raises(ImportSourceError, match="does not exist"):
        import_experiments(tmp_path / "missing", tmp_path / "into")
    task_folder = suite.parent
    (task_folder / "default_training_params.json").write_text("{}")
    with pytest.raises(ImportSourceError, match="pass its experiments folder"):
        import_experiments(task_folder, tmp_path / "into")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportSourceError, match="no experiment folders"):
        import_experiments(tmp_path / "empty", tmp_path / "into")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ImportSourceError, match="--into is a file"):
        import_experiments(suite, tmp_path / "a-file")
    with pytest.raises(ImportSourceError, match="inside it"):
        import_experiments(suite, suite / "lora")


def test_cli(suite, tmp_path, capsys):
    into = tmp_path / "into"
    assert main(["import-experiments", str(suite), "--into", str(into), "--select", "lora/*"]) == 0
    out = capsys.readouterr().out
    assert "copied: lora/llama-3.2-3B-rank32" in out and "2 experiment(s) imported" in out
    (suite / "lora" / "llama-3.2-3B-rank32" / "notes.txt").write_text("")
    assert main(["import-experiments", str(suite), "--into", str(into), "--force"]) == 1
    assert "REFUSED: lora/llama-3.2-3B-rank32" in capsys.readouterr().out
    assert main(["import-experiments", str(tmp_path / "nope"), "--into", str(into)]) == 2
    assert "does not exist" in capsys.readouterr().err
