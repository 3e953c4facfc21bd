"""The embedded base model's skill gate."""

import json
from pathlib import Path

import pytest
from tiny import CONFIG

from peftbench.core.config import deep_merge
from peftbench.tasks.math import PRETRAINING_FILE
from peftbench.tasks.math.embedded_lm import BaseSkillError, build_embedded_base


def test_the_base_records_its_skill(tiny: Path) -> None:
    info = json.loads((tiny / "base" / PRETRAINING_FILE).read_text())
    assert 0.0 <= info["skill"] <= 1.0
    assert info["min_skill"] == CONFIG["base_model"]["embedded"]["min_skill"]


def test_a_base_below_its_skill_gate_is_refused_and_not_saved(tiny: Path, tmp_path: Path) -> None:
    recorded = json.loads((tiny / "base" / PRETRAINING_FILE).read_text())["skill"]
    assert recorded < 1.0, "the test base is meant to be unskilled"
    model_cfg = deep_merge(CONFIG["base_model"]["embedded"], {"min_skill": 1.0})
    with pytest.raises(BaseSkillError, match=r"below base_model\.embedded\.min_skill 100%"):
        build_embedded_base(model_cfg, tiny / "data", tmp_path / "base", 1)
    assert not (tmp_path / "base").exists()
