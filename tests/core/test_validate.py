"""The model-level pre-flight check (peftbench.core.validate) on what the published suite's
folders carry: token indices, the model_id and init_kv_cache_prefix keys, the Riemannian
optimizer, quantized base models, and a hub model's architecture read offline."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import yaml
from paths import REPO

from peftbench.core import kvprefix, offline
from peftbench.core.config import deep_merge, dtype_key, training_table
from peftbench.core.layout import ARCHITECTURES
from peftbench.core.validate import validate_task
from peftbench.tasks import registry
from peftbench.tasks.math.embedded_lm import build_meta_model

CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())
PRESET = REPO / "config/presets/metamathqa-llama-3.2-3b.yaml"
VOCAB = CONFIG["math"]["base_model"]["embedded"]["vocab_size"]
#: The math task's keys, with the two its spec offers for the suite's folders.
TABLE = training_table(
    {
        **registry.get("math").training_keys,
        kvprefix.KEY: kvprefix.TRAINING_KEY,
        "dtype": dtype_key(quantized=True),
    }
)
LORA = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "target_modules": ["q_proj"]}


def task(root: Path, preset: bool = False) -> dict:
    config = deep_merge(CONFIG, yaml.safe_load(PRESET.read_text())) if preset else CONFIG
    return {**config["math"], "experiments_dir": str(root)}


def experiment(root: Path, name: str, adapter: dict | None, params: dict | None = None) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    if adapter is not None:
        (folder / "adapter_config.json").write_text(json.dumps(adapter))
    if params is not None:
        (folder / "training_params.json").write_text(json.dumps(params))
    return name


def check(cfg: dict, *experiments: str) -> tuple[list[str], list[str]]:
    notes: list[str] = []
    problems = validate_task(cfg, list(experiments), build_meta_model, TABLE, notes=notes)
    return problems, notes


def test_token_indices_outside_the_vocabulary_are_rejected(tmp_path):
    """The suite's trainable_tokens folder (indices 128000/128001 of Llama-3) on the 512-token
    embedded model: rejected before training instead of an IndexError at the first step."""
    tokens = {"peft_type": "TRAINABLE_TOKENS", "task_type": "CAUSAL_LM"}
    bad = experiment(tmp_path, "trainable_tokens/sos", {**tokens, "token_indices": [1, 128000]})
    good = experiment(tmp_path, "trainable_tokens/ok", {**tokens, "token_indices": [0, VOCAB - 1]})
    lora = {**LORA, "trainable_token_indices": [3, VOCAB]}
    bad_lora = experiment(tmp_path, "lora/tokens", lora)
    problems, _ = check(task(tmp_path), bad, good, bad_lora)
    assert len(problems) == 2, problems
    assert str(tmp_path / bad / "adapter_config.json") in problems[0]
    assert "'token_indices' [128000] outside the vocabulary" in problems[0]
    assert f"({VOCAB} tokens: 0 to {VOCAB - 1})" in problems[0]
    assert str(tmp_path / bad_lora / "adapter_config.json") in problems[1]
    assert f"'trainable_token_indices' [{VOCAB}]" in problems[1]


def test_the_riemannian_optimizer_needs_lora_factors(tmp_path):
    params = {"optimizer_type": "riemannian", "optimizer_kwargs": {"lr": 1e-4, "reg": 0.01}}
    lora = experiment(tmp_path, "lora/riemannian", LORA, params)
    ia3 = {"peft_type": "IA3", "task_type": "CAUSAL_LM", "target_modules": ["v_proj"],
           "feedforward_modules": []}  # fmt: skip
    other = experiment(tmp_path, "ia3/riemannian", ia3, params)
    problems, _ = check(task(tmp_path), lora, other)
    assert len(problems) == 1, problems
    assert str(tmp_path / other / "training_params.json") in problems[0]
    assert "optimizer_type 'riemannian'" in problems[0] and "lora_A/lora_B" in problems[0]


def test_model_id_must_name_the_presets_base_model(tmp_path):
    """Ignored where it names the preset's model, an error naming the file otherwise."""
    same = experiment(tmp_path, "lora/same", LORA, {"model_id": "meta-llama/Llama-3.2-3B"})
    other = experiment(tmp_path, "lora/other", LORA, {"model_id": "meta-llama/Llama-3.1-8B"})
    problems, _ = check(task(tmp_path, preset=True), same, other)
    assert len(problems) == 1, problems
    assert str(tmp_path / other / "training_params.json") in problems[0]
    assert "'meta-llama/Llama-3.1-8B' is not this task's base model" in problems[0]
    assert offline.MODEL_FIELD in problems[0]


