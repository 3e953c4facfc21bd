"""Seeded generator of small captioned shape images for the embedded (offline) DreamBooth task.

Three pools share one drawing routine:

* ``pretraining_set``: solid shapes (``PRETRAIN_SHAPES`` in ``PRETRAIN_COLORS``) on solid
  backgrounds, captioned "a red circle on a gray background". A tiny text-conditioned diffusion
  model learns shapes, colours and backgrounds from these.
* ``concept_set``: the concept, a diamond with horizontal yellow/magenta stripes. Its shape, its
  colours and the stripe pattern never occur in pretraining, so the base model cannot draw it and
  fine-tuning has to teach it from a handful of images and the rare-token prompt "sks object".
* ``encoder_set``: a broader labelled pool (extra shapes, colours and stripes, but never the exact
  concept) for the small CNN that stands in for DINOv2 when comparing generated and real images.

Images are drawn at 4x resolution and box-filtered down, so edges are anti-aliased but every pixel
stays a convex mix of the colours drawn (no ringing that could invent new colours). All randomness
comes from a ``numpy.random.Generator``, so a seed fixes every byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4
# Object extent as a fraction of the image, and the largest centre offset. 0.65 / 2 + 0.12 < 0.5,
# so objects never touch the border and corner pixels always show the background.
SCALE_RANGE = (0.40, 0.65)
CENTER_JITTER = 0.12
BACKGROUND_JITTER = 0.08  # per-image brightness factor in [1 - j, 1 + j]
STRIPES_PER_OBJECT = 6  # stripe width = object extent / 6, about 2-3 px at 32 px

COLORS: dict[str, tuple[int, int, int]] = {
    # Object colours seen in pretraining.
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "orange": (245, 125, 25),  # reddish, so edge blends with beige stay far from yellow
    # Concept colours (never in pretraining) and extra encoder colours.
    "yellow": (245, 230, 40),
    "magenta": (220, 40, 220),
    "purple": (120, 50, 170),
    "cyan": (40, 210, 220),
    # Backgrounds: muted tones, distinct from every object colour.
    "gray": (128, 128, 128),
    "navy": (30, 40, 100),
    "teal": (30, 120, 120),
    "brown": (110, 70, 40),
    "pink": (240, 170, 190),
    "olive": (110, 110, 40),
    "beige": (220, 205, 170),
    "maroon": (110, 30, 50),
    "lavender": (175, 165, 215),
    # Validation backgrounds: held out from the instance and the test images alike.
    "forest": (35, 85, 45),
    "peach": (235, 160, 120),
}

SHAPES = ["circle", "square", "triangle", "cross", "diamond"]
PATTERNS = ["solid", "stripes"]
PRETRAIN_SHAPES = ["circle", "square", "triangle", "cross"]
PRETRAIN_COLORS = ["red", "green", "blue", "white", "black", "orange"]
BACKGROUNDS = [
    "gray",
    "navy",
    "teal",
    "brown",
    "pink",
    "olive",
    "beige",
    "maroon",
    "lavender",
    "forest",
    "peach",
]
CONCEPT = {"shape": "diamond", "colors": ("yellow", "magenta"), "pattern": "stripes"}
ENCODER_SHAPES = PRETRAIN_SHAPES + ["diamond"]
ENCODER_COLORS = PRETRAIN_COLORS + ["yellow", "magenta", "purple", "cyan"]


def _a(word: str) -> str:
    """``word`` with its indefinite article ("an orange", "a red")."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def caption(shape: str, color: str, background: str) -> str:
    """Pretraining caption, e.g. "a red circle on a gray background", "an orange ... an olive"."""
    return f"{_a(color)} {shape} on {_a(background)} background"


