"""Training parameters: deep merge of task defaults with an experiment's overrides, and validation.

The published suite merges overrides shallowly, so ``{"optimizer_kwargs": {"lr": 1e-3}}`` silently
dropped the default weight decay for a third of its runs. Here nested dicts are merged key by key,
every key must be known and of the right type, and the effective result is written next to each
result so nothing is implicit.

Torch-free (the analysis imports :class:`ConfigError`): checks that need torch or peft (an
optimizer's signature, a PEFT config's fields) live in :mod:`peftbench.core.preflight`.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import string
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from peftbench.tasks.spec import TrainingKey


class ConfigError(ValueError):
    """A bad value in a config or experiment file; the message names the file and the field."""


#: Base-model dtypes: the floating-point ones every task loads, and the published suite's
#: quantized ones (QLoRA through bitsandbytes, :mod:`peftbench.core.quant`), which only a task
#: whose model loading calls that module accepts (its spec's ``dtype`` key: :func:`dtype_key`).
FLOAT_DTYPES = ("float32", "bfloat16", "float16", "auto")
QUANTIZED_DTYPES = ("int8", "int4")

#: The optimizer factories of peftbench.core.optim.
OPTIMIZER_TYPES = ("AdamW", "lora+", "lora-fa", "riemannian")


def dtype_key(quantized: bool) -> TrainingKey:
    """The ``dtype`` training key; ``quantized``: with the int8/int4 base models too (a task
    whose base-model loading goes through :func:`peftbench.core.quant.load_kwargs`)."""
    names = FLOAT_DTYPES + (QUANTIZED_DTYPES if quantized else ())
    text = "float32 | bfloat16 | float16 | auto (bf16 on CUDA, fp32 on CPU)"
    if quantized:
        text += " | int8 | int4 (a bitsandbytes-quantized base, QLoRA)"
    return TrainingKey((str,), text, choices=frozenset(names))


#: Training keys of the published suite that an experiment file may set although no task
#: default does. ``model_id``: the suite names the base model in every folder; here the task
#: config's ``base_model`` does, and the pre-flight check (peftbench.core.validate) accepts the
#: key only where it names that model.
EXPERIMENT_ONLY_KEYS: dict[str, TrainingKey] = {
    "model_id": TrainingKey((str,), "the published suite's base model id: must be the task's"),
}

#: The training keys every task shares; a task adds its own (``TaskSpec.training_keys``) and the
#: checks below read the merged table (:func:`training_table`). Each task's config schema lists
#: the same keys with the same bounds (tests/core/test_config.py keeps them in step).
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
    "dtype": dtype_key(quantized=False),
    "autocast_adapter_dtype": TrainingKey(
        (bool,), "keep adapter weights in fp32 when the base is bf16"
    ),
    "optimizer_type": TrainingKey(
        (str,),
        "AdamW | lora+ | lora-fa | riemannian (PEFT's optimizers for LoRA adapters)",
        choices=frozenset(OPTIMIZER_TYPES),
    ),
    "optimizer_kwargs": TrainingKey(
        (dict,), "passed to the optimizer factory (lr, weight_decay, ...)"
    ),
    "lr_scheduler": TrainingKey(
        (str,), "cosine | constant", choices=frozenset({"cosine", "constant"})
    ),
    "warmup_ratio": TrainingKey(
        (float, int), "fraction of max_steps used for linear warm-up, in [0, 1)", "fraction"
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

#: Bounds of the numeric ``optimizer_kwargs`` every optimizer factory of peftbench.core.optim
#: shares (AdamW's, and LoRA+'s and the Riemannian optimizer's own); which keys an optimizer takes at all is checked against
#: its signature (peftbench.core.preflight), since that needs torch.
OPTIMIZER_BOUNDS = {
    "lr": "positive",
    "eps": "positive",
    "weight_decay": "non_negative",
    "loraplus_lr_ratio": "positive",
    "loraplus_lr_embedding": "non_negative",
    "loraplus_weight_decay": "non_negative",
    "reg": "non_negative",
}

_BOUND_TEXT = {"positive": "> 0", "non_negative": ">= 0", "fraction": ">= 0 and < 1"}


def training_table(task_keys: Mapping[str, TrainingKey] | None = None) -> dict[str, TrainingKey]:
    """The shared training keys plus a task's own (``TaskSpec.training_keys``)."""
    return {**TRAINING_KEYS, **(task_keys or {})}


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates`` (case-insensitive), or ""."""
    by_lower = {str(c).lower(): str(c) for c in candidates}
    match = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[match[0]]}'?)" if match else ""


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
    A key of ``table`` that may be null may be left out of the defaults (it is then null), and
    the keys of :data:`EXPERIMENT_ONLY_KEYS` are accepted too: both are what the published
    suite's folders set beyond a task's defaults.
    """
    table = TRAINING_KEYS if table is None else table
    known = table.keys() if known is None else known
    problems = []
    for key, value in params.items():
        if key in EXPERIMENT_ONLY_KEYS:
            problems += _check_value(EXPERIMENT_ONLY_KEYS[key], key, value, source)
            continue
        if key not in table or (key not in known and not _nullable(table[key])):
            listed = sorted(k for k in known if k in table)
            hint = did_you_mean(key, listed)
            problems.append(
                f"{source}: unknown training key '{key}'{hint} (known: {', '.join(listed)})"
            )
            continue
        problems += _check_value(table[key], key, value, source)
    return problems


