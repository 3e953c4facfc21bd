"""The math task's memory probe (:mod:`peftbench.core.estimate`): its causal LM built from
the shipped architecture config, and one batch of the longest shape training can draw."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from peftbench.core.estimate import GPU, shipped_architecture
from peftbench.core.runs import torch_dtype
from peftbench.core.train import collate


def architecture(task_cfg: dict[str, Any]) -> dict[str, Any]:
    """The base LM's ``config.json`` as a dict: the embedded model's from the config, a hub
    model's from the file shipped in the repository (never downloaded)."""
    model_cfg = task_cfg["base_model"]
    if model_cfg["source"] == "embedded":
        embedded = model_cfg["embedded"]
        return {
            "model_type": "llama",
            "vocab_size": embedded["vocab_size"],
            "tie_word_embeddings": True,
            **embedded["architecture"],
        }
    folder = shipped_architecture(model_cfg["hub"]["model_id"])
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def build(arch: dict[str, Any], params: dict[str, Any], device: torch.device | str) -> Any:
    """The causal LM of ``arch`` at the run's dtype (dtype "auto" as on a GPU: bf16)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = dict(arch)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(
            config,
            dtype=torch_dtype(params["dtype"], GPU),
            attn_implementation=params.get("attn_implementation"),
        )


def training_loss(
    model: Any, arch: dict[str, Any], task_cfg: dict[str, Any], params: dict[str, Any]
) -> Callable[[], torch.Tensor]:
    """The loss of a batch of ``batch_size`` sequences of ``max_seq_length`` tokens (training
    truncates to that length, so no batch is larger), built by the run's own ``collate`` and
    passed through the run's ``model(**batch).loss``."""
    length, size = params["max_seq_length"], params["batch_size"]
    sample = {"input_ids": [1] * length, "labels": [1] * length}
    device = next(model.parameters()).device
    batch = collate([sample] * size, 0, device)
    # Every row is full, so the mask is all ones, which transformers checks with .item() and
    # then drops (plain causal attention); meta tensors have no values to check, so drop it here.
    del batch["attention_mask"]
    return lambda: model(**batch).loss


def enable_gradient_checkpointing(model: Any) -> None:
    """As the run does with ``use_gc``."""
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
