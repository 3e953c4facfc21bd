"""What every task's experiment run shares: device and dtype, PEFT wrapping, parameter counts,
and the metric keys every result file has (``peftbench/schemas/result.schema.json``)."""

from __future__ import annotations

import gc
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from peftbench.core.capabilities import record as capability_record
from peftbench.core.config import QUANTIZED_DTYPES, canonical_hash
from peftbench.core.io import clear_dir, staged_dir, write_json

# Defined in the torch-free layout module, which the analysis reads too.
from peftbench.core.layout import BASE_METHOD, BASE_NAME, RESULT_FILE  # noqa: F401
from peftbench.core.provenance import code_revision, hardware, now, package_versions
from peftbench.core.worker import IN_WORKER_ENV


@dataclass(frozen=True)
class RunContext:
    """Everything one training-and-evaluation job of any task gets: what to run, with which
    effective settings, from which inputs, into which folder."""

    task: str
    method: str
    name: str
    seed: int
    #: The experiment folder (None for the base-model reference).
    exp_dir: Path | None
    #: Effective training parameters (task defaults deep-merged with the experiment's own).
    params: dict[str, Any]
    #: The task's whole config section (``base_model``, ``data``, ``encoder``, ...).
    task_cfg: dict[str, Any]
    #: Input folders by name: ``data`` always, plus the spec's ``extra_inputs`` (``base``, ...).
    inputs: dict[str, Path]
    #: The run folder. The task's files reach it through :func:`finish_run` (all at once, when
    #: the run ends); only the resumable checkpoint is written here directly (``CHECKPOINT_DIR``).
    out_dir: Path
    threads: int
    progress: bool = True

    @property
    def experiment(self) -> str:
        return f"{self.method}/{self.name}"

    def input(self, name: str) -> Path | None:
        """Input folder ``name``, or None when this configuration has none (a hub model)."""
        return self.inputs.get(name)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype of the training ``dtype`` ``name`` on ``device``; for a quantized base
    (int8/int4) the dtype of its unquantized parts (:func:`peftbench.core.quant.compute_dtype`)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name in QUANTIZED_DTYPES:
        from peftbench.core.quant import compute_dtype

        return compute_dtype(device)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def wrap_peft(model: Any, exp_dir: Path | None, params: dict[str, Any]) -> tuple[Any, dict | None]:
    """PEFT-wrap ``model`` with the experiment's adapter config; no config means full fine-tuning,
    which only a full fine-tuning folder may ask for (peftbench.core.experiments.check_folder):
    any other folder without its config fails here rather than train every weight under a PEFT
    method's label."""
    if exp_dir is not None and not (exp_dir / "adapter_config.json").exists():
        from peftbench.core.experiments import FULL_FINETUNING_MARKER, FULL_FINETUNING_METHOD

        full = exp_dir.parent.name == FULL_FINETUNING_METHOD
        if not full and not (exp_dir / FULL_FINETUNING_MARKER).exists():
            raise FileNotFoundError(
                f"{exp_dir / 'adapter_config.json'}: missing, and the folder is not a full "
                "fine-tuning experiment"
            )
    if exp_dir is None or not (exp_dir / "adapter_config.json").exists():
        for p in model.parameters():
            p.requires_grad_(True)
        return model, None
    from peft import PeftConfig, get_peft_model

    # (An AdaLoRA config without total_step cannot be loaded at all: PEFT raises, and the
    # pre-flight check reports it before any job, naming the file.)
    peft_config = PeftConfig.from_pretrained(str(exp_dir))
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


#: Folders of a run folder: the trained adapter (or fully fine-tuned weights), and the
#: training's resumable checkpoint (see :func:`peftbench.core.loop.train`).
ADAPTER_DIR, CHECKPOINT_DIR = "adapter", "checkpoint"

#: Metric keys of every task's result file (null until measured); a task adds its own
#: (``TaskSpec.metrics``) through :func:`start_run`.
SHARED_METRICS = (
    "test_n",
    "train_loss_final",
    "train_memory_peak_bytes",
    "train_memory_allocated_peak_bytes",
    "train_tensor_peak_bytes",
    "train_tensor_breakdown",
    "eval_memory_peak_bytes",
    "eval_memory_allocated_peak_bytes",
    "memory_measure",
    "train_time_s",
    "valid_time_s",
    "eval_time_s",
    "train_steps",
    "trainable_params",
    "total_params",
    "file_size_bytes",
)


