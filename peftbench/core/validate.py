"""Check every experiment against the base model's architecture before any job starts.

Runs while Snakemake builds the DAG (rules/common.smk), after the file checks of
``experiments`` (malformed files, unknown or mistyped keys). It catches what needs the model:
target modules that do not exist, method constraints such as block sizes that must divide a
layer's width, adapters with nothing to train. Each adapter wraps a copy of the base architecture
built on the *meta* device, so checking a 3B-parameter model allocates no memory for weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peftbench.core.config import ConfigError
from peftbench.core.experiments import ADAPTER_CONFIG, effective_params
from peftbench.tasks.spec import TrainingKey

#: Warnings that wrapping a weight-less copy of the model raises and that ask nothing of the user
#: here: (category, message regex). Each shows again in the training job's log, where it applies.
NOISE = (
    # transformers deprecates a property that peft (0.21) still reads; nothing to change here.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # BEFT on a layer without bias: only merging is impossible, and the benchmark never merges.
    (UserWarning, r"Detected that the base layer has no bias term"),
    # BOFT's CUDA kernel cannot build on a CPU-only DAG host; peft falls back to plain torch
    # and then says so with the butterfly factor note.
    (UserWarning, r"Failed to load the CUDA extension"),
    (UserWarning, r"Setting boft_n_butterfly_factor to 1"),
    # peft's generic note when a method meets a layer type it was not written for (RMSNorm): the
    # wrap succeeded, and the job's log keeps the note next to the numbers it may affect.
    (UserWarning, r"Unsupported layer type .* proceed at your own risk"),
)


@contextmanager
def quiet_meta_checks() -> Iterator[None]:
    """Silence :data:`NOISE` (only that, by category and message) while adapters are checked."""
    with warnings.catch_warnings():
        for category, message in NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def check_local_data(data_cfg: Mapping[str, Any]) -> list[str]:
    """Local data files named by a hub-style data config exist and are not empty: ``data.hub``
    is either one source (``{path: ...}``) or one per split (``{train: {path: ...}, ...}``)."""
    if data_cfg.get("source") != "hub":
        return []
    hub = data_cfg.get("hub") or {}
    sources = {"hub": hub} if "path" in hub else {f"hub.{k}": v for k, v in hub.items()}
    problems = []
    for key, source in sources.items():
        if not isinstance(source, Mapping) or not isinstance(source.get("path"), str):
            continue
        path = Path(source["path"]).expanduser()
        looks_local = path.suffix in {".json", ".jsonl", ".parquet"} or source["path"].startswith(
            (".", "/", "~")
        )
        if looks_local and not path.exists():
            problems.append(f"data.{key}.path: {path} does not exist")
        elif path.is_file() and path.stat().st_size == 0:
            problems.append(f"data.{key}.path: {path} is empty")
    return problems


def check_experiment(
    model: Any,
    root: Path,
    experiment: str,
    defaults: dict[str, Any],
    table: Mapping[str, TrainingKey] | None = None,
) -> list[str]:
    """Problems of one experiment; ``model`` is a fresh meta-device base model (it gets wrapped)."""
    with quiet_meta_checks():
        return _check_experiment(model, root, experiment, defaults, table)


def _check_experiment(
    model: Any,
    root: Path,
    experiment: str,
    defaults: dict[str, Any],
    table: Mapping[str, TrainingKey] | None,
) -> list[str]:
    from peftbench.core.runs import wrap_peft

    folder = Path(root) / experiment
    try:
        params = effective_params(defaults, root, experiment, table)
    except ConfigError as exc:
        return str(exc).splitlines()
    if not (folder / ADAPTER_CONFIG).exists():
        return []
    import copy

    import torch

    pristine = copy.deepcopy(model)  # meta tensors: no memory
    try:
        # Adapter weights on the meta device too: checking a VeRA or LoRA adapter of a
        # 4B-parameter model must not allocate gigabytes while the DAG is built.
        with torch.device("meta"):
            wrapped, _ = wrap_peft(model, folder, params)
    except RuntimeError as exc:
        if "meta" not in str(exc):
            return [f"{folder / ADAPTER_CONFIG}: {type(exc).__name__}: {exc}"]
        # Some methods need real values to build (BOFT's butterfly permutations call .item()):
        # their adapter weights are then allocated on the CPU, the base model stays on meta.
        try:
            wrapped, _ = wrap_peft(pristine, folder, params)
        except Exception as exc2:  # noqa: BLE001 - PEFT raises many types; each is a finding
            return [f"{folder / ADAPTER_CONFIG}: {type(exc2).__name__}: {exc2}"]
    except Exception as exc:  # noqa: BLE001 - PEFT raises many types; each is a finding
        return [f"{folder / ADAPTER_CONFIG}: {type(exc).__name__}: {exc}"]
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    if trainable == 0:
        return [f"{folder / ADAPTER_CONFIG}: the adapter has no trainable parameters"]
    return []


def validate_task(
    task_cfg: dict[str, Any],
    experiments: list[str],
    build_meta_model: Callable[[dict[str, Any]], Any],
    table: Mapping[str, TrainingKey] | None = None,
) -> list[str]:
    """One message per problem, each naming the file and the field.

    ``build_meta_model(task_cfg)``: the task's module an adapter wraps, on the meta device (the
    spec's ``meta_model`` module provides it, so this module never names a task); ``table``:
    the task's training keys.
    """
    problems = check_local_data(task_cfg["data"])
    root = Path(task_cfg["experiments_dir"])
    with quiet_meta_checks():  # building the meta model may warn too
        for experiment in experiments:
            model = build_meta_model(task_cfg)
            problems += check_experiment(model, root, experiment, task_cfg["training"], table)
    return problems
