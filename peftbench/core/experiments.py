"""Experiments are data: ``<root>/<method>/<name>/`` with ``adapter_config.json`` (a PEFT config as
written by ``save_pretrained``; absent for full fine-tuning) and an optional
``training_params.json`` that is deep-merged over the task's training defaults.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftbench.core.config import (
    ConfigError,
    deep_merge,
    read_json_object,
    validate_training_params,
)
from peftbench.tasks.spec import TrainingKey

ADAPTER_CONFIG = "adapter_config.json"
TRAINING_PARAMS = "training_params.json"
BASE_EXPERIMENT = "base/no-finetuning"


def discover(root: Path | str) -> list[str]:
    """Sorted ``method/name`` ids of the experiment folders under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: experiments directory does not exist")
    found = set()
    for marker in (ADAPTER_CONFIG, TRAINING_PARAMS):
        for path in root.glob(f"*/*/{marker}"):
            found.add(f"{path.parent.parent.name}/{path.parent.name}")
    return sorted(found)


def select(experiments: list[str], patterns: list[str] | None) -> list[str]:
    """Experiments matching any glob pattern (all when ``patterns`` is empty)."""
    if not patterns:
        return experiments
    chosen = [e for e in experiments if any(fnmatch.fnmatchcase(e, p) for p in patterns)]
    if not chosen:
        raise ConfigError(f"select: patterns {patterns} match no experiment")
    return chosen


def experiment_files(root: Path | str, experiment: str) -> list[str]:
    """The files that define ``experiment`` (workflow inputs: editing one reruns it)."""
    folder = Path(root) / experiment
    return [str(folder / f) for f in (ADAPTER_CONFIG, TRAINING_PARAMS) if (folder / f).exists()]


def effective_params(
    defaults: Mapping[str, Any],
    root: Path | str,
    experiment: str,
    table: Mapping[str, TrainingKey] | None = None,
) -> dict[str, Any]:
    """Task defaults deep-merged with the experiment's overrides, validated against ``table``
    (the task's training keys, :func:`peftbench.core.config.training_table`).

    Raises ConfigError listing every problem, each naming the file and the key.
    """
    path = Path(root) / experiment / TRAINING_PARAMS
    overrides = read_json_object(path) if path.exists() else {}
    # A task's defaults name the keys it uses: a math-only key in an image experiment is a typo.
    problems = validate_training_params(overrides, str(path), known=defaults.keys(), table=table)
    merged = deep_merge(defaults, overrides)
    if not problems:
        source = f"{path} (merged with the task defaults)"
        problems = validate_training_params(merged, source, table=table)
    if problems:
        raise ConfigError("\n".join(problems))
    return merged


def check_adapter_config(root: Path | str, experiment: str) -> list[str]:
    """Problems with the experiment's adapter_config.json that show without loading a model."""
    path = Path(root) / experiment / ADAPTER_CONFIG
    if not path.exists():
        return []
    try:
        data = read_json_object(path)
    except ConfigError as exc:
        return [str(exc)]
    from peft.utils import PeftType

    peft_type = data.get("peft_type")
    if peft_type is None:
        return [
            f"{path}: missing 'peft_type' (a PEFT config as written by save_pretrained has one)"
        ]
    if peft_type not in {t.value for t in PeftType}:
        return [
            f"{path}: 'peft_type' {peft_type!r} is not a PEFT method known to this peft version"
        ]
    return []
