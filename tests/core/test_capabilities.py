"""Tests of the per-method capabilities asked of the installed peft (peftbench.core.capabilities)."""

import random
import time

import numpy as np
import pytest
import torch

from peftbench.core import capabilities as caps


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty capability cache for the test (the module's is left as it was)."""
    monkeypatch.setattr(caps, "_CACHE", {})


def test_lora_merges_mixes_quantizes_and_wraps_linear_and_embedding():
    lora = caps.capabilities("LORA")
    assert lora.mergeable is True
    assert lora.multi_adapter is True
    assert lora.mixed_adapters is True
    assert lora.quantized_base is True
    assert {"Linear", "Embedding", "Conv2d"} <= set(lora.layer_types)
    assert lora.note is None
    import peft

    assert lora.peft_version == peft.__version__ and lora.peft_type == "LORA"


def test_prompt_tuning_is_not_mergeable_and_wraps_no_layer():
    prompt = caps.capabilities({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8})
    assert prompt.mergeable is False
    assert prompt.multi_adapter is True
    assert prompt.mixed_adapters is False and prompt.quantized_base is False
    assert prompt.layer_types == ()


def test_ia3_and_loha_as_peft_says():
    ia3 = caps.capabilities("IA3")
    assert ia3.mergeable is True and ia3.quantized_base is True and ia3.mixed_adapters is False
    assert "Linear" in ia3.layer_types
    loha = caps.capabilities("LOHA")
    # LoHa mixes with LoRA in a PeftMixedModel but has no bitsandbytes layers.
    assert loha.mergeable is True and loha.mixed_adapters is True
    assert loha.quantized_base is False


def test_a_layer_whose_merge_fails_is_not_mergeable(monkeypatch, fresh_cache):
    from peft.tuners.lora import layer

    def refuse(self, *args, **kwargs):
        raise NotImplementedError("no merging here")

    monkeypatch.setattr(layer.Linear, "merge", refuse)
    lora = caps.capabilities("LORA")
    assert lora.mergeable is False
    assert "merge_and_unload: NotImplementedError: no merging here" in lora.note
    assert lora.multi_adapter is True  # switching adapters does not merge


def test_the_experiments_own_modules_do_not_matter(fresh_cache):
    # An image experiment's adapter config names a diffusion transformer's modules; the tiny
    # Llama has none of them, and the probe uses the method's own defaults.
    config = {"peft_type": "LORA", "r": 8, "target_modules": ["to_q", "to_k"], "task_type": None}
    assert caps.record(config)["mergeable"] is True


def test_record_is_none_without_adapter_and_never_raises():
    assert caps.record(None) is None
    broken = caps.record({"peft_type": "NO_SUCH_METHOD"})
    assert broken["peft_type"] == "NO_SUCH_METHOD"
    assert all(broken[k] is None for k in ("mergeable", "multi_adapter", "layer_types"))
    assert "NO_SUCH_METHOD" in broken["note"]
    assert caps.record({"r": 8})["note"] == "ValueError: the adapter config has no peft_type"


def test_record_leaves_random_generators_alone(fresh_cache):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    record = caps.record({"peft_type": "LORA", "r": 8})
    assert record["mergeable"] is True
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_cached_per_version_and_type_and_cheap():
    caps.capabilities("LORA")
    start = time.perf_counter()
    record = caps.record({"peft_type": "LORA", "r": 64, "target_modules": ["q_proj"]})
    assert time.perf_counter() - start < 0.05
    assert record == caps.capabilities("LORA").to_dict()
    assert isinstance(record["layer_types"], list)


def test_first_probe_takes_well_under_a_few_seconds(fresh_cache):
    caps.capabilities("LORA")  # imports the tiny model's code once
    caps._CACHE.clear()
    start = time.perf_counter()
    caps.capabilities("LORA")
    elapsed = time.perf_counter() - start
    print(f"LoRA capability probe: {elapsed:.2f} s")
    # Under a second on an idle machine; generous here for a loaded test machine.
    assert elapsed < 5
