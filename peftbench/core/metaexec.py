"""Running a model's real training code on the *meta* device, as it would run on a GPU, for
:mod:`peftbench.core.estimate`: attention takes the GPU kernels' memory path, the few value
questions meta tensors cannot answer get what a training run finds, and adapters whose setup
needs data are set up on the CPU and moved to meta (:func:`wrap_adapter`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode


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


class MetaValues(TorchDispatchMode):
    """Answers the two questions about values that some methods' training code asks and meta
    tensors cannot answer, with what a real run finds; each kind asked is recorded in ``asked``.

    * a boolean scalar read from a meta tensor (``bool(t)``, ``t.item()``): False. Methods ask it
      to check that nothing went wrong (VB-LoRA: ``logits.isinf().any()``), which a run that
      trains finds false every time;
    * the nonzero elements of a meta tensor (``nonzero``, boolean-mask indexing): all of them,
      torch's own optional meta rule. Exact where a mask keeps every element by construction
      (WaveFT's in-range mask of its spectrum indices); where it does not, the count of a mask
      is data and the estimate is not exact.
    """

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            tensor = args[0]
            if tensor.device.type == "meta" and tensor.dtype == torch.bool:
                self.asked.add("a value check on meta tensors taken as False")
                return False
        position = _NONZERO_OPS.get(func.__name__.split(".")[0])
        if position is not None and len(args) > position and _has_meta_mask(args[position]):
            self.asked.add("nonzero on meta tensors taken as all elements")
            from torch.fx.experimental import _config

            with _config.patch(meta_nonzero_assume_all_nonzero=True):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


#: Operators whose meta kernels count the nonzero elements of a boolean tensor, with the
#: position of the argument that holds it.
_NONZERO_OPS = {
    "nonzero": 0,
    "nonzero_numpy": 0,
    "argwhere": 0,
    "index": 1,
    "index_put": 1,
    "index_put_": 1,
    "_index_put_impl_": 1,
    "masked_select": 1,
    "masked_scatter": 1,
    "masked_scatter_": 1,
}


def _has_meta_mask(value: Any) -> bool:
    from torch.utils._pytree import tree_leaves

    return any(
        isinstance(leaf, torch.Tensor) and leaf.device.type == "meta" and leaf.dtype == torch.bool
        for leaf in tree_leaves(value)
    )


@contextmanager
def real_target_weights(exp_dir: Path, device: torch.device | str) -> Iterator[None]:
    """While PEFT wraps, every layer it adapts has real (zero) weights on the CPU, one layer at
    a time, and the layer it makes goes to ``device`` right after: for methods whose adapter
    setup needs tensors with data (SHiRA's random mask is turned into indices with ``where``),
    though not their values (the adapter's tensors have the same shapes whatever the weights)."""
    from peft import PeftConfig
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    tuner = PEFT_TYPE_TO_TUNER_MAPPING[PeftConfig.from_pretrained(str(exp_dir)).peft_type]
    original = tuner._create_and_replace

    def create_and_replace(self: Any, *args: Any, **kwargs: Any) -> Any:
        target = args[2] if len(args) > 2 else kwargs["target"]
        name = args[3] if len(args) > 3 else kwargs["target_name"]
        parent = args[4] if len(args) > 4 else kwargs["parent"]
        layer = target.get_base_layer() if hasattr(target, "get_base_layer") else target
        for key, tensor in list(layer._parameters.items()):
            if tensor is not None and tensor.is_meta:
                real = torch.zeros(tensor.shape, dtype=tensor.dtype)
                layer._parameters[key] = torch.nn.Parameter(real, tensor.requires_grad)
        try:
            return original(self, *args, **kwargs)
        finally:
            getattr(parent, name).to(device)
            layer.to(device)

    tuner._create_and_replace = create_and_replace
    try:
        yield
    finally:
        tuner._create_and_replace = original


#: Ways to wrap a model on meta, tried in order; the note says what a fallback did.
WRAPS = {
    "device": None,
    "cpu-init": "adapter set up on the CPU (its setup computes on tensors), then moved to meta",
    "cpu-weights": "each adapted layer's adapter set up on the CPU from real zero weights "
    "(its setup needs tensors with data), then moved to meta",
}


def wrap_adapter(
    probe: Any,
    arch: Mapping[str, Any],
    params: Mapping[str, Any],
    device: torch.device | str,
    exp_dir: Path,
) -> tuple[torch.nn.Module, str | None]:
    """The probe's model built on ``device`` and wrapped with the experiment's adapter (adapter
    weights made where the base weights are: no memory on meta). On meta, a setup that needs
    data is retried with the adapter set up on the CPU (:data:`WRAPS`); the adapter's tensors
    end up on meta with the shapes and dtypes they have on a GPU, so the accounting stays
    exact. Returns the model and the fallback's note (None without one)."""
    from peftbench.core.runs import wrap_peft

    first: Exception | None = None
    for how, note in WRAPS.items():
        model = probe.build(arch, params, device)
        try:
            if how == "device":
                with torch.device(device):
                    return wrap_peft(model, exp_dir, params)[0], None
            if how == "cpu-init":
                model = wrap_peft(model, exp_dir, params)[0]
            else:
                with real_target_weights(exp_dir, device):
                    model = wrap_peft(model, exp_dir, params)[0]
            return model.to(device), note
        except Exception as exc:
            if first is None:
                first = exc
            if (
                torch.device(device).type != "meta"
                or not (exp_dir / "adapter_config.json").exists()
            ):
                raise
    assert first is not None
    raise first
