"""Tests of ``peftbench export --to mlflow`` (peftbench.interop.mlflow_export, mlflow_record):
results logged to local MLflow stores (sqlite, and the file store where it is allowed) and read
back through MlflowClient: runs, params, final metrics, metric histories, artifacts, and a
second export that changes nothing."""

import json
import sys
from pathlib import Path

# Installed with the dev extra (which holds the export extra): a missing MLflow fails here.
import mlflow
import pytest
from factories import make_base_result, make_result
from mlflow import MlflowClient
from tiny import run

from peftbench.cli import main
from peftbench.core.io import write_json
from peftbench.core.layout import RESULT_FILE, run_dir
from peftbench.interop import mlflow_record
from peftbench.interop.mlflow_export import export_mlflow
from peftbench.interop.mlflow_record import flatten, run_params
from peftbench.interop.run_results import ExportError


@pytest.fixture(autouse=True)
def no_telemetry(monkeypatch):
    # MLflow reports usage to its servers unless told not to; the tests stay offline.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def the_results() -> list[dict]:
    lora = make_result("lora", "r8", test_accuracy=0.5)
    lora["curves"]["train_loss"] = [
        {"step": 10, "loss": 2.5, "lr": 1e-3},
        {"step": 20, "loss": 1.5, "lr": 5e-4},
        {"step": 30, "loss": 1.0, "lr": 0.0},
    ]
    lora["curves"]["valid_accuracy"] = [
        {"step": 15, "accuracy": 0.2},
        {"step": 30, "accuracy": 0.3},
    ]
    # A mapping whose keys MLflow cannot take as names, and a value over its length limit.
    lora["peft_config"]["rank_pattern"] = {r"^model\.layers\.0\..*$": 4}
    lora["config"]["query_template"] = "Q: {query}\n" + "x" * 7000
    return [
        make_base_result(),
        lora,
        make_result("lora", "seeds", 0),
        make_result("lora", "seeds", 1, test_accuracy=0.42),
        make_result("oft", "broken", status="failed", peft_type="OFT"),
        make_result("lora", "r4", task="image", similarity=0.7),
        # A grid: the point with the better validation accuracy is the one exported.
        make_result("lora", "g@lr=0.001", lr=0.001, valid_accuracy_final=0.2, test_accuracy=0.9),
        make_result("lora", "g@lr=0.01", lr=0.01, valid_accuracy_final=0.6, test_accuracy=0.1),
    ]


