"""The tiny embedded image setup of the image tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from image_setup import CONFIG

from peftbench.tasks.image.data import prepare_data
from peftbench.tasks.image.embedded import build_embedded_image_base
from peftbench.tasks.image.similarity import train_embedded_encoder


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared data, a tiny pretrained base model and a tiny encoder (a few seconds)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_image")
    prepare_data(CONFIG["data"], root / "data")
    build_embedded_image_base(CONFIG["base_model"]["embedded"], root / "base", 1)
    train_embedded_encoder(CONFIG["encoder"]["embedded"], root / "encoder", 1, progress=False)
    return root
