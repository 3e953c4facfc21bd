"""The samples page of a task whose runs write a sample grid (its spec's ``samples_file``).

Per sample prompt, one row: the prompt's text, a real image of that prompt where the prepared
data has one, the base model's image and every run's, side by side, each full size on a click
(plain HTML and CSS: the ``:target`` of a link, no script). Every image is inline (base64 PNG),
so the page is self-contained. Without the prepared data's manifest (which names the prompts),
or for a grid of another layout, a run's whole grid is shown instead, as written.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from peftbench.core.layout import BASE_METHOD
from peftbench.report.frontier_text import interval_text
from peftbench.report.html import page_html
from peftbench.report.samples_grid import (
    GridLayoutError,
    RealImage,
    concept_images,
    load_real,
    png_data_uri,
    read_manifest,
    real_images,
    split_sample_grid,
)
from peftbench.tasks import registry

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Width (CSS pixels) of an image in a row; smaller images are enlarged without smoothing.
THUMB_PX = 128

_SAMPLES_STYLE = f"""<style>
.cells {{ display: flex; flex-wrap: wrap; gap: 0.6rem; align-items: flex-start; }}
figure.cell {{ margin: 0; width: {THUMB_PX}px; }}
figure.cell img {{ width: {THUMB_PX}px; height: auto; border: 1px solid #ccc; display: block; }}
figure.cell img.pixels {{ image-rendering: pixelated; }}
figure.cell figcaption {{ font-size: 0.78rem; line-height: 1.2; margin-top: 0.2rem;
  overflow-wrap: anywhere; }}
figure.cell.reference figcaption, figure.cell.base figcaption {{ font-weight: bold; }}
figure.cell .none {{ width: {THUMB_PX - 12}px; height: {THUMB_PX - 12}px; padding: 6px;
  border: 1px dashed #bbb; color: #666; font-size: 0.78rem; }}
figure.cell .close {{ display: none; }}
/* Full size: the clicked cell (the link's target) covers the window until closed. */
figure.cell:target {{ position: fixed; inset: 0; width: auto; z-index: 10; display: flex;
  flex-direction: column; align-items: center; justify-content: center;
  background: rgba(0, 0, 0, 0.88); }}
figure.cell:target img {{ width: auto; height: auto; max-width: 95vw; max-height: 85vh; }}
figure.cell:target img.pixels {{ width: min(85vh, 95vw); }}
figure.cell:target figcaption {{ color: #fff; font-size: 1rem; }}
figure.cell:target .close {{ display: block; position: absolute; top: 0.8rem; right: 1.2rem;
  color: #fff; font-size: 1.4rem; text-decoration: none; }}
.prompt-text {{ font-family: monospace; background: #f4f4f4; padding: 0.2rem 0.4rem; }}
section.prompt {{ margin-bottom: 1.6rem; }}
figure:not(.cell) img {{ max-width: 100%; height: auto; border: 1px solid #ccc; }}
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


def _run_name(result: Mapping[str, Any]) -> str:
    return f"{result['experiment']} · seed {result['seed']}"


@dataclass
class _Run:
    """One run and what its grid gave: an image per prompt, or why not."""

    result: Mapping[str, Any]
    grid: Path
    tiles: list[tuple[Image.Image, Image.Image]] = field(default_factory=list)
    problem: str = ""


def _read_grid(run: _Run, prompts: int | None) -> None:
    """Fill ``run.tiles`` from its grid (``prompts`` rows), or ``run.problem``."""
    if not run.grid.is_file():
        run.problem = f"No sample grid: {run.result.get('error') or 'the run wrote none'}."
        return
    if not run.grid.read_bytes().startswith(_PNG_SIGNATURE):
        run.problem = f"{run.grid.name} is not a PNG image; not shown."
        return
    if prompts is None:
        return
    try:
        with Image.open(run.grid) as grid:
            run.tiles = split_sample_grid(grid, prompts)
    except (GridLayoutError, UnidentifiedImageError, OSError) as error:
        run.problem = f"Its grid cannot be cut into {prompts} prompts ({error}); shown whole."


def _cell(cell_id: str, back: str, uri: str, size: int, caption: str, kind: str, title: str) -> str:
    """A figure whose image opens full size on a click (CSS ``:target``) and closes again."""
    pixels = ' class="pixels"' if size < THUMB_PX else ""
    label = html.escape(caption)
    return (
        f'<figure class="cell {kind}" id="{cell_id}">'
        f'<a href="#{cell_id}" title="{html.escape(title)}: click for full size">'
        f'<img src="{uri}"{pixels} alt="{label}"></a>'
        f'<a class="close" href="#{back}">close ×</a>'
        f"<figcaption>{label}</figcaption></figure>"
    )


def _no_image(text: str, caption: str) -> str:
    return (
        f'<figure class="cell reference"><div class="none">{html.escape(text)}</div>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _whole_grid(run: _Run) -> str:
    """One run's grid as written, embedded as a base64 PNG, or a line saying why there is
    none (the page's layout before per-prompt rows, kept where those cannot be made)."""
    result = run.result
    status = f"seed {result['seed']} · {result['status']}"
    label = f"{result['experiment']} · {status}"
    details = _run_metrics_text(result)
    caption = f"<b>{html.escape(status)}</b>" + (f" · {html.escape(details)}" if details else "")
    data = run.grid.read_bytes() if run.grid.is_file() else None
    content = ""
    if run.problem:
        content = f'<p class="warning">{html.escape(run.problem)}</p>'
    if data is not None and data.startswith(_PNG_SIGNATURE):
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        content += f'<img src="{uri}" alt="{html.escape(label)}: sample grid">'
    return f"<figure><figcaption>{caption}</figcaption>{content}</figure>"


def _whole_grids(runs: Sequence[_Run]) -> list[str]:
    """Runs' grids as written (base | fine-tuned, a row per prompt) under a heading per
    experiment."""
    parts = []
    experiment = None
    for run in runs:
        if run.result["experiment"] != experiment:
            experiment = run.result["experiment"]
            parts.append(f"<h2>{html.escape(experiment)}</h2>")
        parts.append(_whole_grid(run))
    return parts


def _runs_table(runs: Sequence[_Run]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r.result['experiment'])}</td><td>{r.result['seed']}</td>"
        f"<td>{html.escape(str(r.result['status']))}</td>"
        f"<td>{html.escape(_run_metrics_text(r.result))}</td></tr>"
        for r in runs
    )
    return (
        "<table><thead><tr><th>experiment</th><th>seed</th><th>status</th>"
        f"<th>test quality [95% interval], side effect</th></tr></thead><tbody>{rows}</tbody>"
        "</table>"
    )


def _prompt_rows(
    prompts: Sequence[str], runs: Sequence[_Run], real: Mapping[str, RealImage]
) -> list[str]:
    """One section per prompt: its text, the real image, the base model, every run."""
    split = [run for run in runs if run.tiles]
    base_run = next((r for r in split if r.result["method"] == BASE_METHOD), None)
    source = base_run or (split[0] if split else None)
    parts = []
    for i, prompt in enumerate(prompts):
        row = f"prompt-{i + 1}"
        cells = []
        reference = real.get(prompt)
        if reference is not None:
            picture = load_real(reference)
            cells.append(
                _cell(
                    f"{row}-real",
                    row,
                    png_data_uri(picture),
                    max(picture.size),
                    f"real image ({reference.kind})",
                    "reference",
                    "real image",
                )
            )
        else:
            cells.append(_no_image("The data has no real image of this prompt.", "real image"))
        if source is not None:
            base = source.tiles[i][0]
            cells.append(
                _cell(
                    f"{row}-base",
                    row,
                    png_data_uri(base),
                    base.width,
                    "base model (no fine-tuning)",
                    "base",
                    "base model",
                )
            )
        for j, run in enumerate(split):
            if run is base_run:
                continue
            own_base, tuned = run.tiles[i]
            caption = _run_name(run.result)
            if source is not None and own_base.tobytes() != source.tiles[i][0].tobytes():
                # Its base image is not the base column's: other generation settings.
                caption += " (its base image differs from the base column's)"
            cells.append(
                _cell(
                    f"{row}-run{j}",
                    row,
                    png_data_uri(tuned),
                    tuned.width,
                    caption,
                    "run",
                    _run_name(run.result),
                )
            )
        parts.append(
            f'<section class="prompt" id="{row}"><h2>Prompt {i + 1}</h2>'
            f'<p class="prompt-text">{html.escape(prompt)}</p>'
            f'<div class="cells">{"".join(cells)}</div></section>'
        )
    return parts


def _concept_strip(manifest: Mapping[str, Any], data_dir: Path) -> str:
    """The first training images: the concept the runs were taught."""
    cells = []
    for k, image in enumerate(concept_images(dict(manifest), data_dir)):
        if not image.path.is_file():
            continue
        picture = load_real(image)
        cells.append(
            _cell(
                f"concept-{k + 1}",
                "concept",
                png_data_uri(picture),
                max(picture.size),
                f"training image {k + 1}",
                "reference",
                "training image",
            )
        )
    if not cells:
        return ""
    return (
        '<section class="prompt" id="concept"><h2>The concept (real training images)</h2>'
        f'<div class="cells">{"".join(cells)}</div></section>'
    )


def samples_page(
    task: str,
    runs: Sequence[tuple[Mapping[str, Any], Path | str]],
    data_dir: Path | str | None = None,
) -> str:
    """HTML page of every run's sample images of ``task``, side by side per prompt
    (self-contained).

    ``runs`` are (result, run folder) pairs; a run's grid is the task's ``samples_file`` in its
    folder (one row per sample prompt: the base model's image | the fine-tuned model's, same
    noise). ``data_dir`` is the prepared data (``results/<task>/data``): its manifest names the
    sample prompts and its real images; a prompt's real image is one of exactly that prompt
    (test, validation or training image), and the first training images show the concept.
    Runs are ordered base model first, then by experiment and seed; a run without a grid (a
    failed run) is listed with its error. Without ``data_dir`` (or a manifest in it), or for a
    grid that cannot be cut into the prompts, whole grids are shown per run.
    """
    spec = registry.get(task)
    if not spec.samples_file:
        raise ValueError(f"task {task} has no samples_file: its runs write no sample grid")
    ordered = sorted(
        ((r, Path(folder)) for r, folder in runs if r["task"] == task),
        key=lambda run: (run[0]["method"] != BASE_METHOD, run[0]["experiment"], run[0]["seed"]),
    )
    manifest = read_manifest(data_dir)
    prompts = list(manifest.get("sample_prompts", [])) if manifest else []
    items = [_Run(result, folder / spec.samples_file) for result, folder in ordered]
    for run in items:
        _read_grid(run, len(prompts) or None)
    intro = (
        "Sample images of every run, side by side per sample prompt: a real image of the "
        "prompt where the data has one, the base model without fine-tuning, then every run, "
        "all generated from the same noise seeds, so a difference between them is what "
        "fine-tuning changed. Click an image for full size. The table gives each run's test "
        f"quality with its 95% interval and its {spec.side_effect.name}."
    )
    parts = [f'<p class="caption">{html.escape(intro)}</p>']
    if not items:
        parts.append("<p>No runs.</p>")
        return page_html(f"{task}: sample images", "\n".join(parts), head=_SAMPLES_STYLE)
    if manifest is not None and data_dir is not None and any(run.tiles for run in items):
        parts.append(_runs_table(items))
        parts.append(_concept_strip(manifest, Path(data_dir)))
        parts += _prompt_rows(prompts, items, real_images(manifest, data_dir))
        whole = [run for run in items if not run.tiles]
        if whole:
            parts.append("<h2>Runs without per-prompt images</h2>")
            parts += _whole_grids(whole)
    else:
        parts.append(
            '<p class="warning">No per-prompt rows: the prepared data (its manifest names the '
            "sample prompts) was not found, or no grid fits it. Each run's grid follows: a row "
            "per prompt, the base model on the left, the fine-tuned model on the right.</p>"
        )
        parts += _whole_grids(items)
    return page_html(f"{task}: sample images", "\n".join(parts), head=_SAMPLES_STYLE)