def write_results(root: Path, results: list[dict]) -> Path:
    for result in results:
        folder = run_dir(root, result["task"], result["experiment"], result["seed"])
        write_json(folder / RESULT_FILE, result)
        (folder / "test_predictions.jsonl").write_text('{"id": 0}\n')
        (folder / "adapter").mkdir()
        (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
        (folder / "checkpoint").mkdir()
        (folder / "checkpoint" / "state.pt").write_bytes(b"\0")
        (folder / ".result.1234.tmp.json").write_text("{}")
    return root


def active_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def by_key(client: MlflowClient, experiment: str) -> dict:
    return {r.data.tags["peftbench.run_key"]: r for r in active_runs(client, experiment)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")
    results = the_results()
    root = write_results(tmp / "results", results)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        report = export_mlflow(root, uri, artifact_location=str(tmp / "artifacts"))
    return results, root, uri, report, tmp


def test_one_run_per_experiment_and_seed(exported):
    _, _, uri, report, tmp = exported
    assert report.ok, report.lines()
    client = MlflowClient(tracking_uri=uri)
    math = by_key(client, "peftbench-math")
    assert sorted(math) == [
        "math/base/no-finetuning/seed0",
        "math/lora/g@lr=0.01/seed0",
        "math/lora/r8/seed0",
        "math/lora/seeds/seed0",
        "math/lora/seeds/seed1",
        "math/oft/broken/seed0",
    ]
    assert sorted(by_key(client, "peftbench-image")) == ["image/lora/r4/seed0"]
    assert any("grid point not chosen" in s and "g@lr=0.001" in s for s in report.skipped)
    assert math["math/oft/broken/seed0"].info.status == "FAILED"
    assert math["math/lora/r8/seed0"].info.status == "FINISHED"
    assert math["math/lora/r8/seed0"].info.run_name == "lora/r8 seed0"
    # The run began when the result says it did.
    assert math["math/lora/r8/seed0"].info.start_time == 1735689600000
    assert report.experiments["peftbench-math"] == str(tmp / "artifacts")


def test_params_are_the_flattened_configs(exported):
    results, _, uri, _, _ = exported
    client = MlflowClient(tracking_uri=uri)
    params = by_key(client, "peftbench-math")["math/lora/r8/seed0"].data.params
    lora = results[1]
    assert params["config.optimizer_kwargs.lr"] == "0.0001"
    assert params["config.batch_size"] == "4"
    assert params["peft.peft_type"] == "LORA" and params["peft.r"] == "8"
    assert json.loads(params["peft.rank_pattern"]) == lora["peft_config"]["rank_pattern"]
    assert params["provenance.packages.peft"] == lora["provenance"]["packages"]["peft"]
    assert params["provenance.code_revision"] == "abc1234"
    assert params["seed"] == "0"
    # Cut to MLflow's limit, and said so.
    assert len(params["config.query_template"]) == 6000
    assert params["config.query_template"].endswith(
        "the whole value is in the result.json artifact)"
    )
    tags = by_key(client, "peftbench-math")["math/lora/r8/seed0"].data.tags
    assert tags["peftbench.truncated_params"] == "config.query_template"
    # Full fine-tuning and the base model have no PEFT config: no peft.* params.
    base = by_key(client, "peftbench-math")["math/base/no-finetuning/seed0"].data.params
    assert not any(name.startswith("peft.") for name in base)


def test_final_metrics_and_what_was_not_measured(exported):
    results, _, uri, _, _ = exported
    client = MlflowClient(tracking_uri=uri)
    runs = by_key(client, "peftbench-math")
    metrics = runs["math/lora/r8/seed0"].data.metrics
    assert metrics["test_accuracy"] == 0.5
    assert metrics["train_memory_peak_bytes"] == 12e9
    assert "train_tensor_peak_bytes" not in metrics  # null in the result: not logged
    tags = runs["math/lora/r8/seed0"].data.tags
    assert "train_tensor_peak_bytes" in tags["peftbench.unmeasured"].split(", ")
    assert tags["peftbench.metrics.memory_measure"] == "cuda_reserved"
    assert tags["peftbench.family"] == "lora-like" and tags["peftbench.status"] == "success"
    broken = runs["math/oft/broken/seed0"]
    assert "test_accuracy" not in broken.data.metrics
    assert broken.data.tags["peftbench.error"] == "RuntimeError: CUDA out of memory"
    grid = runs["math/lora/g@lr=0.01/seed0"].data.tags
    assert grid["peftbench.search_point"] == "lr=0.01"
    assert grid["peftbench.base_experiment"] == "lora/g"
    image = by_key(client, "peftbench-image")["image/lora/r4/seed0"].data.metrics
    assert image["similarity"] == 0.7


def test_curves_are_step_metrics(exported):
    _, _, uri, _, _ = exported
    client = MlflowClient(tracking_uri=uri)
    run_id = by_key(client, "peftbench-math")["math/lora/r8/seed0"].info.run_id

    def history(name):
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))

    assert history("train_loss") == [(10, 2.5), (20, 1.5), (30, 1.0)]
    assert history("train_loss.lr") == [(10, 1e-3), (20, 5e-4), (30, 0.0)]
    assert history("valid_accuracy") == [(15, 0.2), (30, 0.3)]
    image = by_key(client, "peftbench-image")["image/lora/r4/seed0"].info.run_id
    assert [(m.step, m.value) for m in client.get_metric_history(image, "valid_similarity")] == [
        (100, 0.61)
    ]


