"""The frontier chart's pixel geometry: scales, ticks, text sizes and the greedy label placement
(peftbench/report/chart_layout.py); the palette (peftbench/report/chart_palette.py)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from peftbench.report.chart_layout import (
    GAP,
    Box,
    Label,
    Scale,
    compact_number,
    linear_ticks,
    log_ticks,
    marker_box,
    padded_domain,
    place_labels,
    place_line_label,
    text_size,
)
from peftbench.report.chart_palette import MARKERS, experiment_markers, method_color

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


def test_scale_maps_both_ways():
    linear = Scale(2.0, 6.0, 400)
    assert linear.to_px(2.0) == 0 and linear.to_px(6.0) == 400 and linear.to_px(3.0) == 100
    flipped = Scale(0.0, 1.0, 300, flip=True)  # y: the top of the plot is pixel 0
    assert flipped.to_px(1.0) == 0 and flipped.to_px(0.25) == 225
    log = Scale(10.0, 10_000.0, 300, log=True)
    assert log.to_px(100.0) == pytest.approx(100)
    for scale, value in ((linear, 4.2), (flipped, 0.7), (log, 3_000.0)):
        assert scale.from_px(scale.to_px(value)) == pytest.approx(value)


def test_padded_domain():
    assert padded_domain([1.0, 3.0], log=False) == pytest.approx((0.86, 3.14))
    low, high = padded_domain([0.0, 10.0], log=False)
    assert -1 < low < 0 and high > 10  # a point on 0 keeps its marker, no negative ticks
    assert padded_domain([0.5, 2.0], log=False)[0] > 0
    low, high = padded_domain([100.0, 100_000.0], log=True)
    assert low < 100 and high > 100_000 and low > 0
    assert padded_domain([], log=True) == (1.0, 10.0)


def test_linear_ticks_are_round_and_fit():
    ticks, decimals = linear_ticks(0.00643, 0.00837, 8)
    assert len(ticks) <= 8 and decimals == 4
    assert all(0.00643 <= t <= 0.00837 for t in ticks)
    steps = {round(b - a, 10) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and steps.pop() in (0.0002, 0.0005, 0.001)
    assert linear_ticks(0.0, 1.0, 3) == ([0.0, 0.5, 1.0], 1)


def test_log_ticks_never_crowd():
    # Two decades: 1, 2 and 5 times powers of ten, never 20,000 beside 30,000.
    ticks = log_ticks(150.0, 40_000.0, 12)
    assert ticks == [200, 500, 1_000, 2_000, 5_000, 10_000, 20_000]
    # Nine decades in little room: every other power of ten.
    ticks = log_ticks(50.0, 5e9, 5)
    assert len(ticks) <= 5 and all(math.log10(t).is_integer() for t in ticks)
    assert [compact_number(t) for t in (200, 20_000, 3e6, 1e9, 0.5)] == [
        "200",
        "20k",
        "3M",
        "1B",
        "0.5",
    ]


@pytest.mark.skipif(not DEJAVU.is_dir(), reason="needs the DejaVu fonts (fonts-dejavu-core)")
@pytest.mark.parametrize("bold", [False, True])
def test_text_size_is_never_narrower_than_dejavu(bold):
    from PIL import ImageFont

    font = ImageFont.truetype(str(DEJAVU / f"DejaVuSans{'-Bold' if bold else ''}.ttf"), 11)
    texts = [
        "base model (no fine-tuning)",
        "0123456789",
        "lora/llama-3.2-3B-rank64-rslora",
        "WWWMMM%%%@@@",
        "full-finetuning/lr_0.001 · 100% ≈",
        "iiiilll...",
    ]
    for text in texts:
        assert text_size(text, 11, bold)[0] >= font.getlength(text), text


def test_placement_never_overlaps_in_a_crowd():
    # 40 points in a 200 x 150 pixel corner of a 640 x 420 plot, numbered 1..40.
    rng = np.random.default_rng(0)
    points = rng.uniform([20, 20], [220, 170], size=(40, 2))
    markers = [marker_box(x, y, 5) for x, y in points]
    labels = [Label(str(i + 1), x, y, 5) for i, (x, y) in enumerate(points)]
    placed = place_labels(labels, markers, 640, 420)
    assert all(p is not None for p in placed)
    boxes = [p.box for p in placed]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.hits(b)
    for box in boxes:
        assert box.inside(640, 420)
        assert not any(box.hits(m) for m in markers)
    # Crowding pushes some labels away from their points: those get a leader line.
    assert any(p.leader for p in placed)


def test_a_free_label_sits_right_of_its_point():
    (alone,) = place_labels([Label("7", 100, 100, 5)], [], 640, 420)
    assert not alone.leader and alone.box.x0 - 100 == pytest.approx(5 + GAP)
    assert alone.cy == pytest.approx(100)


def test_placement_gives_up_rather_than_overlap():
    # A plot covered by one obstacle has no free spot: None, never an overlapping label.
    assert place_labels([Label("1", 50, 50, 5)], [Box(0, 0, 100, 100)], 100, 100) == [None]


def test_line_label_avoids_obstacles():
    obstacles = [Box(0, 80, 300, 120)]  # a band around the line at y=100 on the left
    spot = place_line_label("base model (no fine-tuning)", 100.0, obstacles, 640, 420)
    assert spot is not None and not any(spot.box.hits(o, GAP) for o in obstacles)
    assert spot.box.x0 > 300  # moved right along the line


def test_method_colours_do_not_depend_on_the_table():
    assert method_color("lora", "lora-like") == "#1f77b4"
    assert method_color("LoRA ", "lora-like") == method_color("lora", "lora-like")
    # A method outside the fixed list gets a stable shade of its family's hue.
    assert method_color("newmethod", "lora-like") == method_color("newmethod", "lora-like")
    assert method_color("oft", "orthogonal") != method_color("boft", "orthogonal")
    assert method_color("something", "unknown-family") == method_color("something", "other")


def test_markers_distinct_within_a_family_and_stable():
    experiments = [f"lora/r{i}" for i in range(len(MARKERS))] + ["dora/a", "oft/x", "oft/y"]
    rows = pd.DataFrame(
        {
            "experiment": experiments,
            "method": [e.split("/")[0] for e in experiments],
            "family": ["lora-like"] * (len(MARKERS) + 1) + ["orthogonal"] * 2,
        }
    )
    markers = experiment_markers(rows)
    lora_like = [markers[e] for e in experiments[: len(MARKERS)]]
    assert len(set(lora_like)) == len(MARKERS)  # every shape once
    # Past the shapes, dora takes a shape no experiment of its own colour has: told apart.
    assert (method_color("dora", "lora-like"), markers["dora/a"]) not in {
        (method_color("lora", "lora-like"), shape) for shape in lora_like
    }
    assert markers["oft/x"] != markers["oft/y"]  # each family starts afresh
    assert experiment_markers(rows.iloc[::-1]) == markers  # the table's order does not matter
