"""Data of the image task (peftbench.tasks.image.data): the embedded source, and the hub source on a
local parquet file in the Hugging Face image-dataset format (tests/data/images/subject.parquet,
made by tests/data/images/make_subject.py)."""

import copy
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from paths import REPO
from PIL import Image

from peftbench.core.config import ConfigError
from peftbench.tasks.image import shapes
from peftbench.tasks.image.data import (
    MANIFEST,
    data_hash,
    load_images,
    load_manifest,
    load_subject_images,
    prepare_data,
    split_indices,
)

SUBJECT = REPO / "tests/data/images/subject.parquet"
EXIF_ROW = 5  # stored sideways with EXIF orientation 6 (see make_subject.py)
PROMPTS = [f"sks plushy number {i} on its background" for i in range(8)]
HUB_CFG = {
    "source": "hub",
    "hub": {"path": str(SUBJECT), "revision": None, "split": "train", "column": "image"},
    "resolution": 32,
    "valid_size": 2,
    "test_size": 2,
    "instance_prompts": PROMPTS,
    "drift_prompts": ["a photo of a dog", "a red square"],
    "sample_prompts": ["a photo of sks plushy"],
}


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path, monkeypatch):
    # Keep the Arrow cache that `datasets` writes out of the user's ~/.cache.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def hub_cfg(**changes) -> dict:
    cfg = copy.deepcopy(HUB_CFG)
    for key, value in changes.items():
        if key in cfg["hub"]:
            cfg["hub"][key] = value
        else:
            cfg[key] = value
    return cfg


def subject_images() -> list[Image.Image]:
    """The fixture's images as displayed (EXIF rotation applied), straight from the parquet."""
    from PIL import ImageOps

    rows = pq.read_table(SUBJECT).column("image").to_pylist()
    return [
        ImageOps.exif_transpose(Image.open(io.BytesIO(r["bytes"]))).convert("RGB") for r in rows
    ]


def pixels(data_dir: Path, entry: dict) -> np.ndarray:
    return np.asarray(Image.open(data_dir / entry["image"]).convert("RGB"))


# ---------------------------------------------------------------------------------------- embedded


def embedded_cfg() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())["image"]["data"]


def test_prepare_embedded_layout(tmp_path):
    cfg = embedded_cfg()
    assert cfg["source"] == "embedded"
    size = cfg["embedded"]["resolution"]
    manifest = prepare_data(cfg, tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text()) == manifest == load_manifest(tmp_path)
    assert manifest["resolution"] == size
    assert manifest["source"] == {"kind": "embedded", "seed": cfg["embedded"]["seed"]}
    for split in ("instance", "valid", "test"):
        entries = manifest[split]
        assert entries, split
        for i, entry in enumerate(entries):
            assert entry["image"] == f"{split}/{i:03d}.png"
            assert (tmp_path / entry["image"]).is_file()
            assert pixels(tmp_path, entry).shape == (size, size, 3)
            assert isinstance(entry["prompt"], str) and entry["prompt"]
    # The prompts of peftbench.tasks.image.shapes, in order; every concept prompt has the rare token, and
    # the test prompts put the concept on scenes it was never trained on.
    prompts = shapes.default_prompts()
    instance_prompts = [e["prompt"] for e in manifest["instance"]]
    assert instance_prompts == list(prompts.instance_prompts)
    assert [e["prompt"] for e in manifest["valid"]] == list(prompts.validation)
    assert [e["prompt"] for e in manifest["test"]] == list(prompts.test)
    held_out = [e["prompt"] for e in manifest["valid"] + manifest["test"]]
    assert all("sks" in p for p in instance_prompts + held_out)
    assert not set(instance_prompts) & {e["prompt"] for e in manifest["test"]}
    assert manifest["drift_prompts"] and manifest["sample_prompts"]
    assert not any("sks" in p for p in manifest["drift_prompts"])


def test_embedded_references_are_not_training_images(tmp_path):
    manifest = prepare_data(embedded_cfg(), tmp_path)
    train = load_images(tmp_path, manifest["instance"])
    for split in ("valid", "test"):
        for ref in load_images(tmp_path, manifest[split]):
            assert not any(np.array_equal(ref, image) for image in train), split
    tests = load_images(tmp_path, manifest["test"])
    assert len({t.tobytes() for t in tests}) == len(tests)