def test_result_files_are_artifacts(exported, tmp_path):
    _, root, uri, _, _ = exported
    client = MlflowClient(tracking_uri=uri)
    run_id = by_key(client, "peftbench-math")["math/lora/r8/seed0"].info.run_id
    # Not the adapter (ask for it), never the checkpoint nor a writer's temporary file.
    assert sorted(f.path for f in client.list_artifacts(run_id)) == [
        "result.json",
        "test_predictions.jsonl",
    ]
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="result.json", dst_path=str(tmp_path), tracking_uri=uri
    )
    original = run_dir(root, "math", "lora/r8", 0) / RESULT_FILE
    assert Path(local).read_bytes() == original.read_bytes()


def test_a_second_export_changes_nothing_and_a_changed_result_needs_force(tmp_path):
    results = [make_result("lora", "seeds", 0), make_result("lora", "seeds", 1, test_accuracy=0.42)]
    root = write_results(tmp_path / "results", results)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    artifacts = str(tmp_path / "artifacts")
    assert len(export_mlflow(root, uri, artifact_location=artifacts).written) == 2
    client = MlflowClient(tracking_uri=uri)
    before = {key: run.info.run_id for key, run in by_key(client, "peftbench-math").items()}
    again = export_mlflow(root, uri)
    assert again.ok and again.written == [] and len(again.unchanged) == 2
    assert {k: r.info.run_id for k, r in by_key(client, "peftbench-math").items()} == before

    path = run_dir(root, "math", "lora/seeds", 1) / RESULT_FILE
    changed = json.loads(path.read_text())
    changed["metrics"]["test_accuracy"] = 0.99
    write_json(path, changed)
    refused = export_mlflow(root, uri)
    assert not refused.ok and "math/lora/seeds/seed1" in refused.refused[0]
    runs = by_key(client, "peftbench-math")
    assert runs["math/lora/seeds/seed1"].data.metrics["test_accuracy"] == 0.42

    forced = export_mlflow(root, uri, force=True)
    assert forced.ok and len(forced.replaced) == 1 and len(forced.unchanged) == 1
    runs = by_key(client, "peftbench-math")
    assert len(active_runs(client, "peftbench-math")) == 2  # the old run deleted
    assert runs["math/lora/seeds/seed1"].data.metrics["test_accuracy"] == 0.99
    assert runs["math/lora/seeds/seed1"].info.run_id != before["math/lora/seeds/seed1"]
    assert runs["math/lora/seeds/seed0"].info.run_id == before["math/lora/seeds/seed0"]


def test_adapter_selection_and_all_points(tmp_path):
    root = write_results(tmp_path / "results", the_results())
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    report = export_mlflow(
        root,
        uri,
        patterns=["lora/g*"],
        all_points=True,
        with_adapter=True,
        experiment_name="bench {task}",
        artifact_location=str(tmp_path / "artifacts"),
    )
    assert report.ok and len(report.written) == 2
    client = MlflowClient(tracking_uri=uri)
    runs = by_key(client, "bench math")
    assert sorted(runs) == ["math/lora/g@lr=0.001/seed0", "math/lora/g@lr=0.01/seed0"]
    run_id = runs["math/lora/g@lr=0.01/seed0"].info.run_id
    assert [f.path for f in client.list_artifacts(run_id, "adapter")] == [
        "adapter/adapter_model.safetensors"
    ]
    with pytest.raises(ExportError, match="--select: pattern 'lora/nope' matches no"):
        export_mlflow(root, uri, patterns=["lora/nope"])
    with pytest.raises(ExportError, match="only {task} can be filled in"):
        export_mlflow(root, uri, experiment_name="x-{model}")


def test_file_store(tmp_path, monkeypatch):
    root = write_results(tmp_path / "results", [make_result("lora", "r8")])
    uri = (tmp_path / "mlruns").as_uri()
    # MLflow keeps its file store in maintenance mode: it refuses it unless told otherwise,
    # and the export says so before logging anything.
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ExportError, match="MLFLOW_ALLOW_FILE_STORE"):
        export_mlflow(root, uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    report = export_mlflow(root, uri)
    assert report.ok and len(report.written) == 1
    client = MlflowClient(tracking_uri=uri)
    (logged,) = active_runs(client, "peftbench-math")
    assert logged.data.metrics["test_accuracy"] == 0.40
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "train_loss")] == [
        50,
        100,
    ]
    assert {f.path for f in client.list_artifacts(logged.info.run_id)} == {
        "result.json",
        "test_predictions.jsonl",
    }


