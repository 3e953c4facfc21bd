"""Load per-experiment result files and build the summary table.

Result files follow ``peftbench/schemas/result.schema.json`` and live at
``results/<task>/runs/<method>/<name>/seed<seed>/result.json``. The summary has one row per
result (experiment x seed) with raw units converted to readable ones (GB, minutes, MB). Its
columns are the shared ones plus every known task's own (its spec's quality, interval, side
effect and extra columns); a column of another task is missing. A result of a task the
registry does not know is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd

from peftbench.analysis.frontier import pareto_mask
from peftbench.analysis.glossary import integer_columns
from peftbench.analysis.search import choose, grid_table
from peftbench.core import inference
from peftbench.core.io import atomic_path
from peftbench.core.layout import BASE_METHOD
from peftbench.core.memcategories import CATEGORIES
from peftbench.tasks import registry
from peftbench.tasks.spec import Column

SCHEMA_PATH = Path(__file__).parents[1] / "schemas" / "result.schema.json"

# Shared columns in summary order; each task's columns go between them (see summary_columns).
_IDENTITY = ["task", "experiment", "method", "name", "seed", "status", "error", "peft_type"]
#: Summary columns of the live-tensor account's categories (``train_tensor_<category>_gb``).
TENSOR_COLUMNS = [f"train_tensor_{category}_gb" for category in CATEGORIES]
_COSTS = [
    "test_n",
    "memory_gb",
    "train_memory_gb",
    "train_memory_allocated_gb",
    "train_tensor_gb",
    *TENSOR_COLUMNS,
    "eval_memory_gb",
    "memory_measure",
    "train_time_min",
    "eval_time_min",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "file_size_mb",
]
_TRAINING = ["train_loss_final"]
#: Inference overhead (result.json metrics of the same names, peftbench.core.inference): the
#: latencies of a fixed generation unmerged, merged and without the adapter, their ratios, and
#: why a figure is missing; each task's throughputs are among its own columns.
INFERENCE_COLUMNS = list(inference.SHARED_KEYS)
#: What the run's PEFT method can do (result.json ``capabilities``, peftbench.core.capabilities):
#: yes/no/missing flags and the layer types it wraps.
CAPABILITY_FLAGS = ["mergeable", "multi_adapter", "mixed_adapters", "quantized_base"]
CAPABILITY_COLUMNS = [*CAPABILITY_FLAGS, "layer_types"]
#: The chosen point of an experiment's search grid and the grid's size (peftbench.analysis.search).
_SEARCH = ["search_point", "search_size"]
_PROVENANCE = [
    "lr",
    "max_steps",
    "config_hash",
    "code_revision",
    "peft_version",
    "torch_version",
    "transformers_version",
    "device",
    "cpu_numerics",
]

# Text stays text; counts are nullable Int64 (so the CSV shows "1234", not "1234.0");
# everything else (but the on_frontier flag) is float64 with NaN. The capability flags are
# kept as objects too: True, False or None (unknown), never 1.0/0.0.
TEXT_COLUMNS = [
    *(c for c in _IDENTITY if c != "seed"),
    "memory_measure",
    "search_point",
    "infer_note",
    *CAPABILITY_COLUMNS,
    *(c for c in _PROVENANCE if c not in ("lr", "max_steps")),
]

#: Provenance columns that should agree across a comparable set of results.
PROVENANCE_COLUMNS = [
    "peft_version",
    "torch_version",
    "transformers_version",
    "code_revision",
    "cpu_numerics",
]


def summary_columns() -> list[str]:
    """Column order of the summary table: identity, every known task's quality and interval,
    costs, side effects, training loss, the tasks' extra columns, settings and provenance."""
    specs = registry.known()
    quality = [name for s in specs for name in (s.quality.name, *s.ci_columns)]
    side_effects = [s.side_effect.name for s in specs]
    extras = [column.name for s in specs for column in s.columns]
    columns = [
        *_IDENTITY,
        *quality,
        *_COSTS,
        *side_effects,
        *_TRAINING,
        *extras,
        *INFERENCE_COLUMNS,
        *CAPABILITY_COLUMNS,
        *_SEARCH,
        *_PROVENANCE,
    ]
    return list(dict.fromkeys([*columns, "on_frontier"]))


def int_columns() -> list[str]:
    """Summary columns that are counts."""
    counts = integer_columns()
    return [c for c in summary_columns() if c in counts]


