"""Where the frontier chart's marks land, in pixels, so its labels can be placed in Python.

Vega lays text out without looking at other text, so labels of neighbouring points print over
each other. Here the axes get explicit domains (no "nice" rounding, no padding), which makes
the data-to-pixel mapping known exactly; labels are then placed greedily, nearest free spot
first, around their point, never over another label, a marker or an error bar, and always
inside the plot. A label that had to move away from its point gets a leader line. Tick values
are chosen here too, as many as fit side by side without touching.

Text sizes are estimated generously (never narrower than DejaVu Sans, one of the widest
sans-serif fonts a browser falls back to), because the browser that draws the chart picks
the font.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Height of a line of text, in em (DejaVu Sans: ascent + descent = 1.16 em).
_LINE_EM = 1.3
#: Pixels kept free between a label and anything else.
GAP = 3.0

# Advance widths (em) by character class, each at least the widest member's in DejaVu Sans
# (regular, bold), one of the widest sans-serif fonts a browser falls back to.
_NARROW = frozenset("ijl.,:;'|!")
_SEMI_NARROW = frozenset("()[]{}-/\\`ftr ")
_WIDE = frozenset("mwMW%@")
_EM = {
    False: {
        "narrow": 0.30,
        "semi": 0.42,
        "digit": 0.64,
        "lower": 0.64,
        "upper": 0.80,
        "wide": 1.0,
        "other": 0.84,
    },
    True: {
        "narrow": 0.47,
        "semi": 0.50,
        "digit": 0.70,
        "lower": 0.72,
        "upper": 0.86,
        "wide": 1.11,
        "other": 0.90,
    },
}


def _char_class(char: str) -> str:
    if char in _NARROW:
        return "narrow"
    if char in _SEMI_NARROW:
        return "semi"
    if char in _WIDE:
        return "wide"
    if char.isdigit():
        return "digit"
    if char.isascii() and char.islower():
        return "lower"
    if char.isascii() and char.isupper():
        return "upper"
    return "other"


def text_size(text: str, font_size: float, bold: bool = False) -> tuple[float, float]:
    """Estimated (width, height) in pixels of one line of ``text`` at ``font_size``: never
    narrower than DejaVu Sans draws it."""
    widths = _EM[bold]
    em = sum(widths[_char_class(char)] for char in text)
    return em * font_size + 2.0, _LINE_EM * font_size


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in pixels (y grows downwards)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @staticmethod
    def around(cx: float, cy: float, width: float, height: float) -> Box:
        return Box(cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)

    def hits(self, other: Box, gap: float = 0.0) -> bool:
        """Whether the boxes overlap or come closer than ``gap``."""
        return (
            self.x0 < other.x1 + gap
            and other.x0 < self.x1 + gap
            and self.y0 < other.y1 + gap
            and other.y0 < self.y1 + gap
        )

    def inside(self, width: float, height: float) -> bool:
        return self.x0 >= 0 and self.y0 >= 0 and self.x1 <= width and self.y1 <= height

    def nearest_point(self, x: float, y: float) -> tuple[float, float]:
        """The point of the box nearest to (x, y): where a leader line ends."""
        return min(max(x, self.x0), self.x1), min(max(y, self.y0), self.y1)


@dataclass(frozen=True)
class Scale:
    """A linear or log axis from ``low`` to ``high`` over ``pixels``; ``flip`` for y (pixel 0
    at the top)."""

    low: float
    high: float
    pixels: float
    log: bool = False
    flip: bool = False

    def _t(self, value: float) -> float:
        if self.log:
            return math.log10(value)
        return value

    def to_px(self, value: float) -> float:
        lo, hi = self._t(self.low), self._t(self.high)
        share = (self._t(value) - lo) / (hi - lo)
        return self.pixels * (1 - share if self.flip else share)

    def from_px(self, pixel: float) -> float:
        share = pixel / self.pixels
        share = 1 - share if self.flip else share
        lo, hi = self._t(self.low), self._t(self.high)
        value = lo + share * (hi - lo)
        return 10**value if self.log else value


def padded_domain(values: Sequence[float], log: bool, margin: float = 0.07) -> tuple[float, float]:
    """A domain around ``values`` with ``margin`` of its span on each side (in log space for
    a log axis); a single value gets a span of its own. Never below 0 for values that are not."""
    finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not finite:
        return (1.0, 10.0) if log else (0.0, 1.0)
    low, high = min(finite), max(finite)
    if log:
        lo, hi = math.log10(low), math.log10(high)
        pad = max((hi - lo) * margin, 0.15)
        return 10 ** (lo - pad), 10 ** (hi + pad)
    span = high - low
    pad = span * margin if span > 0 else max(abs(low) * 0.1, 1e-3)
    lo, hi = low - pad, high + pad
    # A share or a count starts at 0: a domain reaching just below it would print a negative
    # first tick. Kept a little below 0 when a value sits on 0, so its marker is not cut.
    if low >= 0 and lo < 0:
        lo = -pad / 2 if low == 0 else 0.0
    return lo, hi


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def linear_ticks(low: float, high: float, max_ticks: int) -> tuple[list[float], int]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside [low, high], at most
    ``max_ticks`` of them (at least two where the domain allows), and the decimals they need."""
    span = high - low
    if span <= 0:
        return [low], 0
    max_ticks = max(2, max_ticks)
    exponent = math.floor(math.log10(span / max_ticks))
    for power in (exponent, exponent + 1, exponent + 2):
        for mantissa in (1, 2, 5):
            step = mantissa * 10.0**power
            first = math.ceil(low / step - 1e-9)
            last = math.floor(high / step + 1e-9)
            if last - first + 1 <= max_ticks:
                ticks = [round(i * step, 12) for i in range(first, last + 1)]
                return ticks, _decimals(step)
    return [low, high], _decimals(span)


