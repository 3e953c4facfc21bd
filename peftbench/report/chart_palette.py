"""Colours and marker shapes of the report's charts: one palette for every chart.

A method's colour depends on the method and its family alone, never on which other methods a
table holds, so ``results/<task>/pareto.html`` (this run's rows of one task) and the report (every
task, published rows too) give a method the same colour. Each family has a few hand-picked,
well-separated shades of its hue; the common methods of a family get the first ones.

Colours cannot tell apart two experiments of one method (lora/rank8 and lora/rank16), so every
experiment also gets a marker shape: distinct within its family and source while the family has
no more experiments than there are shapes (:data:`MARKERS`), and beyond that distinct among the
experiments of one colour, so no two experiments of a family look alike unless a single colour
has more experiments than there are shapes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import pandas as pd

from peftbench.analysis.families import family_order

#: Shades of each family's hue, most distinct first. Blues for the additive (LoRA-like)
#: methods, greens for the orthogonal ones, oranges for scaling, purples for prompts, reds for
#: full fine-tuning, greys and browns for the rest; the base model is black.
FAMILY_PALETTES: dict[str, tuple[str, ...]] = {
    "lora-like": (
        "#1f77b4",
        "#17becf",
        "#3949ab",
        "#0b3c6f",
        "#6baed6",
        "#00838f",
        "#7986cb",
        "#4a6a8a",
    ),
    "orthogonal": (
        "#2ca02c",
        "#00695c",
        "#8bc34a",
        "#1b5e20",
        "#66bb6a",
        "#827717",
        "#4db6ac",
        "#33691e",
    ),
    "multiplicative/scaling": (
        "#ff7f0e",
        "#a63603",
        "#f2b701",
        "#d94801",
        "#8c510a",
        "#fdae6b",
        "#bf812d",
        "#e6550d",
    ),
    "prompt-based": (
        "#9467bd",
        "#e377c2",
        "#54278f",
        "#ab47bc",
        "#7a0177",
        "#b39ddb",
        "#c51b8a",
        "#6a51a3",
    ),
    "full": ("#d62728", "#7f0000", "#fb6a4a", "#b71c1c"),
    "base": ("#000000",),
    "other": ("#7f7f7f", "#8c564b", "#bcbd22", "#525252", "#c49c94", "#5d4037"),
}

# The methods that most often share a chart get the first (most distinct) shades of their
# family, in this order; any other method gets a shade from a stable hash of its name.
_FIRST_SHADES: dict[str, tuple[str, ...]] = {
    "lora-like": ("lora", "loha", "lokr", "dora", "adalora", "lily", "vblora", "miss"),
    "orthogonal": ("oft", "boft", "hra", "road", "psoft", "osf", "goft"),
    "multiplicative/scaling": ("ia3", "vera", "beft", "ln_tuning", "pvera"),
    "prompt-based": ("prompt_tuning", "prefixtuning", "prefix_tuning", "ptuning", "p_tuning"),
    "full": ("full-finetuning", "full_finetuning", "full"),
}

#: Marker shapes, in the order experiments of one family get them. The base model's marker is
#: a black diamond, so no experiment gets a diamond. Past Vega's named shapes: a star, a
#: hexagon, an X, a pentagon and a bow tie (SVG paths in Vega's unit square).
MARKERS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle-up",
    "triangle-down",
    "cross",
    "triangle-right",
    "triangle-left",
    "M0,-1L0.24,-0.31L0.95,-0.31L0.38,0.12L0.59,0.81L0,0.4L-0.59,0.81L-0.38,0.12L-0.95,-0.31"
    "L-0.24,-0.31Z",
    "M1,0L0.5,0.87L-0.5,0.87L-1,0L-0.5,-0.87L0.5,-0.87Z",
    "M1,-0.54L0.46,0L1,0.54L0.54,1L0,0.46L-0.54,1L-1,0.54L-0.46,0L-1,-0.54L-0.54,-1L0,-0.46"
    "L0.54,-1Z",
    "M0,-1L0.95,-0.31L0.59,0.81L-0.59,0.81L-0.95,-0.31Z",
    "M-1,-1L0,0L-1,1Z M1,-1L0,0L1,1Z",
)

#: Line dashes matching :data:`MARKERS` position by position (learning curves: one dash per
#: experiment of a family, so two runs of one colour differ by line too).
DASHES: tuple[list[int], ...] = (
    [1, 0],
    [6, 3],
    [2, 2],
    [8, 3, 2, 3],
    [4, 4],
    [1, 3],
    [10, 4],
    [3, 2, 1, 2],
    [12, 2],
    [5, 2, 1, 2, 1, 2],
    [2, 5],
    [7, 2, 7, 6],
)


def method_color(method: str, family: str) -> str:
    """The colour of ``method`` (of ``family``): the same in every chart and table."""
    palette = FAMILY_PALETTES.get(family, FAMILY_PALETTES["other"])
    first = _FIRST_SHADES.get(family, ())
    key = method.strip().lower()
    if key in first:
        index = first.index(key)
    else:
        # crc32, not hash(): Python salts str hashes per process, the colour must not change.
        index = zlib.crc32(key.encode("utf-8")) + len(first)
    return palette[index % len(palette)]


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment (first occurrence), by family, method and experiment."""
    unique = rows.drop_duplicates("experiment")
    order = sorted(
        range(len(unique)),
        key=lambda i: (
            family_order(str(unique["family"].iloc[i])),
            str(unique["method"].iloc[i]),
            str(unique["experiment"].iloc[i]),
        ),
    )
    return unique.iloc[order]


def experiment_markers(rows: pd.DataFrame) -> dict[str, str]:
    """A marker shape per experiment of ``rows`` (columns ``experiment``, ``method``,
    ``family``; one source).

    Within a family every experiment gets a shape of its own while :data:`MARKERS` lasts;
    beyond that a shape no experiment of the same colour has yet, and only then a repeat.
    Shapes follow the family, method and experiment order (the order of the returned dict),
    so the same experiments always get the same shapes.
    """
    markers: dict[str, str] = {}
    used_in_family: dict[str, list[str]] = {}
    used_by_color: dict[str, set[str]] = {}
    for row in _ordered(rows).itertuples():
        family, color = str(row.family), method_color(str(row.method), str(row.family))
        family_used = used_in_family.setdefault(family, [])
        color_used = used_by_color.setdefault(color, set())
        free = [m for m in MARKERS if m not in family_used] or [
            m for m in MARKERS if m not in color_used
        ]
        # Only past len(MARKERS) experiments of one colour does a pair repeat (the numbers
        # still tell them apart).
        shape = free[0] if free else MARKERS[len(family_used) % len(MARKERS)]
        markers[str(row.experiment)] = shape
        family_used.append(shape)
        color_used.add(shape)
    return markers


def experiment_order(rows: pd.DataFrame, sources: Iterable[str]) -> list[tuple[str, str]]:
    """(source, experiment) pairs of ``rows`` in the charts' numbering order: by source (in
    the order of ``sources``), then family, method and experiment."""
    pairs = []
    for source in sources:
        subset = rows[rows["source"] == source]
        pairs += [(source, str(e)) for e in _ordered(subset)["experiment"]]
    return pairs
