"""The training loop of every training in the project: one screen, nothing hidden.

Fine-tuning in each task, the embedded language model's and diffusion model's pretraining and
the similarity encoder all go through :func:`train`; what differs between them is a
:class:`Step`, the loss of the next batch. The optimizer and schedule come from
:mod:`peftbench.core.optim`. Timing counts optimizer steps only (forward, backward, clip, step,
schedule); validation runs between steps and is timed and memory-tracked separately.

Memory is measured twice: the device's own figure over every step (:class:`MemoryTracker`:
CUDA allocator peak, or RSS on a CPU) and an exact account of live tensor bytes by category
over one step (:class:`~peftbench.core.memtrack.TensorAccountant`). One step is enough because
the tensors of a step depend only on the batch's shape: the accounted step is the costliest
batch's (:func:`accounted_step`), which keeps the accounting's overhead to a single step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peftbench.core import progress as job_progress
from peftbench.core.memory import MemoryTracker
from peftbench.core.memtrack import TensorAccountant
from peftbench.core.optim import Updater, make_optimizer, make_scheduler

CHECKPOINT = "checkpoint.pt"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run is stopped early and marked failed."""


@dataclass
class Step:
    """A training's own part of the loop."""

    #: Draws the next batch and returns its loss and its size in items (tokens, images).
    loss: Callable[[], tuple[torch.Tensor, int]]
    #: The generator the batches (and noise) are drawn from, if any: checkpoints save and
    #: restore its state, so a resumed run draws what the uninterrupted one would have.
    generator: torch.Generator | None = None
    #: Fast-forwards the batch source by n batches on resume, for sources that are a pure
    #: function of their seed and position rather than of a saved generator state.
    skip: Callable[[int], None] | None = None
    #: The padded size (e.g. rows x longest sequence) of the n-th batch ``loss`` will draw
    #: (0-based), known without drawing it: picks the step whose tensors are accounted
    #: (:func:`accounted_step`). None: every batch has the same shapes.
    batch_cost: Callable[[int], int] | None = None


@dataclass
class TrainStats:
    steps: int = 0
    train_time_s: float = 0.0
    valid_time_s: float = 0.0
    #: Items the training steps processed: non-padding tokens, images, ...
    items: int = 0
    peak_bytes: int = 0
    peak_allocated_bytes: int | None = None
    #: Exact live-tensor account of one step (see the module docstring): its peak bytes, their
    #: split by category (``peftbench.core.memtrack.CATEGORIES``) and the step accounted.
    tensor_peak_bytes: int | None = None
    tensor_breakdown: dict[str, int] | None = None
    tensor_step: int | None = None
    loss_curve: list[dict] = field(default_factory=list)
    valid_curve: list[dict] = field(default_factory=list)

    def result_metrics(self) -> dict[str, Any]:
        """The result metrics every training reports (keys of ``runs.SHARED_METRICS``)."""
        return {
            "train_memory_peak_bytes": self.peak_bytes,
            "train_memory_allocated_peak_bytes": self.peak_allocated_bytes,
            "train_tensor_peak_bytes": self.tensor_peak_bytes,
            "train_tensor_breakdown": self.tensor_breakdown,
            "train_time_s": self.train_time_s,
            "valid_time_s": self.valid_time_s,
            "train_steps": self.steps,
            "train_loss_final": self.loss_curve[-1]["loss"] if self.loss_curve else None,
        }


