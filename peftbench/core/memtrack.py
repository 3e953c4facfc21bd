"""Exact accounting of tensor memory during training steps, on any device (also meta).

:class:`TensorAccountant` is a ``TorchDispatchMode``: every tensor an operator returns is seen,
its storage is recorded once (views share it) and a weak reference tells when it is freed.
So the figure is the sum of the bytes of live tensor storages, exactly, with no allocator or
operating-system noise: the same config gives the same bytes on every CPU run, and the same
code accounts a model built on the meta device (see :mod:`peftbench.core.estimate`).
Only storages on the model's device are counted (a CPU noise draw or step counter of a GPU
run is not GPU memory).

Each storage live at the peak is put in one category:

* ``frozen_params`` (parameters that get no gradient, buffers, and ``resident`` tensors the
  run keeps on the device for the whole training: data caches, other frozen models),
* ``trainable_params``,
* ``gradients`` (``.grad`` of the parameters),
* ``optimizer_state`` (tensors in ``optimizer.state``),
* ``activations`` (tensors autograd saved for the backward pass),
* ``temporaries`` (everything else: inputs, intermediate results, gradients of activations,
  and state a method keeps outside parameters and buffers, like AdaLoRA's sensitivity scores).

Categories are decided when the accounting is over, for the storages that were live at the
peak: a moment tensor created in the first optimizer step is optimizer state, even though it
was not in ``optimizer.state`` yet when it was created. Births and deaths are numbered events,
so the set of storages live at the peak is known without copying anything at each new peak,
and the same events replayed through
:class:`~peftbench.core.allocator.CachingAllocatorModel` give the peak memory that
PyTorch's CUDA caching allocator *reserves* for that sequence of allocations (what
``torch.cuda.max_memory_reserved`` reports). :meth:`TensorAccountant.mark` starts a named phase
(an evaluation after the training steps), whose peak can be asked for separately.

Why not ``torch.distributed._tools.mem_tracker.MemTracker``: it counts every forward output
as an activation (not only what backward keeps) and refreshes per-module peaks on every
operator, which costs a walk over all modules per operator.

Tensors that exist before the accounting and belong to neither the model, the optimizer nor
``resident`` (a dataset on the device) are not counted.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from peftbench.core.allocator import CachingAllocatorModel
from peftbench.core.memcategories import CATEGORIES

#: The CUDA caching allocator rounds every block up to 512 bytes; live tensors on CUDA cost that.
_CUDA_BLOCK = 512


@dataclass
class _Record:
    nbytes: int  # what the account counts (rounded up to the block size where one applies)
    size: int  # the storage's own bytes (what an allocator is asked for)
    category: str
    born: int
    died: int | None = None
    saved: bool = False


class TensorAccountant(TorchDispatchMode):
    """Peak live-tensor bytes between ``__enter__`` and ``__exit__``, by category.

    ``resident`` tensors, ``model``'s parameters and buffers, their gradients and
    ``optimizer``'s state count from the start, in that order (the order a run puts them on
    the device: ``resident`` first, then the weights in the order ``model.to(device)`` moves
    them); every tensor an operator creates inside the context counts from its creation.
    Storages on other devices than ``device`` (default: the device of the model's first
    parameter) are not counted. ``block``: round every storage up to this many bytes (default:
    512 for CUDA storages, what the caching allocator hands out, none for others).
    After the context, :meth:`peak_bytes`, :meth:`breakdown` and :meth:`reserved_peak_bytes`
    give the result.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: Any | None = None,
        *,
        resident: Iterable[torch.Tensor] = (),
        device: torch.device | str | None = None,
        block: int | None = None,
    ) -> None:
        super().__init__()
        self.model, self.optimizer = model, optimizer
        self.resident = list(resident)
        if device is None:
            first = next(iter(model.parameters()), None)
            device = None if first is None else first.device
        self.device_type = None if device is None else torch.device(device).type
        self.block = block
        self._live: dict[int, _Record] = {}
        self._records: list[_Record] = []
        self._finalizers: dict[int, weakref.finalize] = {}
        self._event = 0
        self._current = 0
        self._peak = 0
        self._peak_event = 0
        self._marks: list[tuple[int, str]] = [(0, "")]
        self._handles: list[Any] = []
        self._saved_hooks: Any = None

    # ------------------------------------------------------------------ storage bookkeeping

    def _track(self, tensor: torch.Tensor, category: str) -> _Record | None:
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):  # sparse and other storage-less tensors
            return None
        if self.device_type is not None and storage.device.type != self.device_type:
            return None
        key = id(storage)
        size = storage.nbytes()
        block = self.block or (_CUDA_BLOCK if storage.device.type == "cuda" else 1)
        nbytes = math.ceil(size / block) * block
        record = self._live.get(key)
        if record is not None:
            if record.size == size:
                return record
            # Resized in place (an ``out=`` kernel): the old size ends, the new one begins.
            self._free(key)
        self._event += 1
        record = _Record(nbytes, size, category, self._event)
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
        """Resident tensors, parameters, gradients and optimizer state by what they are now;
        new ones are tracked in the order a run allocates them."""
        self._set(self.resident, "frozen_params")
        for tensor in moved_tensors(self.model):
            trainable = isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad
            self._set([tensor], "trainable_params" if trainable else "frozen_params")
        params = list(self.model.parameters())
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
        tree_map_only(torch.Tensor, self._track_output, out)
        return out

    def _track_output(self, tensor: torch.Tensor) -> None:
        if tensor.layout == torch.sparse_coo:  # no storage of its own: its indices and values
            self._track(tensor._indices(), "temporaries")
            self._track(tensor._values(), "temporaries")
        else:
            self._track(tensor, "temporaries")

    def _on_save(self, tensor: torch.Tensor) -> torch.Tensor:
        record = self._live.get(id(tensor.untyped_storage())) if _has_storage(tensor) else None
        if record is not None:
            record.saved = True
        return tensor

    def _on_grad(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self._set([param.grad], "gradients")

    def mark(self, phase: str) -> None:
        """Start the phase ``phase`` (the phase before the first mark is named ``""``)."""
        self._marks.append((self._event, phase))

    # ---------------------------------------------------------------------------- results

    def phases(self) -> list[str]:
        """The phases marked, in order (``""`` first)."""
        return [name for _, name in self._marks]

    def _span(self, phase: str | None) -> tuple[int, int]:
        """Events (first, last] of ``phase``; the whole account for None."""
        if phase is None:
            return 0, self._event
        bounds = [event for event, _ in self._marks] + [self._event]
        index = self.phases().index(phase)
        return bounds[index], bounds[index + 1]

    def _timeline(self) -> list[tuple[int, int, _Record]]:
        """(event, +1 birth / -1 death, record) in event order."""
        events = [(r.born, 1, r) for r in self._records]
        events += [(r.died, -1, r) for r in self._records if r.died is not None]
        events.sort(key=lambda e: e[0])
        return events

    def _peak_of(self, phase: str | None) -> tuple[int, int]:
        """(peak live bytes, event of the peak) within ``phase``."""
        if phase is None:
            return self._peak, self._peak_event
        first, last = self._span(phase)
        current, peak, at = 0, -1, first
        for event, sign, record in self._timeline():
            if event > last:
                break
            current += sign * record.nbytes
            if event >= first and current > peak:
                peak, at = current, event
        return max(peak, 0), at

    def peak_bytes(self, phase: str | None = None) -> int:
        """Peak bytes of live tensor storages inside the context (or one phase of it)."""
        return self._peak_of(phase)[0]

    def breakdown(self, phase: str | None = None) -> dict[str, int]:
        """The storages live at the peak (of ``phase``), summed by category (the values add up
        to the peak)."""
        totals = dict.fromkeys(CATEGORIES, 0)
        at = self._peak_of(phase)[1]
        for record in self._records:
            if record.born <= at and (record.died is None or record.died > at):
                category = record.category
                if category == "temporaries" and record.saved:
                    category = "activations"
                totals[category] += record.nbytes
        return totals

    def reserved_peak_bytes(
        self, phase: str | None = None, allocator: CachingAllocatorModel | None = None
    ) -> int:
        """Peak bytes a CUDA caching allocator reserves (within ``phase``) when it serves the
        accounted allocations and frees in their order: ``torch.cuda.max_memory_reserved()``
        of the run, by :class:`CachingAllocatorModel` (default: one without a capacity)."""
        allocator = allocator or CachingAllocatorModel()
        first, last = self._span(phase)
        handles: dict[int, int] = {}
        started = False
        for event, sign, record in self._timeline():
            if event > last:
                break
            if not started and event > first:
                allocator.reset_peak()  # the phase starts with what is reserved by then
                started = True
            if sign > 0:
                handles[id(record)] = allocator.malloc(record.size)
            else:
                allocator.free(handles.pop(id(record)))
        if not started:
            allocator.reset_peak()
        return allocator.peak_reserved


def moved_tensors(model: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Parameters and buffers in the order ``model.to(device)`` allocates their copies
    (``Module._apply``: a module's children first, then its own parameters and buffers)."""
    seen: set[int] = set()

    def walk(module: torch.nn.Module) -> Iterator[torch.Tensor]:
        for child in module.children():
            yield from walk(child)
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None and id(tensor) not in seen:
                seen.add(id(tensor))
                yield tensor

    return walk(model)


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _has_storage(tensor: torch.Tensor) -> bool:
    return tensor.layout == torch.strided