def float_columns() -> list[str]:
    """Summary columns that are measurements (float64 with NaN)."""
    other = {*int_columns(), *TEXT_COLUMNS, "on_frontier"}
    return [c for c in summary_columns() if c not in other]


def quality_column(task: str) -> str:
    """Name of ``task``'s headline quality column in the summary."""
    return registry.get(task).quality.name


@cache
def _validator() -> jsonschema.protocols.Validator:
    """Build (once) a validator for the result schema."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _error_field(error: jsonschema.ValidationError) -> str:
    """Dotted path of the field an error is about, e.g. ``metrics.test_accuracy``."""
    parts = [str(part) for part in error.absolute_path]
    # A "required" error is reported on the parent object; name the missing key instead.
    if error.validator == "required" and isinstance(error.instance, Mapping):
        for key in error.validator_value:
            if key not in error.instance and repr(key) in error.message:
                parts.append(str(key))
                break
    return ".".join(parts) or "(top level)"


def validate_result(document: Any, source: str = "<result>") -> None:
    """Raise ValueError naming ``source`` and the failing field(s) if ``document`` is invalid.

    Beyond the schema (the shared keys), the task must be known to the registry, every metric
    key of its spec (``TaskSpec.metrics``) must be present (null when unmeasured) and so must
    its validation curve (``valid_curve``, points with ``step`` and ``valid_value``). The
    inference-timing keys (``infer_*``) are optional: results written before them lack them.
    """
    errors = sorted(_validator().iter_errors(document), key=_error_field)
    if errors:
        details = "; ".join(f"{_error_field(e)}: {e.message}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ValueError(f"{source}: invalid result file: {details}{more}")
    try:
        spec = registry.get(document["task"])
    except registry.UnknownTaskError as exc:
        raise ValueError(f"{source}: {exc}") from exc
    problems = [
        f"metrics.{key}: {key!r} is a required property"
        for key in spec.metrics
        if key not in document["metrics"] and not inference.is_metric(key)
    ]
    curve = document["curves"].get(spec.valid_curve)
    if not isinstance(curve, list):
        problems.append(f"curves.{spec.valid_curve}: a list of points is required")
    else:
        problems += [
            f"curves.{spec.valid_curve}[{i}]: {spec.valid_value!r} and 'step' are required"
            for i, point in enumerate(curve)
            if not isinstance(point, Mapping) or not {"step", spec.valid_value} <= set(point)
        ]
    if problems:
        details = "; ".join(problems[:5])
        raise ValueError(f"{source}: invalid result file of task {spec.name}: {details}")


def load_results(paths: Sequence[Path | str]) -> list[dict[str, Any]]:
    """Read and schema-validate result files, in the given order.

    Raises ValueError naming the file (and the failing field) for unreadable JSON, a
    document that does not match the result schema or a task the registry does not know.
    """
    results = []
    for path in map(Path, paths):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        validate_result(document, source=str(path))
        results.append(document)
    return results


def _scaled(value: Any, divisor: float) -> float | None:
    """Divide a raw measurement, keeping missing values missing."""
    return None if value is None else value / divisor


def _package_version(packages: Mapping[str, Any], name: str) -> str | None:
    """Version string of one package from provenance.packages, or None if unrecorded."""
    version = packages.get(name)
    return None if version is None else str(version)


def _task_value(metrics: Mapping[str, Any], column: Column) -> Any:
    """A task column's value from the result's metrics (scaled when the spec says so)."""
    value = metrics.get(column.metric or column.name)
    return value if column.scale == 1.0 else _scaled(value, column.scale)


def _summary_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one validated result into a summary row (without on_frontier)."""
    try:
        spec = registry.get(result["task"])
    except registry.UnknownTaskError as exc:
        raise ValueError(f"result {result['experiment']} seed {result['seed']}: {exc}") from exc
    metrics = result["metrics"]
    config = result["config"] or {}
    provenance = result["provenance"]
    packages = provenance.get("packages") or {}
    peft_config = result.get("peft_config") or {}
    optimizer_kwargs = config.get("optimizer_kwargs") or {}

    trainable = metrics["trainable_params"]
    total = metrics["total_params"]
    trainable_pct = 100.0 * trainable / total if trainable is not None and total else None

    return {
        "task": result["task"],
        "experiment": result["experiment"],
        "method": result["method"],
        "name": result["name"],
        "seed": result["seed"],
        "status": result["status"],
        "error": result["error"],
        "peft_type": peft_config.get("peft_type"),
        # The task's own columns; other tasks' columns stay missing.
        **{column.name: _task_value(metrics, column) for column in spec.all_columns()},
        "test_n": metrics["test_n"],
        "train_memory_gb": _scaled(metrics["train_memory_peak_bytes"], 1e9),
        "train_memory_allocated_gb": _scaled(metrics["train_memory_allocated_peak_bytes"], 1e9),
        # Results written before tensor accounting have neither key.
        "train_tensor_gb": _scaled(metrics.get("train_tensor_peak_bytes"), 1e9),
        **{
            column: _scaled((metrics.get("train_tensor_breakdown") or {}).get(category), 1e9)
            for column, category in zip(TENSOR_COLUMNS, CATEGORIES, strict=True)
        },
        "eval_memory_gb": _scaled(metrics["eval_memory_peak_bytes"], 1e9),
        "memory_measure": metrics["memory_measure"],
        "train_time_min": _scaled(metrics["train_time_s"], 60.0),
        "eval_time_min": _scaled(metrics["eval_time_s"], 60.0),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": trainable_pct,
        "file_size_mb": _scaled(metrics["file_size_bytes"], 1e6),
        "train_loss_final": metrics["train_loss_final"],
        # Results written before the inference timing have none of its keys.
        **{column: metrics.get(column) for column in INFERENCE_COLUMNS},
        **_capability_values(result.get("capabilities")),
        "lr": optimizer_kwargs.get("lr"),
        "max_steps": config.get("max_steps"),
        "config_hash": provenance["config_hash"],
        "code_revision": provenance["code_revision"],
        "peft_version": _package_version(packages, "peft"),
        "torch_version": _package_version(packages, "torch"),
        "transformers_version": _package_version(packages, "transformers"),
        "device": provenance["device"],
        "cpu_numerics": _numerics_key(provenance),
    }


