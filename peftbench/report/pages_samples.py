"""The samples page of a task whose runs write a sample grid (its spec's ``samples_file``):
every run's grid embedded as a base64 PNG, so the page is self-contained."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peftbench.core.layout import BASE_METHOD
from peftbench.report.frontier_text import interval_text
from peftbench.report.html import page_html
from peftbench.tasks import registry

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_SAMPLES_STYLE = """<style>
figure { margin: 0.5rem 0 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ccc; }
figcaption { font-size: 0.9rem; margin-bottom: 0.3rem; }
</style>"""


def sample_tasks() -> list[str]:
    """Tasks whose runs write a sample grid (a ``samples_file`` in their spec)."""
    return [spec.name for spec in registry.known() if spec.samples_file]


def _run_metrics_text(result: Mapping[str, Any]) -> str:
    """The run's quality with its interval and its side effect, as plain text."""
    spec = registry.get(result["task"])
    values = result["metrics"]
    quality, side_effect = spec.quality.name, spec.side_effect.name
    low, high = (values.get(column) for column in spec.ci_columns)
    parts = []
    if values.get(quality) is not None:
        parts.append(f"{quality} {interval_text(values[quality], low, high)}")
    if values.get(side_effect) is not None:
        parts.append(f"{side_effect} {values[side_effect]:.3f}")
    return ", ".join(parts)


def _sample_figure(result: Mapping[str, Any], path: Path) -> str:
    """One run's sample grid embedded as a base64 PNG, or a line saying why there is none."""
    # The experiment is the section heading; the alt text names it too.
    run = f"seed {result['seed']} · {result['status']}"
    label = f"{result['experiment']} · {run}"
    details = _run_metrics_text(result)
    caption = f"<b>{html.escape(run)}</b>" + (f" · {html.escape(details)}" if details else "")
    data = path.read_bytes() if path.is_file() else None
    if data is not None and data.startswith(_PNG_SIGNATURE):
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        content = f'<img src="{uri}" alt="{html.escape(label)}: sample grid">'
    else:
        problem = (
            f"No sample grid: {result.get('error') or 'the run wrote none'}."
            if data is None
            else f"{path.name} is not a PNG image; not shown."
        )
        content = f'<p class="warning">{html.escape(problem)}</p>'
    return f"<figure><figcaption>{caption}</figcaption>{content}</figure>"


def samples_page(task: str, runs: Sequence[tuple[Mapping[str, Any], Path | str]]) -> str:
    """HTML page with the sample grid of every run of ``task``, embedded (self-contained).

    ``runs`` are (result, run folder) pairs; a run's grid is the task's ``samples_file`` in
    its folder (rows: sample prompts; left half the base model, right half the fine-tuned
    model, same noise seeds). Runs are grouped by experiment, the base model first, then by name and seed;
    a run without a grid (a failed run) is listed with its error instead.
    """
    spec = registry.get(task)
    if not spec.samples_file:
        raise ValueError(f"task {task} has no samples_file: its runs write no sample grid")
    runs = sorted(
        ((r, Path(folder)) for r, folder in runs if r["task"] == task),
        key=lambda run: (run[0]["method"] != BASE_METHOD, run[0]["experiment"], run[0]["seed"]),
    )
    parts = [
        '<p class="caption">'
        + html.escape(
            "Sample images of every run. Each grid has one row per sample prompt: on the left "
            "the base model, on the right the fine-tuned model, generated from the same noise "
            "seeds, so a difference is what fine-tuning changed. The base model without "
            "fine-tuning comes first, as the reference. Under each name: the run's test "
            f"quality with its 95% interval and its {spec.side_effect.name}."
        )
        + "</p>"
    ]
    if not runs:
        parts.append("<p>No runs.</p>")
    experiment = None
    for result, folder in runs:
        if result["experiment"] != experiment:
            experiment = result["experiment"]
            parts.append(f"<h2>{html.escape(experiment)}</h2>")
        parts.append(_sample_figure(result, folder / spec.samples_file))
    return page_html(f"{task}: sample images", "\n".join(parts), head=_SAMPLES_STYLE)
