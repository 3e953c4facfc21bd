"""What one run result becomes in MLflow (:mod:`~peftbench.interop.mlflow_export` logs it).

==================  ============================================================================
MLflow              from result.json
==================  ============================================================================
params              ``config.*`` (the effective training config), ``peft.*`` (the resolved PEFT
                    config), ``provenance.*``, ``capabilities.*``, flattened with dots; lists and
                    mappings whose keys MLflow cannot take as names (e.g. regex patterns) as
                    JSON; ``seed``; a value over MLflow's length limit is cut and named in the
                    ``peftbench.truncated_params`` tag
metrics             ``metrics``: every number as logged at step 0 (nested ones flattened with
                    dots); the curves as step metrics: ``train_loss`` (and ``train_loss.lr``),
                    the task's validation curve (``valid_accuracy``, ``valid_similarity``)
tags                ``peftbench.*``: task, experiment, method, name, seed, status, error, family,
                    grid point, the metrics written without a value (``unmeasured``) and those
                    that are text (``peftbench.metrics.memory_measure``), the result file
artifacts           the run folder's files (result.json, the task's item file, samples, ...),
                    without the saved adapter unless asked (a full fine-tuning run saves the
                    whole model there) and never the resumable checkpoint
==================  ============================================================================

Nothing is computed that the result does not hold: a metric not measured is not logged (it is
named in ``peftbench.unmeasured``). Plain data only; MLflow itself is not imported here.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftbench.analysis.families import method_family
from peftbench.core.search import base_experiment, split_run_name

#: The run folder's saved adapter and resumable checkpoint (the names of
#: :mod:`peftbench.core.runs`, which imports torch; a test checks they agree).
ADAPTER_DIR, CHECKPOINT_DIR = "adapter", "checkpoint"
#: Part of every run's digest: a change of what an export logs makes earlier exports differ.
EXPORT_VERSION = 1
#: MLflow's limits (mlflow.utils.validation): a param value, a tag value, a name.
MAX_PARAM, MAX_TAG, MAX_KEY = 6000, 8000, 250
#: Names MLflow takes for params, metrics and tags on every platform (no ":" on Windows).
_NAME = re.compile(r"^[/\w.\- ]+$")
_TRUNCATED = " ... (truncated; the whole value is in the result.json artifact)"
RUN_KEY = "peftbench.run_key"


def valid_name(name: str) -> bool:
    """Whether MLflow takes ``name`` as a param, metric or tag name (its characters, length and
    that it reads the same as a normalised path, since a file store uses it as one)."""
    return (
        len(name) <= MAX_KEY
        and bool(_NAME.match(name))
        and posixpath.normpath(name) == name
        and not name.startswith("/")
    )


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """``value`` under ``prefix`` with nested mappings flattened to dotted names; a mapping
    that is empty or has a key MLflow cannot name stays whole (logged as JSON)."""
    if isinstance(value, Mapping) and value and all(valid_name(f"{prefix}.{k}") for k in value):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: value}


def _text(value: Any) -> str:
    """A param value: text as it is, anything else as JSON (``null``, ``true``, ``[...]``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED


def run_params(result: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The run's params (name -> text) and the names whose value was too long for MLflow and
    was cut (the whole value is in the result.json artifact)."""
    flat = {"seed": result["seed"]}
    for section, prefix in (
        ("config", "config"),
        ("peft_config", "peft"),
        ("provenance", "provenance"),
        ("capabilities", "capabilities"),
    ):
        # None (no PEFT config for full fine-tuning and the base model) logs nothing.
        if result.get(section) is not None:
            flat.update(flatten(result[section], prefix))
    params, cut = {}, []
    for name, value in flat.items():
        text = _text(value)
        params[name] = _clip(text, MAX_PARAM)
        if len(text) > MAX_PARAM:
            cut.append(name)
    return params, cut


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def final_metrics(result: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """``result["metrics"]`` split into numbers (name -> value), text (name -> text, logged as
    tags: MLflow metrics are numbers) and the names without a value (null: not measured)."""
    numbers, texts, unmeasured = {}, {}, []
    flat: dict[str, Any] = {}
    for key, value in result["metrics"].items():
        flat.update(flatten(value, key))
    for name, value in flat.items():
        if value is None:
            unmeasured.append(name)
        elif _number(value):
            numbers[name] = float(value)
        else:
            texts[name] = _text(value)
    return numbers, texts, unmeasured


def curve_metrics(
    result: Mapping[str, Any], taken: set[str] | frozenset[str] = frozenset()
) -> dict[str, list[tuple[int, float]]]:
    """Every curve value as a step metric: metric name -> [(step, value), ...].

    A curve's main value keeps the curve's name (``train_loss`` for its ``loss``,
    ``valid_accuracy`` for its ``accuracy``), its other values are ``<curve>.<field>``
    (``train_loss.lr``); a name already in ``taken`` (a final metric) gets ``curves.`` before it,
    so that a final value never lands in a curve's history.
    """
    series: dict[str, list[tuple[int, float]]] = {}
    for curve, points in (result.get("curves") or {}).items():
        for point in points or []:
            for key, value in point.items():
                if key == "step" or not _number(value):
                    continue
                name = curve if curve == key or curve.endswith(f"_{key}") else f"{curve}.{key}"
                if name in taken:
                    name = f"curves.{name}"
                series.setdefault(name, []).append((int(point["step"]), float(value)))
    return series


def run_tags(result: Mapping[str, Any], source: str) -> dict[str, str]:
    """The ``peftbench.*`` tags of a run (``source``: its result file, relative)."""
    _, point = split_run_name(result["name"])
    peft_type = (result.get("peft_config") or {}).get("peft_type")
    tags = {
        RUN_KEY: run_key(result),
        "peftbench.task": result["task"],
        "peftbench.experiment": result["experiment"],
        "peftbench.base_experiment": base_experiment(result["experiment"]),
        "peftbench.method": result["method"],
        "peftbench.name": result["name"],
        "peftbench.seed": str(result["seed"]),
        "peftbench.status": result["status"],
        "peftbench.family": method_family(result["method"], peft_type),
        "peftbench.result_file": source,
    }
    if point is not None:
        tags["peftbench.search_point"] = point
    if result.get("error"):
        tags["peftbench.error"] = _clip(result["error"], MAX_TAG)
    numbers, texts, unmeasured = final_metrics(result)
    for name, text in texts.items():
        tags[f"peftbench.metrics.{name}"] = _clip(text, MAX_TAG)
    if unmeasured:
        tags["peftbench.unmeasured"] = _clip(", ".join(unmeasured), MAX_TAG)
    return tags


def run_key(result: Mapping[str, Any]) -> str:
    """What identifies a run across exports: ``<task>/<method>/<name>/seed<k>``."""
    return f"{result['task']}/{result['experiment']}/seed{result['seed']}"


def artifact_files(folder: Path, with_adapter: bool = False) -> list[Path]:
    """The files of a run folder to log, relative to it, sorted: everything but the resumable
    checkpoint, the saved adapter unless ``with_adapter``, and hidden files (a writer's
    temporary files)."""
    leave_out = {CHECKPOINT_DIR} | (set() if with_adapter else {ADAPTER_DIR})
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or relative.parts[0] in leave_out:
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue
        files.append(relative)
    return files


def export_digest(result_file: Path, files: list[Path]) -> str:
    """sha256 over what an export logs of a run: the result file's bytes and the names and
    sizes of its artifacts (sizes, not contents: an adapter can be gigabytes)."""
    digest = hashlib.sha256(f"peftbench-mlflow-export-{EXPORT_VERSION}\n".encode())
    digest.update(result_file.read_bytes())
    folder = result_file.parent
    for relative in files:
        digest.update(f"\n{relative.as_posix()}\t{(folder / relative).stat().st_size}".encode())
    return digest.hexdigest()
