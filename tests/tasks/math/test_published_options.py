"""The math preset's published-compatible training options, through a real tiny run and the
config checks: accepted, wired into the run, and absent from the embedded default."""

import pytest
import yaml
from paths import REPO
from tiny import PARAMS, run

from peftbench.core.config import deep_merge, training_table, validate_training_params
from peftbench.tasks.math import SPEC

OPTIONS = ("train_order", "generation_max_length", "empty_cache_steps")
PUBLISHED = {"train_order": "stored", "generation_max_length": 800, "empty_cache_steps": 10}


def test_embedded_default_keeps_its_behaviour():
    """A missing key is the old behaviour: the embedded profile must not set another value."""
    for name in ("config.yaml", "test.yaml"):
        training = yaml.safe_load((REPO / "config" / name).read_text())["math"]["training"]
        assert training.get("train_order", "shuffled") == "shuffled", name
        assert training.get("generation_max_length") is None, name
        assert training.get("empty_cache_steps", 0) == 0, name


def test_preset_uses_the_published_values():
    preset = yaml.safe_load((REPO / "config/presets/metamathqa-llama-3.2-3b.yaml").read_text())
    training = preset["math"]["training"]
    assert {key: training.get(key) for key in OPTIONS} == PUBLISHED
    table = training_table(SPEC.training_keys)
    assert validate_training_params(training, "preset", table=table) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train_order": "random"}, "'train_order' must be one of"),
        ({"generation_max_length": 0}, "'generation_max_length' must be > 0"),
        ({"empty_cache_steps": -1}, "'empty_cache_steps' must be >= 0"),
        ({"empty_cache_steps": 2.5}, "'empty_cache_steps' must be int"),
    ],
)
def test_bad_values_are_named(override, message):
    table = training_table(SPEC.training_keys)
    problems = validate_training_params(override, "exp/training_params.json", table=table)
    assert problems and message in problems[0] and "exp/training_params.json" in problems[0]


def test_stored_order_run(tiny):
    """The run trains in stored order when asked (another loss curve than the shuffled
    default's on the same data and seed) and takes the cap and the cache schedule."""
    default = run(tiny, "lora/rank8-qv", "order_default")
    assert default["status"] == "success", default["error"]
    params = deep_merge(PARAMS, {**PUBLISHED, "empty_cache_steps": 2})
    stored = run(tiny, "lora/rank8-qv", "order_stored", params=params)
    assert stored["status"] == "success", stored["error"]
    assert stored["metrics"]["train_steps"] == PARAMS["max_steps"]
    assert stored["curves"]["train_loss"] != default["curves"]["train_loss"]
