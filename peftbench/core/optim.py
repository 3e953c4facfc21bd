"""Optimizers, learning-rate schedules and the optimizer update: built in one place for every
training of the project (fine-tuning in each task, the embedded models' pretraining)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup


def make_optimizer(model: torch.nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, or PEFT's LoRA+ / LoRA-FA / Riemannian optimizers
    (which need the PEFT model itself). LoRA+ and the Riemannian optimizer wrap AdamW, as in the
    published suite; the Riemannian one preconditions the LoRA factors' gradients (it raises a
    ValueError for a model without LoRA A/B pairs, which the pre-flight check reports)."""
    kwargs = dict(params["optimizer_kwargs"])
    kind = params["optimizer_type"]
    if kind == "lora+":
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)
    if kind == "lora-fa":
        from peft.optimizers import create_lorafa_optimizer

        return create_lorafa_optimizer(model, **kwargs)
    if kind == "riemannian":
        from peft.optimizers import create_riemannian_optimizer

        return create_riemannian_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, **kwargs)


def _shifted_warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    # Kept exactly as the embedded diffusion model has always been pretrained (warm-up counted
    # from step + 1 and multiplied onto a cosine over the whole run, unlike transformers'
    # piecewise warm-up-then-cosine), so that the embedded base model and its figures stay
    # bit for bit the same.
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))


def make_scheduler(
    optimizer: torch.optim.Optimizer, params: Mapping[str, Any]
) -> torch.optim.lr_scheduler.LRScheduler:
    """The ``lr_scheduler`` of ``params`` over ``max_steps`` with ``warmup_ratio`` warm-up:

    * ``cosine`` and ``constant``: transformers' schedules with linear warm-up;
    * ``shifted_warmup_cosine``: the embedded diffusion pretraining's own schedule (see
      ``_shifted_warmup_cosine``); not offered to experiments.
    """
    kind, total = params["lr_scheduler"], params["max_steps"]
    warmup = int(params["warmup_ratio"] * total)
    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if kind == "shifted_warmup_cosine":
        shape = partial(_shifted_warmup_cosine, warmup=max(1, warmup), total=total)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
    raise ValueError(f"unknown lr_scheduler {kind!r} (cosine, constant, shifted_warmup_cosine)")


class Updater:
    """One optimizer update once the gradients of a step are in: clip (``grad_norm_clip``;
    0 or None: no clipping), step optimizer and schedule, let AdaLoRA (or AdaMSS) reallocate
    ranks (PEFT exposes that as ``update_and_allocate``), clear gradients, and on CUDA wait for
    the GPU so that step timings are real."""

    def __init__(
        self, model: torch.nn.Module, optimizer: Any, scheduler: Any, clip: float | None
    ) -> None:
        self.optimizer, self.scheduler, self.clip = optimizer, scheduler, clip or 0.0
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.allocate = getattr(getattr(model, "base_model", None), "update_and_allocate", None)
        self.device = self.trainable[0].device if self.trainable else torch.device("cpu")

    def __call__(self, step: int) -> None:
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.allocate is not None:
            self.allocate(step)
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