def train(
    model: torch.nn.Module,
    step_fn: Step,
    params: Mapping[str, Any],
    tracker: MemoryTracker,
    validate: Callable[[int], Mapping[str, float] | None] | None = None,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    empty_cache: Callable[[], None] | None = None,
) -> TrainStats:
    """Train the trainable parameters of ``model`` in place for ``params['max_steps']``
    optimizer steps of ``grad_accumulation_steps`` batches each.

    Keys of ``params``: ``max_steps``, ``log_steps``, the optimizer's and schedule's (see
    :mod:`peftbench.core.optim`), and optionally ``grad_accumulation_steps`` (1),
    ``grad_norm_clip`` (0: none), ``eval_steps`` (0: only at the end), ``checkpoint_steps`` and
    ``empty_cache_steps`` (0: never; N: ``empty_cache()`` after every N-th step, its validation
    included, as the published math suite does every 10 steps; by default the CUDA caching
    allocator's, a no-op without CUDA). ``validate(step)`` runs every ``eval_steps`` and at the
    end; what it returns (if anything) is added to ``valid_curve``. With ``checkpoint_dir`` and
    ``checkpoint_steps > 0``, a resumable checkpoint is saved every N steps, and one found there
    at the start is resumed from: on CPU the resumed run ends with exactly the numbers of an
    uninterrupted one. The folder is removed when training ends well, unless
    ``keep_checkpoints``.
    """
    optimizer = make_optimizer(model, params)
    scheduler = make_scheduler(optimizer, params)
    update = Updater(model, optimizer, scheduler, params.get("grad_norm_clip"))
    max_steps, accum = params["max_steps"], params.get("grad_accumulation_steps", 1)
    eval_steps = params.get("eval_steps", 0)
    every = params.get("checkpoint_steps", 0) if checkpoint_dir is not None else 0
    empty_every = params.get("empty_cache_steps", 0)
    empty_cache = empty_cache or empty_device_cache
    stats, window, first = TrainStats(), [], 1
    accounted = accounted_step(step_fn, max_steps, accum)
    if every and (Path(checkpoint_dir) / CHECKPOINT).exists():
        first, window = _load_checkpoint(
            Path(checkpoint_dir), model, optimizer, scheduler, stats, step_fn
        )
        if step_fn.skip is not None:
            step_fn.skip((first - 1) * accum)
    model.train()
    tracker.reset()
    t_start = time.perf_counter()
    for step in range(first, max_steps + 1):
        t0 = time.perf_counter()
        accountant = TensorAccountant(model, optimizer) if step == accounted else None
        with accountant if accountant is not None else nullcontext():
            for _ in range(accum):
                loss, items = step_fn.loss()
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"loss is {loss.item()} at step {step}")
                (loss / accum).backward()
                window.append(loss.item())
                stats.items += items
            update(step)
        stats.train_time_s += time.perf_counter() - t0
        if accountant is not None:
            stats.tensor_peak_bytes, stats.tensor_step = accountant.peak_bytes(), step
            stats.tensor_breakdown = accountant.breakdown()
        stats.steps = step
        if step % params["log_steps"] == 0 or step == max_steps:
            lr = scheduler.get_last_lr()[0]
            stats.loss_curve.append({"step": step, "loss": sum(window) / len(window), "lr": lr})
            window = []
            if progress:  # the log's line (the console's comes after validation)
                loss_now, elapsed = stats.loss_curve[-1]["loss"], time.perf_counter() - t_start
                print(
                    f"step {step}/{max_steps} loss {loss_now:.4f} lr {lr:.3g} ({elapsed:.0f} s)",
                    flush=True,
                )
        if validate is not None and ((eval_steps and step % eval_steps == 0) or step == max_steps):
            record_peak(stats, tracker)
            t1 = time.perf_counter()
            model.eval()
            values = validate(step)
            stats.valid_time_s += time.perf_counter() - t1
            if values is not None:
                stats.valid_curve.append({"step": step, **values})
            model.train()
            tracker.reset()
        if progress:
            # Every step: the job's console (if any) shows one now and then, whatever log_steps.
            loss_now = stats.loss_curve[-1]["loss"] if stats.loss_curve else _mean(window)
            valid_now = stats.valid_curve[-1] if stats.valid_curve else None
            job_progress.report_step(step, max_steps, loss_now, valid_now)
        if empty_every and step % empty_every == 0:
            empty_cache()
        if every and step % every == 0 and step < max_steps:
            _save_checkpoint(
                Path(checkpoint_dir), step, model, optimizer, scheduler, stats, window, step_fn
            )
    record_peak(stats, tracker)
    model.eval()
    if stats.loss_curve and not math.isfinite(stats.loss_curve[-1]["loss"]):
        raise NonFiniteLossError("final loss is not finite")
    if checkpoint_dir is not None and not params.get("keep_checkpoints", False):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the run is through: not needed
    return stats


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def empty_device_cache() -> None:
    """Hand the CUDA caching allocator's unused blocks back to the device. A no-op on a CPU:
    ``torch.cuda.empty_cache`` does nothing while CUDA is not initialised."""
    torch.cuda.empty_cache()


def accounted_step(step_fn: Step, max_steps: int, accum: int = 1) -> int:
    """The optimizer step whose tensors are accounted: among steps 2 and later (from step 2 on
    the optimizer state exists during forward and backward, as in every later step), the first
    whose costliest batch is the costliest of the run; step 1 when the run has only one."""
    first = min(2, max_steps)
    if step_fn.batch_cost is None:
        return first

    def cost(step: int) -> int:
        return max(step_fn.batch_cost((step - 1) * accum + j) for j in range(accum))

    return max(range(first, max_steps + 1), key=lambda step: (cost(step), -step))


def record_peak(stats: TrainStats, tracker: MemoryTracker) -> None:
    """Fold the tracker's peak of the phase so far into ``stats`` (before a validation pause)."""
    peak, allocated = tracker.peak()
    stats.peak_bytes = max(stats.peak_bytes, peak)
    if allocated is not None:
        stats.peak_allocated_bytes = max(stats.peak_allocated_bytes or 0, allocated)


def _save_checkpoint(
    folder: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    stats: TrainStats,
    window: list[float],
    step_fn: Step,
) -> None:
    """Everything the rest of the run depends on: trainable weights, optimizer and scheduler
    state, RNG states (global and the step's own), statistics so far. Written atomically (a
    kill never leaves half a file)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    generator = step_fn.generator.get_state() if step_fn.generator is not None else None
    state = {
        "step": step,
        "model": {k: v for k, v in model.state_dict().items() if k in trainable},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "stats": dataclasses.asdict(stats),
        "window": window,
        "rng": {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cuda": cuda,
            "step": generator,
        },
    }
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


def _load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    stats: TrainStats,
    step_fn: Step,
) -> tuple[int, list[float]]:
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
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if step_fn.generator is not None and rng.get("step") is not None:
        step_fn.generator.set_state(rng["step"])
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is not None and "rankallocator" in state:
        for key, value in state["rankallocator"].items():
            setattr(allocator, key, value)
    print(f"resumed from {folder / CHECKPOINT} at step {state['step']}", flush=True)
    job_progress.note(f"resumed from its checkpoint at step {state['step']}")
    return state["step"] + 1, state["window"]
