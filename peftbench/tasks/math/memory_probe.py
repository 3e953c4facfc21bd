"""The math task's memory probe (:mod:`peftbench.core.estimate`): its causal LM built from
the shipped architecture config, and one batch of the longest shape training can draw; the
evaluation is batched generation at its costliest: the prefill of ``batch_size_eval`` prompts
(activations of every prompt token, the KV cache of the prompts), the KV cache growing one
token at a time as generation concatenates each step's keys and values onto it (the decoding
steps' own activations, a few kilobytes per row, are left out), and the last decoding step."""

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
    truncates to that length, so no batch is larger), built by the run's own ``collate`` in
    each call (as each step builds its batch) and passed through the run's
    ``model(**batch).loss``."""
    length, size = params["max_seq_length"], params["batch_size"]
    sample = {"input_ids": [1] * length, "labels": [1] * length}
    device = next(model.parameters()).device

    def loss() -> torch.Tensor:
        batch = collate([sample] * size, 0, device)
        # Every row is full, so the mask is all ones, which transformers checks with .item()
        # and then drops (plain causal attention); meta tensors have no values to check, so
        # drop it here.
        del batch["attention_mask"]
        return model(**batch).loss

    return loss


def evaluation(
    model: Any,
    arch: dict[str, Any],
    task_cfg: dict[str, Any],
    params: dict[str, Any],
    max_length: int | None = None,
    prompt_tokens: int | None = None,
) -> Callable[[], None]:
    """Generation for a batch of ``batch_size_eval`` prompts of ``prompt_tokens`` tokens
    (default: ``max_seq_length``, the longest a prompt is kept) with ``max_new_tokens`` new
    tokens, capped at ``max_length`` tokens in all (the published suite's cap; default: the
    params' ``generation_max_length``, as the run caps its generation): the prefill,
    then the KV cache grown token by token to the final length and the last decoding step.
    Both forwards keep only the last position's logits, as ``generate`` does."""
    size = params["batch_size_eval"]
    prompt = prompt_tokens or params["max_seq_length"]
    total = prompt + params.get("max_new_tokens", 0)
    if max_length is None:
        max_length = params.get("generation_max_length")
    if max_length is not None:
        total = min(total, max_length)
    prompt = min(prompt, total - 1)
    device = next(model.parameters()).device
    # Decoding steps run the wrapped transformer on the cache (prompt learning's virtual
    # tokens are in the cache from the prefill on).
    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model

    def generate() -> None:
        ids = torch.ones(size, prompt, dtype=torch.long, device=device)
        cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        del ids
        # Each decoding step makes every layer's key and value of the new token and
        # concatenates them onto the cache (a new tensor one token longer; the old one goes):
        # the same allocations, without running the step.
        for _ in range(total - 1 - prompt):
            for layer in cache.layers:
                keys, values = layer.keys, layer.values
                key, value = keys.new_empty(_grown(keys, 0)), values.new_empty(_grown(values, 0))
                layer.keys = keys.new_empty(_grown(keys, 1))
                del keys
                layer.values = values.new_empty(_grown(values, 1))
                del values, key, value
        step = torch.ones(size, 1, dtype=torch.long, device=device)
        decoder(input_ids=step, past_key_values=cache, use_cache=True, logits_to_keep=1)

    return generate


def _grown(cache: torch.Tensor, tokens: int) -> tuple[int, ...]:
    """The shape of ``cache`` (..., length, head_dim) with its length grown by ``tokens`` (0:
    the shape of one token's entry)."""
    length = cache.shape[-2] + tokens if tokens else 1
    return (*cache.shape[:-2], length, cache.shape[-1])


def enable_gradient_checkpointing(model: Any) -> None:
    """As the run does with ``use_gc``."""
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
