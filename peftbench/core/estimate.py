"""Peak GPU memory of a training step predicted without a GPU and without weights.

The preset's real architecture is built on the *meta* device from the architecture config file
shipped in the repository (``config/presets/architectures/<model id>/``), wrapped with the
experiment's adapter (adapter weights on meta too), and trained for :data:`STEPS` optimizer
steps at the preset's dtype, batch size and longest sequence: the real forward, backward,
gradient clipping and optimizer code, on tensors that have shapes and dtypes but no data. The
optimizer runs as on a GPU (torch picks its multi-tensor ``foreach`` implementation on CUDA, a
per-tensor one on other devices; the former holds a temporary as large as all the trainable
parameters of a dtype during the update). Every step is accounted by
:class:`~peftbench.core.memtrack.TensorAccountant`, which sees meta tensors' storages like any
others, from the first one (state a method keeps between steps outside its parameters, like
AdaLoRA's importance scores, is born there); the peak is the largest of all steps. The same
allocations and frees replayed through :class:`~peftbench.core.allocator.CachingAllocatorModel`
give the memory the CUDA caching allocator reserves for them (``reserved_bytes``, what
``torch.cuda.max_memory_reserved`` reports); the live-tensor peak (``peak_bytes``) is what
``max_memory_allocated`` reports. Why meta rather than ``FakeTensorMode``: PEFT moves adapter
weights with ``.to()``, which a fake-tensor module refuses (``_apply(): Couldn't swap``), while a
model wrapped on meta needs no move at all.

Tasks provide the architecture and the batch through a *memory probe* module (the spec's
``memory_probe``), so this module never names a task:

* ``architecture(task_cfg) -> dict``: the base architecture's config;
* ``build(arch, params, device) -> nn.Module``: the module an adapter wraps, at the params'
  dtype, on ``device`` (meta here; the CPU in the tests of a reduced architecture);
* ``training_loss(model, arch, task_cfg, params) -> Callable[[], Tensor]``: the loss of one
  batch of the longest shape training can draw (the batch is built in the call, as the run
  builds each step's batch);
* ``enable_gradient_checkpointing(model)``: what the run does when ``use_gc`` is set;
* optionally ``evaluation(model, arch, task_cfg, params, **options) -> Callable[[], None]``:
  the costliest forward of the run's evaluation (run in eval mode under
  ``torch.inference_mode``), accounted as a phase of its own after the training steps
  (``eval_peak_bytes``, ``eval_reserved_bytes``), for measurements whose peak spans the
  evaluation too.
"""

from __future__ import annotations

import importlib
import json
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peftbench.core.allocator import CachingAllocatorModel
from peftbench.core.config import deep_merge, training_table
from peftbench.core.experiments import discover, effective_params, select
from peftbench.core.layout import ARCHITECTURES
from peftbench.core.memtrack import CATEGORIES, TensorAccountant
from peftbench.core.metaexec import MetaValues, gpu_attention, wrap_adapter
from peftbench.core.optim import Updater, make_optimizer, make_scheduler
from peftbench.core.quant import is_quantized

#: What the predicted GPU run uses for dtype "auto" (a run picks bf16 on CUDA).
GPU = torch.device("cuda")

#: Optimizer steps accounted: the first has no optimizer state during forward and backward,
#: the second is the first with it, the third repeats the second on the allocator's cache as
#: the second left it (the allocator's reserve settles there: every later step makes the same
#: requests in the same order).
STEPS = 3

#: Bytes of every storage as the CUDA caching allocator hands them out (rounded up to 512).
GPU_BLOCK = 512


def shipped_architecture(model_id: str) -> Path:
    """Folder of the shipped config files of hub model ``model_id`` (``org/name``)."""
    folder = ARCHITECTURES / model_id
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no architecture config shipped for {model_id}: add its config files under "
            f"{folder} (the hub may be unreachable or gated, so estimates never download)"
        )
    return folder


@dataclass
class MemoryEstimate:
    """Predicted peak of one experiment's training step (bytes), split as in memtrack."""

    experiment: str
    peak_bytes: int | None = None
    breakdown: dict[str, int] = field(default_factory=dict)
    trainable_params: int | None = None
    seconds: float = 0.0
    error: str | None = None
    #: What the CUDA caching allocator reserves at the training peak (max_memory_reserved).
    reserved_bytes: int | None = None
    #: The evaluation phase (when asked for and the probe has one): live and reserved peak.
    eval_peak_bytes: int | None = None
    eval_reserved_bytes: int | None = None
    #: How the estimate got around what meta tensors cannot do (None: it did not need to).
    notes: str | None = None

    def gb(self, category: str | None = None) -> float | None:
        """The peak (or one category of it) in GB (1e9 bytes)."""
        value = self.peak_bytes if category is None else self.breakdown.get(category)
        return None if value is None else value / 1e9

    def reserved_gb(self, with_evaluation: bool = False) -> float | None:
        """The predicted peak reserved memory in GB, of training or of the whole run."""
        value = self.reserved_bytes
        if with_evaluation and value is not None and self.eval_reserved_bytes is not None:
            value = max(value, self.eval_reserved_bytes)
        return None if value is None else value / 1e9