def _shape_outline(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, h: float) -> None:
    """Fill ``shape`` (half extent ``h`` around ``cx, cy``) with 255 on a mask."""
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=255)
    elif shape == "cross":
        arm = h / 3  # arms one third of the extent thick
        draw.rectangle([cx - arm, cy - h, cx + arm, cy + h], fill=255)
        draw.rectangle([cx - h, cy - arm, cx + h, cy + arm], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _check_color(name: str, allowed: list[str] | dict[str, tuple[int, int, int]]) -> None:
    if name not in allowed:
        raise ValueError(f"unknown colour {name!r}")


def draw(
    shape: str,
    fill: str | tuple[str, str],
    background: str,
    rng: np.random.Generator,
    size: int = 32,
    pattern: str = "solid",
) -> np.ndarray:
    """Draw one object on a solid background; returns a (size, size, 3) uint8 image.

    ``pattern="solid"`` takes one colour name; ``"stripes"`` takes two distinct names and paints
    horizontal stripes, starting with the first colour at the top of the object.
    """
    if pattern == "solid":
        if not isinstance(fill, str):
            raise ValueError("a solid fill is one colour name")
        colors = (fill,)
    elif pattern == "stripes":
        if isinstance(fill, str) or len(fill) != 2 or fill[0] == fill[1]:
            raise ValueError("a striped fill is two distinct colour names")
        colors = tuple(fill)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    for name in colors:
        _check_color(name, COLORS)
    _check_color(background, BACKGROUNDS)

    # Fixed draw order keeps output a pure function of the generator state.
    brightness = rng.uniform(1 - BACKGROUND_JITTER, 1 + BACKGROUND_JITTER)
    extent = rng.uniform(*SCALE_RANGE)
    offset_x, offset_y = rng.uniform(-CENTER_JITTER, CENTER_JITTER, size=2)

    big = size * SUPERSAMPLE
    bg = tuple(int(np.clip(round(c * brightness), 0, 255)) for c in COLORS[background])
    h = extent * big / 2
    cx, cy = big * (0.5 + offset_x), big * (0.5 + offset_y)

    mask = Image.new("L", (big, big), 0)
    _shape_outline(ImageDraw.Draw(mask), shape, cx, cy, h)

    layer = Image.new("RGB", (big, big), COLORS[colors[0]])
    if pattern == "stripes":
        width = 2 * h / STRIPES_PER_OBJECT
        layer_draw = ImageDraw.Draw(layer)
        for i in range(1, STRIPES_PER_OBJECT, 2):
            top = cy - h + i * width
            layer_draw.rectangle([0, top, big, top + width - 1], fill=COLORS[colors[1]])

    canvas = Image.new("RGB", (big, big), bg)
    canvas.paste(layer, mask=mask)
    # BOX averages each 4x4 block exactly: anti-aliasing without overshoot.
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.uint8).copy()


def pretraining_set(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, list[str]]:
    """``n`` solid pretraining images, uniform over shape x colour x background, with captions."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        shape = PRETRAIN_SHAPES[rng.integers(len(PRETRAIN_SHAPES))]
        color = PRETRAIN_COLORS[rng.integers(len(PRETRAIN_COLORS))]
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        images[i] = draw(shape, color, background, rng, size)
        captions.append(caption(shape, color, background))
    return images, captions


def concept_image(background: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One image of the concept (yellow/magenta striped diamond) on ``background``."""
    return draw(CONCEPT["shape"], CONCEPT["colors"], background, rng, size, CONCEPT["pattern"])


def concept_set(backgrounds: list[str], seed: int, size: int = 32) -> np.ndarray:
    """One concept image per listed background, shape (len(backgrounds), size, size, 3)."""
    rng = np.random.default_rng(seed)
    images = np.empty((len(backgrounds), size, size, 3), dtype=np.uint8)
    for i, background in enumerate(backgrounds):
        images[i] = concept_image(background, rng, size)
    return images


def _is_concept(shape: str, pattern: str, colors: tuple[str, str]) -> bool:
    return (
        shape == CONCEPT["shape"]
        and pattern == CONCEPT["pattern"]
        and set(colors) == set(CONCEPT["colors"])
    )


