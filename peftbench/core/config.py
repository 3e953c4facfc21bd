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

from peftbench.tasks.spec import TrainingKey


class ConfigError(ValueError):
    """A bad value in a config or experiment file; the message names the file and the field."""


#: The training keys every task shares; a task adds its own (``TaskSpec.training_keys``) and the
#: checks below read the merged table (:func:`training_table`). Each task's config schema lists
#: the same keys (a test keeps them in step).
TRAINING_KEYS: dict[str, TrainingKey] = {
    "max_steps": TrainingKey((int,), "optimizer steps", "positive"),
    "batch_size": TrainingKey((int,), "training batch size (per optimizer micro-step)", "positive"),
    "grad_accumulation_steps": TrainingKey((int,), "micro-batches per optimizer step", "positive"),
    "batch_size_eval": TrainingKey((int,), "evaluation batch size", "positive"),
    "eval_steps": TrainingKey(
        (int,), "validation every N optimizer steps (0: only at the end)", "non_negative"
    ),
    "log_steps": TrainingKey(
        (int,), "training loss is averaged and logged every N steps", "positive"
    ),
    "dtype": TrainingKey(
        (str,),
        "float32 | bfloat16 | float16 | auto (bf16 on CUDA, fp32 on CPU)",
        choices=frozenset({"float32", "bfloat16", "float16", "auto"}),
    ),
    "autocast_adapter_dtype": TrainingKey(
        (bool,), "keep adapter weights in fp32 when the base is bf16"
    ),
    "optimizer_type": TrainingKey(
        (str,), "AdamW | lora+ | lora-fa", choices=frozenset({"AdamW", "lora+", "lora-fa"})
    ),
    "optimizer_kwargs": TrainingKey(
        (dict,), "passed to the optimizer factory (lr, weight_decay, ...)"
    ),
    "lr_scheduler": TrainingKey(
        (str,), "cosine | constant", choices=frozenset({"cosine", "constant"})
    ),
    "warmup_ratio": TrainingKey(
        (float, int), "fraction of max_steps used for linear warm-up", "non_negative"
    ),
    "grad_norm_clip": TrainingKey(
        (float, int), "max gradient norm; 0 disables clipping", "non_negative"
    ),
    "use_gc": TrainingKey((bool,), "gradient checkpointing"),
    "checkpoint_steps": TrainingKey(
        (int,), "save a resumable checkpoint every N steps (0: never)", "non_negative"
    ),
    "keep_checkpoints": TrainingKey((bool,), "keep checkpoints after a successful run"),
}


def training_table(task_keys: Mapping[str, TrainingKey] | None = None) -> dict[str, TrainingKey]:
    """The shared training keys plus a task's own (``TaskSpec.training_keys``)."""
    return {**TRAINING_KEYS, **(task_keys or {})}


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
    params: Mapping[str, Any],
    source: str,
    known: Collection[str] | None = None,
    table: Mapping[str, TrainingKey] | None = None,
) -> list[str]:
    """Problems with a (partial or merged) training-param dict, each naming ``source`` and the key.

    ``table``: the task's keys (:func:`training_table`; by default the shared ones only).
    ``known``: the keys this task uses (its defaults' keys); by default every key of ``table``.
    """
    table = TRAINING_KEYS if table is None else table
    known = table.keys() if known is None else known
    problems = []
    for key, value in params.items():
        if key not in known or key not in table:
            listed = ", ".join(sorted(k for k in known if k in table))
            problems.append(f"{source}: unknown training key '{key}' (known: {listed})")
            continue
        problems += _check_value(table[key], key, value, source)
    return problems


def _check_value(spec: TrainingKey, key: str, value: Any, source: str) -> list[str]:
    """Problems of one value against its row of the table."""
    types = spec.types
    # bool is an int subclass: reject True where a number is meant.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        return [f"{source}: '{key}' must be {names}, got {json.dumps(value)}"]
    problems = []
    if spec.bound == "positive" and value <= 0:
        problems.append(f"{source}: '{key}' must be > 0, got {value}")
    if spec.bound == "non_negative" and value < 0:
        problems.append(f"{source}: '{key}' must be >= 0, got {value}")
    if spec.choices is not None and value not in spec.choices:
        problems.append(f"{source}: '{key}' must be one of {sorted(spec.choices)}, got {value!r}")
    if spec.placeholder is not None and spec.placeholder not in value:
        problems.append(f"{source}: '{key}' must contain the placeholder {spec.placeholder}")
    if key == "optimizer_kwargs":
        lr = value.get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
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
