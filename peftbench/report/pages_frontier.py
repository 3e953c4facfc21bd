"""The noise-aware frontier page of one task: for every cost axis, one sortable table row per
experiment (quality with its bootstrap interval, P(frontier), lead over the next frontier
experiment; beside the memory axis, the predicted and the measured memory), then the Pareto rank
over several objectives at once. With published rows, it says which score this run's rows hold."""

from __future__ import annotations

import html
from collections.abc import Mapping

import pandas as pd

from peftbench.analysis.comparable import SCORE_COLUMN
from peftbench.analysis.glossary import info
from peftbench.analysis.noise import DEFAULT_BOOTSTRAP, RESULT_COLUMNS
from peftbench.analysis.summary import SOURCE_THIS_RUN, SOURCES
from peftbench.analysis.tables import AXES, MEMORY_DETAIL_COLUMNS
from peftbench.report.html import glossary_html, html_table, page_html, row_class
from peftbench.tasks import registry

#: How runs without per-item scores are treated (published ones, usually).
FALLBACK_NOISE = (
    "Runs without per-item scores are resampled from their stored 95% interval (a normal) "
    "where they have one. A single run with neither (published results: one seed, no per-item "
    "scores; noise model none) has no interval and no P(frontier), and a lead that involves it "
    "is not judged (lead verdict: cannot be judged): the difference of two single values says "
    "nothing about noise."
)


def _score_note(frontiers: Mapping[str, pd.DataFrame], quality: str) -> str:
    """Which score this run's rows hold, when it is not the quality itself (published rows
    beside them); "" otherwise."""
    scores: set[str] = set()
    for table in frontiers.values():
        if SCORE_COLUMN in table.columns and not table.empty:
            ours = table.loc[table["source"] == SOURCE_THIS_RUN, SCORE_COLUMN].dropna()
            scores |= set(ours) - {quality}
    if not scores:
        return ""
    described = " ".join(f"{name} ({info(name)[0]}): {info(name)[1]}" for name in sorted(scores))
    return (
        f"Published rows are shown, so this run's {quality} column holds its "
        f"{', '.join(sorted(scores))} (column score), the score comparable with them. "
        f"{described} Per-item scores and stored intervals of our own score do not apply to it."
    )


#: The columns of an axis's table: who, the quality with its interval, the cost, then every
#: column the noise-aware frontier computes (:data:`~peftbench.analysis.noise.RESULT_COLUMNS`,
#: so a new one shows up here), what was missing and the settings.
FRONTIER_COLUMNS = [
    "experiment",
    "family",
    "n_seeds",
    "noise",
    "{quality}",
    "{quality}_low",
    "{quality}_high",
    "{x}",
    *(
        c.replace("{q}", "{quality}")
        for c in RESULT_COLUMNS
        if c not in ("{q}_low", "{q}_high", "missing")
    ),
    "missing",
    "failed_seeds",
    "key_settings",
    SCORE_COLUMN,
]


def table_columns(axis: str, column: str, quality: str, table: pd.DataFrame) -> list[str]:
    """The columns of one axis's table: :data:`FRONTIER_COLUMNS` (the score only where it is
    not the quality itself); for the memory axis, the predicted and measured memory figures
    (:data:`MEMORY_DETAIL_COLUMNS`) beside it, those that ``table`` has a value of."""
    columns = [c.format(quality=quality, x=column) for c in FRONTIER_COLUMNS]
    if SCORE_COLUMN not in table.columns or (table[SCORE_COLUMN] == quality).all():
        columns.remove(SCORE_COLUMN)
    if axis == "memory":
        detail = [
            c
            for c in MEMORY_DETAIL_COLUMNS
            if c != column and c in table.columns and table[c].notna().any()
        ]
        at = columns.index(column) + 1
        columns[at:at] = detail
    return columns


def frontier_page(
    task: str,
    frontiers: Mapping[str, pd.DataFrame],
    multi: pd.DataFrame,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP.n_boot,
) -> str:
    """HTML page of the noise-aware frontier tables of one task (one section per axis)."""
    spec = registry.get(task)
    quality = spec.quality.name
    score_note = _score_note(frontiers, quality)
    sections = [
        '<p class="caption">'
        + html.escape(
            f"For each cost axis: every experiment with its quality ({quality}) and the 95% "
            f"bootstrap interval over {n_boot} draws that resample the test items (paired "
            "across experiments, so a shared hard item does not count as a difference) and, "
            "where an experiment has several seeds, the seeds. P(frontier) says how often "
            "it is on the frontier; for frontier experiments, the lead over the next frontier "
            "experiment by quality and whether it is within noise. Beside the memory axis: "
            "the memory predicted for the experiment before any run and the measured figures. "
            f"Rows sort by any column (click a header). {FALLBACK_NOISE}"
        )
        + "</p>"
    ]
    if score_note:
        sections.append(f'<p class="caption">{html.escape(score_note)}</p>')
    columns_used: list[str] = []
    for axis, column in AXES.items():
        table = frontiers.get(axis)
        if table is None or table.empty:
            continue
        sections.append(f"<h2>{html.escape(f'Quality vs {info(column)[0]}')}</h2>")
        for source in SOURCES:
            subset = table[table["source"] == source]
            if subset.empty:
                continue
            columns = table_columns(axis, column, quality, subset)
            columns_used += columns
            sections.append(f"<h3>{html.escape(source)}</h3>")
            sections.append(
                html_table(
                    subset,
                    columns,
                    quality=quality,
                    row_class=row_class,
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
        sections.append(html_table(multi, columns, quality=quality, row_class=row_class))
    sections.append(glossary_html(columns_used, quality))
    return page_html(f"{task}: noise-aware Pareto frontiers", "\n".join(sections))