def test_embedded_is_reproducible(tmp_path):
    prepare_data(embedded_cfg(), tmp_path / "a")
    prepare_data(embedded_cfg(), tmp_path / "b")
    assert data_hash(tmp_path / "a") == data_hash(tmp_path / "b")
    other = embedded_cfg()
    other["embedded"]["seed"] += 1
    prepare_data(other, tmp_path / "c")
    assert data_hash(tmp_path / "c") != data_hash(tmp_path / "a")


# --------------------------------------------------------------------------------------------- hub


def test_split_is_the_published_one():
    # The published cat dataset: 20 images, valid 2, test 4 (reference notes, section A1).
    train, valid, test = split_indices(20, 2, 4)
    assert train == [18, 1, 19, 8, 10, 17, 6, 13, 4, 2, 5, 14, 9, 7]
    assert valid == [16, 11]
    assert test == [3, 0, 15, 12]
    order = np.random.RandomState(0).permutation(8).tolist()
    assert split_indices(8, 2, 2) == (order[:4], order[4:6], order[6:])
    with pytest.raises(ConfigError, match="no training image"):
        split_indices(6, 2, 4)


def test_prepare_hub_parquet(tmp_path):
    originals = subject_images()
    assert all(im.size != (32, 32) for im in originals)
    manifest = prepare_data(hub_cfg(), tmp_path)
    assert manifest == load_manifest(tmp_path)
    train, valid, test = split_indices(len(originals), 2, 2)
    assert manifest["resolution"] == 32
    assert manifest["source"] == {"kind": "hub", "path": str(SUBJECT), "revision": None}
    assert [e["prompt"] for e in manifest["instance"]] == [PROMPTS[i] for i in train]
    assert [e["prompt"] for e in manifest["valid"]] == [PROMPTS[i] for i in valid]
    assert [e["prompt"] for e in manifest["test"]] == [PROMPTS[i] for i in test]
    assert manifest["drift_prompts"] == HUB_CFG["drift_prompts"]
    assert manifest["sample_prompts"] == HUB_CFG["sample_prompts"]
    # Training images: resized to the resolution (bilinear, aspect ratio not kept), lossless PNG.
    for entry, i in zip(manifest["instance"], train, strict=True):
        expected = np.asarray(originals[i].resize((32, 32), Image.BILINEAR))
        np.testing.assert_array_equal(pixels(tmp_path, entry), expected)
    # References: the original images at their original size (as displayed: EXIF applied).
    for split, indices in (("valid", valid), ("test", test)):
        for entry, i in zip(manifest[split], indices, strict=True):
            np.testing.assert_array_equal(pixels(tmp_path, entry), np.asarray(originals[i]))


def test_hub_exif_rotation_is_applied():
    stored = Image.open(
        io.BytesIO(pq.read_table(SUBJECT).column("image")[EXIF_ROW]["bytes"].as_py())
    )
    assert stored.getexif().get(0x0112) == 6  # "rotate 90 degrees clockwise to display"
    images = load_subject_images(str(SUBJECT), "train", None, "image")
    assert len(images) == 8 and all(im.mode == "RGB" for im in images)
    width, height = stored.size
    assert images[EXIF_ROW].size == (height, width)
    assert [im.size for im in images] == [im.size for im in subject_images()]


def test_hub_single_prompt_is_repeated(tmp_path):
    manifest = prepare_data(hub_cfg(instance_prompts="a photo of sks plushy"), tmp_path)
    entries = manifest["instance"] + manifest["valid"] + manifest["test"]
    assert len(entries) == 8
    assert {e["prompt"] for e in entries} == {"a photo of sks plushy"}


def test_hub_prompt_count_mismatch_names_the_field(tmp_path):
    with pytest.raises(ConfigError) as info:
        prepare_data(hub_cfg(instance_prompts=PROMPTS[:7]), tmp_path)
    assert str(info.value).startswith("image.data.instance_prompts: 7 captions for the 8 images")
    assert str(SUBJECT) in str(info.value)  # the dataset they were counted against


def test_hub_missing_image_column_names_it(tmp_path):
    with pytest.raises(ConfigError, match="image column 'picture' not found") as info:
        prepare_data(hub_cfg(column="picture"), tmp_path)
    assert "image" in str(info.value)  # the columns that do exist are listed


def test_hub_too_few_images_for_the_split(tmp_path):
    with pytest.raises(ConfigError, match="no training image"):
        prepare_data(hub_cfg(valid_size=4, test_size=4), tmp_path)