def load_probe(module: str) -> Any:
    """A task's memory probe module (the spec's ``memory_probe``)."""
    if not module:
        raise ValueError("this task has no memory probe (TaskSpec.memory_probe)")
    return importlib.import_module(module)


def gpu_optimizer(optimizer: Any) -> Any:
    """``optimizer`` as torch runs it on CUDA: a torch optimizer left to choose (``foreach``
    None) takes its multi-tensor implementation there, but the per-tensor one on the meta
    device, which holds different temporaries. Returns ``optimizer``."""
    if isinstance(optimizer, torch.optim.Optimizer) and "foreach" in optimizer.defaults:
        for group in optimizer.param_groups:
            if group.get("foreach") is None and not group.get("fused"):
                if not group.get("differentiable"):
                    group["foreach"] = True
    return optimizer


def compact_storages(model: torch.nn.Module) -> None:
    """What moving ``model`` to another device and back does to its tensors: a parameter or
    buffer that is a view of a larger storage (a slice of an SVD factor kept as a buffer)
    becomes a tensor of its own size. Runs that wrap on one device and train on another (or
    move the wrapped model off the GPU and back) hold only that."""
    with torch.no_grad():
        for module in model.modules():
            for table in (module._parameters, module._buffers):
                for name, tensor in table.items():
                    if tensor is None:
                        continue
                    own = tensor.numel() * tensor.element_size()
                    if tensor.untyped_storage().nbytes() > own:
                        if isinstance(tensor, torch.nn.Parameter):
                            tensor.data = tensor.data.clone()
                        else:
                            table[name] = tensor.clone()


def account_training_step(
    model: torch.nn.Module,
    loss: Callable[[], torch.Tensor],
    params: Mapping[str, Any],
    *,
    steps: int = STEPS,
    resident: Iterable[torch.Tensor] = (),
    evaluation: Callable[[], Any] | None = None,
) -> tuple[TensorAccountant, set[str]]:
    """``steps`` optimizer steps of ``model`` (as :func:`peftbench.core.loop.train` runs them:
    every micro-batch's backward, then clip, step, schedule, let the method reallocate, zero
    the gradients), all accounted, with the optimizer as on a GPU and ``resident`` tensors on
    the device throughout; then ``evaluation`` (if any) as the phase "evaluation", in eval mode
    under ``torch.inference_mode``. Returns the accountant (phase "" is the training) and what
    :class:`MetaValues` had to answer."""
    optimizer = gpu_optimizer(make_optimizer(model, params))
    scheduler = make_scheduler(optimizer, {**params, "max_steps": max(steps, params["max_steps"])})
    update = Updater(model, optimizer, scheduler, params.get("grad_norm_clip"))
    accum = params.get("grad_accumulation_steps", 1)
    model.train()
    accountant = TensorAccountant(model, optimizer, resident=resident, block=GPU_BLOCK)
    values = MetaValues()
    with accountant, values:
        for step in range(1, steps + 1):
            for _ in range(accum):
                value = loss()
                (value / accum).backward()
                del value
            update(step)
        if evaluation is not None:
            accountant.mark("evaluation")
            model.eval()
            with torch.inference_mode():
                evaluation()
            model.train()
    return accountant, values.asked