def test_model_id_is_ignored_with_a_note_on_the_embedded_model(tmp_path):
    name = experiment(tmp_path, "lora/x", LORA, {"model_id": "meta-llama/Llama-3.2-3B"})
    problems, notes = check(task(tmp_path), name)
    assert problems == []
    assert any("'model_id' 'meta-llama/Llama-3.2-3B' ignored" in n for n in notes), notes


def test_init_kv_cache_prefix_needs_a_prefix_tuning_adapter(tmp_path):
    prefix = {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4}
    text = {kvprefix.KEY: "You are a helpful math assistant."}
    good = experiment(tmp_path, "prefixtuning/init", prefix, text)
    projected = {**prefix, "prefix_projection": True, "encoder_hidden_size": 16}
    bad_projection = experiment(tmp_path, "prefixtuning/projected", projected, text)
    bad_method = experiment(tmp_path, "lora/init", LORA, text)
    problems, _ = check(task(tmp_path), good, bad_projection, bad_method)
    assert len(problems) == 2, problems
    assert str(tmp_path / bad_projection / "training_params.json") in problems[0]
    assert "'prefix_projection': false" in problems[0]
    assert str(tmp_path / bad_method / "training_params.json") in problems[1]
    assert f"'{kvprefix.KEY}'" in problems[1] and "a LORA adapter" in problems[1]


