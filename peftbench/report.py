"""Report pages: noise-aware frontier tables, sortable summary, configs, environment.

Every page is one self-contained HTML file (inline CSS and JavaScript, no network). All text
that comes from data (experiment names, error messages, configs, versions) goes through
``html.escape`` or, inside scripts, :func:`peftbench.charts.script_json`.
"""

from __future__ import annotations

import html
import json
import platform
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from peftbench.charts import method_key, page_html
from peftbench.families import FAMILIES, FAMILY_DESCRIPTIONS, method_colors
from peftbench.pareto import pareto_rank, quality_frontier
from peftbench.published import PublishedImport
from peftbench.summary import SOURCE_PUBLISHED, SOURCES, quality_column

#: Cost axes of the report's trade-off charts: short name -> summary column.
AXES: dict[str, str] = {
    "memory": "train_memory_gb",
    "time": "train_time_min",
    "params": "trainable_params",
    "file_size": "file_size_mb",
}

#: Objectives of the "several objectives at once" table (besides the task's quality).
MULTI_OBJECTIVES: dict[str, str] = {
    "train_memory_gb": "min",
    "train_time_min": "min",
    "trainable_params": "min",
    "file_size_mb": "min",
    "forgetting": "min",
    "drift": "min",
}

#: Bootstrap settings of the report (draws, random seed, lead threshold).
N_BOOT = 1000
BOOT_SEED = 0
THRESHOLD = 0.95

#: Cost columns averaged over seeds for tooltips and tables.
_COST_COLUMNS = [
    "train_memory_gb",
    "train_time_min",
    "trainable_params",
    "file_size_mb",
    "forgetting",
    "drift",
]

