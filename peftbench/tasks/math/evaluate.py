"""Evaluation: explicit greedy generation and the held-out loss used for forgetting.

Greedy decoding is set explicitly (``do_sample=False``) instead of inheriting the model's
``generation_config.json``: the published suite inherited Llama's sampling defaults, which moved
accuracy by 1-2 points between identical reruns.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig

from peftbench.core.train import IGNORE, collate


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    device: torch.device,
    max_length: int | None = None,
) -> list[str]:
    """Continuations (prompt excluded) for ``prompts``, batched and left-padded.

    ``max_length`` (None: no cap) caps a batch's total length, its padded prompt width plus the
    new tokens, as the published suite's ``generation_kwargs`` ``max_length`` does beside
    ``max_new_tokens``: a batch gets ``min(max_new_tokens, max_length - width)`` new tokens, at
    least one (what ``generate`` makes of a prompt that already reaches ``max_length``).
    """
    outputs: list[str] = []
    model.eval()
    # Sorting by length keeps padding (and wasted compute) low; the order is restored at the end.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = [tokenizer(prompts[i])["input_ids"] for i in idx]
            width = max(map(len, enc))
            budget = (
                max_new_tokens if max_length is None else min(max_new_tokens, max_length - width)
            )
            config = GenerationConfig(
                do_sample=False,
                num_beams=1,
                max_new_tokens=max(budget, 1),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id,
            )
            ids = torch.full((len(enc), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, e in enumerate(enc):
                ids[row, width - len(e) :] = torch.tensor(e)
                mask[row, width - len(e) :] = 1
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
            new = out[:, width:]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    restored = [""] * len(prompts)
    for pos, i in enumerate(order):
        restored[i] = outputs[pos]
    return restored


def heldout_loss(
    model: Any, examples: list[dict], batch_size: int, pad_id: int, device: torch.device
) -> float:
    """Mean next-token cross-entropy over all labelled tokens of ``examples`` (encoded like
    training examples), pooled across examples rather than averaged per example."""
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_id, device)
            width = batch["input_ids"].shape[1]
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            # Prompt-learning models prepend virtual tokens: keep only the real positions.
            logits = logits[:, -width:, :].float()
            targets = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                targets.reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
            total += loss.item()
            count += int((targets != IGNORE).sum())
    return total / max(count, 1)
