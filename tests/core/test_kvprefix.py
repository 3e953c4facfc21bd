"""``init_kv_cache_prefix``: a prefix-tuning adapter started from the base model's key/value
cache of a text, as the published suite does it."""

from __future__ import annotations

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model
from peft.tuners.cartridge.utils import prompt_embeddings_from_past_key_values
from transformers import LlamaConfig, LlamaForCausalLM

from peftbench.core import kvprefix
from peftbench.core.config import training_table, validate_training_params
from peftbench.tasks.math.embedded_lm import train_tokenizer

TEXT = "You are a helpful math assistant. Solve the problem step by step."
TOKENS = 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([TEXT, "Question: what is 3 plus 4? Answer: 7"] * 4, 128)


def prefix_model(tokenizer) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    base = LlamaForCausalLM(config)
    return get_peft_model(
        base, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=TOKENS)
    )


def prefix(model) -> torch.Tensor:
    return model.prompt_encoder["default"].embedding.weight.detach().clone()


def test_the_prefix_starts_from_the_cache_of_the_text(tokenizer):
    model = prefix_model(tokenizer)
    before = prefix(model)
    assert kvprefix.initialize(model, tokenizer, {kvprefix.KEY: TEXT})
    after = prefix(model)
    assert not torch.equal(before, after)
    # The base model's cache of the text's first tokens (this tokenizer has no chat template,
    # so the text is tokenized plainly, as PEFT's helper does then).
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    assert ids.shape[1] >= TOKENS
    with model.disable_adapter(), torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    expected = prompt_embeddings_from_past_key_values(cache, num_virtual_tokens=TOKENS)
    torch.testing.assert_close(after, expected.to(after.dtype))
    # Overwritten in place: the parameter an optimizer built earlier holds is the trained one.
    assert model.prompt_encoder["default"].embedding.weight.requires_grad


def test_null_keeps_peft_initialisation(tokenizer):
    model = prefix_model(tokenizer)
    before = prefix(model)
    assert not kvprefix.initialize(model, tokenizer, {kvprefix.KEY: None})
    assert not kvprefix.initialize(model, tokenizer, {})
    assert torch.equal(before, prefix(model))


@pytest.mark.parametrize(
    "adapter, expected",
    [
        ({"peft_type": "PREFIX_TUNING"}, None),
        ({"peft_type": "CARTRIDGE"}, None),
        ({"peft_type": "PREFIX_TUNING", "prefix_projection": True}, "'prefix_projection': false"),
        ({"peft_type": "LORA"}, "this experiment is a LORA adapter (a/adapter_config.json)"),
        (None, "this experiment is full fine-tuning"),
    ],
)
def test_adapter_problems(adapter, expected):
    problems = kvprefix.adapter_problems(TEXT, adapter, "a/tp.json", "a/adapter_config.json")
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith("a/tp.json: 'init_kv_cache_prefix'")
        assert expected in problems[0]
    assert kvprefix.adapter_problems(None, {"peft_type": "LORA"}, "s", "a") == []
    assert "non-empty text" in kvprefix.adapter_problems(" ", adapter, "s", "a")[0]


def test_the_key_may_be_left_out_of_a_tasks_defaults():
    """A task that offers the key (its spec's table) need not set it in its defaults: null."""
    table = training_table({kvprefix.KEY: kvprefix.TRAINING_KEY})
    known = ["max_steps"]
    assert validate_training_params({kvprefix.KEY: TEXT}, "e.json", known, table) == []
    assert validate_training_params({kvprefix.KEY: 3}, "e.json", known, table) == [
        "e.json: 'init_kv_cache_prefix' must be str or null, got 3"
    ]
    unknown = validate_training_params({kvprefix.KEY: TEXT}, "e.json", known)
    assert "unknown training key 'init_kv_cache_prefix'" in unknown[0]
