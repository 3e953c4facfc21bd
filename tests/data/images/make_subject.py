"""Regenerate ``subject.parquet``: a tiny image dataset in the Hugging Face ``datasets`` format.

Eight drawings of one made-up "plushy" (an orange blob with two ears and a blue bow) on
different backgrounds, in the layout of ``peft-internal-testing/cat-image-dataset``: one
``image`` column of the ``datasets.Image`` feature, stored as structs ``{"bytes", "path"}``.
Sizes differ from row to row and from every test resolution. Row 5 is a JPEG whose pixels are
stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to display), like a phone
photo, so that loaders must apply the EXIF rotation.

Run from the repository root: ``.venv/bin/python tests/data/images/make_subject.py``.
"""

import io
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

OUT = Path(__file__).with_name("subject.parquet")
BACKGROUNDS = [
    (40, 90, 160),
    (200, 60, 60),
    (60, 150, 70),
    (230, 220, 200),
    (90, 60, 40),
    (140, 140, 140),
    (250, 200, 40),
    (30, 30, 60),
]
SIZES = [(48, 40), (40, 56), (64, 48), (56, 56), (36, 44), (56, 40), (72, 40), (44, 60)]
EXIF_ROW = 5


def draw(i: int) -> Image.Image:
    w, h = SIZES[i]
    image = Image.new("RGB", (w, h), BACKGROUNDS[i])
    d = ImageDraw.Draw(image)
    cx, cy, r = w * (0.35 + 0.04 * i), h * (0.55 - 0.02 * i), min(w, h) * 0.28
    d.polygon(
        [(cx - r, cy - r * 0.4), (cx - r * 0.5, cy - r * 1.5), (cx - r * 0.1, cy - r * 0.7)],
        fill=(235, 120, 30),
    )
    d.polygon(
        [(cx + r, cy - r * 0.4), (cx + r * 0.5, cy - r * 1.5), (cx + r * 0.1, cy - r * 0.7)],
        fill=(235, 120, 30),
    )
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(245, 140, 40))
    d.ellipse([cx - r * 0.45, cy - r * 0.3, cx - r * 0.2, cy - r * 0.05], fill=(20, 20, 20))
    d.ellipse([cx + r * 0.2, cy - r * 0.3, cx + r * 0.45, cy - r * 0.05], fill=(20, 20, 20))
    d.rectangle([cx - r * 0.3, cy + r * 0.6, cx + r * 0.3, cy + r * 0.85], fill=(40, 80, 220))
    return image


def encode(i: int) -> dict:
    image = draw(i)
    buffer = io.BytesIO()
    if i == EXIF_ROW:
        # Stored sideways (rotated 90 degrees counter-clockwise) with "rotate 90 CW" in EXIF.
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif)
        return {"bytes": buffer.getvalue(), "path": f"{i:03d}.jpg"}
    image.save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": f"{i:03d}.png"}


if __name__ == "__main__":
    rows = [encode(i) for i in range(len(SIZES))]
    ds = datasets.Dataset.from_dict({"image": rows}).cast_column("image", datasets.Image())
    ds.to_parquet(str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(ds)} rows)")