def encoder_set(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` labelled images for the similarity encoder, never showing the exact concept.

    Labels are int64 indices: ``shape`` into ENCODER_SHAPES, ``color`` (top stripe or solid
    colour) and ``color2`` (second stripe colour, equal to ``color`` when solid) into
    ENCODER_COLORS, ``pattern`` into PATTERNS, ``background`` into BACKGROUNDS.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = {k: np.empty(n, dtype=np.int64) for k in ("shape", "color", "color2", "pattern")}
    labels["background"] = np.empty(n, dtype=np.int64)
    for i in range(n):
        while True:  # rejection keeps the other combinations uniform
            shape = int(rng.integers(len(ENCODER_SHAPES)))
            pattern = int(rng.integers(len(PATTERNS)))
            color = int(rng.integers(len(ENCODER_COLORS)))
            color2 = color
            if PATTERNS[pattern] == "stripes":
                # Draw from the other colours so the two stripes always differ.
                color2 = int(rng.integers(len(ENCODER_COLORS) - 1))
                color2 += color2 >= color
            names = (ENCODER_COLORS[color], ENCODER_COLORS[color2])
            if not _is_concept(ENCODER_SHAPES[shape], PATTERNS[pattern], names):
                break
        background = int(rng.integers(len(BACKGROUNDS)))
        fill = names if PATTERNS[pattern] == "stripes" else names[0]
        images[i] = draw(
            ENCODER_SHAPES[shape], fill, BACKGROUNDS[background], rng, size, PATTERNS[pattern]
        )
        for key, value in zip(
            ("shape", "color", "color2", "pattern", "background"),
            (shape, color, color2, pattern, background),
            strict=True,
        ):
            labels[key][i] = value
    return images, labels


INSTANCE_PROMPT = "a photo of sks object"


def concept_prompt(background: str) -> str:
    """The concept's prompt in a context the base model knows: "... sks object on a teal background"."""
    return f"{INSTANCE_PROMPT} on {_a(background)} background"


@dataclass(frozen=True)
class Prompts:
    """The prompt sets of the embedded DreamBooth benchmark.

    Instance images are the concept on ``instance_backgrounds`` under one background-free prompt.
    ``test[i]`` puts the concept on ``test_backgrounds[i]``, a background never shown with the
    concept; its reference images are concept images on that background drawn with a seed other
    than the instance images'. ``validation`` does the same on backgrounds of its own, held out
    from both: choosing a learning rate on a training background rewarded memorising the
    instance images (measured: HRA's chosen point led validation at 0.68 and scored 0.17 on the
    test prompts, below its runner-up's 0.48), so validation asks what the test asks, on other
    backgrounds. ``drift`` holds pretraining captions, to measure forgetting.
    """

    instance: str = INSTANCE_PROMPT
    instance_backgrounds: tuple[str, ...] = ("gray", "navy", "brown", "pink", "olive", "beige")
    test: tuple[str, ...] = tuple(concept_prompt(b) for b in ("teal", "maroon", "lavender"))
    test_backgrounds: tuple[str, ...] = ("teal", "maroon", "lavender")
    validation: tuple[str, ...] = tuple(concept_prompt(b) for b in ("forest", "peach"))
    validation_backgrounds: tuple[str, ...] = ("forest", "peach")
    # Every pretraining shape, colour and background appears at least once.
    drift: tuple[str, ...] = (
        caption("circle", "red", "navy"),
        caption("square", "green", "beige"),
        caption("triangle", "blue", "pink"),
        caption("cross", "white", "brown"),
        caption("circle", "black", "teal"),
        caption("square", "orange", "gray"),
        caption("triangle", "white", "olive"),
        caption("cross", "orange", "lavender"),
        caption("circle", "blue", "maroon"),
        caption("square", "red", "forest"),
        caption("triangle", "black", "peach"),
    )
    samples: tuple[str, ...] = (
        INSTANCE_PROMPT,
        concept_prompt("teal"),
        caption("circle", "red", "navy"),
        caption("square", "green", "beige"),
    )

    @property
    def instance_prompts(self) -> tuple[str, ...]:
        """One caption per instance image, naming its background as the published benchmark's
        captions describe each photo: the new token then carries the concept, not the scene."""
        return tuple(concept_prompt(b) for b in self.instance_backgrounds)

    def __post_init__(self) -> None:
        if len(self.test) != len(self.test_backgrounds):
            raise ValueError("test and test_backgrounds differ in length")
        if len(self.validation) != len(self.validation_backgrounds):
            raise ValueError("validation and validation_backgrounds differ in length")
        if set(self.test_backgrounds) & set(self.instance_backgrounds):
            raise ValueError("test backgrounds must be held out from the instance images")
        if set(self.validation_backgrounds) & set(
            self.instance_backgrounds + self.test_backgrounds
        ):
            raise ValueError(
                "validation backgrounds must be held out from the instance and test images"
            )
        used = self.instance_backgrounds + self.test_backgrounds + self.validation_backgrounds
        for background in used:
            _check_color(background, BACKGROUNDS)


def default_prompts() -> Prompts:
    """The benchmark's fixed prompt sets."""
    return Prompts()


def vocabulary(prompts: Prompts | None = None) -> list[str]:
    """Sorted set of every word in any pretraining caption or prompt, for a word-level tokenizer."""
    prompts = prompts or default_prompts()
    texts = [
        caption(s, c, b) for s in PRETRAIN_SHAPES for c in PRETRAIN_COLORS for b in BACKGROUNDS
    ]
    texts += [prompts.instance, *prompts.test, *prompts.validation, *prompts.drift]
    texts += prompts.samples
    return sorted({word for text in texts for word in text.split()})
