"""File checks for what the published suite's folders carry: the Riemannian optimizer's
arguments, fields another peft version wrote, and the suite's ``model_id`` key."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from peftbench.core.config import OPTIMIZER_TYPES, TRAINING_KEYS, validate_training_params
from peftbench.core.optim import make_optimizer
from peftbench.core.preflight import optimizer_problems, peft_config_problems

RIEMANNIAN = {"optimizer_type": "riemannian"}


def test_riemannian_is_an_optimizer_type():
    assert "riemannian" in OPTIMIZER_TYPES
    assert TRAINING_KEYS["optimizer_type"].choices == frozenset(OPTIMIZER_TYPES)


def test_riemannian_kwargs_are_checked_against_its_signature():
    """The suite's folder passes; lr is required (no default in PEFT's factory); reg is its
    own; AdamW's pass through; a typo gets the closest name."""
    suite = {"lr": 1e-4, "weight_decay": 0.1, "reg": 1e-2}
    assert optimizer_problems({**RIEMANNIAN, "optimizer_kwargs": suite}, "tp.json") == []
    missing = optimizer_problems({**RIEMANNIAN, "optimizer_kwargs": {"reg": 0.1}}, "tp.json")
    assert missing == ["tp.json: 'optimizer_kwargs.lr' is required by the riemannian optimizer"]
    typo = optimizer_problems({**RIEMANNIAN, "optimizer_kwargs": {"lr": 1, "regg": 1}}, "tp")
    assert len(typo) == 1 and "did you mean 'reg'" in typo[0]
    negative = validate_training_params({"optimizer_kwargs": {"lr": 1e-4, "reg": -1}}, "tp")
    assert negative == ["tp: 'optimizer_kwargs.reg' must be >= 0, got -1"]


def tiny_lora() -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(LlamaForCausalLM(config), lora)


def test_riemannian_optimizer_preconditions_the_lora_steps():
    """The factory builds PEFT's optimizer (AdamW underneath), and its steps differ from plain
    AdamW's from the same start: the LoRA gradients are preconditioned."""
    params = {"optimizer_kwargs": {"lr": 1e-2, "reg": 1e-2}}
    ids = torch.arange(12).reshape(2, 6)
    after = {}
    for kind in ("AdamW", "riemannian"):
        model = tiny_lora()
        kwargs = params["optimizer_kwargs"] if kind == "riemannian" else {"lr": 1e-2}
        optimizer = make_optimizer(model, {"optimizer_type": kind, "optimizer_kwargs": kwargs})
        assert isinstance(optimizer, torch.optim.AdamW)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        after[kind] = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    assert type(make_optimizer(tiny_lora(), {**RIEMANNIAN, **params})) is not torch.optim.AdamW
    assert any(
        not torch.equal(a, r) for a, r in zip(after["AdamW"], after["riemannian"], strict=True)
    )


C3A = {"peft_type": "C3A", "task_type": "CAUSAL_LM", "block_size": 64, "target_modules": ["v"]}


@pytest.mark.parametrize(
    "extra",
    [{"exclude_modules": None, "fan_in_fan_out": False}, {"alpha_pattern": {}}],
    ids=["suite-c3a", "empty-pattern"],
)
def test_fields_another_peft_version_wrote_at_their_default_pass(extra):
    """The suite's C3A/UniLoRA/OFT configs: fields this peft's class lacks, at the default
    they have in the classes that do have them; peft drops them, and so does the check."""
    assert peft_config_problems({**C3A, **extra}, "a.json") == []


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"fan_in_fan_out": True}, "unknown key 'fan_in_fan_out'"),  # a value that would act
        ({"exclude_modules": ["q"]}, "unknown key 'exclude_modules'"),
        ({"block_sise": 64}, "unknown key 'block_sise' (did you mean 'block_size'?)"),
        ({"lora_alpha": 16}, "unknown key 'lora_alpha'"),  # LoRA's default is 8
    ],
)
def test_other_unknown_fields_are_still_errors(extra, message):
    problems = peft_config_problems({**C3A, **extra}, "a.json")
    assert len(problems) == 1 and message in problems[0], problems


def test_model_id_is_accepted_in_any_experiment_file():
    """No task default sets it (the config's base_model does): checked for its type here,
    against the base model by the pre-flight check (tests/core/test_validate.py)."""
    known = ["max_steps"]
    assert validate_training_params({"model_id": "meta-llama/Llama-3.2-3B"}, "tp", known) == []
    assert validate_training_params({"model_id": 3}, "tp", known) == [
        "tp: 'model_id' must be str, got 3"
    ]


def test_a_non_nullable_key_outside_the_defaults_stays_unknown():
    problems = validate_training_params({"use_gc": True}, "tp", known=["max_steps"])
    assert len(problems) == 1 and "unknown training key 'use_gc'" in problems[0]