def _capability_values(capabilities: Mapping[str, Any] | None) -> dict[str, Any]:
    """The capability columns of a result's ``capabilities`` (None for full fine-tuning, the
    base model and results written before it was recorded: every column missing). Layer types
    are joined with ", "; "none" when the method wraps no layer (prompt learning)."""
    capabilities = capabilities or {}
    row: dict[str, Any] = {flag: capabilities.get(flag) for flag in CAPABILITY_FLAGS}
    layers = capabilities.get("layer_types")
    row["layer_types"] = None if layers is None else (", ".join(layers) or "none")
    return row


def _numerics_key(provenance: Mapping[str, Any]) -> str | None:
    """What decided the run's CPU floating-point results (kernels, BLAS, pinned settings,
    threads; ``peftbench.core.provenance.numerics``), None where unrecorded."""
    hardware = provenance.get("hardware") or {}
    return (hardware.get("numerics") or {}).get("key")


def headline_memory(table: pd.DataFrame) -> pd.Series:
    """The memory figure of frontiers and budgets (``memory_gb``), per row: CUDA and published
    rows keep the allocator's peak (``train_memory_gb``, what a GPU must have free); CPU rows
    take the exact live-tensor peak (``train_tensor_gb``), because peak RSS on a CPU is mostly
    allocator and kernel noise that ranks methods differently from run to run. A CPU row
    without tensor accounting (written before it existed) keeps its RSS figure."""
    rss = pd.to_numeric(table["train_memory_gb"], errors="coerce").astype("float64")
    if "train_tensor_gb" not in table.columns:
        return rss
    tensor = pd.to_numeric(table["train_tensor_gb"], errors="coerce").astype("float64")
    cpu = table["memory_measure"].astype(str).str.startswith("cpu")
    return tensor.where(cpu & tensor.notna(), rss)


def row_quality(table: pd.DataFrame) -> pd.Series:
    """Each row's headline quality: the value of its own task's quality column (float)."""
    quality = pd.Series(np.nan, index=table.index, dtype="float64")
    for task in table["task"].dropna().unique():
        rows = table["task"] == task
        column = quality_column(task)
        if column in table.columns:
            quality[rows] = pd.to_numeric(table.loc[rows, column], errors="coerce")
    return quality


