"""Builders of schema-valid test data, shared by the test modules.

``make_result`` returns a result dict that validates against
``peftbench/schemas/result.schema.json``; every metric can be overridden by keyword. With
``task="image"`` it is an image-task result: the math-only metrics null, the image metrics set
(the similarity interval +-0.02 around an overridden similarity), a ``valid_similarity`` curve.
"""

from __future__ import annotations

import copy
from typing import Any

# Metrics of a plausible small successful LoRA run, in the schema's raw units.
DEFAULT_METRICS: dict[str, Any] = {
    "test_accuracy": 0.40,
    "test_accuracy_ci_low": 0.37,
    "test_accuracy_ci_high": 0.43,
    "test_correct": 400,
    "test_accuracy_published": 0.38,
    "test_n": 1000,
    "valid_accuracy_final": 0.41,
    "train_loss_final": 0.85,
    "train_memory_peak_bytes": 12_000_000_000,
    "train_memory_allocated_peak_bytes": 10_000_000_000,
    "train_tensor_peak_bytes": None,
    "train_tensor_breakdown": None,
    "eval_memory_peak_bytes": 4_000_000_000,
    "eval_memory_allocated_peak_bytes": 3_500_000_000,
    "memory_measure": "cuda_reserved",
    "train_time_s": 600.0,
    "valid_time_s": 30.0,
    "eval_time_s": 120.0,
    "train_steps": 100,
    "train_tokens": 400_000,
    "train_tokens_per_s": 666.7,
    "trainable_params": 1_000_000,
    "total_params": 500_000_000,
    "file_size_bytes": 4_000_000,
    "heldout_loss_before": 2.0,
    "heldout_loss_after": 2.1,
    "forgetting": 0.1,
}

#: Metrics that only the math task measures (null in an image result).
MATH_ONLY = [
    "test_accuracy",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "test_correct",
    "test_accuracy_published",
    "valid_accuracy_final",
    "heldout_loss_before",
    "heldout_loss_after",
    "forgetting",
    "train_tokens",
    "train_tokens_per_s",
]

# Metrics of a plausible small successful image-task run: every required key, the math-only
# ones null, plus the image metrics.
IMAGE_METRICS: dict[str, Any] = {
    **DEFAULT_METRICS,
    **dict.fromkeys(MATH_ONLY),
    "test_n": 40,
    "similarity": 0.62,
    "similarity_ci_low": 0.60,
    "similarity_ci_high": 0.64,
    "drift": 0.05,
    "valid_similarity_final": 0.61,
    "generation_time_s": 90.0,
    "train_samples": 800,
}

TASK_DEFAULT_METRICS: dict[str, dict[str, Any]] = {"math": DEFAULT_METRICS, "image": IMAGE_METRICS}

#: The validation curve of each task: (curves key, value key, value).
TASK_VALID_CURVES = {
    "math": ("valid_accuracy", "accuracy", 0.41),
    "image": ("valid_similarity", "similarity", 0.61),
}

DEFAULT_PACKAGES: dict[str, str] = {"peft": "0.21.2", "torch": "2.13.0", "transformers": "5.24.0"}


def make_result(
    method: str = "lora",
    name: str = "r8",
    seed: int = 0,
    *,
    task: str = "math",
    status: str = "success",
    error: str | None = None,
    lr: float | None = 1e-4,
    max_steps: int = 100,
    peft_type: str | None = "LORA",
    packages: dict[str, str] | None = None,
    code_revision: str = "abc1234",
    device: str = "cuda",
    **metrics: Any,
) -> dict[str, Any]:
    """Return a schema-valid result dict.

    Keyword arguments named after a metric (e.g. ``test_accuracy=0.5``) override that
    metric. A ``status="failed"`` result gets every metric set to null (unless overridden)
    and a default error message.
    """
    defaults = TASK_DEFAULT_METRICS[task]
    unknown = set(metrics) - set(defaults)
    if unknown:
        raise TypeError(f"unknown metric overrides: {sorted(unknown)}")
    if status == "failed":
        base_metrics = dict.fromkeys(defaults)
        error = error if error is not None else "RuntimeError: CUDA out of memory"
    else:
        base_metrics = copy.deepcopy(defaults)
        if task == "image" and metrics.get("similarity") is not None:
            # An image run's interval follows its similarity unless given.
            similarity = metrics["similarity"]
            base_metrics["similarity_ci_low"] = round(similarity - 0.02, 6)
            base_metrics["similarity_ci_high"] = round(similarity + 0.02, 6)
    base_metrics.update(metrics)
    curve, field, value = TASK_VALID_CURVES[task]

    config: dict[str, Any] = {"max_steps": max_steps, "batch_size": 4}
    if lr is not None:
        config["optimizer_kwargs"] = {"lr": lr, "weight_decay": 0.0}
    peft_config = None if peft_type is None else {"peft_type": peft_type, "r": 8}

    return {
        "schema_version": 1,
        "task": task,
        "experiment": f"{method}/{name}",
        "method": method,
        "name": name,
        "seed": seed,
        "status": status,
        "error": error,
        "config": config,
        "peft_config": peft_config,
        "metrics": base_metrics,
        "curves": {
            "train_loss": [{"step": 50, "loss": 1.2}, {"step": 100, "loss": 0.85}],
            curve: [{"step": 100, field: value}],
        },
        "provenance": {
            "created_at": "2025-01-01T00:00:00+00:00",
            "config_hash": f"hash-{method}-{name}",
            "data_hash": "datahash",
            "base_model_hash": None,
            "code_revision": code_revision,
            "packages": dict(DEFAULT_PACKAGES if packages is None else packages),
            "hardware": {"gpu": "test"},
            "device": device,
        },
    }


def make_base_result(seed: int = 0, *, task: str = "math", **metrics: Any) -> dict[str, Any]:
    """Return the base-model reference result (no training: training metrics are null)."""
    no_training = {
        "train_loss_final": None,
        "train_memory_peak_bytes": None,
        "train_memory_allocated_peak_bytes": None,
        "train_time_s": None,
        "valid_time_s": None,
        "train_steps": None,
        "train_tokens": None,
        "train_tokens_per_s": None,
        "trainable_params": 0,
        "file_size_bytes": None,
        "valid_accuracy_final": None,
        "heldout_loss_after": None,
        "forgetting": None,
    }
    if task == "image":
        no_training |= {"drift": None, "valid_similarity_final": None, "train_samples": None}
    no_training.update(metrics)
    return make_result(
        "base", "no-finetuning", seed, task=task, lr=None, peft_type=None, **no_training
    )
