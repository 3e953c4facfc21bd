"""The order fine-tuning draws MetaMathQA-style training rows in (training key ``train_order``).

``shuffled`` (the default): :func:`peftbench.core.train.lm_step`, which shuffles every epoch and
then the length-sorted batches. ``stored``: the published suite's order, a single front-to-back
walk of the data as stored, so with 5,000 steps of 4 it trains on the first 20,000 rows;
shuffling instead draws from all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from peftbench.core.loop import Step
from peftbench.core.train import lm_step

#: Values of the ``train_order`` training key; a missing key means the first.
TRAIN_ORDERS = ("shuffled", "stored")


def stored_batches(lengths: list[int], batch_size: int, bucket_factor: int) -> Iterator[list[int]]:
    """Endless batches (row indices) in stored order, drawn as the published suite draws them.

    Consecutive buckets of ``batch_size * bucket_factor`` rows; each bucket is sorted longest
    first and cut into batches in that order, nothing is shuffled. The sort is the suite's own
    call (``torch.argsort(..., descending=True)``): ties then fall as they fall there. After the
    last bucket the walk starts again at the first row; the suite stops training there instead
    (and yields its last, partial bucket twice), which its runs never reach (20,000 of about
    370,000 rows).
    """
    if not lengths:
        raise ValueError("no training rows to draw batches from")
    bucket = batch_size * bucket_factor
    while True:
        for start in range(0, len(lengths), bucket):
            chunk = torch.tensor(lengths[start : start + bucket])
            order = (torch.argsort(chunk, descending=True) + start).tolist()
            for i in range(0, len(order), batch_size):
                yield order[i : i + batch_size]


def training_step(
    model: torch.nn.Module,
    examples: list[dict],
    params: dict[str, Any],
    seed: int,
    pad_id: int,
    device: torch.device,
) -> Step:
    """The fine-tuning :class:`~peftbench.core.loop.Step` for the params' ``train_order``."""
    order = params.get("train_order", TRAIN_ORDERS[0])
    if order == "shuffled":
        # The default's code path is untouched, so its numbers stay bit-identical.
        return lm_step(model, examples, params, seed, pad_id, device)
    if order != "stored":
        raise ValueError(f"train_order must be one of {list(TRAIN_ORDERS)}, got {order!r}")
    lengths = [len(e["input_ids"]) for e in examples]

    def stream() -> Iterator[list[int]]:
        return stored_batches(lengths, params["batch_size"], params["bucket_factor"])

    return lm_step(model, examples, params, seed, pad_id, device, stream=stream)
