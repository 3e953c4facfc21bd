"""One run result of this workflow as a result document of the published suite.

The suite writes one JSON document per run with ``run_info``, ``train_info`` and ``meta_info``
(its ``MetaMathQA/results/<method>--<name>.json``); its app reads the fields below, and so does
this workflow's importer (:mod:`peftbench.analysis.published`). Where this workflow's
``result.json`` (``peftbench/schemas/result.schema.json``) holds a value, it is written; where it
holds none, the field is written as missing, the suite's way (NaN for a number, null for text),
and named in the document's ``peftbench.unmeasured`` list. Nothing is made up, except on request
(``fill_for_app``, below).

===========================================  ================================================
suite field                                  from result.json
===========================================  ================================================
run_info.created_at                          provenance.created_at
run_info.total_time                          not measured (NaN): the run's whole wall time
run_info.experiment_name                     experiment (``<method>/<name>``, the suite's id)
run_info.peft_branch, peft_worktree_is_dirty not known (null): peft is an installed release
run_info.train_config                        config (the effective training parameters) under
                                             the suite's names and value conventions
                                             (:func:`~.suite_keys.suite_train_config`), plus
                                             ``model_id`` (below) and ``seed``; the keys the
                                             suite has no name for go to the peftbench block
run_info.peft_config                         peft_config
run_info.error_msg                           error ("" when none, as the suite writes)
train_info.accelerator_memory_max            metrics.train_memory_peak_bytes: on CUDA the peak
                                             reserved memory above the pre-load baseline, as the
                                             suite, but over the training steps only (the
                                             suite's covers evaluation too); on a CPU the peak
                                             RSS above the loaded model (no accelerator);
                                             ``peftbench.memory_measure`` says which
train_info.accelerator_memory_reserved_avg,  not measured (NaN)
  accelerator_memory_reserved_99th
train_info.train_time                        metrics.train_time_s (optimizer steps only)
train_info.file_size                         metrics.file_size_bytes; unknown: the suite's own
                                             "no size" value 99999999
train_info.num_trainable_params, ..._total   metrics.trainable_params, total_params
train_info.status                            status
train_info.metrics (validation entries)      curves: ``step``, the validation value, the train
                                             loss logged at that step (if any)
train_info.metrics (last entry)              the test quality (a task's published-compatible
                                             ``<quality>_published`` when it has one, else its
                                             quality), ``train loss`` (train_loss_final), the
                                             side effect, and the counts the suite records
                                             (``train samples``, ``train total tokens``)
meta_info.model_info                         provenance.base_model_hash: ``<id>@<revision>`` for
                                             a hub model (id and sha), else the embedded model's
                                             weights hash as sha; created_at not known
meta_info.dataset_info                       not known (null): the hub datasets' commits
meta_info.package_info                       provenance.packages as ``<name>-version``;
                                             ``<name>-commit-hash`` null (a release)
meta_info.system_info                        provenance.hardware (``accelerator`` only on CUDA)
meta_info.pytorch_info                       not recorded (null)
===========================================  ================================================

Each document also holds a ``peftbench`` block, which the suite's app does not read: the result
file it came from, task, seed, which quality column was exported, the number of test items, the
memory measure, the test-generation memory peak, the provenance hashes, the training keys
without a suite name (``training_outside_suite``, under our names), the fields written
without a value (``unmeasured``), the stand-ins written (``filled``) and what keeps the suite's
app from loading the file (``app_missing``).

The suite's app casts some fields to integers and cannot load a folder in which one of them is
missing in a successful run (:data:`APP_INTEGERS`), nor show one without a base model id. With
``fill_for_app`` those get stand-ins, each named in ``peftbench.filled`` with what it is: the
memory peak for the reserved average and 99th percentile (an upper bound of both), the measured
training and evaluation time for the total time (a lower bound), ``max steps x batch size x
accumulation`` for the training samples (an upper bound: a last batch may be short), "unknown"
for a model id, 0 for anything else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from peftbench.analysis.published import FILE_SIZE_SENTINEL
from peftbench.interop.suite_keys import suite_train_config
from peftbench.tasks.spec import PublishedFormat, TaskSpec

#: ``peftbench.exported_by`` of every exported document.
EXPORTER = "peftbench export --format hf-method-comparison"


@dataclass(frozen=True)
class SuiteTask:
    """What the suite records for one of its tasks beyond the shared fields."""

    #: The task's folder in the suite (``<folder>/results/``).
    folder: str
    #: Packages of ``meta_info.package_info`` (the app reads ``<name>-version``).
    packages: tuple[str, ...]
    #: Keys of ``meta_info.dataset_info`` (one entry per hub dataset); empty: a flat entry.
    datasets: tuple[str, ...] = ()
    #: Counts of the last metrics entry: suite key -> result.json metric.
    counts: Mapping[str, str] = field(default_factory=dict)


#: The suite's tasks, by the name of the published format that maps to them (a task spec's
#: ``published.name``).
SUITE_TASKS = {
    "metamathqa": SuiteTask(
        "MetaMathQA",
        ("transformers", "peft", "datasets", "bitsandbytes", "torch"),
        ("metamath", "gsm8k"),
        {"train samples": "train_samples", "train total tokens": "train_tokens"},
    ),
    "image-gen": SuiteTask(
        "image-gen",
        ("transformers", "peft", "datasets", "diffusers", "torch"),
        counts={"train samples": "train_samples"},
    ),
}

#: Fields the suite's app casts to integers (a missing one stops it loading the folder); the
#: last metrics entry's counts are added per task.
APP_INTEGERS = (
    "run_info.total_time",
    "train_info.accelerator_memory_reserved_avg",
    "train_info.accelerator_memory_max",
    "train_info.accelerator_memory_reserved_99th",
    "train_info.train_time",
    "train_info.file_size",
    "train_info.num_trainable_params",
)
_FINAL = "train_info.metrics[-1]"
#: The app groups rows by the base model: a missing id stops it too.
_MODEL_ID = "run_info.train_config.model_id"


def _number(value: Any) -> Any:
    """A measured number, or NaN: the suite's "not measured"."""
    return math.nan if value is None else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _model(result: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(model_id, sha)`` of the base model the run fine-tuned."""
    identity = result["provenance"].get("base_model_hash")
    configured = (result.get("config") or {}).get("model_id")
    if not identity:
        return configured, None
    model_id, at, revision = identity.rpartition("@")
    if at and "/" in model_id:
        return model_id, revision  # a hub model: "<id>@<revision>"
    return configured or f"peftbench-embedded-{result['task']}", identity


def _quality(spec: TaskSpec, metrics: Mapping[str, Any]) -> tuple[str, Any]:
    """The column to publish as the suite's quality: the published-compatible one if measured."""
    compatible = spec.published.comparable_quality if spec.published else None
    if compatible is not None and metrics.get(compatible) is not None:
        return compatible, metrics[compatible]
    return spec.quality.name, metrics.get(spec.quality.name)


def _metrics(
    result: Mapping[str, Any], spec: TaskSpec, fmt: PublishedFormat, suite: SuiteTask
) -> tuple[list[dict[str, Any]], str]:
    """``train_info.metrics``: a validation entry per validation point, then the test entry."""
    metrics, curves = result["metrics"], result["curves"]
    losses = {p["step"]: p.get("loss") for p in curves.get("train_loss", []) if "step" in p}
    entries = []
    for point in curves.get(spec.valid_curve, []):
        entry = {"step": point["step"], fmt.valid_key: _number(point.get(spec.valid_value))}
        if losses.get(point["step"]) is not None:
            entry["train loss"] = losses[point["step"]]
        entries.append(entry)
    column, quality = _quality(spec, metrics)
    steps = [p["step"] for p in curves.get("train_loss", []) if "step" in p]
    final = {
        "step": metrics.get("train_steps") or (steps[-1] if steps else None),
        # Always there, NaN when not measured: it tells the format even of a run that failed
        # before its first evaluation.
        fmt.quality_key: _number(quality),
        "train loss": _number(metrics.get("train_loss_final")),
    }
    final |= {key: _number(metrics.get(metric)) for key, metric in suite.counts.items()}
    if fmt.side_effect_key is not None:
        final[fmt.side_effect_key] = _number(metrics.get(spec.side_effect.name))
    return [*entries, final], column


def _meta_info(result: Mapping[str, Any], suite: SuiteTask, sha: str | None) -> dict[str, Any]:
    provenance = result["provenance"]
    packages = provenance.get("packages") or {}
    hardware = provenance.get("hardware") or {}
    package_info: dict[str, Any] = {}
    for name in suite.packages:
        # Null commit: an installed release, as the suite writes for those.
        package_info |= {f"{name}-version": packages.get(name), f"{name}-commit-hash": None}
    package_info |= {
        f"{name}-version": version
        for name, version in packages.items()
        if name not in suite.packages and name != "python"
    }
    unknown = {"sha": None, "created_at": None}
    return {
        "model_info": {"sha": sha, "created_at": None},
        "dataset_info": {name: dict(unknown) for name in suite.datasets} or dict(unknown),
        "package_info": package_info,
        "system_info": {
            "system": hardware.get("system"),
            "release": None,
            "version": None,
            "machine": hardware.get("machine"),
            "processor": hardware.get("processor"),
            "accelerator": hardware.get("accelerator"),
        },
        "pytorch_info": None,
    }


def _unmeasured(document: Mapping[str, Any]) -> list[str]:
    """Paths of the suite fields written without a value (configs and error_msg aside)."""
    found = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif _missing(value) and not path.endswith("-commit-hash"):
            found.append(path)

    run_info = document["run_info"]
    for key in ("created_at", "total_time", "experiment_name", "peft_branch"):
        walk(run_info[key], f"run_info.{key}")
    walk(run_info["peft_worktree_is_dirty"], "run_info.peft_worktree_is_dirty")
    walk(run_info["train_config"].get("model_id"), _MODEL_ID)
    for key, value in document["train_info"].items():
        if key != "metrics":
            walk(value, f"train_info.{key}")
    walk(document["train_info"]["metrics"][-1], _FINAL)
    walk(document["meta_info"], "meta_info")
    return found


def _fill(document: dict[str, Any], result: Mapping[str, Any], paths: list[str]) -> dict:
    """Stand-ins for the missing integers the suite's app needs (see the module docstring)."""
    run_info, train_info = document["run_info"], document["train_info"]
    final, metrics, config = train_info["metrics"][-1], result["metrics"], result["config"]
    peak = train_info["accelerator_memory_max"]
    timed = [metrics.get("train_time_s"), metrics.get("eval_time_s")]
    samples = [config.get("max_steps"), config.get("batch_size")]
    rules = {
        "train_info.accelerator_memory_reserved_avg": (peak, "the memory peak (an upper bound)"),
        "train_info.accelerator_memory_reserved_99th": (peak, "the memory peak (an upper bound)"),
        "run_info.total_time": (
            None if None in timed else sum(timed),
            "training plus test evaluation time (a lower bound)",
        ),
        f"{_FINAL}.train samples": (
            None
            if None in samples
            else math.prod(samples) * config.get("grad_accumulation_steps", 1),
            "max steps x batch size x accumulation (an upper bound)",
        ),
    }
    sections = {
        "run_info": run_info,
        "run_info.train_config": run_info["train_config"],
        "train_info": train_info,
        _FINAL: final,
    }
    filled = {}
    for path in paths:
        value, how = rules.get(path, (None, ""))
        if path == _MODEL_ID:
            value, how = "unknown", "not recorded; 'unknown' so that the app can group by it"
        elif _missing(value):
            value, how = 0, "no value; 0 so that the app loads the file"
        section, _, key = path.rpartition(".")
        sections[section][key] = value
        filled[path] = how
    return filled


def result_document(
    result: Mapping[str, Any],
    spec: TaskSpec,
    *,
    fill_for_app: bool = False,
    source: str | None = None,
) -> dict[str, Any]:
    """The suite's result document of one validated ``result`` of task ``spec`` (whose
    ``published`` format must be one of :data:`SUITE_TASKS`); ``source`` is recorded as where
    it came from. See the module docstring for the mapping."""
    fmt = spec.published
    if fmt is None or fmt.name not in SUITE_TASKS:
        raise ValueError(f"task {spec.name} has no result format of the published suite")
    suite = SUITE_TASKS[fmt.name]
    metrics, provenance = result["metrics"], result["provenance"]
    model_id, sha = _model(result)
    entries, quality_column = _metrics(result, spec, fmt, suite)
    train_config, outside = suite_train_config(
        suite.folder, result["config"], {"model_id": model_id, "seed": result["seed"]}
    )
    document: dict[str, Any] = {
        "run_info": {
            "created_at": provenance.get("created_at"),
            "total_time": math.nan,
            "experiment_name": result["experiment"],
            "peft_branch": None,
            "peft_worktree_is_dirty": None,
            "train_config": train_config,
            "peft_config": result["peft_config"],
            "error_msg": result["error"] or "",
        },
        "train_info": {
            "accelerator_memory_reserved_avg": math.nan,
            "accelerator_memory_max": _number(metrics.get("train_memory_peak_bytes")),
            "accelerator_memory_reserved_99th": math.nan,
            "train_time": _number(metrics.get("train_time_s")),
            "file_size": _number(metrics.get("file_size_bytes")),
            "num_trainable_params": _number(metrics.get("trainable_params")),
            "num_total_params": _number(metrics.get("total_params")),
            "status": result["status"],
            "metrics": entries,
        },
        "meta_info": _meta_info(result, suite, sha),
    }
    unmeasured = _unmeasured(document)
    if "train_info.file_size" in unmeasured:
        # The suite's own value for "no size" (its importer, and ours, read it as unknown).
        document["train_info"]["file_size"] = FILE_SIZE_SENTINEL
    app_needs = [*APP_INTEGERS, *(f"{_FINAL}.{key}" for key in suite.counts), _MODEL_ID]
    gaps = [p for p in app_needs if p in unmeasured and p != "train_info.file_size"]
    filled = _fill(document, result, gaps) if fill_for_app and result["status"] == "success" else {}
    document["peftbench"] = {
        "exported_by": EXPORTER,
        "source": source,
        "task": result["task"],
        "seed": result["seed"],
        "quality_column": quality_column,
        "test_n": metrics.get("test_n"),
        "memory_measure": metrics.get("memory_measure"),
        "eval_memory_peak_bytes": metrics.get("eval_memory_peak_bytes"),
        "provenance": {
            key: provenance.get(key)
            for key in ("config_hash", "data_hash", "base_model_hash", "code_revision", "device")
        },
        "training_outside_suite": outside,
        "unmeasured": [path for path in unmeasured if path not in filled],
        "filled": filled,
        # What keeps the suite's app from loading the file (a successful run only).
        "app_missing": [p for p in gaps if p not in filled]
        if result["status"] == "success"
        else [],
    }
    return document