#: Every column shown in the report: (header with unit, explanation). The explanations are
#: the report's captions for its tables; keep them in step with README.md and the schema.
COLUMN_INFO: dict[str, tuple[str, str]] = {
    "task": ("task", "Benchmark task (math: GSM8K-style word problems)."),
    "source": (
        "source",
        '"this run": measured by this workflow; "published": imported from the Hugging Face '
        "PEFT method-comparison suite (a different model and hardware unless you ran the "
        "matching preset).",
    ),
    "experiment": ("experiment", "Experiment folder, method/name."),
    "method": ("method", "Method folder name."),
    "name": ("name", "Experiment name within the method."),
    "family": (
        "family",
        "Method family: " + "; ".join(f"{f}: {FAMILY_DESCRIPTIONS[f]}" for f in FAMILIES) + ".",
    ),
    "seed": ("seed", "Random seed of the run (training order, initialisation)."),
    "status": (
        "status",
        "success or failed (canceled for a published run stopped early). Failed runs are "
        "listed, never on a frontier.",
    ),
    "error": ("error", "Exception type and message of a failed run."),
    "peft_type": ("PEFT type", "peft_type of the resolved PEFT config (empty: full fine-tuning)."),
    "test_accuracy": (
        "test accuracy",
        "Share (0-1) of test problems whose parsed final answer equals the reference, with "
        "greedy decoding.",
    ),
    "test_accuracy_ci_low": ("acc. CI low", "Lower end of the 95% Wilson interval of one run."),
    "test_accuracy_ci_high": ("acc. CI high", "Upper end of the 95% Wilson interval of one run."),
    "test_n": ("test n", "Number of test problems scored."),
    "similarity": (
        "similarity",
        "Published image generation: DINOv2 similarity (0-1) of generated to reference "
        "images, higher is better.",
    ),
    "drift": (
        "drift",
        "Published image generation: change of the images generated for unrelated prompts "
        "relative to the base model, lower is better.",
    ),
    "train_memory_gb": (
        "train memory (GB)",
        "Peak training memory in GB (1e9 bytes). This run: CUDA peak reserved memory above "
        "the pre-load baseline (weights included); on CPU, peak RSS above the loaded model "
        "(the extra memory training needs). Published: accelerator_memory_max, peak "
        "reserved memory over the whole run (MetaMathQA) or the training steps (image "
        "generation).",
    ),
    "train_memory_allocated_gb": (
        "allocated memory (GB)",
        "CUDA only: peak allocated (live tensor) memory during training, GB.",
    ),
    "eval_memory_gb": ("eval memory (GB)", "Peak memory of test-set generation alone, GB."),
    "memory_measure": ("memory measure", "Which memory figure train memory is (see above)."),
    "train_time_min": (
        "train time (min)",
        "Training time in minutes. This run: sum of optimizer-step durations (forward, "
        "backward, clipping, step), evaluation and data loading excluded. Published: wall "
        "time minus validation, which includes data preparation and test generation.",
    ),
    "eval_time_min": ("eval time (min)", "Test-set generation and scoring, minutes."),
    "train_tokens_per_s": (
        "tokens/s",
        "Non-padding training tokens per second of training time.",
    ),
    "trainable_params": ("trainable params", "Trainable parameters after wrapping (count)."),
    "total_params": ("total params", "All parameters of the wrapped model (count)."),
    "trainable_pct": ("trainable %", "Trainable parameters as a percentage of the total."),
    "file_size_mb": (
        "file size (MB)",
        "Size of the saved adapter in MB (1e6 bytes); for full fine-tuning the whole model.",
    ),
    "forgetting": (
        "forgetting",
        "Held-out loss after minus before fine-tuning (nats per token) on pretraining-style "
        "text; lower is better, negative means it improved.",
    ),
    "train_loss_final": ("final train loss", "Mean training loss of the last logging window."),
    "valid_accuracy_final": ("final valid acc.", "Validation accuracy at the last evaluation."),
    "lr": ("lr", "Learning rate of the optimizer."),
    "max_steps": ("steps", "Optimizer steps."),
    "config_hash": (
        "config hash",
        "sha256 of the effective training config and the adapter config.",
    ),
    "code_revision": ("code revision", "git commit of the workflow (+dirty: uncommitted changes)."),
    "peft_version": ("peft", "PEFT version."),
    "torch_version": ("torch", "PyTorch version."),
    "transformers_version": ("transformers", "Transformers version."),
    "device": ("device", "Device the run trained on."),
    "key_settings": ("key settings", "The settings that distinguish the experiment."),
    "created_at": ("created", "When the run finished (UTC)."),
    "on_frontier": (
        "on frontier",
        "On the Pareto frontier of point estimates (quality up, cost down) within its task "
        "and source.",
    ),
    "n_seeds": ("seeds", "Runs (seeds) of the experiment with every objective measured."),
    "n_items": ("items", "Test items per run behind the bootstrap (0: no per-item scores)."),
    "noise": (
        "noise model",
        "How quality noise is resampled: items (per-item correctness, paired across "
        "experiments), binomial (from accuracy and test n), normal (from an interval), none.",
    ),
    "quality_low": (
        "low",
        "Lower end of the 95% bootstrap interval of the quality (test items and seeds).",
    ),
    "quality_high": ("high", "Upper end of the 95% bootstrap interval."),
    "missing": (
        "missing",
        "Objectives with no value; such an experiment is never on the frontier.",
    ),
    "frontier_prob": (
        "P(frontier)",
        f"Share of {N_BOOT} bootstrap draws in which the experiment is on the frontier.",
    ),
    "next": ("next", "The next frontier experiment by quality (the next cheaper trade-off)."),
    "lead": ("lead", "Quality difference to the next frontier experiment."),
    "lead_low": ("lead low", "Lower end of the 95% bootstrap interval of the lead."),
    "lead_high": ("lead high", "Upper end of the 95% bootstrap interval of the lead."),
    "lead_prob": (
        "P(better)",
        "Share of bootstrap draws in which it is strictly better than the next (paired).",
    ),
    "intervals_overlap": ("CIs overlap", "Whether the two 95% quality intervals overlap."),
    "within_noise": (
        "within noise",
        f"Lead within noise: P(better) below {THRESHOLD:.0%}. Its extra cost may buy nothing.",
    ),
    "pareto_rank": (
        "Pareto rank",
        "Non-dominated sorting over all listed objectives at once: 1 = not dominated, 2 = "
        "dominated only by rank 1, ...; empty when an objective is missing.",
    ),
    "failed_seeds": ("failed seeds", "Runs of the experiment that failed."),
}

