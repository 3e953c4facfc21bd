"""Inference overhead of a fine-tuned model: how long one fixed generation takes with the
adapter as trained (unmerged), merged into the weights, and taken out (the base model), in the
same process, on the same inputs, warm-up excluded.

The task supplies the workload (:class:`Workload`: one generation of a fixed number of units,
tokens or images, on the model it is given, returning when the device is done); this module
only decides which model each variant is and times it. It is torch-free (PEFT models are
handled through their own methods), so the analysis reads the metric names from here.

The three variants of a PEFT model:

- **unmerged**: the model as trained;
- **base**: the same model object with every adapter layer swapped for the layer it wraps
  (what PEFT's ``unload()`` returns, put back afterwards: nothing is copied, no weight
  changes, and none of PEFT's per-layer dispatch is left in, unlike ``disable_adapter()``);
  a prompt-learning model's wrapped model, which prompt learning leaves untouched;
- **merged**: ``merge_and_unload()``, what one deploys; it changes the weights, so it is timed
  last, after the other two, and the model is not usable as trained afterwards. Prompt
  learning has nothing to merge (its virtual tokens are inputs, not weights), and a method
  whose merge fails gets no merged figures; ``infer_note`` says why.

Unmerged and base are timed in alternating rounds (after one warm-up round) so that a change of
load on a shared machine hits both alike; merged follows in a block of its own (one warm-up
call, then the same number of timed calls). Each latency is the median of the timed calls. A
model that is not a PEFT model (full fine-tuning, the base model itself) is timed as it is; it
has no base inside it to compare with (keeping a second copy would double its memory), so its
base and overhead figures are null and the caller's note says what it is.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: Every inference-timing metric key starts with this (and is optional in a result file: runs
#: written before the timing existed have none).
PREFIX = "infer_"
#: Warm-up calls per variant (excluded) and timed calls (their median is the latency).
WARMUP, REPEATS = 1, 3
#: The note of a model that is not a PEFT model: the base model's own run, and full fine-tuning.
BASE_MODEL_NOTE = "the base model itself: no adapter, nothing to merge or compare with"
FULL_FINETUNING_NOTE = (
    "full fine-tuning: no adapter to merge or take out, and no second copy of the base model "
    "kept to compare with (its architecture, and so its compute, is the base model's)"
)
#: The keys every task shares: the latency of each variant (median seconds of one generation of
#: the fixed workload), the two overheads (latency / base latency) and the note.
SHARED_KEYS = (
    "infer_latency_s",
    "infer_merged_latency_s",
    "infer_base_latency_s",
    "infer_overhead",
    "infer_merged_overhead",
    "infer_note",
)


def metric_keys(unit: str) -> tuple[str, ...]:
    """The metric keys of a task whose generations produce ``unit`` (``tokens``, ``images``):
    :data:`SHARED_KEYS` and the units per second of each variant."""
    throughputs = (f"infer_{v}{unit}_per_s" for v in ("", "merged_", "base_"))
    return (*SHARED_KEYS, *throughputs)


def is_metric(key: str) -> bool:
    """Whether ``key`` is an inference-timing metric (optional in a result file)."""
    return key.startswith(PREFIX)


@dataclass(frozen=True)
class Workload:
    """One generation: ``run(model)`` generates ``units`` ``unit`` with ``model`` (the same
    inputs, settings and length every call) and returns when the device is done; what it
    returns (the generated ids or images) is not used by the timing."""

    run: Callable[[Any], Any]
    units: int
    unit: str


def measure(
    model: Any,
    workload: Workload,
    *,
    plain_note: str | None = None,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    """The inference metrics of ``model`` (:func:`metric_keys`); see the module docstring.

    A PEFT model is merged at the end (``merge_and_unload``): call this after everything else
    the run computes with the model. ``plain_note`` is the note of a model that is not a PEFT
    model (what it is, and why it has no base or merged figures). Never raises: what could not
    be timed is null, and ``infer_note`` says why.
    """
    values: dict[str, Any] = dict.fromkeys(metric_keys(workload.unit))
    notes: list[str] = []
    latency: dict[str, float] = {}
    try:
        if not is_peft(model):
            notes.append(plain_note or "not a PEFT model: timed as it is")
            latency.update(_rounds({"": lambda: workload.run(model)}, warmup, repeats))
        else:
            latency.update(_unmerged_and_base(model, workload, warmup, repeats, notes))
            merged = _merge(model, notes)
            if merged is not None:
                latency.update(_rounds({"merged_": lambda: workload.run(merged)}, warmup, repeats))
    except Exception as exc:  # noqa: BLE001 - a timing must never fail the run
        notes.append(f"timing failed: {_short(exc)}")
    for variant, seconds in latency.items():
        values[f"infer_{variant}latency_s"] = seconds
        values[f"infer_{variant}{workload.unit}_per_s"] = workload.units / seconds
    base = latency.get("base_")
    if base:
        for variant in ("", "merged_"):
            if variant in latency:
                values[f"infer_{variant}overhead"] = latency[variant] / base
    values["infer_note"] = "; ".join(notes) or None
    return values


def is_peft(model: Any) -> bool:
    """Whether ``model`` is a PEFT model (``get_peft_model``'s result)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _prompt_learning(model: Any) -> bool:
    return bool(getattr(model.active_peft_config, "is_prompt_learning", False))


def _unmerged_and_base(
    model: Any, workload: Workload, warmup: int, repeats: int, notes: list[str]
) -> dict[str, float]:
    """Unmerged and base latencies, in alternating rounds; unmerged alone (and a note) where
    the adapter cannot be taken out."""

    def base() -> Any:
        with base_model(model) as plain:
            return workload.run(plain)

    runs = {"": lambda: workload.run(model), "base_": base}
    try:
        with base_model(model):  # can it be taken out at all? (not timed)
            pass
    except Exception as exc:  # noqa: BLE001 - time what can be timed
        notes.append(f"no base timing: {_short(exc)}")
        del runs["base_"]
    return _rounds(runs, warmup, repeats)


def _rounds(runs: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of each of ``runs`` over ``repeats`` rounds (each round calls every run
    once, in order) after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@contextmanager
def base_model(model: Any) -> Iterator[Any]:
    """The PEFT ``model``'s base model, for the duration: its wrapped model with every adapter
    layer swapped for the layer it wraps (restored on exit), or a prompt-learning model's
    wrapped model. Raises where adapter modules would remain (a method whose layers PEFT
    unloads in its own way)."""
    if _prompt_learning(model):
        yield model.get_base_model()
        return
    inner = model.get_base_model()
    swaps = list(_adapter_layers(inner))
    for parent, name, layer in swaps:
        setattr(parent, name, _without_adapter(layer))
    try:
        left = sorted({type(m).__name__ for m in inner.modules() if _from_peft(m)})
        if left:
            raise RuntimeError(f"adapter modules remain without the adapter layers: {left}")
        yield inner
    finally:
        for parent, name, layer in reversed(swaps):
            setattr(parent, name, layer)


def _from_peft(module: Any) -> bool:
    return type(module).__module__.split(".")[0] == "peft"


def _without_adapter(layer: Any) -> Any:
    """The module an adapter layer (``get_base_layer``) or a trained-copy wrapper
    (``original_module``, modules_to_save) stands in for."""
    if hasattr(layer, "base_layer"):
        return layer.get_base_layer()
    return layer.original_module


def _adapter_layers(module: Any) -> Iterator[tuple[Any, str, Any]]:
    """(parent, attribute, layer) of the outermost adapter layers and wrappers below
    ``module`` (the modules PEFT's ``unload`` replaces)."""
    for name, child in module.named_children():
        if _from_peft(child) and any(hasattr(child, a) for a in ("base_layer", "original_module")):
            yield module, name, child
        else:
            yield from _adapter_layers(child)


def _merge(model: Any, notes: list[str]) -> Any | None:
    """``merge_and_unload()``'s model, or None (and a note) where there is nothing to merge or
    the merge fails."""
    if _prompt_learning(model):
        notes.append("prompt learning: nothing to merge (the virtual tokens are inputs)")
        return None
    try:
        return model.merge_and_unload()
    except Exception as exc:  # noqa: BLE001 - not mergeable: no merged figures
        notes.append(f"not merged: {_short(exc)}")
        return None


def _short(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."