def frontier_flags(table: pd.DataFrame, by: Sequence[str] = ("task",)) -> np.ndarray:
    """Pareto frontier of the task's quality (max) vs ``memory_gb`` (min), as booleans.

    Computed separately within each group of ``by`` (its first column is the task: a frontier
    never mixes tasks, whose qualities are different metrics), among successful rows only.
    """
    flags = np.zeros(len(table), dtype=bool)
    if table.empty:
        return flags
    # Grouping by a list yields tuple keys; the task is the first column of ``by``.
    for key, rows in table.groupby(list(by), sort=False, dropna=False):
        rows = rows[rows["status"] == "success"]
        if rows.empty:
            continue
        mask = pareto_mask(rows, {quality_column(key[0]): "max", "memory_gb": "min"})
        flags[table.index.get_indexer(mask.index[mask.to_numpy()])] = True
    return flags


def sort_rows(table: pd.DataFrame, leading: Mapping[str, pd.Series] | None = None) -> pd.DataFrame:
    """``table`` ordered by the ``leading`` keys (ascending), then base model first, quality
    descending (missing last), experiment and seed, so the order is deterministic."""
    leading = dict(leading or {})
    keys = pd.DataFrame(
        {
            **leading,
            "_not_base": table["method"] != BASE_METHOD,
            "_quality": row_quality(table),
            "_experiment": table["experiment"].astype(str),
            "_seed": table["seed"],
        },
        index=table.index,
    )
    order = keys.sort_values(
        list(keys.columns),
        ascending=[True] * len(leading) + [True, False, True, True],
        na_position="last",
        kind="stable",
    ).index
    return table.loc[order]


def summarize(results: Sequence[Mapping[str, Any]], choose_points: bool = True) -> pd.DataFrame:
    """Build the summary table: one row per result, columns as in :func:`summary_columns`.

    An experiment with a search grid keeps only the rows of the point chosen on validation
    (:func:`peftbench.analysis.search.choose`); ``choose_points=False`` keeps every point.

    Failed results are kept; metrics they could not measure are NaN. ``on_frontier`` marks
    the Pareto frontier of each task's quality (max) vs memory_gb (min) among
    successful rows only, per task. Rows are sorted by task, base model first, then by
    quality descending (missing last), then by experiment and seed.
    """
    rows = _point_rows(results)
    return _finish(choose(rows) if choose_points else rows)


def summarize_with_grid(
    results: Sequence[Mapping[str, Any]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary of :func:`summarize` and the search grids of every point
    (:func:`peftbench.analysis.search.grid_table`), from one pass over ``results``: the
    summary keeps the points the written grid marks chosen, computed once."""
    every = _finish(_point_rows(results))
    grid = grid_table(every)
    return _finish(choose(every, grid)), grid


def _point_rows(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One typed row per result, every grid point kept, before frontier flags and sorting."""
    columns = summary_columns()
    rows = [_summary_row(result) for result in results]
    df = pd.DataFrame(rows, columns=[c for c in columns if c != "on_frontier"])

    for column in float_columns():
        # lr comes from free-form config, so tolerate strings such as "1e-4"; the other
        # columns are schema-checked numbers or null.
        df[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
    for column in int_columns():
        df[column] = pd.to_numeric(df[column], errors="coerce").astype("Int64")

    df["memory_gb"] = headline_memory(df)
    return df


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its frontier flags, sorted, in the summary's column order."""
    df = df.reset_index(drop=True)
    df["on_frontier"] = frontier_flags(df)
    df = sort_rows(df, {"_task": df["task"].astype(str)})
    return df.reset_index(drop=True)[summary_columns()]


def provenance_warnings(df: pd.DataFrame) -> list[str]:
    """Return one warning per provenance column with more than one distinct value.

    Results produced by different package versions or code revisions may not be comparable,
    so the report should say so rather than silently mixing them.
    """
    warnings = []
    for column in PROVENANCE_COLUMNS:
        if column not in df.columns:
            continue
        counts = df[column].dropna().value_counts(sort=False)
        if len(counts) > 1:
            listed = ", ".join(
                f"{value} ({count} result{'s' if count != 1 else ''})"
                for value, count in sorted(counts.items(), key=lambda item: str(item[0]))
            )
            warnings.append(f"{column} differs across results: {listed}")
    return warnings


def write_summary(df: pd.DataFrame, csv_path: Path | str) -> None:
    """Write the summary table to ``csv_path`` atomically (no index column)."""
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
