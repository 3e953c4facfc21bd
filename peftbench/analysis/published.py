"""Import published results of the Hugging Face PEFT method-comparison suite.

Every result file of the suite is a JSON object with ``run_info``, ``train_info`` and
``meta_info`` (one file per experiment, ``<method>--<name>.json``); the last
``train_info.metrics`` entry holds the test metrics, the earlier ones are validation points.
Which metrics those are depends on the suite's task: each task of this workflow that compares
with one says so in its spec (:class:`~peftbench.tasks.spec.PublishedFormat`: the keys that
identify the format, the quality, side-effect and validation keys), and the file is imported
under that task, so the published rows sit next to this workflow's.

Each file becomes one row in the units of the summary table (GB = 1e9 bytes, minutes, MB =
1e6 bytes). Files that cannot be read, or that are in neither format, are skipped with a
warning naming the file and the reason: one bad file never stops the import.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.analysis.families import method_family
from peftbench.analysis.glossary import task_columns
from peftbench.core.config import ConfigError
from peftbench.tasks import registry
from peftbench.tasks.spec import PublishedFormat, TaskSpec

#: ``source`` of the imported rows.
SOURCE_PUBLISHED = "published"

#: ``file_size`` the published suite writes when saving the adapter failed (not a size).
FILE_SIZE_SENTINEL = 99_999_999

#: ``memory_measure`` of published rows: peak reserved accelerator memory above the
#: pre-load baseline, over the whole run or the training steps (as the suite's task measures).
PUBLISHED_MEMORY_MEASURE = "published_accelerator_memory_max"

_NUMBER = (int, float)


class PublishedFormatError(ValueError):
    """A published result file that cannot be imported; the message says why."""


@dataclass
class PublishedImport:
    """What :func:`import_published` read from a folder."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: list[dict[str, Any]] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    environments: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def published_files(folder: Path | str | None) -> list[Path]:
    """Every visible regular file in ``folder`` (not recursive), sorted; [] for None.

    Raises FileNotFoundError when a folder is configured but does not exist: a typo in the
    path would otherwise silently drop the published results from the report.
    """
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"published results folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def configured_folders(published: Mapping[str, Any] | None) -> dict[str, str]:
    """The ``published`` config (task -> folder or null) without the null entries."""
    return {task: folder for task, folder in (published or {}).items() if folder is not None}


def configured_files(published: Mapping[str, Any] | None) -> list[str]:
    """Every file of the configured published folders, as Snakemake inputs.

    Raises ConfigError naming the config key when a configured folder does not exist.
    """
    files = []
    for task, folder in configured_folders(published).items():
        try:
            files += [str(path) for path in published_files(folder)]
        except FileNotFoundError as exc:
            raise ConfigError(f"published.{task}: {exc}") from exc
    return files


def _require(mapping: Mapping[str, Any], key: str, kinds: type | tuple, where: str) -> Any:
    """``mapping[key]``, checked to be of ``kinds`` (bools are not numbers)."""
    if key not in mapping:
        raise PublishedFormatError(f"missing {where}{key}")
    value = mapping[key]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise PublishedFormatError(f"{where}{key} must be {_kind_name(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise PublishedFormatError(
            f"{where}{key} must be {_kind_name(kinds)}, got {type(value).__name__}"
        )
    return value


def _optional(mapping: Mapping[str, Any], key: str, kinds: type | tuple, where: str) -> Any:
    """Like :func:`_require` but None when absent or null."""
    if mapping.get(key) is None:
        return None
    return _require(mapping, key, kinds, where)


