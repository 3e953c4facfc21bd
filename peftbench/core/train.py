"""The training loop: one screen, nothing hidden.

Used both to pretrain the embedded base model and to fine-tune every experiment. Timing counts
optimizer steps only (forward, backward, clip, step, schedule); validation runs between steps and
is timed and memory-tracked separately.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from peftbench.core.memory import MemoryTracker

IGNORE = -100


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run is stopped early and marked failed."""


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
        encode(tokenizer, template.format(query=r["query"]), r["response"],
               params["max_seq_length"], params["train_on_prompt"])
        for r in rows
    ]  # fmt: skip


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


def make_optimizer(model: torch.nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW, or PEFT's LoRA+ / LoRA-FA optimizers (which need the PEFT model itself)."""
    kwargs = dict(params["optimizer_kwargs"])
    kind = params["optimizer_type"]
    if kind == "lora+":
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)
    if kind == "lora-fa":
        from peft.optimizers import create_lorafa_optimizer

        return create_lorafa_optimizer(model, **kwargs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, params: dict[str, Any]) -> Any:
    warmup = int(params["warmup_ratio"] * params["max_steps"])
    if params["lr_scheduler"] == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, params["max_steps"])
    return get_constant_schedule_with_warmup(optimizer, warmup)


class Updater:
    """One optimizer update after the gradients of a step are in, shared by every task's loop:
    clip, step optimizer and schedule, let AdaLoRA (or AdaMSS) reallocate ranks (PEFT exposes
    that as ``update_and_allocate``), clear gradients, and on CUDA wait for the GPU so that step
    timings are real."""

    def __init__(self, model: torch.nn.Module, optimizer: Any, scheduler: Any, params: dict[str, Any]) -> None:  # fmt: skip
        self.optimizer, self.scheduler, self.clip = optimizer, scheduler, params["grad_norm_clip"]
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


@dataclass
class TrainStats:
    steps: int = 0
    train_time_s: float = 0.0
    valid_time_s: float = 0.0
    tokens: int = 0
    peak_bytes: int = 0
    peak_allocated_bytes: int | None = None
    loss_curve: list[dict] = field(default_factory=list)
    valid_curve: list[dict] = field(default_factory=list)


def train(
    model: torch.nn.Module,
    examples: list[dict],
    params: dict[str, Any],
    seed: int,
    pad_id: int,
    tracker: MemoryTracker,
    validate: Callable[[torch.nn.Module], float] | None = None,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
) -> TrainStats:
    """Train ``model`` in place on encoded ``examples`` for ``params['max_steps']`` optimizer steps.

    With ``checkpoint_dir`` and ``params['checkpoint_steps'] > 0``, a resumable checkpoint is saved
    every N steps, and a checkpoint found there at the start is resumed from: on CPU the resumed
    run ends with exactly the numbers of an uninterrupted one.
    """
    device = tracker.device
    optimizer = make_optimizer(model, params)
    scheduler = make_scheduler(optimizer, params)
    accum = params["grad_accumulation_steps"]
    batches = batch_stream(
        [len(e["input_ids"]) for e in examples], params["batch_size"], params["bucket_factor"], seed
    )
    update = Updater(model, optimizer, scheduler, params)
    stats, window, first = TrainStats(), [], 1
    every = params.get("checkpoint_steps", 0) if checkpoint_dir is not None else 0
    if every and (Path(checkpoint_dir) / CHECKPOINT).exists():
        first, window = _load_checkpoint(Path(checkpoint_dir), model, optimizer, scheduler, stats)
        # The batch order is a pure function of the seed: skip what was already consumed.
        for _ in range((first - 1) * accum):
            next(batches)
    model.train()
    tracker.reset()
    bar = tqdm(
        range(first, params["max_steps"] + 1),
        desc="train",
        disable=not progress,
        mininterval=2,
        initial=first - 1,
        total=params["max_steps"],
    )
    for step in bar:
        t0 = time.perf_counter()
        for _ in range(accum):
            batch = collate([examples[i] for i in next(batches)], pad_id, device)
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"loss is {loss.item()} at step {step}")
            (loss / accum).backward()
            window.append(loss.item())
            stats.tokens += int(batch["attention_mask"].sum())
        update(step)
        stats.train_time_s += time.perf_counter() - t0
        stats.steps = step
        if step % params["log_steps"] == 0 or step == params["max_steps"]:
            stats.loss_curve.append(
                {"step": step, "loss": sum(window) / len(window), "lr": scheduler.get_last_lr()[0]}
            )
            bar.set_postfix(loss=f"{stats.loss_curve[-1]['loss']:.3f}")
            window = []
        eval_now = params["eval_steps"] and step % params["eval_steps"] == 0
        if validate is not None and (eval_now or step == params["max_steps"]):
            record_peak(stats, tracker)
            t1 = time.perf_counter()
            acc = validate(model)
            stats.valid_time_s += time.perf_counter() - t1
            stats.valid_curve.append({"step": step, "accuracy": acc})
            model.train()
            tracker.reset()
        if every and step % every == 0 and step < params["max_steps"]:
            _save_checkpoint(Path(checkpoint_dir), step, model, optimizer, scheduler, stats, window)
    record_peak(stats, tracker)
    if stats.loss_curve and not math.isfinite(stats.loss_curve[-1]["loss"]):
        raise NonFiniteLossError("final loss is not finite")
    return stats


def record_peak(stats: TrainStats, tracker: MemoryTracker) -> None:
    """Fold the tracker's peak of the phase so far into ``stats`` (before a validation pause)."""
    peak, allocated = tracker.peak()
    stats.peak_bytes = max(stats.peak_bytes, peak)
    if allocated is not None:
        stats.peak_allocated_bytes = max(stats.peak_allocated_bytes or 0, allocated)


CHECKPOINT = "checkpoint.pt"


def _save_checkpoint(folder: Path, step: int, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                     stats: TrainStats, window: list[float]) -> None:  # fmt: skip
    """Everything the rest of the run depends on: trainable weights, optimizer and scheduler
    state, RNG states, statistics so far. Written atomically (a kill never leaves half a file)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = {
        "step": step,
        "model": {k: v for k, v in model.state_dict().items() if k in trainable},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "stats": dataclasses.asdict(stats),
        "window": window,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }  # fmt: skip
    # AdaLoRA's rank allocator keeps importance scores outside the parameters.
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is not None:
        state["rankallocator"] = {
            k: getattr(allocator, k) for k in ("ipt", "exp_avg_ipt", "exp_avg_unc")
        }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / CHECKPOINT)


def _load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                     stats: TrainStats) -> tuple[int, list[float]]:  # fmt: skip
    # weights_only=False: the file holds RNG states; it is this workflow's own output.
    state = torch.load(folder / CHECKPOINT, weights_only=False)
    missing = set(state["model"]) - set(model.state_dict())
    if missing:
        raise RuntimeError(
            f"{folder / CHECKPOINT}: does not match the model (e.g. {sorted(missing)[:3]})"
        )
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for key, value in state["stats"].items():
        setattr(stats, key, value)
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is not None and "rankallocator" in state:
        for key, value in state["rankallocator"].items():
            setattr(allocator, key, value)
    print(f"resumed from {folder / CHECKPOINT} at step {state['step']}", flush=True)
    return state["step"] + 1, state["window"]