def test_a_quantized_base_without_bitsandbytes_is_rejected_naming_the_key(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    name = experiment(tmp_path, "lora/qlora", LORA, {"dtype": "int4"})
    problems, _ = check(task(tmp_path), name)
    assert len(problems) == 1, problems
    assert str(tmp_path / name / "training_params.json") in problems[0]
    assert "'dtype' 'int4'" in problems[0] and "pip install bitsandbytes" in problems[0]


def test_a_quantized_base_with_bitsandbytes_passes_the_check(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    present = real("json")  # any spec: "installed"
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: present if name == "bitsandbytes" else real(name, *a),
    )
    name = experiment(tmp_path, "lora/qlora", LORA, {"dtype": "int8"})
    assert check(task(tmp_path), name)[0] == []


@pytest.fixture
def offline_hub(monkeypatch):
    """The hub unreachable (HF_HUB_OFFLINE, as a user would set it), asked afresh."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline.hub_reachable.cache_clear()
    yield
    offline.hub_reachable.cache_clear()


def test_the_shipped_architecture_is_read_offline(tmp_path, offline_hub):
    """The preset's model has its config.json under config/presets/architectures/: the check
    needs neither the hub nor the cache, and says where it read the architecture."""
    name = experiment(tmp_path, "lora/x", LORA)
    problems, notes = check(task(tmp_path, preset=True), name)
    assert problems == []
    assert any(str(ARCHITECTURES / "meta-llama/Llama-3.2-3B") in n for n in notes), notes


def uncached(tmp_path: Path) -> dict:
    cfg = task(tmp_path, preset=True)
    cfg["base_model"] = {"source": "hub", "hub": {"model_id": "peftbench-tests/not-cached"}}
    experiment(tmp_path, "lora/x", LORA)
    return cfg


def assert_says_how_to_supply(problems: list[str], seconds: float) -> None:
    assert len(problems) == 1, problems
    text = problems[0]
    for needed in (
        "base_model.hub.model_id 'peftbench-tests/not-cached'",
        "config.json",
        str(ARCHITECTURES / "peftbench-tests/not-cached"),
        "HF_HOME",
        "HF_HUB_OFFLINE=1",
        "local folder",
    ):
        assert needed in text, text
    assert seconds < 15, f"{seconds:.0f} s: the hub's retries were not avoided"


def test_offline_a_missing_architecture_fails_fast_saying_how_to_supply_it(tmp_path, offline_hub):
    started = time.perf_counter()
    problems, _ = check(uncached(tmp_path), "lora/x")
    assert_says_how_to_supply(problems, time.perf_counter() - started)
    assert "HF_HUB_OFFLINE is set" in problems[0]


def test_an_unreachable_hub_is_not_retried(tmp_path, monkeypatch):
    """Without HF_HUB_OFFLINE, a hub that does not answer is found out by one short connection
    attempt, and the cache alone is read (no minute of retries)."""
    import socket

    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    offline.hub_reachable.cache_clear()
    try:
        started = time.perf_counter()
        problems, _ = check(uncached(tmp_path), "lora/x")
        assert_says_how_to_supply(problems, time.perf_counter() - started)
        assert "no connection" in problems[0]
        assert constants.HF_HUB_OFFLINE is False, "offline mode is set for the check only"
    finally:
        offline.hub_reachable.cache_clear()


def test_an_embedded_or_shipped_model_never_asks_the_hub(tmp_path, monkeypatch):
    def no_probe():
        raise AssertionError("the hub was probed")

    monkeypatch.setattr(offline, "hub_reachable", no_probe)
    name = experiment(tmp_path, "lora/x", LORA)
    assert check(task(tmp_path), name)[0] == []
    assert check(task(tmp_path, preset=True), name)[0] == []


def test_checks_shared_out_to_processes_find_what_one_process_finds(tmp_path, monkeypatch):
    """examine_all with 2 workers: the same findings, in the same order, as in this process,
    good and bad experiments mixed, and the work really done in two other processes."""
    import os

    from peftbench.core import validate

    cfg = task(tmp_path)
    bad_target = {**LORA, "target_modules": ["nowhere"]}
    boft_bad = {"peft_type": "BOFT", "task_type": "CAUSAL_LM", "boft_block_size": 5,
                "target_modules": ["q_proj"]}  # fmt: skip
    names = [
        experiment(tmp_path, "lora/a", LORA),
        experiment(tmp_path, "lora/bad", bad_target),
        experiment(tmp_path, "boft/bad", boft_bad),
        experiment(tmp_path, "lora/b", {**LORA, "r": 8}),
        experiment(tmp_path, "lora/tokens", {**LORA, "trainable_token_indices": [9999]}),
        experiment(tmp_path, "ia3/a", {"peft_type": "IA3", "task_type": "CAUSAL_LM"}),
        experiment(tmp_path, "lora/adam", LORA, {"optimizer_type": "NoSuchOptimizer"}),
        experiment(tmp_path, "lora/c", {**LORA, "lora_dropout": 0.1}),
    ]
    pristine = build_meta_model(cfg)
    with validate.quiet_meta_checks():
        alone = validate.examine_all(pristine, cfg, names, TABLE, workers=1)
    assert sum(bool(f.problems) for f in alone.values()) >= 4  # the bad ones are caught

    examine = validate._examine_copy

    def tagged(*args):
        found = examine(*args)
        found.notes.append(f"pid {os.getpid()}")
        return found

    monkeypatch.setattr(validate, "_examine_copy", tagged)
    with validate.quiet_meta_checks():
        shared = validate.examine_all(pristine, cfg, names, TABLE, workers=2)
    pids = {f.notes.pop() for f in shared.values()}
    assert list(shared) == names
    assert shared == alone
    assert len(pids) == 2 and f"pid {os.getpid()}" not in pids


def test_sharing_out_leaves_the_collector_as_it_found_it(tmp_path):
    """The pool freezes this process's objects for its children and thaws only what it froze:
    a heap the caller froze (the Snakefile's freeze_heap) stays frozen."""
    import gc

    from peftbench.core import validate

    cfg = task(tmp_path)
    names = [experiment(tmp_path, f"lora/r{r}", {**LORA, "r": r}) for r in range(1, 9)]
    pristine = build_meta_model(cfg)
    assert gc.get_freeze_count() == 0
    validate.examine_all(pristine, cfg, names, TABLE, workers=2)
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        validate.examine_all(pristine, cfg, names, TABLE, workers=2)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
