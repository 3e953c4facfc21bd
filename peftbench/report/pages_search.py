"""The hyperparameter-search page of a task: validation quality across each experiment's grid
(what chose the point) and, in a separate table, the test quality of every point (how much the
choice matters), from :func:`peftbench.analysis.search.grid_table`."""

from __future__ import annotations

import html

import pandas as pd

from peftbench.report.html import page_html
from peftbench.tasks import registry


def _pivot(grid: pd.DataFrame, value: str, mark_chosen: bool) -> str:
    """One HTML table: an experiment per row, a grid point per column, ``value`` per cell."""
    points = list(dict.fromkeys(grid["point"]))
    head = "".join(f"<th>{html.escape(p)}</th>" for p in points)
    rows = []
    for experiment, cells in grid.groupby("experiment", sort=True):
        by_point = {row.point: row for row in cells.itertuples()}
        tds = []
        for point in points:
            row = by_point.get(point)
            number = getattr(row, value, float("nan")) if row is not None else float("nan")
            if row is None:
                text = ""
            elif pd.isna(number):
                text = "failed" if row.failed else "n/a"
            else:
                text = f"{number:.3f}" + (f" ({row.failed} failed)" if row.failed else "")
            chosen = row is not None and bool(row.chosen)
            css = ' class="num chosen"' if chosen and mark_chosen else ' class="num"'
            star = " ★" if chosen and mark_chosen else ""
            if chosen and mark_chosen and row.edge:
                star += f" (edge: {row.edge})"
            tds.append(f"<td{css}>{html.escape(text)}{star}</td>")
        rows.append(f"<tr><td>{html.escape(experiment)}</td>{''.join(tds)}</tr>")
    return (
        f'<table class="sortable"><thead><tr><th>experiment</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _edges(grid: pd.DataFrame) -> str:
    """A warning listing the experiments whose chosen value is an end of their grid."""
    at_edge = grid[grid["chosen"] & (grid["edge"] != "")]
    if at_edge.empty:
        return "<p>Every chosen value lies inside its grid.</p>"
    items = "".join(
        f"<li>{html.escape(row.experiment)}: {html.escape(row.point)} "
        f"(an end of the grid in {html.escape(row.edge)})</li>"
        for row in at_edge.sort_values("experiment").itertuples()
    )
    return (
        f'<p class="warning">{len(at_edge)} of {grid["experiment"].nunique()} chosen points sit '
        "at an end of their grid: a value beyond it may be better, so these experiments may be "
        f"under-tuned; widen their grids to know.</p><ul>{items}</ul>"
    )


def search_page(task: str, grid: pd.DataFrame) -> str:
    """The task's search page (a complete HTML document)."""
    spec = registry.get(task)
    title = f"{task}: hyperparameter search"
    if grid.empty:
        body = "<p>No experiment of this run has a search grid.</p>"
        return page_html(title, body)
    valid = spec.valid_value
    body = (
        "<p>Each experiment with a search grid ran once per point (per seed). The point marked ★ "
        f"has the best mean final validation {html.escape(valid)} over its seeds (ties: lower "
        "memory, then smaller values); only that point appears in the frontiers, tables and "
        "<code>advise</code>. Test quality was not looked at to choose.</p>"
        f"<h2>Validation {html.escape(valid)} across each grid (chooses the point)</h2>"
        + _pivot(grid, "valid", mark_chosen=True)
        + _edges(grid)
        + f"<h2>Sensitivity: test {html.escape(spec.quality.axis)} of every point</h2>"
        "<p>Shown after the choice, to judge how much the hyperparameter matters; a chosen "
        "point that is not the best here is the honest outcome of choosing on validation.</p>"
        + _pivot(grid, "quality", mark_chosen=True)
    )
    return page_html(title, body)
