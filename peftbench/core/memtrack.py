"""Exact accounting of tensor memory during one training step, on any device (also meta).

:class:`TensorAccountant` is a ``TorchDispatchMode``: every tensor an operator returns is seen,
its storage is recorded once (views share it) and a weak reference tells when it is freed.
So the figure is the sum of the bytes of live tensor storages, exactly, with no allocator or
operating-system noise: the same config gives the same bytes on every CPU run, and the same
code accounts a model built on the meta device (see :mod:`peftbench.core.estimate`).

Each storage live at the peak is put in one category:

* ``frozen_params`` (parameters that get no gradient, and buffers),
* ``trainable_params``,
* ``gradients`` (``.grad`` of the parameters),
* ``optimizer_state`` (tensors in ``optimizer.state``),
* ``activations`` (tensors autograd saved for the backward pass),
* ``temporaries`` (everything else: inputs, intermediate results, gradients of activations).

Categories are decided when the step is over, for the storages that were live at the peak:
a moment tensor created in the first optimizer step is optimizer state, even though it was
not in ``optimizer.state`` yet when it was created. Births and deaths are numbered events, so
the set of storages live at the peak is known without copying anything at each new peak.

Why not ``torch.distributed._tools.mem_tracker.MemTracker``: it counts every forward output
as an activation (not only what backward keeps) and refreshes per-module peaks on every
operator, which costs a walk over all modules per operator.

Tensors that exist before the step and belong to neither the model nor the optimizer (a
latent cache, a dataset on the device) are not counted.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from peftbench.core.memcategories import CATEGORIES

#: The CUDA caching allocator rounds every block up to 512 bytes; live tensors on CUDA cost that.
_CUDA_BLOCK = 512


@dataclass
class _Record:
    nbytes: int
    category: str
    born: int
    died: int | None = None
    saved: bool = False


class TensorAccountant(TorchDispatchMode):
    """Peak live-tensor bytes between ``__enter__`` and ``__exit__``, by category.

    ``model``'s parameters and buffers, their gradients and ``optimizer``'s state count from
    the start; every tensor an operator creates inside the context counts from its creation.
    After the context, :meth:`peak_bytes` and :meth:`breakdown` give the result.
    """

    def __init__(self, model: torch.nn.Module, optimizer: Any | None = None) -> None:
        super().__init__()
        self.model, self.optimizer = model, optimizer
        self._live: dict[int, _Record] = {}
        self._records: list[_Record] = []
        self._finalizers: dict[int, weakref.finalize] = {}
        self._event = 0
        self._current = 0
        self._peak = 0
        self._peak_event = 0
        self._handles: list[Any] = []
        self._saved_hooks: Any = None

    # ------------------------------------------------------------------ storage bookkeeping

    def _track(self, tensor: torch.Tensor, category: str) -> _Record | None:
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):  # sparse and other storage-less tensors
            return None
        key = id(storage)
        nbytes = storage.nbytes()
        if storage.device.type == "cuda":
            nbytes = math.ceil(nbytes / _CUDA_BLOCK) * _CUDA_BLOCK
        record = self._live.get(key)
        if record is not None:
            if record.nbytes == nbytes:
                return record
            # Resized in place (an ``out=`` kernel): the old size ends, the new one begins.
            self._free(key)
        self._event += 1
        record = _Record(nbytes, category, self._event)
        self._live[key] = record
        self._records.append(record)
        # The storage's Python object lives as long as the storage (torch keeps it alive with
        # it), so its weak reference dies exactly when the memory is released.
        self._finalizers[key] = weakref.finalize(storage, self._free, key)
        self._current += nbytes
        if self._current > self._peak:
            self._peak, self._peak_event = self._current, self._event
        return record

    def _free(self, key: int) -> None:
        record = self._live.pop(key, None)
        finalizer = self._finalizers.pop(key, None)
        if finalizer is not None:
            finalizer.detach()
        if record is None:
            return
        self._event += 1
        record.died = self._event
        self._current -= record.nbytes

    def _set(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        for tensor in tensors:
            record = self._track(tensor, category)
            if record is not None:
                record.category = category

    def _optimizer_tensors(self) -> list[torch.Tensor]:
        if self.optimizer is None:
            return []
        return [
            value
            for state in self.optimizer.state.values()
            for value in state.values()
            if isinstance(value, torch.Tensor)
        ]

    def _classify_owned(self) -> None:
        """Parameters, gradients and optimizer state by what they are now."""
        params = list(self.model.parameters())
        self._set((p for p in params if not p.requires_grad), "frozen_params")
        self._set(self.model.buffers(), "frozen_params")
        self._set((p for p in params if p.requires_grad), "trainable_params")
        self._set((p.grad for p in params if p.grad is not None), "gradients")
        self._set(self._optimizer_tensors(), "optimizer_state")

    # ------------------------------------------------------------------------- the mode

    def __enter__(self) -> TensorAccountant:
        self._classify_owned()
        for param in self.model.parameters():
            if param.requires_grad:
                self._handles.append(param.register_post_accumulate_grad_hook(self._on_grad))
        self._saved_hooks = torch.autograd.graph.saved_tensors_hooks(self._on_save, _unpack)
        self._saved_hooks.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._saved_hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._classify_owned()
        # Stop watching: what outlives the step (weights, optimizer state) is not our business
        # any more, and a finalizer would keep this object alive as long as those tensors.
        for finalizer in self._finalizers.values():
            finalizer.detach()
        self._finalizers, self._live = {}, {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, lambda t: self._track(t, "temporaries"), out)
        return out

    def _on_save(self, tensor: torch.Tensor) -> torch.Tensor:
        record = self._live.get(id(tensor.untyped_storage())) if _has_storage(tensor) else None
        if record is not None:
            record.saved = True
        return tensor

    def _on_grad(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self._set([param.grad], "gradients")

    # ---------------------------------------------------------------------------- results

    def peak_bytes(self) -> int:
        """Peak bytes of live tensor storages inside the context."""
        return self._peak

    def breakdown(self) -> dict[str, int]:
        """The storages live at the peak, summed by category (the values add up to the peak)."""
        totals = dict.fromkeys(CATEGORIES, 0)
        at = self._peak_event
        for record in self._records:
            if record.born <= at and (record.died is None or record.died > at):
                category = record.category
                if category == "temporaries" and record.saved:
                    category = "activations"
                totals[category] += record.nbytes
        return totals


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _has_storage(tensor: torch.Tensor) -> bool:
    return tensor.layout == torch.strided
