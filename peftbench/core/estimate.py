"""Peak GPU memory of a training step predicted without a GPU and without weights.

The preset's real architecture is built on the *meta* device from the architecture config file
shipped in the repository (``config/presets/architectures/<model id>/``), wrapped with the
experiment's adapter (adapter weights on meta too), and trained for two optimizer steps at the
preset's dtype, batch size and longest sequence: the real forward, backward, gradient clipping
and optimizer code, on tensors that have shapes and dtypes but no data. The second step (the
first with optimizer state present during forward and backward, like every later step) is
accounted by :class:`~peftbench.core.memtrack.TensorAccountant`, which sees meta tensors'
storages like any others. Why meta rather than ``FakeTensorMode``: PEFT moves adapter weights
with ``.to()``, which a fake-tensor module refuses (``_apply(): Couldn't swap``), while a model
wrapped on meta needs no move at all.

Tasks provide the architecture and the batch through a *memory probe* module (the spec's
``memory_probe``), so this module never names a task:

* ``architecture(task_cfg) -> dict``: the base architecture's config;
* ``build(arch, params, device) -> nn.Module``: the module an adapter wraps, at the params'
  dtype, on ``device`` (meta here; the CPU in the tests of a reduced architecture);
* ``training_loss(model, arch, task_cfg, params) -> Callable[[], Tensor]``: the loss of one
  batch of the longest shape training can draw;
* ``enable_gradient_checkpointing(model)``: what the run does when ``use_gc`` is set.
"""

from __future__ import annotations

import importlib
import json
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from peftbench.core.config import deep_merge, training_table
from peftbench.core.experiments import discover, effective_params, select
from peftbench.core.memtrack import CATEGORIES, TensorAccountant
from peftbench.core.optim import Updater, make_optimizer, make_scheduler

#: Architecture config files of the presets' models, one folder per hub model id.
ARCHITECTURES = Path(__file__).resolve().parents[2] / "config" / "presets" / "architectures"

#: What the predicted GPU run uses for dtype "auto" (a run picks bf16 on CUDA).
GPU = torch.device("cuda")


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

    def gb(self, category: str | None = None) -> float | None:
        """The peak (or one category of it) in GB (1e9 bytes)."""
        value = self.peak_bytes if category is None else self.breakdown.get(category)
        return None if value is None else value / 1e9


@contextmanager
def gpu_attention() -> Iterator[None]:
    """Scaled-dot-product attention on meta tensors runs the kernel a GPU would: flash attention
    without a mask, memory-efficient attention with one (a boolean mask becomes an additive
    bias, as torch does on a GPU). For meta tensors torch picks the math path, which
    materialises the L x L weights and keeps them for backward, where a GPU keeps only the
    output and its log-sum-exp."""
    original = F.scaled_dot_product_attention

    def attention(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        if query.device.type != "meta":
            return original(
                query,
                key,
                value,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                scale=scale,
                enable_gqa=enable_gqa,
            )
        if attn_mask is None:
            flash = torch.ops.aten._scaled_dot_product_flash_attention
            return flash(query, key, value, dropout_p, is_causal, False, scale=scale)[0]
        if enable_gqa and key.shape[-3] != query.shape[-3]:
            # The efficient kernel wants one key/value head per query head.
            repeat = query.shape[-3] // key.shape[-3]
            key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
        bias = attn_mask
        if bias.dtype == torch.bool:
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device)
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        shape = (*query.shape[:-1], key.shape[-2])
        efficient = torch.ops.aten._scaled_dot_product_efficient_attention
        return efficient(
            query, key, value, bias.expand(shape), True, dropout_p, is_causal, scale=scale
        )[0]

    F.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def load_probe(module: str) -> Any:
    """A task's memory probe module (the spec's ``memory_probe``)."""
    if not module:
        raise ValueError("this task has no memory probe (TaskSpec.memory_probe)")
    return importlib.import_module(module)


def account_training_step(
    model: torch.nn.Module, loss: Callable[[], torch.Tensor], params: Mapping[str, Any]
) -> TensorAccountant:
    """Two optimizer steps of ``model`` (as :func:`peftbench.core.loop.train` runs them: every
    micro-batch's backward, then clip, step, schedule, zero the gradients); the second is
    accounted and its accountant returned."""
    optimizer = make_optimizer(model, params)
    scheduler = make_scheduler(optimizer, {**params, "max_steps": max(2, params["max_steps"])})
    update = Updater(model, optimizer, scheduler, params.get("grad_norm_clip"))
    accum = params.get("grad_accumulation_steps", 1)
    model.train()
    accountant = TensorAccountant(model, optimizer)
    for step in (1, 2):
        with accountant if step == 2 else nullcontext():
            for _ in range(accum):
                value = loss()
                (value / accum).backward()
                del value
            update(step)
    return accountant


def estimate_experiment(
    probe: Any,
    task_cfg: Mapping[str, Any],
    experiment: str,
    table: Mapping[str, Any] | None = None,
    device: torch.device | str = "meta",
) -> MemoryEstimate:
    """Predict one experiment's peak training memory; a failure is recorded, not raised."""
    from peftbench.core.runs import wrap_peft

    started = time.perf_counter()
    estimate = MemoryEstimate(experiment)
    root = Path(task_cfg["experiments_dir"])
    try:
        params = effective_params(task_cfg["training"], root, experiment, table)
        arch = probe.architecture(task_cfg)
        model = probe.build(arch, params, device)
        # Adapter weights where the base weights are: no memory on meta.
        with torch.device(device):
            model, _ = wrap_peft(model, root / experiment, params)
        if params.get("use_gc"):
            probe.enable_gradient_checkpointing(model)
        loss = probe.training_loss(model, arch, task_cfg, params)
        with gpu_attention():
            accountant = account_training_step(model, loss, params)
        estimate.peak_bytes = accountant.peak_bytes()
        estimate.breakdown = accountant.breakdown()
        estimate.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    except Exception as exc:  # noqa: BLE001 - one method that cannot be estimated is a finding
        estimate.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        traceback.print_exc()
    estimate.seconds = time.perf_counter() - started
    return estimate


def format_estimates(estimates: list[MemoryEstimate], title: str) -> str:
    """A fixed-width table: predicted peak GB by category per experiment, largest first."""
    short = {
        c: c.replace("_params", "").replace("optimizer_state", "optim")[:8] for c in CATEGORIES
    }
    header = f"{'experiment':34} {'peak GB':>8} " + " ".join(f"{short[c]:>8}" for c in CATEGORIES)
    lines = [title, header, "-" * len(header)]
    ordered = sorted(estimates, key=lambda e: -(e.peak_bytes or -1))
    for e in ordered:
        if e.error is not None:
            lines.append(f"{e.experiment:34} {'failed':>8} {e.error}")
            continue
        cells = " ".join(f"{e.gb(c) or 0.0:8.2f}" for c in CATEGORIES)
        lines.append(f"{e.experiment:34} {e.gb():8.2f} {cells}")
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
