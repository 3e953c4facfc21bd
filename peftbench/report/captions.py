"""Captions of the report's charts, in one place.

The chart pages show :func:`chart_caption` (HTML, with the task's quality spelled out); the
Snakemake report shows ``rules/captions/<chart>.rst``, generated from the same text by
:func:`write_rst` (``python -m peftbench.report.captions rules/captions``; a test checks that
the files are up to date). The .rst captions are Jinja templates that Snakemake fills in with
the rule's wildcards, so they name the task but cannot look up its spec.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

from peftbench.tasks import registry

#: What each trade-off chart's x axis is (keys: the cost axes of the report).
AXIS_CAPTIONS: dict[str, str] = {
    "memory": "Quality against peak training memory in GB (1e9 bytes): the memory a method "
    "needs to train. This run: on CUDA the allocator's peak reserved memory above the pre-load "
    "baseline; on a CPU the exact peak of live tensors in a training step, weights included "
    "(peak resident memory there is mostly allocator noise). Published values are peak "
    "reserved GPU memory of the published runs, a different model and GPU unless you ran the "
    "matching preset, hence their own panel when the ranges differ.",
    "time": "Quality against training time in minutes (this run: the sum of optimizer-step "
    "durations; published: wall time minus validation, which includes data preparation and "
    "test generation, so the two are not directly comparable).",
    "params": "Quality against trainable parameters after wrapping (log axis when they span "
    "more than two orders of magnitude; the base model has none and is drawn as the dashed "
    "reference line).",
    "file_size": "Quality against the size of the saved adapter in MB (1e6 bytes); for full "
    "fine-tuning the whole model. What it costs to store or ship one fine-tuned variant.",
}

#: The learning-curves chart; ``{validation}`` is the task's validation metric.
CURVES_CAPTION = (
    "Left: mean training loss per logging window. Right: the validation {validation} at each "
    "evaluation step. One line per run (experiment x seed), coloured by method (shades of its "
    "family's hue); only this workflow's runs (published curves use thousands of steps on "
    "another model)."
)

#: What every trade-off chart shares; ``{detail}`` says what the task's quality is.
COMMON_CAPTION = (
    "Quality is the task's test metric{detail}; with published rows on the chart, this run's "
    "rows hold the task's published-compatible score where it records one (scored by the "
    "published suite's rule; the axis title says so). Error bars: 95% bootstrap interval over "
    "test items (and seeds where there are several); a single run without per-item scores (a "
    "published result) has no bar and no share, and no lead involving it is judged within or "
    "beyond noise. The dashed step line joins the Pareto frontier "
    "(nothing else is both better and cheaper); each frontier point is labelled with the share "
    "of bootstrap draws in which it stays on the frontier, and a dashed ring with ≈ marks a "
    "point whose quality lead over the next (cheaper) frontier point is within noise: the extra "
    "cost may buy nothing. Colour: method, shaded by family; circles: this run; triangles: "
    "published; black dashed line or diamond: the base model without fine-tuning. Failed runs "
    "and runs without a value on the axis are not drawn (see the tables). Hover a point for its "
    "settings."
)

#: Every chart with a caption: the cost axes, then the learning curves.
CHARTS: tuple[str, ...] = (*AXIS_CAPTIONS, "curves")


def caption_text(chart: str, *, validation: str, detail: str) -> str:
    """Plain-text caption of ``chart`` (a :data:`CHARTS` key)."""
    if chart == "curves":
        return CURVES_CAPTION.format(validation=validation)
    return f"{AXIS_CAPTIONS[chart]} {COMMON_CAPTION.format(detail=detail)}"


def chart_caption(chart: str, task: str) -> str:
    """Caption (HTML, escaped) of one report chart of ``task``."""
    spec = registry.get(task)
    description = spec.quality_description or spec.quality.description
    text = caption_text(chart, validation=spec.valid_value, detail=f" ({task}: {description})")
    return f"<p>{html.escape(text)}</p>"


def rst_caption(chart: str) -> str:
    """The Snakemake report caption of ``chart``: the same text, the task from the wildcard."""
    text = caption_text(chart, validation="metric", detail="")
    return f"Task **{{{{ snakemake.wildcards.task }}}}**: {text}\n"


def write_rst(folder: Path | str) -> list[Path]:
    """Write ``<folder>/<chart>.rst`` for every chart; returns the paths."""
    paths = []
    for chart in CHARTS:
        path = Path(folder) / f"{chart}.rst"
        path.write_text(rst_caption(chart), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_rst(sys.argv[1] if len(sys.argv) > 1 else "rules/captions"):
        print(written)
