"""What every task's experiment run shares: device and dtype, PEFT wrapping, parameter counts,
and the metric keys every result file has (``peftbench/schemas/result.schema.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

BASE_METHOD, BASE_NAME = "base", "no-finetuning"


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def wrap_peft(model: Any, exp_dir: Path | None, params: dict[str, Any]) -> tuple[Any, dict | None]:
    """PEFT-wrap ``model`` with the experiment's adapter config; no config means full fine-tuning."""
    if exp_dir is None or not (exp_dir / "adapter_config.json").exists():
        for p in model.parameters():
            p.requires_grad_(True)
        return model, None
    from peft import PeftConfig, get_peft_model

    peft_config = PeftConfig.from_pretrained(str(exp_dir))
    if getattr(peft_config, "peft_type", None) == "ADALORA" and not getattr(
        peft_config, "total_step", None
    ):
        # AdaLoRA's rank schedule is defined over the run length; tie it to max_steps.
        peft_config.total_step = params["max_steps"]
    model = get_peft_model(
        model, peft_config, autocast_adapter_dtype=params["autocast_adapter_dtype"]
    )
    cfg = json.loads(json.dumps(model.peft_config["default"].to_dict(), default=_jsonable))
    return model, cfg


def _jsonable(value: Any) -> Any:
    if isinstance(value, set):
        return sorted(value)
    return str(value)


def count_params(model: Any) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


EMPTY_METRICS = dict.fromkeys(
    [
        "test_accuracy",
        "test_accuracy_ci_low",
        "test_accuracy_ci_high",
        "test_correct",
        "test_n",
        "valid_accuracy_final",
        "train_loss_final",
        "train_memory_peak_bytes",
        "train_memory_allocated_peak_bytes",
        "eval_memory_peak_bytes",
        "eval_memory_allocated_peak_bytes",
        "memory_measure",
        "train_time_s",
        "eval_time_s",
        "train_steps",
        "train_tokens",
        "train_tokens_per_s",
        "trainable_params",
        "total_params",
        "file_size_bytes",
        "heldout_loss_before",
        "heldout_loss_after",
        "forgetting",
    ]
)
