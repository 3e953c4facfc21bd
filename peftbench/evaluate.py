"""Evaluation: explicit greedy generation and the held-out loss used for forgetting.

Greedy decoding is set explicitly (``do_sample=False``) instead of inheriting the model's
``generation_config.json``: the published suite inherited Llama's sampling defaults, which moved
accuracy by 1-2 points between identical reruns.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    device: torch.device,
) -> list[str]:
    """Continuations (prompt excluded) for ``prompts``, batched and left-padded."""
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    outputs: list[str] = []
    model.eval()
    # Sorting by length keeps padding (and wasted compute) low; the order is restored at the end.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = [tokenizer(prompts[i])["input_ids"] for i in idx]
            width = max(map(len, enc))
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
    model: Any,
    tokenizer: Any,
    texts: list[str],
    batch_size: int,
    max_len: int,
    device: torch.device,
) -> float:
    """Mean next-token cross-entropy over all tokens of ``texts`` pooled (not per document)."""
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = [tokenizer(t)["input_ids"][:max_len] for t in texts[start : start + batch_size]]
            width = max(map(len, enc))
            ids = torch.full((len(enc), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, e in enumerate(enc):
                ids[row, : len(e)] = torch.tensor(e)
                mask[row, : len(e)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            # Prompt-learning models prepend virtual tokens: keep only the real positions.
            logits = logits[:, -width:, :]
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                targets.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += loss.item()
            count += int((targets != -100).sum())
    return total / max(count, 1)