def log_ticks(low: float, high: float, max_ticks: int) -> list[float]:
    """Tick values of a log axis: powers of ten, with 2x and 5x between them when few decades
    are shown, at most ``max_ticks`` (every other decade, and so on, when more would not fit)."""
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        ticks = [
            m * 10.0**e for e in range(lo, hi + 1) for m in mantissas if low <= m * 10.0**e <= high
        ]
        if 2 <= len(ticks) <= max_ticks:
            return ticks
    decades = [10.0**e for e in range(lo, hi + 1) if low <= 10.0**e <= high]
    every = max(1, math.ceil(len(decades) / max(1, max_ticks)))
    return decades[::every] or [low, high]


def compact_number(value: float) -> str:
    """A short label of a log-axis tick: 500, 20k, 3M, 1B; small values as they are."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:g}{suffix}"
    return f"{value:g}"


#: The same labels as :func:`compact_number`, as a Vega expression (``labelExpr``).
COMPACT_LABEL_EXPR = (
    "abs(datum.value) >= 1e9 ? format(datum.value / 1e9, '~g') + 'B' : "
    "abs(datum.value) >= 1e6 ? format(datum.value / 1e6, '~g') + 'M' : "
    "abs(datum.value) >= 1e3 ? format(datum.value / 1e3, '~g') + 'k' : "
    "format(datum.value, '~g')"
)


@dataclass(frozen=True)
class Label:
    """Text to place next to a point at (``x``, ``y``) pixels whose marker has ``radius``."""

    text: str
    x: float
    y: float
    radius: float
    font_size: float = 11.0
    bold: bool = False


@dataclass(frozen=True)
class Placement:
    """Where a label went: its centre, its box, and whether it needs a leader line."""

    cx: float
    cy: float
    box: Box
    leader: bool


# Directions tried around a point, in order of preference: right, above, left, below, then
# the diagonals and the directions between (unit vectors, y downwards).
_DIRECTIONS = [
    (math.cos(math.radians(a)), -math.sin(math.radians(a)))
    for a in (0, 90, 180, 270, 45, 135, 225, 315, 22.5, 67.5, 112.5, 157.5, 202.5, 247.5, 292.5)
    + (337.5,)
]
# Extra distance (pixels) beyond touching the marker; beyond the first ring a leader line
# shows which point a label belongs to.
_RINGS = (0, 10, 22, 38, 58, 84, 116, 156, 210)


def _candidate(label: Label, dx: float, dy: float, extra: float, w: float, h: float) -> Box:
    """The box of ``label`` in direction (dx, dy), ``extra`` pixels off its marker's edge: the
    box's nearest side (or corner) sits on the ray, ``GAP`` pixels past the marker."""
    reach = label.radius + GAP + extra
    # How far the centre must sit along the ray for the box to clear a circle of ``reach``.
    along = reach + min(
        w / 2 / abs(dx) if abs(dx) > 1e-9 else math.inf,
        h / 2 / abs(dy) if abs(dy) > 1e-9 else math.inf,
    )
    return Box.around(label.x + dx * along, label.y + dy * along, w, h)


def place_labels(
    labels: Sequence[Label], obstacles: Sequence[Box], width: float, height: float
) -> list[Placement | None]:
    """Greedy placement: each label in turn takes the nearest candidate spot that keeps
    ``GAP`` pixels from every label placed before it and from every obstacle (markers, error
    bars), inside the ``width`` x ``height`` plot. None where no spot is free (then the caller
    leaves the label out and says so). Labels are placed in the order given."""
    placed: list[Placement | None] = []
    taken: list[Box] = list(obstacles)
    for label in labels:
        w, h = text_size(label.text, label.font_size, label.bold)
        found = None
        for ring, extra in enumerate(_RINGS):
            for dx, dy in _DIRECTIONS:
                box = _candidate(label, dx, dy, extra, w, h)
                if box.inside(width, height) and not any(box.hits(t, GAP) for t in taken):
                    found = Placement(box.x0 + w / 2, box.y0 + h / 2, box, leader=ring > 0)
                    break
            if found is not None:
                break
        placed.append(found)
        if found is not None:
            taken.append(found.box)
    return placed


def place_line_label(
    text: str,
    y: float,
    obstacles: Sequence[Box],
    width: float,
    height: float,
    font_size: float = 10.0,
) -> Placement | None:
    """A label for a horizontal reference line at ``y`` pixels: just above it (else below),
    at its left end if free, else its right end, else the first free spot in between; then
    the same one and two lines further off."""
    w, h = text_size(text, font_size)
    steps = max(1, int((width - w) // 20))
    xs = [4.0, width - w - 4] + [4.0 + i * (width - w - 8) / steps for i in range(1, steps)]
    for away, side in [(k, side) for k in range(3) for side in (-1, 1)]:
        cy = y + side * (h / 2 + GAP + away * (h + GAP))
        for x0 in xs:
            box = Box(x0, cy - h / 2, x0 + w, cy + h / 2)
            if box.inside(width, height) and not any(box.hits(t, GAP) for t in obstacles):
                return Placement(x0 + w / 2, cy, box, leader=False)
    return None


def marker_box(x: float, y: float, radius: float) -> Box:
    """The square around a marker of ``radius`` pixels."""
    return Box(x - radius, y - radius, x + radius, y + radius)


def marker_radius(size: float) -> float:
    """Half the width of a Vega point mark of ``size`` (its area in square pixels)."""
    return math.sqrt(size) / 2 * 1.15
