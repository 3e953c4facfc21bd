"""The environment page: library versions and hardware behind every result, and the report's
own (probed here, from the installed packages and the platform)."""

from __future__ import annotations

import html
import json
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from peftbench.analysis.published import PublishedImport
from peftbench.report.html import page_html

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
