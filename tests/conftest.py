"""Shared fixtures."""

from pathlib import Path

import pytest
from tiny import CONFIG

from peftbench.tasks.math.data import prepare_data
from peftbench.tasks.math.embedded_lm import build_embedded_base


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared test-profile data and a pretrained tiny base model (a few seconds)."""
    root = tmp_path_factory.mktemp("tiny")
    prepare_data(CONFIG["data"], root / "data")
    build_embedded_base(CONFIG["base_model"]["embedded"], root / "data", root / "base", 1)
    return root
