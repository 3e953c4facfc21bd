"""The FLUX.2-klein preset runs like the published ones: its 20 captions are paired with the
photos by dataset row order (checked on a local 20-row dataset in the Hub snapshot layout of
peft-internal-testing/cat-image-dataset), and its DINOv2 similarity model is loaded at the
configured revision, resolved to a commit and recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from paths import REPO
from PIL import Image

from peftbench.core.config import ConfigError
from peftbench.tasks.image.data import load_images, prepare_data, split_indices

PRESET_FILE = REPO / "config/presets/dreambooth-flux2-klein.yaml"
PRESET = yaml.safe_load(PRESET_FILE.read_text())["image"]
CAPTIONS = PRESET["data"]["instance_prompts"]
PUBLISHED_DIR = REPO.parent / "shared/published/image-gen"
# The published split of the 20 photos and the captions of its held-out rows, as quoted by the
# reference notes (hf-imagegen-benchmark-and-dashboard.md, A1).
PUBLISHED_VALID = {
    16: "sks cat is wearing a Wednesday Addams costume",
    11: "sks cat reads a newspaper about cannabis",
}
PUBLISHED_TEST = {
    3: "a box with four donuts in front of sks cat",
    0: "sks cat sitting on a chair in front of a box of chocolates",
    15: "a gingerbread house in front of sks cat",
    12: 'sks cat reading the newspaper with the title "DIE BOX"',
}


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path, monkeypatch):
    # Keep the Arrow cache that `datasets` writes out of the user's ~/.cache.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def colour(row: int) -> tuple[int, int, int]:
    """A colour per row, far from every other row's, so an image names its row."""
    return (row * 12, 250 - row * 11, (row * 97) % 256)


def snapshot(root, rows: int):
    """A Hub dataset snapshot with ``rows`` photos: data/train-*.parquet, one ``image`` column of
    the ``datasets.Image`` feature (structs of PNG bytes and a path), sizes differing by row."""
    import io

    import datasets

    images = []
    for row in range(rows):
        buffer = io.BytesIO()
        Image.new("RGB", (20 + row, 28 - row % 5), colour(row)).save(buffer, "PNG")
        images.append({"bytes": buffer.getvalue(), "path": f"{row:03d}.png"})
    ds = datasets.Dataset.from_dict({"image": images}).cast_column("image", datasets.Image())
    (root / "data").mkdir(parents=True)
    ds.to_parquet(str(root / "data/train-00000-of-00001.parquet"))
    return root


def preset_data(path) -> dict:
    """The preset's data section on a local snapshot, at a small resolution."""
    data = json.loads(json.dumps(PRESET["data"]))
    data["hub"] = {**data["hub"], "path": str(path), "revision": None}
    data["resolution"] = 16
    return data


def row_of(image: np.ndarray) -> int:
    mean = image.reshape(-1, 3).astype(float).mean(0)
    return int(np.argmin([np.abs(mean - colour(r)).sum() for r in range(len(CAPTIONS))]))


def test_preset_has_one_caption_per_published_photo():
    assert isinstance(CAPTIONS, list) and len(CAPTIONS) == 20
    assert all("sks cat" in c for c in CAPTIONS) and len(set(CAPTIONS)) == 20
    for row, caption in {**PUBLISHED_VALID, **PUBLISHED_TEST}.items():
        assert CAPTIONS[row] == caption, row


@pytest.mark.skipif(not PUBLISHED_DIR.is_dir(), reason="published results not present")
def test_preset_captions_are_the_published_runs():
    for path in sorted(PUBLISHED_DIR.glob("*.json")):
        train_config = json.loads(path.read_text())["run_info"]["train_config"]
        assert train_config["instance_prompts"] == CAPTIONS, path.name


def test_captions_pair_with_their_photos_by_row_order(tmp_path):
    manifest = prepare_data(preset_data(snapshot(tmp_path / "cat-image-dataset", 20)), tmp_path)
    train, valid, test = split_indices(
        20, PRESET["data"]["valid_size"], PRESET["data"]["test_size"]
    )
    assert valid == list(PUBLISHED_VALID) and test == list(PUBLISHED_TEST)
    for split, rows in (("instance", train), ("valid", valid), ("test", test)):
        entries = manifest[split]
        images = load_images(tmp_path, entries)
        # Each image is the photo of its row, and its caption is that row's caption.
        assert [row_of(image) for image in images] == rows, split
        assert [e["prompt"] for e in entries] == [CAPTIONS[r] for r in rows], split
    assert [e["prompt"] for e in manifest["test"]] == list(PUBLISHED_TEST.values())
    assert [e["prompt"] for e in manifest["valid"]] == list(PUBLISHED_VALID.values())


def test_caption_count_must_match_the_photos(tmp_path):
    path = snapshot(tmp_path / "nineteen", 19)
    with pytest.raises(ConfigError) as info:
        prepare_data(preset_data(path), tmp_path / "out")
    message = str(info.value)
    assert message.startswith("image.data.instance_prompts: 20 captions for the 19 images")
    assert str(path) in message and "row order" in message


def test_preset_pins_the_similarity_model():
    hub = PRESET["encoder"]["hub"]
    assert hub["model_id"] == "facebook/dinov2-base"
    assert isinstance(hub["revision"], str) and hub["revision"]


def test_similarity_model_loads_and_records_the_resolved_revision(monkeypatch):
    """The configured revision is resolved to a commit, both the processor and the model are
    loaded at that commit, and the run records model@commit as the encoder's identity."""
    import transformers

    import peftbench.core.hub as hub
    from peftbench.tasks.image.similarity import load_encoder

    resolved, loaded = [], []
    monkeypatch.setattr(
        hub,
        "resolve_revision",
        lambda repo, revision, kind: resolved.append((repo, revision, kind)) or "0123abcd",
    )

    class Loaded(torch.nn.Module):
        def __init__(self, kind, location, revision) -> None:
            super().__init__()
            loaded.append((kind, location, revision))

    for name in ("AutoImageProcessor", "AutoModel"):
        monkeypatch.setattr(
            getattr(transformers, name),
            "from_pretrained",
            lambda location, revision=None, name=name: Loaded(name, location, revision),
        )
    cfg = {**PRESET["encoder"], "hub": {"model_id": "facebook/dinov2-base", "revision": "v1"}}
    _, identity = load_encoder(cfg, None, torch.device("cpu"))
    assert resolved == [("facebook/dinov2-base", "v1", "model")]
    assert sorted(loaded) == [
        ("AutoImageProcessor", "facebook/dinov2-base", "0123abcd"),
        ("AutoModel", "facebook/dinov2-base", "0123abcd"),
    ]
    assert identity == "facebook/dinov2-base@0123abcd"