def estimate_experiment(
    probe: Any,
    task_cfg: Mapping[str, Any],
    experiment: str,
    table: Mapping[str, Any] | None = None,
    device: torch.device | str = "meta",
    *,
    resident: Callable[[torch.device], list[torch.Tensor]] | None = None,
    moved_after_wrap: bool = False,
    evaluation: Mapping[str, Any] | None = None,
    capacity: int | None = None,
) -> MemoryEstimate:
    """Predict one experiment's peak training memory; a failure is recorded, not raised.

    ``resident(device)``: tensors the run keeps on the device besides the model (data caches,
    other models), made on ``device``; ``moved_after_wrap``: the run moves the wrapped model to
    another device and back before training (see :func:`compact_storages`); ``evaluation``:
    account the probe's evaluation phase too, with these options; ``capacity``: the device's
    memory for the allocator model (None: unbounded).
    """
    started = time.perf_counter()
    estimate = MemoryEstimate(experiment)
    root = Path(task_cfg["experiments_dir"])
    try:
        params = effective_params(
            task_cfg["training"], root, experiment, table, task_cfg.get("training_merge", "deep")
        )
        if is_quantized(params["dtype"]):
            # bitsandbytes' packed weights, quantization state and dequantization buffers are
            # not modelled: a prediction at the unquantized size would be far off.
            estimate.error = (
                f"not estimated: a quantized base model (dtype {params['dtype']}) is not modelled"
            )
            estimate.seconds = time.perf_counter() - started
            return estimate
        arch = probe.architecture(task_cfg)
        model, note = wrap_adapter(probe, arch, params, device, root / experiment)
        notes = [note] if note else []
        if moved_after_wrap:
            compact_storages(model)
        if params.get("use_gc"):
            probe.enable_gradient_checkpointing(model)
        loss = probe.training_loss(model, arch, task_cfg, params)
        evaluate = None
        if evaluation is not None and hasattr(probe, "evaluation"):
            evaluate = probe.evaluation(model, arch, task_cfg, params, **evaluation)
        extra = resident(torch.device(device)) if resident is not None else []
        with gpu_attention():
            accountant, asked = account_training_step(
                model, loss, params, resident=extra, evaluation=evaluate
            )
        notes += sorted(asked)
        estimate.notes = "; ".join(notes) or None
        estimate.peak_bytes = accountant.peak_bytes("")
        estimate.breakdown = accountant.breakdown("")
        estimate.reserved_bytes = accountant.reserved_peak_bytes(
            "", CachingAllocatorModel(capacity)
        )
        if evaluate is not None:
            estimate.eval_peak_bytes = accountant.peak_bytes("evaluation")
            estimate.eval_reserved_bytes = accountant.reserved_peak_bytes(
                "evaluation", CachingAllocatorModel(capacity)
            )
        estimate.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    except Exception as exc:  # noqa: BLE001 - one method that cannot be estimated is a finding
        estimate.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        traceback.print_exc()
    estimate.seconds = time.perf_counter() - started
    return estimate


def format_estimates(estimates: list[MemoryEstimate], title: str) -> str:
    """A fixed-width table: predicted peak GB (live tensors, and what the CUDA caching allocator
    reserves for them) and the live peak by category per experiment, largest first; how an
    estimate got around meta tensors' limits follows its row."""
    short = {
        c: c.replace("_params", "").replace("optimizer_state", "optim")[:8] for c in CATEGORIES
    }
    header = f"{'experiment':34} {'peak GB':>8} {'reserved':>8} " + " ".join(
        f"{short[c]:>8}" for c in CATEGORIES
    )
    lines = [title, header, "-" * len(header)]
    ordered = sorted(estimates, key=lambda e: -(e.peak_bytes or -1))
    for e in ordered:
        if e.error is not None:
            lines.append(f"{e.experiment:34} {'failed':>8} {e.error}")
            continue
        cells = " ".join(f"{e.gb(c) or 0.0:8.2f}" for c in CATEGORIES)
        reserved = "" if e.reserved_bytes is None else f"{e.reserved_gb():8.2f}"
        lines.append(f"{e.experiment:34} {e.gb():8.2f} {reserved:>8} {cells}")
        if e.notes:
            lines.append(f"{'':34} ({e.notes})")
    return "\n".join(lines)


def load_config(configfile: Path | str, defaults: Path | str | None = "config/config.yaml") -> dict:
    """The effective workflow config of ``snakemake --configfile <configfile>``: the default
    config (when it exists) deep-merged with the file."""
    import yaml

    config: dict[str, Any] = {}
    if defaults is not None and Path(defaults).exists():
        config = yaml.safe_load(Path(defaults).read_text(encoding="utf-8")) or {}
    override = yaml.safe_load(Path(configfile).read_text(encoding="utf-8")) or {}
    return deep_merge(config, override)


def estimate_config(
    config: Mapping[str, Any],
    tasks: list[str] | None = None,
    progress: Callable[[MemoryEstimate], None] | None = None,
) -> dict[str, list[MemoryEstimate]]:
    """Every selected experiment of each task of ``config`` (default: its ``tasks``) estimated;
    ``progress`` sees each estimate as it is done."""
    from peftbench.tasks import registry

    out: dict[str, list[MemoryEstimate]] = {}
    for task in tasks or config.get("tasks") or []:
        spec = registry.get(task)
        task_cfg = config[task]
        probe = load_probe(spec.memory_probe)
        chosen = select(
            discover(task_cfg["experiments_dir"]), (config.get("select") or {}).get(task)
        )
        table = training_table(spec.training_keys)
        out[task] = []
        for experiment in chosen:
            estimate = estimate_experiment(probe, task_cfg, experiment, table)
            out[task].append(estimate)
            if progress is not None:
                progress(estimate)
    return out


def write_estimates(path: Path | str, estimates: Mapping[str, list[MemoryEstimate]]) -> None:
    """Estimates as JSON: ``{task: [{experiment, peak_bytes, breakdown, ...}, ...]}``."""
    from dataclasses import asdict

    data = {task: [asdict(e) for e in items] for task, items in estimates.items()}
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_estimates(path: Path | str) -> dict[str, list[MemoryEstimate]]:
    """What :func:`write_estimates` wrote."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {task: [MemoryEstimate(**e) for e in items] for task, items in data.items()}