def test_command_line(tmp_path, capsys):
    root = write_results(tmp_path / "results", [make_result("lora", "r8")])
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["export", "--to", "mlflow", uri, "--results", str(root)]
    assert main([*args, "--artifact-location", str(tmp_path / "a")]) == 0
    output = capsys.readouterr().out
    assert "logged math/lora/r8/seed0 -> run" in output
    assert f"1 run(s) logged to {uri}" in output
    assert main(args) == 0 and "1 unchanged" in capsys.readouterr().out
    # An option of another target is an error, not ignored.
    assert main([*args, "--license", "mit"]) == 2
    assert "--license do(es) not apply to --to mlflow" in capsys.readouterr().err


def test_without_mlflow_the_error_names_the_extra(tmp_path, monkeypatch, capsys):
    root = write_results(tmp_path / "results", [make_result("lora", "r8")])
    # A module set to None in sys.modules cannot be imported: as if MLflow were not installed.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ExportError, match=r"pip install 'peftbench\[export\]'"):
        export_mlflow(root, f"sqlite:///{tmp_path / 'm.db'}")
    args = ["export", "--to", "mlflow", f"sqlite:///{tmp_path / 'm.db'}", "--results", str(root)]
    assert main(args) == 2
    assert "peftbench[export]" in capsys.readouterr().err
    assert not (tmp_path / "m.db").exists()


def test_flatten_keeps_what_mlflow_cannot_name_whole():
    value = {"a": {"b": 1, "c": [1, 2]}, "patterns": {"^x.*$": 2}, "empty": {}}
    assert flatten(value, "peft") == {
        "peft.a.b": 1,
        "peft.a.c": [1, 2],
        "peft.patterns": {"^x.*$": 2},
        "peft.empty": {},
    }
    params, cut = run_params({**make_result(), "config": value})
    assert params["config.a.c"] == "[1, 2]" and params["config.empty"] == "{}"
    assert params["config.patterns"] == '{"^x.*$": 2}' and cut == []


def test_run_folder_names_agree_with_the_training_code():
    from peftbench.core import runs

    assert (mlflow_record.ADAPTER_DIR, mlflow_record.CHECKPOINT_DIR) == (
        runs.ADAPTER_DIR,
        runs.CHECKPOINT_DIR,
    )


def test_real_tiny_run(tiny, tmp_path):
    """A real (tiny) training run's folder, logged and read back."""
    root = tmp_path / "results"
    adapter = {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"]}
    experiment = "lora/mlflow-r4"
    result = run(tiny, experiment, str(run_dir(root, "math", experiment, 0)), adapter=adapter)
    assert result["status"] == "success", result["error"]
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    report = export_mlflow(root, uri, artifact_location=str(tmp_path / "a"), with_adapter=True)
    assert report.ok and len(report.written) == 1, report.lines()
    client = MlflowClient(tracking_uri=uri)
    (logged,) = active_runs(client, "peftbench-math")
    assert logged.data.metrics["test_accuracy"] == result["metrics"]["test_accuracy"]
    assert (
        json.loads(logged.data.params["peft.target_modules"])
        == (result["peft_config"]["target_modules"])
    )
    steps = [p["step"] for p in result["curves"]["train_loss"]]
    history = client.get_metric_history(logged.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == steps and steps
    names = {f.path for f in client.list_artifacts(logged.info.run_id)}
    assert {"result.json", "test_predictions.jsonl", "adapter"} <= names
    adapter_files = {f.path for f in client.list_artifacts(logged.info.run_id, "adapter")}
    assert "adapter/adapter_config.json" in adapter_files
