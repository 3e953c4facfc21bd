"""Data of the image task: instance images with prompts, held-out references, prompt sets.

``prepare_data`` writes one layout for every source, read by :func:`load_manifest`::

    <out>/manifest.json     prompts and file names (schema below)
    <out>/instance/NNN.png  training images, already at the model's resolution
    <out>/valid/NNN.png     reference images of the validation prompts (original size)
    <out>/test/NNN.png      reference images of the test prompts (original size)

``manifest.json``: ``{"resolution", "instance": [{"image", "prompt"}], "valid": [{"image",
"prompt"}], "test": [{"image", "prompt"}], "drift_prompts": [...], "sample_prompts": [...],
"source": {...}}``.

* embedded: the concept of :mod:`peftbench.tasks.image.shapes` on the instance backgrounds under one instance
  prompt; references are new drawings of the concept on backgrounds it was never trained on.
* hub: a dataset of photos of one subject (the published benchmark's cat plushy) with one
  caption per photo (``instance_prompts``: caption i belongs to dataset row i); split like the
  published benchmark (a permutation by the legacy numpy RNG seeded 0: train, then
  ``valid_size``, then ``test_size``), training images resized to the resolution without
  keeping the aspect ratio, references kept at their original size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from peftbench.core.config import ConfigError, file_hash
from peftbench.core.io import write_json
from peftbench.tasks.image import shapes

MANIFEST = "manifest.json"


def _save(images: list[np.ndarray | Image.Image], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, image in enumerate(images):
        name = f"{folder.name}/{i:03d}.png"
        pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
        pil.convert("RGB").save(folder.parent / name)
        names.append(name)
    return names


def _entries(names: list[str], prompts: list[str]) -> list[dict[str, str]]:
    return [{"image": n, "prompt": p} for n, p in zip(names, prompts, strict=True)]


def prepare_embedded(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    p = shapes.default_prompts()
    size, seed = cfg["resolution"], cfg["seed"]
    instance = shapes.concept_set(list(p.instance_backgrounds), seed, size)
    # References are separate drawings (seed + 1, + 2): never the training images themselves.
    valid = shapes.concept_set(list(p.validation_backgrounds), seed + 1, size)
    test = shapes.concept_set(list(p.test_backgrounds), seed + 2, size)
    return {
        "resolution": size,
        "instance": _entries(_save(list(instance), out / "instance"), list(p.instance_prompts)),
        "valid": _entries(_save(list(valid), out / "valid"), list(p.validation)),
        "test": _entries(_save(list(test), out / "test"), list(p.test)),
        "drift_prompts": list(p.drift),
        "sample_prompts": list(p.samples),
        "source": {"kind": "embedded", "seed": seed},
    }


def load_subject_images(
    path: str, split: str, revision: str | None, column: str
) -> list[Image.Image]:
    """RGB images of one split of a dataset (hub id, local folder or .parquet file), EXIF-rotated."""
    from peftbench.core.hub import load_split

    ds = load_split(path, revision, split)
    if column not in ds.column_names:
        raise ConfigError(
            f"{path}: image column '{column}' not found (columns: {', '.join(ds.column_names)})"
        )
    images = []
    for value in ds[column]:
        image = value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value))
        images.append(ImageOps.exif_transpose(image).convert("RGB"))
    return images


def split_indices(
    n: int, valid_size: int, test_size: int
) -> tuple[list[int], list[int], list[int]]:
    """The published benchmark's split: a permutation by numpy's legacy RNG seeded 0."""
    train_size = n - valid_size - test_size
    if train_size < 1:
        raise ConfigError(
            f"data.hub: {n} images leave no training image after valid_size={valid_size} and "
            f"test_size={test_size}"
        )
    order = np.random.RandomState(0).permutation(n).tolist()
    return (
        order[:train_size],
        order[train_size : train_size + valid_size],
        order[train_size + valid_size :],
    )


def instance_prompts(
    prompts: str | list[str], n: int, path: str, revision: str | None
) -> list[str]:
    """One caption per image, paired by the dataset's row order (row i gets caption i), as the
    published benchmark pairs them; a single string is every image's caption."""
    if isinstance(prompts, str):
        return [prompts] * n
    if len(prompts) != n:
        at = f"@{revision}" if revision else ""
        raise ConfigError(
            f"image.data.instance_prompts: {len(prompts)} captions for the {n} images of "
            f"{path}{at}; give one caption per image, in the dataset's row order, or a single "
            "string for every image"
        )
    return list(prompts)


def prepare_hub(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    from peftbench.core.hub import resolve_revision

    hub = cfg["hub"]
    revision = resolve_revision(hub["path"], hub.get("revision"), "dataset")
    images = load_subject_images(
        hub["path"], hub.get("split", "train"), revision, hub.get("column", "image")
    )
    prompts = instance_prompts(cfg["instance_prompts"], len(images), hub["path"], revision)
    train, valid, test = split_indices(len(images), cfg["valid_size"], cfg["test_size"])
    size = cfg["resolution"]
    resized = [images[i].resize((size, size), Image.BILINEAR) for i in train]

    def refs(indices: list[int], folder: str) -> list[dict[str, str]]:
        return _entries(
            _save([images[i] for i in indices], out / folder), [prompts[i] for i in indices]
        )

    return {
        "resolution": size,
        "instance": _entries(_save(resized, out / "instance"), [prompts[i] for i in train]),
        "valid": refs(valid, "valid"),
        "test": refs(test, "test"),
        "drift_prompts": list(cfg["drift_prompts"]),
        "sample_prompts": list(cfg["sample_prompts"]),
        "source": {"kind": "hub", "path": hub["path"], "revision": revision},
    }


def prepare_data(data_cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write the task's data to ``out`` (see the module docstring); returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    if data_cfg["source"] == "embedded":
        manifest = prepare_embedded(data_cfg["embedded"], out)
    else:
        manifest = prepare_hub(data_cfg, out)
    write_json(out / MANIFEST, manifest)
    return manifest


#: The task's data entry point (``TaskSpec.data_module``), called by the rule prepare_data.
prepare = prepare_data


def load_manifest(data_dir: Path) -> dict[str, Any]:
    return json.loads((Path(data_dir) / MANIFEST).read_text())


def load_images(data_dir: Path, entries: list[dict[str, str]]) -> list[np.ndarray]:
    return [np.asarray(Image.open(Path(data_dir) / e["image"]).convert("RGB")) for e in entries]


def data_hash(data_dir: Path) -> str:
    """Hash of the manifest and every image: the identity of the data a result was computed on."""
    data_dir = Path(data_dir)
    return file_hash([data_dir / MANIFEST, *sorted(data_dir.glob("*/*.png"))])