def start_run(
    ctx: RunContext,
    *,
    data_hash: str,
    metrics: tuple[str, ...] | list[str],
    curves: tuple[str, ...] | list[str],
    provenance: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], torch.device]:
    """Seed and threads set, the device picked, and the result skeleton of one run (status
    ``failed`` until :func:`finish_run` sees the run through): the shared metric keys and the
    task's own ``metrics`` (core never imports a task: its run module passes its spec's), all
    null, and an empty list per learning curve in ``curves``."""
    from transformers import set_seed

    torch.set_num_threads(ctx.threads)
    set_seed(ctx.seed)
    device = pick_device()
    adapter_path = ctx.exp_dir / "adapter_config.json" if ctx.exp_dir else None
    adapter_cfg = (
        json.loads(adapter_path.read_text()) if adapter_path and adapter_path.exists() else None
    )
    result: dict[str, Any] = {
        "schema_version": 1,
        "task": ctx.task,
        "experiment": ctx.experiment,
        "method": ctx.method,
        "name": ctx.name,
        "seed": ctx.seed,
        "status": "failed",
        "error": None,
        "config": ctx.params,
        "peft_config": None,
        # What the method can do, tried on a tiny model (never fails the run; RNGs untouched).
        "capabilities": capability_record(adapter_cfg),
        "metrics": dict.fromkeys([*metrics, *SHARED_METRICS]),
        "curves": {name: [] for name in curves},
        "provenance": {
            "created_at": now(),
            "config_hash": canonical_hash({"config": ctx.params, "adapter_config": adapter_cfg}),
            "data_hash": data_hash,
            "base_model_hash": None,
            **(provenance or {}),
            "code_revision": code_revision(),
            "packages": package_versions(),
            "hardware": hardware(device),
            "device": str(device),
            # Forked from the local worker (imports shared, results identical) or not.
            "process": "worker" if os.environ.get(IN_WORKER_ENV) else "own",
        },
    }
    return result, device


class RunOutputError(RuntimeError):
    """Not even a failed result.json could be written: the job has to fail (alone: the workflow
    runs with ``keep-going``)."""


def finish_run(
    result: dict[str, Any],
    body: Callable[[Path], None],
    out_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Run ``body`` and write ``result.json`` whatever happens.

    ``body(folder)`` writes the run's files (adapter, per-item file, images) into ``folder``, a
    temporary folder next to ``out_dir``; they are moved into ``out_dir`` when the run ends,
    ``result.json`` last (:func:`peftbench.core.io.staged_dir`), so a run folder never holds part
    of a run, and a killed run leaves no result and is rerun.

    Any exception inside the run is recorded as ``status: failed`` with its message, so one broken
    method never stops the others; the caller exits 0 and aggregation shows the failed row. The
    partial files of a failed run are dropped: only its result.json is kept. When the outputs
    cannot be written (a full disk, a read-only folder), a failed result.json saying so is written
    instead where the folder still takes one; where not, :class:`RunOutputError` is raised.
    """
    try:
        with staged_dir(out_dir, last=RESULT_FILE, keep=(CHECKPOINT_DIR,)) as folder:
            _run_body(result, body, folder, device)
            write_json(folder / RESULT_FILE, result)
    except OSError as exc:  # ENOSPC, EACCES, EROFS, ...: while staging or moving the outputs
        traceback.print_exc()
        problem = f"could not write the run's outputs to {out_dir}: {type(exc).__name__}: {exc}"
        earlier = result["error"] if result["status"] == "failed" else None
        result.update(status="failed", error=f"{earlier}; {problem}" if earlier else problem)
        try:
            # An earlier run's files must not sit next to this run's failed row.
            clear_dir(out_dir, keep=(CHECKPOINT_DIR,))
            write_json(out_dir / RESULT_FILE, result)
        except OSError as again:
            raise RunOutputError(
                f"{problem}; the failed {RESULT_FILE} could not be written either "
                f"({type(again).__name__}: {again}). Nothing of this run was kept: free disk space "
                "or make the folder writable, then rerun."
            ) from exc
    return result


def _run_body(
    result: dict[str, Any], body: Callable[[Path], None], folder: Path, device: torch.device
) -> None:
    """Run ``body(folder)``; record a failure in ``result`` and drop the files it left."""
    try:
        body(folder)
        result["status"] = "success"
    except Exception as exc:  # noqa: BLE001 - any failure is data for the benchmark
        result["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        clear_dir(folder)  # half an adapter or item file is not an output
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
