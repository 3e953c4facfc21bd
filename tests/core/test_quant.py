"""Quantized base models (dtype int8/int4): the loading arguments the suite uses, the check
that bitsandbytes is there, and (slow, where bitsandbytes is installed) QLoRA on the CPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from peftbench.core import quant
from peftbench.core.config import (
    FLOAT_DTYPES,
    QUANTIZED_DTYPES,
    TRAINING_KEYS,
    dtype_key,
    validate_training_params,
)
from peftbench.core.runs import torch_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_only_a_task_that_opts_in_accepts_quantized_dtypes():
    """The shared key stays floating-point: a task whose loader does not quantize would
    silently train an unquantized model."""
    assert TRAINING_KEYS["dtype"].choices == frozenset(FLOAT_DTYPES)
    assert dtype_key(quantized=True).choices == frozenset(FLOAT_DTYPES + QUANTIZED_DTYPES)
    shared = validate_training_params({"dtype": "int4"}, "exp.json")
    assert shared and "'dtype' must be one of" in shared[0]
    table = {**TRAINING_KEYS, "dtype": dtype_key(quantized=True)}
    assert validate_training_params({"dtype": "int4"}, "exp.json", table=table) == []


@pytest.mark.parametrize("name, expected", [("float32", torch.float32), ("auto", torch.float32),
                                            ("bfloat16", torch.bfloat16)])  # fmt: skip
def test_float_dtypes_load_as_before(name, expected):
    assert quant.load_kwargs(name, CPU) == {"dtype": expected}


@pytest.mark.parametrize("name", QUANTIZED_DTYPES)
def test_quantized_dtypes_load_as_the_suite_does(name):
    kwargs = quant.load_kwargs(name, CPU)
    config = kwargs["quantization_config"]
    assert config.load_in_8bit is (name == "int8") and config.load_in_4bit is (name == "int4")
    # Every other option at bitsandbytes' default, as the suite's BitsAndBytesConfig(...).
    assert config.bnb_4bit_quant_type == "fp4" and not config.bnb_4bit_use_double_quant
    assert kwargs["device_map"] == {"": CPU}
    assert kwargs["dtype"] is torch.float32 == torch_dtype(name, CPU)
    assert quant.load_kwargs(name, CUDA)["dtype"] is torch.bfloat16 == torch_dtype(name, CUDA)


def test_a_missing_bitsandbytes_is_named_with_the_file_and_the_field(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert quant.problems("float32", "exp.json") == []
    (problem,) = quant.problems("int8", "exp/training_params.json")
    assert problem.startswith("exp/training_params.json: 'dtype' 'int8'")
    assert "pip install bitsandbytes" in problem


def test_a_quantized_base_is_not_estimated_rather_than_misestimated(tmp_path):
    """The memory estimate does not model bitsandbytes' storage: it says so instead of
    predicting the unquantized size."""
    import json

    from peftbench.core.estimate import estimate_experiment

    folder = tmp_path / "lora/qlora"
    folder.mkdir(parents=True)
    (folder / "training_params.json").write_text(json.dumps({"dtype": "int4"}))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    table = {**TRAINING_KEYS, "dtype": dtype_key(quantized=True)}
    task_cfg = {"experiments_dir": str(tmp_path), "training": {"dtype": "bfloat16"}}
    estimate = estimate_experiment(None, task_cfg, "lora/qlora", table)
    assert estimate.error == "not estimated: a quantized base model (dtype int4) is not modelled"
    assert estimate.peak_bytes is None


@pytest.mark.slow
@pytest.mark.parametrize("name", QUANTIZED_DTYPES)
def test_qlora_trains_and_generates_on_the_cpu(name, tmp_path):
    """bitsandbytes' CPU backend: a LoRA step on a quantized tiny Llama lowers the loss, and
    greedy generation runs, with the embedded model's 352-wide MLP that the AVX512-BF16 4-bit
    kernel cannot take (quant.place turns it off)."""
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=352,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, **quant.load_kwargs(name, CPU))
    model = quant.place(model, name, CPU)
    layer = model.model.layers[0].mlp.down_proj
    assert type(layer).__name__ == ("Linear8bitLt" if name == "int8" else "Linear4bit")
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(4):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids[:, :4], max_new_tokens=3, do_sample=False)
    assert out.shape == (2, 7)
