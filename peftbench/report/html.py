"""HTML pieces every report page shares: the page shell (inline style and the table-sorting
script), safe JSON for script blocks, and sortable tables whose headers explain themselves.

Every page is one self-contained file (no network). Text from data goes through
``html.escape`` or, inside scripts, :func:`script_json`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from peftbench.analysis.glossary import fraction_columns, info, integer_columns
from peftbench.analysis.published import SOURCE_PUBLISHED


def script_json(value: Any) -> str:
    """JSON for a ``<script>`` block: ``<``, ``>``, ``&`` and line separators as \\u escapes.

    Plain json.dumps would let a string such as ``</script><script>...`` (an experiment
    name, an error message) end the script element and inject markup.
    """
    text = json.dumps(value, allow_nan=False, default=str)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


PAGE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem;
       color: #222; max-width: 1400px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; } h3 { font-size: 1rem; }
.caption { max-width: 70rem; font-size: 0.9rem; color: #444; }
.chart { margin: 0.5rem 0 1.5rem 0; }
.chart-error { color: #b00; font-weight: bold; }
table.sortable { border-collapse: collapse; font-size: 0.8rem; margin: 0.5rem 0 1.5rem 0; }
table.sortable th, table.sortable td { border: 1px solid #ccc; padding: 2px 6px; text-align: left;
       vertical-align: top; }
table.sortable th { background: #f0f0f0; cursor: pointer; position: sticky; top: 0; }
table.sortable th:after { content: " \\2195"; color: #999; }
table.sortable td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fff0f0; } tr.published td { background: #f4f8ff; }
tr.frontier td:first-child { font-weight: bold; }
details { margin: 0.3rem 0; } summary { cursor: pointer; }
pre { background: #f7f7f7; padding: 0.5rem; overflow-x: auto; font-size: 0.75rem; }
.warning { color: #8a4b00; }
"""


def page_html(title: str, body: str, head: str = "") -> str:
    """A self-contained HTML page: inline style, the table-sorting script, extra ``head``.

    ``title`` is plain text (escaped here); ``body`` and ``head`` are trusted HTML."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{PAGE_STYLE}</style>
{head}
</head>
<body>
<h1>{html.escape(title)}</h1>
{body}
{SORTABLE_SCRIPT}
</body>
</html>
"""


#: Click a column header of a ``table.sortable`` to sort by it (again to reverse). Cells
#: sort by their ``data-v`` value when present (raw numbers), else by text; empty last.
SORTABLE_SCRIPT = """<script>
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = th.dataset.order !== "asc";
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = ascending ? "asc" : "desc";
      function key(row) {
        var cell = row.cells[column];
        var raw = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
        var number = parseFloat(raw);
        return raw === "" ? null : (isNaN(number) || !/^[-+0-9.eE]+$/.test(raw) ? raw : number);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) return y === null ? 0 : 1;
        if (y === null) return -1;
        var order = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                            : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
</script>"""


# Shown as percentages.
_PROBABILITIES = {"frontier_prob", "lead_prob"}


def column_kinds() -> tuple[set[str], set[str]]:
    """(count columns, share-like columns) by the glossary: integers and three decimals."""
    return integer_columns(), fraction_columns()


def format_cell(
    column: str, value: Any, kinds: tuple[set[str], set[str]] | None = None
) -> tuple[str, str]:
    """(shown text, sort key) of one table cell; missing values show as "n/a" and sort last.

    ``kinds`` is :func:`column_kinds` (computed here when not given; pass it for many cells).
    """
    integers, fractions = kinds or column_kinds()
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "n/a", ""
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), ("1" if value else "0")
    if isinstance(value, int | np.integer) or column in integers:
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
        elif column in fractions or column.endswith(("_low", "_high")) or column == "lead":
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
    row_data: Callable[[pd.Series], dict[str, str]] | None = None,
) -> str:
    """A sortable HTML table of ``columns`` of ``table``; headers explain themselves on hover.

    Every cell is escaped. Numeric cells carry their raw value in ``data-v`` so the sort is
    numeric; missing values read "n/a" and sort last. ``row_data`` gives each row's
    ``data-*`` attributes (name without the prefix -> value; both escaped), for a page's
    script to read.
    """
    columns = [c for c in columns if c in table.columns]
    head = "".join(
        f'<th title="{html.escape(text)}">{html.escape(header)}</th>'
        for header, text in (info(c, quality) for c in columns)
    )
    kinds = column_kinds()
    body = []
    for _, row in table.iterrows():
        cells = []
        for column in columns:
            text, key = format_cell(column, row[column], kinds)
            css = ' class="num"' if _is_number(key) else ""
            cells.append(f'<td{css} data-v="{html.escape(key)}">{html.escape(text)}</td>')
        css = f' class="{html.escape(row_class(row))}"' if row_class else ""
        data = "".join(
            f' data-{html.escape(name)}="{html.escape(value)}"'
            for name, value in (row_data(row) if row_data else {}).items()
        )
        body.append(f"<tr{css}{data}>{''.join(cells)}</tr>")
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
        header, text = info(column, quality)
        if text:
            items.append(f"<dt><b>{html.escape(header)}</b></dt><dd>{html.escape(text)}</dd>")
    return f"<details><summary>What the columns mean</summary><dl>{''.join(items)}</dl></details>"


def row_class(row: pd.Series) -> str:
    """CSS classes of a summary or frontier row: failed, published, frontier."""
    classes = []
    if row.get("status") not in (None, "success") and not pd.isna(row.get("status")):
        classes.append("failed")
    if row.get("source") == SOURCE_PUBLISHED:
        classes.append("published")
    if row.get("on_frontier") is True or row.get("on_frontier") is np.True_:
        classes.append("frontier")
    return " ".join(classes)
