"""Export run results to an MLflow tracking store (``peftbench export --to mlflow URI``).

Every run (one experiment x seed, ``<results>/<task>/runs/<method>/<name>/seed<k>/``) becomes
one MLflow run in the MLflow experiment ``peftbench-<task>`` (``experiment_name``), named
``<method>/<name> seed<k>``, holding what :mod:`~peftbench.interop.mlflow_record` makes of its
result: params, final metrics, curves as step metrics, tags and the run folder's files as
artifacts. Its status is FINISHED or FAILED; it started at ``provenance.created_at`` (when the
run began) and ended when result.json was last written (the file's modification time).

A run is found again by its ``peftbench.run_key`` tag, and what was logged is summed up in its
``peftbench.export_digest`` tag, set last (a run without it was not logged whole): a second
export of unchanged results changes nothing; a run whose result (or exported files) changed is
refused unless ``force``, which logs it anew and then deletes the old MLflow run.

MLflow is optional (the ``export`` extra: ``mlflow-skinny`` with SQLAlchemy and alembic for a
``sqlite:///`` store): it is imported when an export starts, so the CLI works without it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from peftbench.interop.mlflow_record import (
    RUN_KEY,
    artifact_files,
    curve_metrics,
    export_digest,
    final_metrics,
    run_key,
    run_params,
    run_tags,
)
from peftbench.interop.run_results import ExportError, Run, load_runs

TARGET = "mlflow"
EXTRA_HINT = "pip install 'peftbench[export]'"
DEFAULT_EXPERIMENT = "peftbench-{task}"
DIGEST = "peftbench.export_digest"


@dataclass
class MlflowReport:
    """What :func:`export_mlflow` logged and left out."""

    uri: str
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: Runs logged anew under ``force`` (their earlier MLflow runs deleted).
    replaced: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    #: Runs the store would not take (the partial MLflow run is deleted).
    errors: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: MLflow experiment name -> its artifact location.
    experiments: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.errors and not self.invalid

    def lines(self) -> list[str]:
        lines = [f"logged {entry}" for entry in self.written]
        lines += [f"replaced {entry}" for entry in self.replaced]
        lines += [f"unchanged {entry}" for entry in self.unchanged]
        lines += [f"REFUSED {entry}" for entry in self.refused]
        lines += [f"ERROR {entry}" for entry in self.errors]
        lines += [f"INVALID {entry}" for entry in self.invalid]
        lines += [f"skipped {entry}" for entry in self.skipped]
        lines += [
            f"experiment {name!r}: artifacts in {where}"
            for name, where in sorted(self.experiments.items())
        ]
        lines += self.notes
        lines.append(
            f"{len(self.written) + len(self.replaced)} run(s) logged to {self.uri} "
            f"({len(self.replaced)} replacing earlier ones), {len(self.unchanged)} unchanged, "
            f"{len(self.refused)} refused, {len(self.errors)} not taken by the store, {len(self.invalid)} "
            f"invalid, {len(self.skipped)} skipped"
        )
        return lines


def _millis(created_at: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(created_at)).timestamp() * 1000)
    except ValueError:
        return None


def _mlflow() -> Any:
    """The ``mlflow`` module, or an :class:`ExportError` naming the extra that installs it."""
    # Exporting results to a store the user chose must not also report usage to MLflow's
    # servers: telemetry is off unless the user turned it on explicitly.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
        import mlflow.entities
        import mlflow.exceptions
    except ImportError as exc:
        raise ExportError(
            f"--to mlflow needs MLflow, which is optional: {EXTRA_HINT} (mlflow-skinny, and "
            f"SQLAlchemy and alembic for a sqlite:/// store); import failed: {exc}"
        ) from exc
    return mlflow


def _client(mlflow: Any, uri: str) -> Any:
    """A client of the store at ``uri``, reached once so a store MLflow refuses (or cannot
    open without an optional package) stops the export before any run."""
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except ImportError as exc:
        raise ExportError(
            f"{uri}: MLflow needs another package for this store ({exc}); {EXTRA_HINT}"
        ) from exc
    except mlflow.exceptions.MlflowException as exc:
        raise ExportError(f"{uri}: {exc.message}") from exc
    return client


def _experiment(
    client: Any, name: str, task: str, artifact_location: str | None, report: MlflowReport
) -> str:
    """The id of the MLflow experiment ``name``, created when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(
            name, artifact_location=artifact_location, tags={"peftbench.task": task}
        )
        experiment = client.get_experiment(experiment_id)
    elif experiment.lifecycle_stage != "active":
        raise ExportError(
            f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) "
            "or pass another --experiment-name"
        )
    elif artifact_location is not None and experiment.artifact_location != artifact_location:
        report.notes.append(
            f"experiment {name!r} exists: its artifact location stays "
            f"{experiment.artifact_location} (--artifact-location applies to new experiments)"
        )
    report.experiments[name] = experiment.artifact_location
    return experiment.experiment_id


