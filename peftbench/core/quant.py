"""Quantized base models (training ``dtype`` int8 / int4): QLoRA through bitsandbytes, loaded as
the published suite loads them (``BitsAndBytesConfig(load_in_8bit=True)`` or
``(load_in_4bit=True)``, every other option at bitsandbytes' default), for a task whose model
loading calls :func:`load_kwargs` and :func:`place` (its spec then offers these dtypes:
``peftbench.core.config.dtype_key(quantized=True)``).

bitsandbytes is optional: it is only imported for a quantized run, and the pre-flight check
(:func:`problems`) names the file and the field when it is missing. Its CPU backend trains and
evaluates int8 and int4 models (bitsandbytes >= 0.45); see :func:`place` for the one CPU path
that is turned off.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from peftbench.core.config import QUANTIZED_DTYPES


def is_quantized(dtype: str) -> bool:
    """Whether the training ``dtype`` names a quantized base model."""
    return dtype in QUANTIZED_DTYPES


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype of a quantized model's unquantized parts (embeddings, norms, the head): what
    the suite's ``from_pretrained`` without a dtype gives a bf16 checkpoint on a GPU, and fp32
    on the CPU (where bf16 matmuls are slow and not what the embedded numbers are made with)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def problems(dtype: str, source: str) -> list[str]:
    """Why a quantized ``dtype`` cannot run here (bitsandbytes missing), naming ``source``."""
    if not is_quantized(dtype) or importlib.util.find_spec("bitsandbytes") is not None:
        return []
    return [
        f"{source}: 'dtype' {dtype!r} loads the base model quantized through bitsandbytes, which "
        "is not installed: `pip install bitsandbytes` (CUDA GPUs; its CPU backend runs too, "
        "slowly), or choose float32, bfloat16, float16 or auto"
    ]


def load_kwargs(dtype: str, device: torch.device) -> dict[str, Any]:
    """Keyword arguments of ``from_pretrained`` for the training ``dtype`` on ``device``: the
    torch dtype, or for int8/int4 the suite's quantization config, placed on ``device`` by the
    loader (a quantized model cannot be moved with ``.to`` afterwards)."""
    from peftbench.core.runs import torch_dtype

    if not is_quantized(dtype):
        return {"dtype": torch_dtype(dtype, device)}
    from transformers import BitsAndBytesConfig

    config = (
        BitsAndBytesConfig(load_in_8bit=True)
        if dtype == "int8"
        else BitsAndBytesConfig(load_in_4bit=True)
    )
    return {
        "quantization_config": config,
        "device_map": {"": device},
        "dtype": compute_dtype(device),
    }


def place(model: Any, dtype: str, device: torch.device) -> Any:
    """``model`` (loaded with :func:`load_kwargs`) on ``device``: moved there unless quantized
    (the loader placed it). On the CPU, 4-bit layers keep bitsandbytes' portable kernel: the
    AVX512-BF16 one it would pick on some CPUs gives other numbers than other machines (the
    project runs AVX2 kernels everywhere, config ``cpu_numerics``) and fails on layers whose
    input width is not a multiple of its block size (the embedded model's 352-wide MLP)."""
    if not is_quantized(dtype):
        return model.to(device)
    if device.type == "cpu":
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    return model
