"""Report pages of tables and configurations: the sortable cross-task summary of every run,
and a task's effective configurations."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from peftbench.analysis.aggregate import CAPABILITY_COLUMNS
from peftbench.analysis.published import PublishedImport
from peftbench.report.html import glossary_html, html_table, page_html, row_class


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
        html_table(summary, list(summary.columns), row_class=row_class, table_id="summary")
    )
    parts.append(glossary_html(list(summary.columns)))
    capabilities = capabilities_table(summary)
    if not capabilities.empty:
        columns = list(capabilities.columns)
        parts.append(
            "<h2>Method capabilities</h2>"
            '<p class="caption">What each method of each task can do, as the installed PEFT '
            "says: merging and several adapters tried out on a tiny model by the training "
            "job, the rest read from the package (result.json capabilities).</p>"
            + html_table(capabilities, columns, table_id="capabilities")
            + glossary_html(columns)
        )
    return page_html("Summary of all runs", "\n".join(parts))


_CAPABILITY_KEYS = ["task", "method", "peft_type", "peft_version"]


def capabilities_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per task, method, PEFT type and peft version with its capability columns, from
    the summary rows that recorded them (empty when none did)."""
    columns = [*_CAPABILITY_KEYS, *CAPABILITY_COLUMNS]
    if summary.empty or not set(columns) <= set(summary.columns):
        return pd.DataFrame(columns=columns)
    rows = summary.loc[summary[CAPABILITY_COLUMNS].notna().any(axis=1), columns]
    rows = rows.astype(object).where(rows.notna(), None)
    return rows.drop_duplicates().sort_values(_CAPABILITY_KEYS, key=lambda c: c.astype(str))


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
            "capabilities": first.get("capabilities"),
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