def _nullable(spec: TrainingKey) -> bool:
    return type(None) in spec.types


def _is_number(value: Any) -> bool:
    # bool is an int subclass: True is not a number here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bound_problem(bound: str | None, value: float) -> str | None:
    """`` must be ...`` when ``value`` breaks ``bound``, else None."""
    broken = {
        "positive": value <= 0,
        "non_negative": value < 0,
        "fraction": not 0 <= value < 1,
    }.get(bound or "", False)
    return f"must be {_BOUND_TEXT[bound]}, got {value}" if broken and bound else None


def _check_value(spec: TrainingKey, key: str, value: Any, source: str) -> list[str]:
    """Problems of one value against its row of the table."""
    types = spec.types
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        return [f"{source}: '{key}' must be {names}, got {json.dumps(value)}"]
    if isinstance(value, float) and not math.isfinite(value):
        # JSON and YAML both parse NaN and Infinity; no training value is meant to be one.
        return [f"{source}: '{key}' must be a finite number, got {value}"]
    problems = []
    if _is_number(value) and (broken := _bound_problem(spec.bound, value)):
        problems.append(f"{source}: '{key}' {broken}")
    if spec.choices is not None and value not in spec.choices:
        problems.append(f"{source}: '{key}' must be one of {sorted(spec.choices)}, got {value!r}")
    if spec.placeholder is not None:
        problems += [f"{source}: '{key}' {p}" for p in template_problems(value, spec.placeholder)]
    if key == "optimizer_kwargs":
        problems += optimizer_value_problems(value, source)
    return problems


def template_problems(template: str, placeholder: str) -> list[str]:
    """Problems of a ``str.format`` template whose only field is ``placeholder`` ("{query}"):
    parsed as the run parses it, so a stray brace fails here and not after training."""
    field = placeholder.strip("{}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"is not a valid template ({exc}); write {{{{ and }}}} for literal braces"]
    names = [name for _, name, _, _ in parsed if name is not None]
    unknown = [name for name in dict.fromkeys(names) if name != field]
    shown = ", ".join(f"{{{name}}}" for name in unknown)
    if field not in names:
        return [
            f"must contain the placeholder {placeholder}" + (f" (not {shown})" if unknown else "")
        ]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        return [
            f"has the unknown field{plural} {shown} (the only field is {placeholder}; write "
            "{{ and }} for literal braces)"
        ]
    return []


def optimizer_value_problems(kwargs: Mapping[str, Any], source: str) -> list[str]:
    """Values of ``optimizer_kwargs`` that no optimizer takes: non-finite numbers, bounds of
    :data:`OPTIMIZER_BOUNDS`, AdamW's ``betas`` outside [0, 1)."""
    problems = []
    for key, value in kwargs.items():
        name = f"'optimizer_kwargs.{key}'"
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            problems.append(f"{source}: {name} must be finite, got {json.dumps(value)}")
        elif key in OPTIMIZER_BOUNDS and not _is_number(value):
            problems.append(f"{source}: {name} must be a number, got {json.dumps(value)}")
        elif key in OPTIMIZER_BOUNDS and (broken := _bound_problem(OPTIMIZER_BOUNDS[key], value)):
            problems.append(f"{source}: {name} {broken}")
        elif key == "betas" and not (
            isinstance(value, list)
            and len(value) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in value)
        ):
            problems.append(
                f"{source}: {name} must be two numbers in [0, 1), got {json.dumps(value)}"
            )
    return problems


def read_json_object(path: Path) -> dict[str, Any]:
    """Load a JSON object, raising ConfigError that names the file on any problem."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
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
