"""Training parameters: deep merge of task defaults with an experiment's overrides, and validation.

The published suite merges overrides shallowly, so ``{"optimizer_kwargs": {"lr": 1e-3}}`` silently
dropped the default weight decay for a third of its runs. Here nested dicts are merged key by key,
every key must be known and of the right type, and the effective result is written next to each
result so nothing is implicit.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad value in a config or experiment file; the message names the file and the field."""


# key -> (accepted types, description). None in the types means null is allowed.
TRAINING_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "max_steps": ((int,), "optimizer steps"),
    "batch_size": ((int,), "training batch size (per optimizer micro-step)"),
    "grad_accumulation_steps": ((int,), "micro-batches per optimizer step"),
    "batch_size_eval": ((int,), "generation batch size"),
    "eval_steps": ((int,), "validation every N optimizer steps (0: only at the end)"),
    "log_steps": ((int,), "training loss is averaged and logged every N steps"),
    "max_seq_length": ((int,), "training sequences are truncated to this many tokens"),
    "dtype": ((str,), "float32 | bfloat16 | float16 | auto (bf16 on CUDA, fp32 on CPU)"),
    "autocast_adapter_dtype": ((bool,), "keep adapter weights in fp32 when the base is bf16"),
    "optimizer_type": ((str,), "AdamW | lora+ | lora-fa"),
    "optimizer_kwargs": ((dict,), "passed to the optimizer factory (lr, weight_decay, ...)"),
    "lr_scheduler": ((str,), "cosine | constant"),
    "warmup_ratio": ((float, int), "fraction of max_steps used for linear warm-up"),
    "grad_norm_clip": ((float, int), "max gradient norm; 0 disables clipping"),
    "use_gc": ((bool,), "gradient checkpointing"),
    "attn_implementation": ((str, type(None)), "passed to from_pretrained"),
    "query_template": ((str,), "prompt template; must contain {query}"),
    "train_on_prompt": ((bool,), "compute the loss on prompt tokens too (the reference does)"),
    "bucket_factor": ((int,), "length-bucketing: sort groups of batch_size*bucket_factor samples"),
    "max_new_tokens": ((int,), "greedy generation length limit"),
    "checkpoint_steps": ((int,), "save a resumable checkpoint every N steps (0: never)"),
    "keep_checkpoints": ((bool,), "keep checkpoints after a successful run"),
    # Image task.
    "num_inference_steps": ((int,), "sampler steps per generated image"),
    "guidance_scale": ((float, int), "classifier-free guidance scale (<= 1: no guidance)"),
    "test_repeats": ((int,), "images generated per test prompt, each from new noise"),
}
POSITIVE_INT = {
    "max_steps",
    "batch_size",
    "grad_accumulation_steps",
    "batch_size_eval",
    "log_steps",
    "max_seq_length",
    "bucket_factor",
    "max_new_tokens",
    "num_inference_steps",
    "test_repeats",
}
NON_NEGATIVE = {
    "eval_steps",
    "warmup_ratio",
    "grad_norm_clip",
    "checkpoint_steps",
    "guidance_scale",
}
CHOICES = {
    "dtype": {"float32", "bfloat16", "float16", "auto"},
    "optimizer_type": {"AdamW", "lora+", "lora-fa"},
    "lr_scheduler": {"cosine", "constant"},
}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``override``; nested mappings merge key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_training_params(
    params: Mapping[str, Any], source: str, known: Collection[str] | None = None
) -> list[str]:
    """Problems with a (partial or merged) training-param dict, each naming ``source`` and the key.

    ``known``: the keys this task uses (its defaults' keys); by default every key of any task.
    """
    problems = []
    known = TRAINING_KEYS.keys() if known is None else known
    for key, value in params.items():
        if key not in known or key not in TRAINING_KEYS:
            listed = ", ".join(sorted(k for k in known if k in TRAINING_KEYS))
            problems.append(f"{source}: unknown training key '{key}' (known: {listed})")
            continue
        types = TRAINING_KEYS[key][0]
        # bool is an int subclass: reject True where a number is meant.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{source}: '{key}' must be {names}, got {json.dumps(value)}")
            continue
        if key in POSITIVE_INT and value <= 0:
            problems.append(f"{source}: '{key}' must be > 0, got {value}")
        if key in NON_NEGATIVE and value < 0:
            problems.append(f"{source}: '{key}' must be >= 0, got {value}")
        if key in CHOICES and value not in CHOICES[key]:
            problems.append(
                f"{source}: '{key}' must be one of {sorted(CHOICES[key])}, got {value!r}"
            )
        if key == "query_template" and "{query}" not in value:
            problems.append(f"{source}: 'query_template' must contain the placeholder {{query}}")
        if key == "optimizer_kwargs":
            lr = value.get("lr")
            if lr is not None and (
                isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0
            ):
                problems.append(f"{source}: 'optimizer_kwargs.lr' must be a number > 0, got {lr!r}")
    return problems


def read_json_object(path: Path) -> dict[str, Any]:
    """Load a JSON object, raising ConfigError that names the file on any problem."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def canonical_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys), used for config identity."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_hash(paths: list[Path]) -> str:
    """sha256 over the bytes of ``paths`` (in the given order) and their names."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
