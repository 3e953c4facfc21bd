"""The images of the samples page: each run's sample grid cut into one image per prompt, and the
real images of the prepared data (``results/<task>/data``) looked up by prompt.

An image run writes its samples as one grid (``peftbench.tasks.image.run.sample_grid``): a row
per sample prompt, the base model's image on the left and the fine-tuned model's on the right,
2 white pixels between them, 1 above and below each row, the whole enlarged ``scale`` times
(nearest neighbour) so that tiny images are visible. Given the number of prompts, that layout
fixes the image size and the scale, so the tiles are cut back out at their generated size.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

#: The prepared data's manifest (``peftbench.tasks.image.data``).
MANIFEST = "manifest.json"
#: Real images are embedded at most this wide or high (photos can be several megapixels).
MAX_REFERENCE_PX = 768
# Where the manifest's real images are, in the order a prompt is looked up: held-out test
# images first (what the similarity is scored against), then validation, then training images.
_REAL_SETS = (("test", "test image"), ("valid", "validation image"), ("instance", "training image"))


class GridLayoutError(ValueError):
    """A sample grid whose size does not fit the layout for the given number of prompts."""


@dataclass(frozen=True)
class RealImage:
    """A real image of the data: its file and which set it is from."""

    path: Path
    kind: str


def split_sample_grid(grid: Image.Image, prompts: int) -> list[tuple[Image.Image, Image.Image]]:
    """(base model, fine-tuned model) image of each of ``prompts`` rows of a sample grid, at the
    size they were generated (square images, see the module docstring).

    Raises GridLayoutError when the grid's size does not fit that layout (a grid written by
    other code, or a different number of prompts).
    """
    width, height = grid.size
    if prompts < 1 or height % prompts:
        raise GridLayoutError(f"a {width}x{height} grid has no {prompts} rows of equal height")
    row = height // prompts  # (side + 2) * scale
    # width = (2 * side + 2) * scale, so 2 * row - width = 2 * scale.
    scale, odd = divmod(2 * row - width, 2)
    if odd or scale < 1 or row % scale or row // scale <= 2:
        raise GridLayoutError(f"a {width}x{height} grid is not {prompts} rows of base | tuned")
    side = row // scale - 2
    if (2 * side + 2) * scale != width:
        raise GridLayoutError(f"a {width}x{height} grid is not {prompts} rows of base | tuned")
    rgb = grid.convert("RGB")
    tiles = []
    for i in range(prompts):
        top = (i * (side + 2) + 1) * scale
        base = rgb.crop((0, top, side * scale, top + side * scale))
        left = (side + 2) * scale
        tuned = rgb.crop((left, top, left + side * scale, top + side * scale))
        tiles.append(tuple(t.resize((side, side), Image.NEAREST) for t in (base, tuned)))
    return tiles  # type: ignore[return-value]


def read_manifest(data_dir: Path | str | None) -> dict | None:
    """The prepared data's manifest, or None when there is none (no data folder given, or a
    task whose data has no manifest)."""
    if data_dir is None:
        return None
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def real_images(manifest: dict, data_dir: Path | str) -> dict[str, RealImage]:
    """Prompt -> a real image of exactly that prompt (test, else validation, else training
    image: the first one of each set)."""
    found: dict[str, RealImage] = {}
    for key, kind in reversed(_REAL_SETS):  # later sets first, so earlier ones win
        for entry in reversed(manifest.get(key, [])):
            found[entry["prompt"]] = RealImage(Path(data_dir) / entry["image"], kind)
    return found


def concept_images(manifest: dict, data_dir: Path | str, limit: int = 6) -> list[RealImage]:
    """The first ``limit`` training images: what the concept looks like."""
    return [
        RealImage(Path(data_dir) / entry["image"], "training image")
        for entry in manifest.get("instance", [])[:limit]
    ]


def load_real(image: RealImage) -> Image.Image:
    """A real image, shrunk to :data:`MAX_REFERENCE_PX` when larger."""
    with Image.open(image.path) as opened:
        picture = opened.convert("RGB")
    picture.thumbnail((MAX_REFERENCE_PX, MAX_REFERENCE_PX), Image.LANCZOS)
    return picture


def png_data_uri(image: Image.Image) -> str:
    """``image`` as an inline PNG (a ``data:`` URI)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