_PERCENT = {"test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high"}
_PROBABILITIES = {"frontier_prob", "lead_prob"}
_INTEGERS = {"seed", "test_n", "trainable_params", "total_params", "max_steps", "n_seeds"}
_INTEGERS |= {"n_items", "pareto_rank", "failed_seeds"}


def _info(column: str, quality: str | None = None) -> tuple[str, str]:
    if quality is not None and column == f"{quality}_low":
        return COLUMN_INFO["quality_low"]
    if quality is not None and column == f"{quality}_high":
        return COLUMN_INFO["quality_high"]
    return COLUMN_INFO.get(column, (column, ""))


def format_cell(column: str, value: Any) -> tuple[str, str]:
    """(shown text, sort key) of one table cell; missing values show as "n/a" and sort last."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "n/a", ""
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), ("1" if value else "0")
    if isinstance(value, int | np.integer) or column in _INTEGERS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            return str(value), str(value)
        return f"{number:,}", str(number)
    if isinstance(value, float | np.floating):
        number = float(value)
        if column in _PROBABILITIES:
            text = f"{number:.0%}"
        elif column == "lr":
            text = f"{number:.3g}"
        elif column in _PERCENT or column.endswith(("_low", "_high")) or column == "lead":
            text = f"{number:.3f}"
        elif abs(number) >= 100:
            text = f"{number:,.1f}"
        else:
            text = f"{number:.4g}"
        return text, repr(number)
    return str(value), str(value)


def html_table(
    table: pd.DataFrame,
    columns: Sequence[str],
    *,
    quality: str | None = None,
    row_class: Callable[[pd.Series], str] | None = None,
    table_id: str = "",
) -> str:
    """A sortable HTML table of ``columns`` of ``table``; headers explain themselves on hover.

    Every cell is escaped. Numeric cells carry their raw value in ``data-v`` so the sort is
    numeric; missing values read "n/a" and sort last.
    """
    columns = [c for c in columns if c in table.columns]
    head = "".join(
        f'<th title="{html.escape(_info(c, quality)[1])}">{html.escape(_info(c, quality)[0])}</th>'
        for c in columns
    )
    body = []
    for _, row in table.iterrows():
        cells = []
        for column in columns:
            text, key = format_cell(column, row[column])
            css = ' class="num"' if _is_number(key) else ""
            cells.append(f'<td{css} data-v="{html.escape(key)}">{html.escape(text)}</td>')
        css = f' class="{html.escape(row_class(row))}"' if row_class else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    identifier = f' id="{html.escape(table_id)}"' if table_id else ""
    return (
        f'<table class="sortable"{identifier}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def glossary_html(columns: Sequence[str], quality: str | None = None) -> str:
    """A definition list explaining ``columns`` (header, unit and meaning)."""
    items = []
    for column in dict.fromkeys(columns):
        header, text = _info(column, quality)
        if text:
            items.append(f"<dt><b>{html.escape(header)}</b></dt><dd>{html.escape(text)}</dd>")
    return f"<details><summary>What the columns mean</summary><dl>{''.join(items)}</dl></details>"


def _row_class(row: pd.Series) -> str:
    classes = []
    if row.get("status") not in (None, "success") and not pd.isna(row.get("status")):
        classes.append("failed")
    if row.get("source") == SOURCE_PUBLISHED:
        classes.append("published")
    if row.get("on_frontier") is True or row.get("on_frontier") is np.True_:
        classes.append("frontier")
    return " ".join(classes)


# ---------------------------------------------------------------------------------------------
# Noise-aware frontier tables
# ---------------------------------------------------------------------------------------------


def experiment_frontier(
    rows: pd.DataFrame,
    x: str,
    *,
    quality: str,
    items: Mapping[Any, np.ndarray] | None = None,
    objectives: Mapping[str, str] | None = None,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    threshold: float = THRESHOLD,
) -> pd.DataFrame:
    """Noise-aware frontier of one task and source: one row per experiment.

    ``rows`` are summary rows (experiment x seed). Runs that did not succeed take part with
    every objective missing, so a failed experiment is listed (``missing`` says what) but
    never on the frontier. ``objectives`` defaults to ``{quality: max, x: min}``. Adds the
    experiment's method, family, source, key settings, failed seeds and the mean of the cost
    columns over its successful seeds.
    """
    objectives = dict(objectives or {quality: "max", x: "min"})
    data = rows.copy()
    failed = data["status"] != "success"
    for column in objectives:
        data[column] = pd.to_numeric(data[column], errors="coerce").astype("float64")
        data.loc[failed, column] = np.nan
    result = quality_frontier(
        data, objectives, quality, items, n_boot=n_boot, seed=seed, threshold=threshold
    )
    ok = data[~failed]
    first = data.groupby("experiment", sort=False).first()
    means = ok.groupby("experiment", sort=False)[
        [c for c in _COST_COLUMNS if c in ok.columns and c not in objectives]
    ].mean()
    result = result.join(
        first[["task", "source", "method", "family", "key_settings"]], on="experiment"
    )
    result = result.join(means, on="experiment")
    result = result.join(
        data.assign(failed=failed).groupby("experiment")["failed"].sum().rename("failed_seeds"),
        on="experiment",
    )
    return result


def task_frontiers(
    summary: pd.DataFrame,
    task: str,
    items: Mapping[Any, np.ndarray] | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> dict[str, pd.DataFrame]:
    """Noise-aware frontier per cost axis (:data:`AXES`) of one task, both sources stacked.

    Each source is resampled on its own: published and this run's results come from
    different test sets and hardware, so one never dominates the other.
    """
    quality = quality_column(task)
    out = {}
    for axis, column in AXES.items():
        parts = []
        for source in SOURCES:
            rows = summary[(summary["task"] == task) & (summary["source"] == source)]
            if rows.empty:
                continue
            parts.append(
                experiment_frontier(
                    rows, column, quality=quality, items=items, n_boot=n_boot, seed=seed
                )
            )
        out[axis] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out


def multi_objective_table(summary: pd.DataFrame, task: str) -> pd.DataFrame:
    """Experiments of one task with their Pareto rank over several objectives at once.

    Objectives: the task's quality (max) and every column of :data:`MULTI_OBJECTIVES` that
    has at least one value in the task (min); point estimates (mean over successful seeds).
    Ranked within each source.
    """
    quality = quality_column(task)
    rows = summary[(summary["task"] == task) & (summary["status"] == "success")]
    objectives = {quality: "max"}
    objectives |= {c: d for c, d in MULTI_OBJECTIVES.items() if rows[c].notna().any()}
    parts = []
    for source in SOURCES:
        subset = rows[rows["source"] == source]
        if subset.empty:
            continue
        numeric = subset.groupby("experiment", sort=False)[list(objectives)].mean()
        labels = subset.groupby("experiment", sort=False)[["source", "family"]].first()
        table = labels.join(numeric).reset_index()
        table["pareto_rank"] = pareto_rank(table, objectives).to_numpy()
        parts.append(table.sort_values(["pareto_rank", quality], ascending=[True, False]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


FRONTIER_COLUMNS = [
    "experiment",
    "family",
    "n_seeds",
    "noise",
    "{quality}",
    "{quality}_low",
    "{quality}_high",
    "{x}",
    "on_frontier",
    "frontier_prob",
    "next",
    "lead",
    "lead_low",
    "lead_high",
    "lead_prob",
    "intervals_overlap",
    "within_noise",
    "missing",
    "failed_seeds",
    "key_settings",
]


def frontier_page(
    task: str,
    frontiers: Mapping[str, pd.DataFrame],
    multi: pd.DataFrame,
    *,
    n_boot: int = N_BOOT,
) -> str:
    """HTML page of the noise-aware frontier tables of one task (one section per axis)."""
    quality = quality_column(task)
    sections = [
        '<p class="caption">'
        + html.escape(
            f"For each cost axis: every experiment with its quality ({quality}) and the 95% "
            f"bootstrap interval over {n_boot} draws that resample the test items (paired "
            "across experiments, so a shared hard item does not count as a difference) and, "
            "where an experiment has several seeds, the seeds. P(frontier) says how often "
            "it is on the frontier; for frontier experiments, the lead over the next frontier "
            "experiment by quality and whether it is within noise. Rows sort by any column "
            "(click a header). Published results are resampled on their own "
            "(binomial from the accuracy and the test-set size)."
        )
        + "</p>"
    ]
    columns_used: list[str] = []
    for axis, column in AXES.items():
        table = frontiers.get(axis)
        if table is None or table.empty:
            continue
        columns = [c.format(quality=quality, x=column) for c in FRONTIER_COLUMNS]
        columns_used += columns
        sections.append(f"<h2>{html.escape(f'Quality vs {COLUMN_INFO[column][0]}')}</h2>")
        for source in SOURCES:
            subset = table[table["source"] == source]
            if subset.empty:
                continue
            sections.append(f"<h3>{html.escape(source)}</h3>")
            sections.append(
                html_table(
                    subset,
                    columns,
                    quality=quality,
                    row_class=_row_class,
                    table_id=f"{axis}-{source}",
                )
            )
    if not multi.empty:
        objective_columns = [
            c for c in multi.columns if c not in ("experiment", "source", "family", "pareto_rank")
        ]
        sections.append("<h2>Several objectives at once</h2>")
        sections.append(
            '<p class="caption">'
            + html.escape(
                "Pareto rank over " + ", ".join(objective_columns) + " together (quality up, "
                "every cost down; means over seeds). Rank 1 is the non-dominated set: no "
                "other experiment is at least as good on all of them and better on one."
            )
            + "</p>"
        )
        columns = ["experiment", "source", "family", "pareto_rank", *objective_columns]
        columns_used += columns
        sections.append(html_table(multi, columns, quality=quality, row_class=_row_class))
    sections.append(glossary_html(columns_used, quality))
    return page_html(f"{task}: noise-aware Pareto frontiers", "\n".join(sections))


# ---------------------------------------------------------------------------------------------
# Summary, configs, environment pages
# ---------------------------------------------------------------------------------------------


def summary_page(
    summary: pd.DataFrame, warnings: Sequence[str] = (), notes: Sequence[str] = ()
) -> str:
    """HTML page with the whole cross-task summary as one sortable table."""
    parts = []
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        parts.append(f'<h2>Warnings</h2><ul class="warning">{items}</ul>')
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append(
        '<p class="caption">One row per run (experiment x seed) of every task, this run and '
        "imported published results. Failed runs are kept (red) with their error; published "
        "rows are blue; frontier rows bold. Click a header to sort; hover it for its "
        "meaning.</p>"
    )
    parts.append(
        html_table(summary, list(summary.columns), row_class=_row_class, table_id="summary")
    )
    parts.append(glossary_html(list(summary.columns)))
    return page_html("Summary of all runs", "\n".join(parts))


def _pretty_json(value: Any) -> str:
    return html.escape(json.dumps(value, indent=2, sort_keys=True, default=str))


def configs_page(
    task: str,
    results: Sequence[Mapping[str, Any]],
    published: PublishedImport | None = None,
) -> str:
    """HTML page with every experiment's effective configuration, one collapsible block each.

    Seeds with the same config hash share a block. Published experiments follow, with the
    ``train_config`` and ``peft_config`` stored in their result files.
    """
    parts = [
        '<p class="caption">'
        + html.escape(
            "The effective training config (task defaults deep-merged with the experiment's "
            "training_params.json) and the resolved PEFT config (target modules expanded) "
            "that each run used, as stored in its result.json; plus provenance hashes."
        )
        + "</p>",
        "<h2>this run</h2>",
    ]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for result in results:
        if result["task"] != task:
            continue
        key = (result["experiment"], result["provenance"].get("config_hash", ""))
        groups.setdefault(key, []).append(result)
    for (experiment, config_hash), runs in sorted(groups.items()):
        seeds = ", ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        statuses = sorted({r["status"] for r in runs})
        first = runs[0]
        provenance = {
            k: first["provenance"].get(k)
            for k in ("config_hash", "data_hash", "base_model_hash", "code_revision")
        }
        errors = [f"seed {r['seed']}: {r['error']}" for r in runs if r.get("error")]
        body = {
            "config": first.get("config"),
            "peft_config": first.get("peft_config"),
            "provenance": provenance,
        }
        error_html = "".join(f'<p class="warning">{html.escape(e)}</p>' for e in errors)
        parts.append(
            f"<details><summary><b>{html.escape(experiment)}</b> · seeds {html.escape(seeds)}"
            f" · {html.escape('/'.join(statuses))} · config {html.escape(config_hash[:12])}"
            f"</summary>{error_html}<pre>{_pretty_json(body)}</pre></details>"
        )
    configs = [c for c in (published.configs if published else []) if c["task"] == task]
    if configs:
        parts.append("<h2>published</h2>")
        for config in sorted(configs, key=lambda c: c["experiment"]):
            body = {"train_config": config["config"], "peft_config": config["peft_config"]}
            parts.append(
                f"<details><summary><b>{html.escape(config['experiment'])}</b> · created "
                f"{html.escape(str(config['created_at']))}</summary>"
                f"<pre>{_pretty_json(body)}</pre></details>"
            )
    return page_html(f"{task}: effective configurations", "\n".join(parts))


#: Libraries whose versions the report itself records (they made the tables and charts).
REPORT_PACKAGES = ["pandas", "numpy", "pyarrow", "altair", "vl-convert-python", "snakemake"]


def report_environment() -> dict[str, str]:
    """Versions of Python and the report's libraries, and the machine the report ran on."""
    versions = {"python": platform.python_version()}
    for name in REPORT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["platform"] = platform.platform()
    return versions


