"""The toy task's run: train (unless this is the base reference) and evaluate one experiment
with the shared pieces of ``peftbench.core`` (run skeleton, PEFT wrapping, training loop,
memory tracking, Wilson interval), and write result.json, the per-item file and the curves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from peftbench.core.io import write_jsonl
from peftbench.core.loop import train
from peftbench.core.memory import MemoryTracker
from peftbench.core.runs import (
    ADAPTER_DIR,
    BASE_METHOD,
    RunContext,
    count_params,
    finish_run,
    start_run,
    wrap_peft,
)
from peftbench.core.stats import wilson_interval

from . import SPEC
from .data import data_hash, load
from .model import build_model, step


def run_experiment(ctx: RunContext) -> dict[str, Any]:
    """One experiment x seed; a failure is recorded in result.json (``finish_run``)."""
    result, device = start_run(
        ctx,
        data_hash=data_hash(ctx.inputs["data"]),
        metrics=SPEC.metrics,
        curves=("train_loss", SPEC.valid_curve),
    )
    return finish_run(result, lambda out: _run(ctx, result, device, out), ctx.out_dir, device)


def _tensors(data_dir: Path, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load(data_dir, split)
    return torch.tensor(x, device=device), torch.tensor(y, device=device)


def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Probability of class 1 per point."""
    with torch.no_grad():
        return torch.softmax(model(x), dim=-1)[:, 1]


def _run(ctx: RunContext, result: dict[str, Any], device: torch.device, out_dir: Path) -> None:
    """The run itself; its files go to ``out_dir`` (moved into the run folder at the end)."""
    params, metrics, curves = ctx.params, result["metrics"], result["curves"]
    train_x, train_y = _tensors(ctx.inputs["data"], "train", device)
    valid_x, valid_y = _tensors(ctx.inputs["data"], "valid", device)
    test_x, test_y = _tensors(ctx.inputs["data"], "test", device)
    # Probe points over the plane: how much fine-tuning changed the model's answers elsewhere.
    grid = torch.linspace(-1, 1, 21, device=device)
    probe = torch.cartesian_prod(grid, grid)
    tracker = MemoryTracker(device)
    tracker.set_baseline()
    metrics["memory_measure"] = tracker.measure
    model = build_model(ctx.task_cfg).to(device)
    before = _predict(model, probe)
    is_base = ctx.method == BASE_METHOD
    if not is_base:
        model, result["peft_config"] = wrap_peft(model, ctx.exp_dir, params)

        def validate(_step: int) -> dict[str, float]:
            accuracy = (_predict(model, valid_x).round() == valid_y).float().mean()
            return {SPEC.valid_value: accuracy.item()}

        batches = step(model, train_x, train_y, params["batch_size"], ctx.seed)
        stats = train(model, batches, params, tracker, validate, ctx.progress)
        metrics.update(
            **stats.result_metrics(),
            toy_valid_accuracy_final=stats.valid_curve[-1][SPEC.valid_value],
        )
        curves["train_loss"], curves[SPEC.valid_curve] = stats.loss_curve, stats.valid_curve
    trainable, total = count_params(model)
    metrics.update(trainable_params=0 if is_base else trainable, total_params=total)

    tracker.reset()
    t0 = time.perf_counter()
    predicted = _predict(model, test_x).round().long()
    metrics["eval_time_s"] = time.perf_counter() - t0
    metrics["eval_memory_peak_bytes"], metrics["eval_memory_allocated_peak_bytes"] = tracker.peak()
    correct = int((predicted == test_y).sum())
    low, high = wilson_interval(correct, len(test_y))
    metrics.update(
        toy_accuracy=correct / len(test_y),
        toy_accuracy_ci_low=low,
        toy_accuracy_ci_high=high,
        toy_correct=correct,
        test_n=len(test_y),
        toy_shift=(_predict(model, probe) - before).abs().mean().item(),
    )
    write_jsonl(
        out_dir / SPEC.item_file,
        [
            {"x": x, "label": int(y), "predicted": int(p), "correct": bool(p == y)}
            for x, y, p in zip(test_x.tolist(), test_y, predicted, strict=True)
        ],
    )
    if not is_base:
        _save_trained(model, out_dir / ADAPTER_DIR)
        metrics["file_size_bytes"] = sum(
            f.stat().st_size for f in (out_dir / ADAPTER_DIR).glob("*.safetensors")
        )


def _save_trained(model: torch.nn.Module, folder: Path) -> None:
    """The adapter (``save_pretrained``), or for full fine-tuning the whole state dict."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
        return
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors"
    )
