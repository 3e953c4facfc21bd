"""Causal-LM training data and step: encoding, length-bucketed batches, padding, and the
:class:`~peftbench.core.loop.Step` that the shared loop trains a language model with (the
embedded model's pretraining and every fine-tuning of a task that tunes an LM)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from peftbench.core.loop import Step

IGNORE = -100


def encode(tokenizer: Any, prompt: str, response: str, max_len: int, train_on_prompt: bool) -> dict:
    """Token ids and labels for one example; prompt and response are tokenized separately so that
    training sees exactly the prompt tokens that generation will be given."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + response_ids + [tokenizer.eos_token_id])[:max_len]
    labels = list(ids) if train_on_prompt else [IGNORE] * len(prompt_ids) + ids[len(prompt_ids) :]
    return {"input_ids": ids, "labels": labels[:max_len]}


def encode_rows(tokenizer: Any, rows: list[dict], params: dict[str, Any]) -> list[dict]:
    """``encode`` every ``{"query", "response"}`` row with the params' template and limits."""
    template = params["query_template"]
    return [
        encode(
            tokenizer,
            template.format(query=r["query"]),
            r["response"],
            params["max_seq_length"],
            params["train_on_prompt"],
        )
        for r in rows
    ]


def batch_stream(
    lengths: list[int], batch_size: int, bucket_factor: int, seed: int
) -> Iterator[list[int]]:
    """Endless length-bucketed batches: each epoch is shuffled, cut into buckets of
    ``batch_size * bucket_factor`` samples sorted by length (less padding), then the batches are
    shuffled. Deterministic in ``seed``, so a resumed run can skip to its position."""
    gen = torch.Generator().manual_seed(seed)
    bucket = batch_size * bucket_factor
    while True:
        order = torch.randperm(len(lengths), generator=gen).tolist()
        batches = []
        for start in range(0, len(order), bucket):
            chunk = sorted(order[start : start + bucket], key=lambda i: -lengths[i])
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        for j in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[j]


def collate(samples: list[dict], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[row, :n] = torch.tensor(s["input_ids"])
        labels[row, :n] = torch.tensor(s["labels"])
        mask[row, :n] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def lm_step(
    model: torch.nn.Module,
    examples: list[dict],
    params: dict[str, Any],
    seed: int,
    pad_id: int,
    device: torch.device,
    stream: Callable[[], Iterator[list[int]]] | None = None,
) -> Step:
    """The loss of the next batch of encoded ``examples`` (its size: the non-padding tokens).
    Batches come from ``stream()``, by default the seeded length-bucketed shuffle
    (:func:`batch_stream`); a stream is a pure function of its arguments, so a resumed run skips
    what was already consumed."""
    lengths = [len(e["input_ids"]) for e in examples]
    if stream is None:

        def stream() -> Iterator[list[int]]:
            return batch_stream(lengths, params["batch_size"], params["bucket_factor"], seed)

    batches = stream()
    # A second copy of the stream tells the padded size of any batch ahead of time.
    replay = stream()
    costs: list[int] = []

    def batch_cost(n: int) -> int:
        while len(costs) <= n:
            batch = next(replay)
            costs.append(len(batch) * max(lengths[i] for i in batch))
        return costs[n]

    def loss() -> tuple[torch.Tensor, int]:
        batch = collate([examples[i] for i in next(batches)], pad_id, device)
        return model(**batch).loss, int(batch["attention_mask"].sum())

    def skip(n: int) -> None:
        for _ in range(n):
            next(batches)

    return Step(loss=loss, skip=skip, batch_cost=batch_cost)