def _key_value_table(values: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in values.items()
    )
    return f'<table class="sortable"><thead><tr><th>key</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>'


def environment_page(
    results: Sequence[Mapping[str, Any]],
    published: PublishedImport | None = None,
    *,
    report_versions: Mapping[str, str] | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """HTML page with the library versions and hardware behind every result.

    Runs are grouped by identical (packages, hardware, device); each group lists its runs.
    """
    parts = []
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        parts.append(
            f'<h2>Provenance warnings</h2><ul class="warning">{items}</ul>'
            '<p class="caption">Results made with different library versions or code may not '
            "be comparable.</p>"
        )

    def grouped(entries: Sequence[tuple[dict, dict, str, str]]) -> list[str]:
        groups: dict[str, list[str]] = {}
        payloads: dict[str, tuple[dict, dict, str]] = {}
        for packages, hardware, device, label in entries:
            key = json.dumps([packages, hardware, device], sort_keys=True, default=str)
            groups.setdefault(key, []).append(label)
            payloads[key] = (packages, hardware, device)
        blocks = []
        for number, (key, labels) in enumerate(groups.items(), start=1):
            packages, hardware, device = payloads[key]
            blocks.append(
                f"<h3>Environment {number}: {len(labels)} run(s), device "
                f"{html.escape(str(device))}</h3>"
                f"<h4>Libraries</h4>{_key_value_table(packages)}"
                f"<h4>Hardware</h4>{_key_value_table(hardware)}"
                f"<details><summary>Runs</summary><p>{html.escape(', '.join(labels))}</p></details>"
            )
        return blocks

    entries = [
        (
            dict(r["provenance"].get("packages") or {}),
            dict(r["provenance"].get("hardware") or {}),
            str(r["provenance"].get("device")),
            f"{r['task']}:{r['experiment']} seed {r['seed']}",
        )
        for r in results
    ]
    parts.append("<h2>this run</h2>")
    parts += grouped(entries) or ["<p>No runs.</p>"]
    if published is not None and published.environments:
        parts.append("<h2>published</h2>")
        parts += grouped(
            [
                (e["packages"], e["hardware"], str(e["device"]), f"{e['task']}:{e['experiment']}")
                for e in published.environments
            ]
        )
    parts.append("<h2>This report</h2>")
    parts.append(_key_value_table(report_versions or report_environment()))
    return page_html("Environment: library versions and hardware", "\n".join(parts))


def legend_colors(summary: pd.DataFrame) -> dict[str, str]:
    """Colour of every ``method_key`` in ``summary`` (all tasks and sources), stable order."""
    pairs = {}
    for method, family in zip(summary["method"], summary["family"], strict=True):
        if isinstance(method, str):
            pairs[method] = family
    colors = method_colors(pairs)
    order = sorted(
        pairs, key=lambda m: (FAMILIES.index(pairs[m]) if pairs[m] in FAMILIES else 99, m)
    )
    return {method_key(m, pairs[m]): colors[m] for m in order}


_CHART_CAPTIONS: dict[str, str] = {
    "memory": "Peak training memory in GB (1e9 bytes): the memory a method needs to train. "
    "Published values are peak reserved GPU memory of the published runs, a different model and "
    "GPU unless you ran the matching preset, hence their own panel when the ranges differ.",
    "time": "Training time in minutes (this run: the sum of optimizer-step durations; "
    "published: wall time minus validation, which includes data preparation and test "
    "generation, so the two are not directly comparable).",
    "params": "Trainable parameters after wrapping (log axis when they span more than two "
    "orders of magnitude; the base model has none and is drawn as the dashed reference line).",
    "file_size": "Size of the saved adapter in MB (1e6 bytes); for full fine-tuning the whole "
    "model. What it costs to store or ship one fine-tuned variant.",
    "curves": "Left: mean training loss per logging window. Right: validation accuracy at each "
    "evaluation step. One line per run; only this workflow's runs (published curves use "
    "thousands of steps on another model).",
}

_COMMON_CAPTION = (
    "Quality is the task's test metric (math: exact-match accuracy of the final answer, "
    "greedy decoding). Error bars: 95% bootstrap interval over test items (and seeds where "
    "there are several). The dashed step line joins the Pareto frontier (nothing else is both "
    "better and cheaper); each frontier point is labelled with the share of bootstrap draws in "
    "which it stays on the frontier, and a dashed ring with ≈ marks a point whose quality lead "
    "over the next (cheaper) frontier point is within noise: the extra cost may buy nothing. "
    "Colour: method, shaded by family; circles: this run; triangles: published; black dashed "
    "line or diamond: the base model without fine-tuning. Failed runs and runs without a value "
    "on the axis are not drawn (see the tables). Hover a point for its settings."
)


def chart_caption(chart: str, task: str) -> str:
    """Caption (HTML, escaped) of one report chart: ``chart`` is an :data:`AXES` key or "curves"."""
    text = _CHART_CAPTIONS[chart]
    if chart != "curves":
        text = f"{text} {_COMMON_CAPTION}"
    return f"<p>{html.escape(text)}</p>"
