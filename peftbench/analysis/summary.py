"""Cross-task summary: one tidy row per run of this workflow, plus imported published results.

Built on :func:`peftbench.analysis.aggregate.summarize` (one row per experiment x seed,
readable units: GB = 1e9 bytes, minutes, MB = 1e6 bytes) with the method ``family``, the
``source`` ("this run" or "published"), a short ``key_settings`` string and ``created_at``.
Each task's frontier and order use its own quality column (its spec's). This run's rows also
carry ``predicted_memory_gb``, the peak the workflow predicted for the experiment before any run
(``results/<task>/memory_estimate.json``, read by :mod:`peftbench.analysis.predicted`). Written to
``results/summary.parquet`` and ``results/summary.csv``. Also: the per-item scores of a run
(its task's item file) and the learning curves in long form.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peftbench.analysis.aggregate import (
    TEXT_COLUMNS,
    frontier_flags,
    headline_memory,
    int_columns,
    sort_rows,
    summarize,
    summary_columns,
)
from peftbench.analysis.families import family_order, method_family
from peftbench.analysis.predicted import PREDICTED_COLUMN, Predictions
from peftbench.analysis.published import SOURCE_PUBLISHED, PublishedImport
from peftbench.core.io import atomic_path
from peftbench.core.layout import run_dir
from peftbench.core.search import base_experiment
from peftbench.tasks import registry

SOURCE_THIS_RUN = "this run"
SOURCES = (SOURCE_THIS_RUN, SOURCE_PUBLISHED)


def cross_task_columns() -> list[str]:
    """Column order of the cross-task summary (every known task's columns)."""
    columns = [c for c in summary_columns() if c != "on_frontier"]
    columns.insert(columns.index("task") + 1, "source")
    columns.insert(columns.index("name") + 1, "family")
    # The prediction beside the headline memory figure it is compared with.
    columns.insert(columns.index("memory_gb") + 1, PREDICTED_COLUMN)
    return [*columns, "key_settings", "created_at", "on_frontier"]


_TEXT_COLUMNS = [*TEXT_COLUMNS, "source", "family", "key_settings", "created_at"]

# Settings worth seeing in a tooltip, in this order; anything else is in the full config.
_PEFT_SETTINGS = [
    ("r", "r"),
    ("lora_alpha", "alpha"),
    ("init_r", "init_r"),
    ("target_r", "target_r"),
    ("use_dora", "dora"),
    ("use_rslora", "rslora"),
    ("num_virtual_tokens", "tokens"),
    ("boft_block_size", "block"),
    ("oft_block_size", "block"),
    ("block_size", "block"),
    ("d_initial", "d_initial"),
    ("target_modules", "targets"),
]


def key_settings(config: Mapping[str, Any] | None, peft_config: Mapping[str, Any] | None) -> str:
    """A short, human-readable digest of the settings that distinguish an experiment.

    E.g. ``"r=8 alpha=16 targets=q_proj,v_proj lr=0.001 steps=200 batch=32"``. Boolean
    switches are shown only when on; empty or null values are left out.
    """
    parts = []
    peft_config = peft_config or {}
    seen = set()
    for key, label in _PEFT_SETTINGS:
        value = peft_config.get(key)
        # r=0 is how OFT says "use the block size instead": not a setting worth showing.
        if value is None or value is False or value in ([], 0) or label in seen:
            continue
        if value is True:
            parts.append(label)
        elif isinstance(value, list | tuple):
            parts.append(f"{label}={','.join(map(str, value))}")
        else:
            parts.append(f"{label}={value}")
        seen.add(label)
    config = config or {}
    optimizer = config.get("optimizer_kwargs") or {}
    lr = optimizer.get("lr")
    if isinstance(lr, int | float) and not isinstance(lr, bool):
        parts.append(f"lr={lr:g}")
    elif lr is not None:
        parts.append(f"lr={lr}")
    if config.get("optimizer_type") not in (None, "AdamW"):
        parts.append(f"optimizer={config['optimizer_type']}")
    if config.get("max_steps") is not None:
        parts.append(f"steps={config['max_steps']}")
    if config.get("batch_size") is not None:
        parts.append(f"batch={config['batch_size']}")
    return " ".join(parts)


def _this_run_rows(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Summary rows of this workflow's results, with the cross-task columns added."""
    table = summarize(results)
    extra = {
        (r["task"], r["experiment"], r["seed"]): (
            key_settings(r.get("config"), r.get("peft_config")),
            r["provenance"].get("created_at"),
        )
        for r in results
    }
    keys = list(zip(table["task"], table["experiment"], table["seed"], strict=True))
    table["key_settings"] = [extra[k][0] for k in keys]
    table["created_at"] = [extra[k][1] for k in keys]
    table["source"] = SOURCE_THIS_RUN
    table["family"] = [
        method_family(m, p) for m, p in zip(table["method"], table["peft_type"], strict=True)
    ]
    return table


def _published_rows(published: PublishedImport) -> pd.DataFrame:
    rows = []
    for row, config in zip(published.rows, published.configs, strict=True):
        rows.append({**row, "key_settings": key_settings(config["config"], config["peft_config"])})
    return pd.DataFrame.from_records(rows)


def normalize(table: pd.DataFrame) -> pd.DataFrame:
    """Give ``table`` every cross-task column with its dtype, and mark the frontiers.

    Accepts older per-task summaries (``results/<task>/summary.csv``) too: missing columns
    are derived (``family``) or defaulted (``source`` = this run; metrics NaN). ``on_frontier``
    is recomputed per task and source, among successful rows only, over the task's quality
    (max) and ``train_memory_gb`` (min). Rows are sorted by task, source, base model first,
    quality descending (missing last), experiment and seed.
    """
    table = table.copy()
    columns = cross_task_columns()
    counts = set(int_columns())
    for column in columns:
        if column not in table.columns:
            table[column] = None
    if table["source"].isna().any():
        table["source"] = table["source"].fillna(SOURCE_THIS_RUN)
    missing_family = table["family"].isna()
    if missing_family.any():
        table.loc[missing_family, "family"] = [
            method_family(m, p)
            for m, p in zip(
                table.loc[missing_family, "method"],
                table.loc[missing_family, "peft_type"],
                strict=True,
            )
        ]
    for column in columns:
        if column in counts:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
        elif column in _TEXT_COLUMNS:
            # object dtype with None for missing, so CSV, Parquet and HTML all see "missing".
            values = table[column].astype(object)
            table[column] = values.where(values.notna(), None)
        elif column != "on_frontier":
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")

    table["memory_gb"] = headline_memory(table)  # derived: older summaries lack it
    table["on_frontier"] = frontier_flags(table, by=["task", "source"])
    source_order = table["source"].map(lambda s: SOURCES.index(s) if s in SOURCES else 9)
    table = sort_rows(table, {"_task": table["task"].astype(str), "_source": source_order})
    return table.loc[:, columns].reset_index(drop=True)


def add_predictions(table: pd.DataFrame, predictions: Mapping[tuple[str, str], Any]) -> None:
    """Set ``predicted_memory_gb`` of this run's rows of ``table`` from ``predictions``
    ((task, experiment) -> GB, see :func:`peftbench.analysis.predicted.read_predictions`), in
    place. Every seed of an experiment gets its prediction; rows without one (the base
    reference, an experiment that could not be estimated, published rows) stay empty."""
    if table.empty:
        return
    this_run = table["source"] == SOURCE_THIS_RUN
    keys = zip(table["task"], table["experiment"], this_run, strict=True)
    # The estimate predicts an experiment once; every point of its grid gets that prediction.
    table[PREDICTED_COLUMN] = [
        predictions.get((t, base_experiment(e))) if own else None for t, e, own in keys
    ]


def build_summary(
    results: Sequence[Mapping[str, Any]],
    published: PublishedImport | None = None,
    predictions: Predictions | None = None,
) -> pd.DataFrame:
    """The cross-task summary of validated ``results`` and the imported ``published`` rows;
    ``predictions`` ((task, experiment) -> predicted peak GB) fill ``predicted_memory_gb``."""
    parts = [_this_run_rows(results)]
    if published is not None and published.rows:
        parts.append(_published_rows(published))
    parts = [p for p in parts if not p.empty]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if predictions:
        add_predictions(table, predictions)
    return normalize(table)


def write_summary_files(
    table: pd.DataFrame, parquet_path: Path | str | None = None, csv_path: Path | str | None = None
) -> None:
    """Write the summary as Parquet and/or CSV, each atomically."""
    if parquet_path is not None:
        with atomic_path(parquet_path) as tmp:
            table.to_parquet(tmp, index=False)
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            table.to_csv(tmp, index=False)


def read_summary(path: Path | str) -> pd.DataFrame:
    """Read a summary (.parquet or .csv; cross-task or an older per-task one), normalised."""
    path = Path(path)
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return normalize(table)


def item_scores(folder: Path | str, task: str, comparable: bool = False) -> np.ndarray | None:
    """Per-test-item scores of one run of ``task`` (in the test set's fixed order), or None.

    Each line of the task's item file (its spec's ``item_file``, one JSON line per scored
    test item) scored by its spec's ``item_score`` (e.g. 0/1 correctness, or a similarity), or
    with ``comparable`` by ``published.comparable_item_score`` (the published suite's rule, see
    :mod:`peftbench.analysis.comparable`). None when the file is not there or is empty (a failed
    run, or results copied without their per-item files), when ``comparable`` and the task has
    no such scorer, or when any line lacks that score (a run older than it): a vector partly of
    another score would be resampled as if it were this one.
    """
    spec = registry.get(task)
    if not comparable:
        scorer = spec.item_score
    else:
        scorer = spec.published.comparable_item_score if spec.published is not None else None
    path = Path(folder) / spec.item_file
    if scorer is None or not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        scores = [scorer(json.loads(line)) for line in handle if line.strip()]
    if not scores or any(score is None for score in scores):
        return None
    return np.asarray(scores, dtype=float)


def table_item_scores(
    table: pd.DataFrame, results_root: Path | str | None, comparable: bool = False
) -> dict[Any, np.ndarray]:
    """Item scores of this run's rows of ``table`` keyed by row label (see ``item_scores``):
    of the task's own quality, or with ``comparable`` of its published-compatible score."""
    scores: dict[Any, np.ndarray] = {}
    if results_root is None:
        return scores
    for label, row in table.iterrows():
        if row.get("source") != SOURCE_THIS_RUN or pd.isna(row.get("seed")):
            continue
        folder = run_dir(results_root, row["task"], row["experiment"], row["seed"])
        found = item_scores(folder, row["task"], comparable)
        if found is not None:
            scores[label] = found
    return scores


def curves_table(
    results: Iterable[Mapping[str, Any]], published: PublishedImport | None = None
) -> pd.DataFrame:
    """Learning curves in long form: task, source, experiment, method, family, seed, step,
    metric ("train loss" | "validation"), value.

    "validation" is the task's validation curve (its spec's ``valid_curve``, read at
    ``valid_value``).
    """
    rows = []
    for result in results:
        base = {
            "task": result["task"],
            "source": SOURCE_THIS_RUN,
            "experiment": result["experiment"],
            "method": result["method"],
            "family": method_family(
                result["method"], (result.get("peft_config") or {}).get("peft_type")
            ),
            "seed": result["seed"],
        }
        curves = result.get("curves") or {}
        for point in curves.get("train_loss") or []:
            rows.append(
                {**base, "step": point["step"], "metric": "train loss", "value": point["loss"]}
            )
        spec = registry.get(result["task"])
        for point in curves.get(spec.valid_curve) or []:
            value = point[spec.valid_value]
            rows.append({**base, "step": point["step"], "metric": "validation", "value": value})
    if published is not None:
        families = {row["experiment"]: row["family"] for row in published.rows}
        for point in published.curves:
            rows.append(
                {
                    "task": point["task"],
                    "source": SOURCE_PUBLISHED,
                    "experiment": point["experiment"],
                    "method": point["method"],
                    "family": families.get(point["experiment"], "other"),
                    "seed": point["seed"],
                    "step": point["step"],
                    "metric": point["metric"],
                    "value": point["value"],
                }
            )
    columns = [
        "task",
        "source",
        "experiment",
        "method",
        "family",
        "seed",
        "step",
        "metric",
        "value",
    ]
    table = pd.DataFrame.from_records(rows, columns=columns)
    table["value"] = pd.to_numeric(table["value"], errors="coerce")
    return table


def families_of(table: pd.DataFrame) -> dict[str, str]:
    """method -> family over ``table``, ordered by family then method (for stable colours)."""
    pairs = {
        m: f for m, f in zip(table["method"], table["family"], strict=True) if isinstance(m, str)
    }
    return dict(sorted(pairs.items(), key=lambda item: (family_order(item[1]), item[0])))