def _runs_by_key(client: Any, experiment_id: str) -> dict[str, list[Any]]:
    """The active MLflow runs of an experiment by their ``peftbench.run_key`` tag."""
    found: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            key = run.data.tags.get(RUN_KEY)
            if key is not None:
                found.setdefault(key, []).append(run)
        token = page.token
        if not token:
            return found


def _log_run(
    mlflow: Any,
    client: Any,
    experiment_id: str,
    path: Path,
    result: Mapping[str, Any],
    *,
    source: str,
    files: list[Path],
    digest: str,
) -> str:
    """Log one run; returns its MLflow run id. A run the store refuses part of is deleted."""
    entities = mlflow.entities
    start = _millis(result["provenance"].get("created_at"))
    end = int(path.stat().st_mtime * 1000)
    end = max(end, start) if start is not None else end
    tags = run_tags(result, source)
    run = client.create_run(
        experiment_id,
        start_time=start,
        tags={RUN_KEY: tags[RUN_KEY]},
        run_name=f"{result['experiment']} seed{result['seed']}",
    )
    run_id = run.info.run_id
    try:
        params, cut = run_params(result)
        if cut:
            tags["peftbench.truncated_params"] = ", ".join(cut)
        numbers, _, _ = final_metrics(result)
        stamp = start if start is not None else end
        metrics = [entities.Metric(name, value, stamp, 0) for name, value in numbers.items()]
        for name, points in curve_metrics(result, set(numbers)).items():
            metrics += [entities.Metric(name, value, stamp, step) for step, value in points]
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[entities.Param(name, value) for name, value in params.items()],
            tags=[entities.RunTag(name, value) for name, value in tags.items()],
        )
        for relative in files:
            parent = relative.parent.as_posix()
            client.log_artifact(
                run_id, str(path.parent / relative), None if parent == "." else parent
            )
        # Last: a run without its digest was not logged whole.
        client.set_tag(run_id, DIGEST, digest)
        status = "FINISHED" if result["status"] == "success" else "FAILED"
        client.set_terminated(run_id, status=status, end_time=end)
    except BaseException:
        client.delete_run(run_id)
        raise
    return run_id


def _by_experiment(runs: list[Run], template: str) -> dict[tuple[str, str], list[Run]]:
    """The runs by (MLflow experiment name, task), the name from ``template``."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for path, result in runs:
        try:
            name = template.format(task=result["task"])
        except (KeyError, IndexError, ValueError) as exc:
            raise ExportError(
                f"--experiment-name {template!r}: only {{task}} can be filled in ({exc!r})"
            ) from exc
        groups.setdefault((name, result["task"]), []).append((path, result))
    return groups


def export_mlflow(
    results: Path | str,
    uri: str,
    *,
    patterns: list[str] | None = None,
    all_points: bool = False,
    force: bool = False,
    experiment_name: str = DEFAULT_EXPERIMENT,
    artifact_location: str | None = None,
    with_adapter: bool = False,
) -> MlflowReport:
    """Log every run below ``results`` (those whose experiment id matches a glob of
    ``patterns``; of a search grid the point chosen on validation unless ``all_points``) to the
    MLflow tracking store at ``uri``; see the module docstring. ``experiment_name`` may hold
    ``{task}``; ``artifact_location`` applies to experiments this export creates."""
    results = Path(results)
    loaded = load_runs(results, patterns, all_points)
    report = MlflowReport(uri=uri, invalid=loaded.invalid, skipped=loaded.skipped)
    groups = _by_experiment(loaded.runs, experiment_name)
    mlflow = _mlflow()
    client = _client(mlflow, uri)
    for (name, task), group in groups.items():
        experiment_id = _experiment(client, name, task, artifact_location, report)
        existing = _runs_by_key(client, experiment_id)
        for path, result in group:
            key = run_key(result)
            files = artifact_files(path.parent, with_adapter)
            digest = export_digest(path, files)
            earlier = existing.get(key, [])
            if any(run.data.tags.get(DIGEST) == digest for run in earlier):
                report.unchanged.append(key)
                continue
            if earlier and not force:
                report.refused.append(
                    f"{key}: logged before (MLflow run {earlier[0].info.run_id}) with other "
                    "contents, or not whole; pass --force to replace it"
                )
                continue
            try:
                run_id = _log_run(
                    mlflow,
                    client,
                    experiment_id,
                    path,
                    result,
                    source=str(path.relative_to(results)),
                    files=files,
                    digest=digest,
                )
            except (mlflow.exceptions.MlflowException, OSError) as exc:
                report.errors.append(f"{key}: {exc}")
                continue
            for run in earlier:  # replaced only once the new run is whole
                client.delete_run(run.info.run_id)
            entry = f"{key} -> run {run_id} in experiment {name!r}"
            (report.replaced if earlier else report.written).append(entry)
    return report