def _kind_name(kinds: type | tuple) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _finite(value: Any) -> float | None:
    """A float, or None for null/NaN/inf (the published files write NaN for 'not measured')."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _formats() -> list[tuple[TaskSpec, PublishedFormat]]:
    """The published formats of every known task."""
    return [(spec, spec.published) for spec in registry.known() if spec.published is not None]


def _detect(document: Any) -> tuple[TaskSpec, PublishedFormat]:
    """The task and published format of ``document``; PublishedFormatError when none fits."""
    if not isinstance(document, dict):
        raise PublishedFormatError(f"top level must be an object, got {type(document).__name__}")
    missing = [k for k in ("run_info", "train_info", "meta_info") if k not in document]
    if missing:
        raise PublishedFormatError(
            f"unknown format: not a PEFT method-comparison result (missing {', '.join(missing)})"
        )
    train_info = document["train_info"]
    metrics = train_info.get("metrics") if isinstance(train_info, dict) else None
    keys = set()
    for entry in metrics if isinstance(metrics, list) else []:
        if isinstance(entry, dict):
            keys |= set(entry)
    for spec, fmt in _formats():
        if keys & fmt.metric_keys:
            return spec, fmt
    # A run cancelled before its first evaluation has no metrics; its config still tells.
    run_info = document["run_info"]
    config = run_info.get("train_config") if isinstance(run_info, dict) else None
    if isinstance(config, dict):
        for spec, fmt in _formats():
            if set(config) & fmt.config_keys:
                return spec, fmt
    known = ", ".join(f"{fmt.quality_key!r} ({fmt.name})" for _, fmt in _formats())
    raise PublishedFormatError(f"unknown format: metrics hold none of {known}")


def detect_format(document: Any) -> str:
    """Name of the published format of ``document`` (e.g. "metamathqa").

    Raises PublishedFormatError when it is none of the known tasks' formats.
    """
    return _detect(document)[1].name


def _config_hash(train_config: Any, peft_config: Any) -> str:
    """sha256 of the canonical JSON of both configs (the same recipe as this run's hash)."""
    canonical = json.dumps(
        {"config": train_config, "adapter_config": peft_config}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _validation_means(validation: list[dict], fmt: PublishedFormat) -> dict[str, float | None]:
    """The columns the format records per validation step only, averaged over the run."""
    means: dict[str, float | None] = {}
    for column, key in fmt.validation_means.items():
        values = [e[key] for e in validation if isinstance(e.get(key), _NUMBER)]
        means[column] = sum(values) / len(values) if values else None
    return means


def _task_metrics(
    spec: TaskSpec, fmt: PublishedFormat, final: dict[str, float | None], validation: list[dict]
) -> dict[str, Any]:
    """The task's own columns of a published row: quality, side effect, last validation value,
    and the number of test items behind the quality where the format says.

    No interval: a published result is one run without per-item scores, and an interval
    derived from its quality alone (a Wilson interval from the test-set size) would ignore
    seed-to-seed variation and make comparisons look settled that one run cannot settle."""
    quality = final[fmt.quality_key]
    values: dict[str, Any] = {spec.quality.name: quality}
    if fmt.side_effect_key is not None:
        values[spec.side_effect.name] = final[fmt.side_effect_key]
    if validation:
        values[spec.valid_final] = _finite(validation[-1][fmt.valid_key])
    if quality is not None and fmt.test_n is not None:
        values["test_n"] = fmt.test_n
    return values


def parse_published(document: Any) -> dict[str, Any]:
    """Convert one published result document into a summary row, curves and configs.

    Returns ``{"row": {...}, "curves": [...], "config": {...}, "environment": {...}}``. Raises
    PublishedFormatError (message without the file name) when the document is malformed.
    """
    spec, fmt = _detect(document)
    task = spec.name
    run_info = _require(document, "run_info", dict, "")
    train_info = _require(document, "train_info", dict, "")
    meta_info = _require(document, "meta_info", dict, "")

    experiment = _require(run_info, "experiment_name", str, "run_info.")
    if not experiment.strip():
        raise PublishedFormatError("run_info.experiment_name is empty")
    method, _, name = experiment.partition("/")
    train_config = _require(run_info, "train_config", dict, "run_info.")
    peft_config = _optional(run_info, "peft_config", dict, "run_info.")
    error = _optional(run_info, "error_msg", str, "run_info.") or None
    created_at = _optional(run_info, "created_at", str, "run_info.")
    status = _require(train_info, "status", str, "train_info.")
    metrics = _require(train_info, "metrics", list, "train_info.")
    for i, entry in enumerate(metrics):
        if not isinstance(entry, dict):
            raise PublishedFormatError(f"train_info.metrics[{i}] must be an object")

    final = metrics[-1] if metrics and fmt.quality_key in metrics[-1] else None
    if status == "success" and final is None:
        raise PublishedFormatError(
            f"status is success but the last train_info.metrics entry has no {fmt.quality_key!r}"
        )
    numbers: dict[str, float | None] = {}
    for key in (
        "accelerator_memory_max",
        "train_time",
        "file_size",
        "num_trainable_params",
        "num_total_params",
    ):
        # Required on success; a cancelled run may stop before they are known.
        getter = _require if status == "success" else _optional
        numbers[key] = _finite(getter(train_info, key, _NUMBER, "train_info."))
    final_values: dict[str, float | None] = {}
    for key in (fmt.quality_key, "train loss", fmt.side_effect_key):
        if key is not None:
            final_values[key] = (
                None if final is None else _finite(_optional(final, key, _NUMBER, "final metrics "))
            )
    quality = final_values[fmt.quality_key]
    if quality is not None and spec.proportion and not 0.0 <= quality <= 1.0:
        raise PublishedFormatError(f"{fmt.quality_key} {quality} is not in [0, 1]")

    validation = [e for e in metrics if fmt.valid_key in e]
    curves = []
    for entry in validation:
        step = _require(entry, "step", int, "validation metrics ")
        value = _finite(entry[fmt.valid_key])
        curves.append({"step": step, "metric": "validation", "value": value})
        if "train loss" in entry:
            loss = _finite(_require(entry, "train loss", _NUMBER, "validation metrics "))
            curves.append({"step": step, "metric": "train loss", "value": loss})

    packages = (
        meta_info.get("package_info") if isinstance(meta_info.get("package_info"), dict) else {}
    )
    system = meta_info.get("system_info") if isinstance(meta_info.get("system_info"), dict) else {}
    optimizer_kwargs = train_config.get("optimizer_kwargs")
    optimizer_kwargs = optimizer_kwargs if isinstance(optimizer_kwargs, dict) else {}

    file_size = numbers["file_size"]
    memory = numbers["accelerator_memory_max"]
    train_time = numbers["train_time"]
    trainable, total = numbers["num_trainable_params"], numbers["num_total_params"]
    row: dict[str, Any] = {
        # Every known task's columns, missing unless this format measures them.
        **dict.fromkeys(task_columns()),
        "task": task,
        "source": SOURCE_PUBLISHED,
        "experiment": experiment,
        "method": method,
        "name": name,
        "family": method_family(method, (peft_config or {}).get("peft_type")),
        "seed": train_config.get("seed") if isinstance(train_config.get("seed"), int) else None,
        "status": status,
        "error": error,
        "peft_type": (peft_config or {}).get("peft_type"),
        "test_n": None,
        "train_memory_gb": None if memory is None else memory / 1e9,
        "train_memory_allocated_gb": None,
        "eval_memory_gb": None,
        "memory_measure": PUBLISHED_MEMORY_MEASURE,
        "train_time_min": None if train_time is None else train_time / 60.0,
        "eval_time_min": None,
        "trainable_params": None if trainable is None else int(trainable),
        "total_params": None if total is None else int(total),
        "trainable_pct": 100.0 * trainable / total if trainable is not None and total else None,
        "file_size_mb": (
            None if file_size is None or file_size == FILE_SIZE_SENTINEL else file_size / 1e6
        ),
        "train_loss_final": final_values["train loss"],
        **_validation_means(validation, fmt),
        **_task_metrics(spec, fmt, final_values, validation),
        "lr": optimizer_kwargs.get("lr"),
        "max_steps": train_config.get("max_steps"),
        "config_hash": _config_hash(train_config, peft_config),
        "code_revision": None,
        "peft_version": packages.get("peft-version"),
        "torch_version": packages.get("torch-version"),
        "transformers_version": packages.get("transformers-version"),
        "device": system.get("accelerator"),
        "created_at": created_at,
    }
    for curve in curves:
        curve.update(
            task=task,
            source=SOURCE_PUBLISHED,
            experiment=experiment,
            method=method,
            seed=row["seed"],
            valid_metric=spec.quality.name,
        )
    return {
        "row": row,
        "curves": curves,
        "config": {
            "task": task,
            "source": SOURCE_PUBLISHED,
            "experiment": experiment,
            "seed": row["seed"],
            "config": train_config,
            "peft_config": peft_config,
            "config_hash": row["config_hash"],
            "created_at": created_at,
        },
        "environment": {
            "task": task,
            "source": SOURCE_PUBLISHED,
            "experiment": experiment,
            "packages": {k: v for k, v in packages.items() if v is not None},
            "hardware": {k: v for k, v in system.items() if v is not None},
            "device": system.get("accelerator"),
        },
    }


def import_published(folders: Mapping[str, Path | str | None] | None) -> PublishedImport:
    """Read every file of the configured published-results folders (``{task: folder}``).

    A file that cannot be parsed gives a warning ``"<path>: skipped, <reason>"`` and is left
    out. A file of another task's format (found in the folder of task A, but in the format of
    task B's spec) is imported under its own task with a warning, so a mixed-up folder is
    visible but harmless. Raises FileNotFoundError for a missing folder.
    """
    imported = PublishedImport()
    for folder_task, folder in (folders or {}).items():
        for path in published_files(folder):
            imported.files.append(str(path))
            if path.suffix.lower() != ".json":
                imported.warnings.append(f"{path}: skipped, not a .json result file")
                continue
            try:
                # The published files write NaN as a bare token; Python's json reads it.
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                imported.warnings.append(f"{path}: skipped, unreadable: {exc}")
                continue
            except json.JSONDecodeError as exc:
                imported.warnings.append(f"{path}: skipped, not valid JSON: {exc}")
                continue
            try:
                parsed = parse_published(document)
            except PublishedFormatError as exc:
                imported.warnings.append(f"{path}: skipped, {exc}")
                continue
            task = parsed["row"]["task"]
            if task != folder_task:
                imported.warnings.append(
                    f"{path}: result of task {task} in the published folder of task "
                    f"{folder_task}; imported under task {task}"
                )
            imported.rows.append(parsed["row"])
            imported.curves.extend(parsed["curves"])
            imported.configs.append(parsed["config"])
            imported.environments.append(parsed["environment"])
    return imported
