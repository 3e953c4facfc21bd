"""Wrapping an experiment's adapter around a weight-less base model for the pre-flight check
(peftbench.core.validate), and what to do when the *meta* device cannot run a method's setup.

Some PEFT methods compute on the base weights while they build their adapter: FRoD decomposes
the stacked weights of every layer (``.cpu()`` of a meta tensor: "Cannot copy out of meta
tensor"), SHiRA turns a random mask into indices (``nonzero``, which has no meta kernel),
UniLoRA counts index uses (``bincount``). Such a failure says nothing about the experiment, so it
must never reject one. :func:`wrap` tries, in order (:data:`STAGES`):

1. ``meta``: base and adapter on the meta device (no memory; most methods);
2. ``cpu-adapter``: the adapter's own tensors on the CPU, the base on meta;
3. ``cpu-layers``: each adapted layer gets real zero weights on the CPU while its adapter is
   built, one layer at a time (:func:`peftbench.core.metaexec.real_target_weights`): exact
   shapes, one layer's memory (SHiRA at full size);
4. ``real-copy``: the whole model with real (small random) weights on the CPU, when it has at
   most :data:`REAL_COPY_MAX_PARAMS` parameters (the embedded models): the exact check;
5. ``targets``: for a larger model, PEFT's own injection with the adapter layers left unbuilt:
   it still checks the config against the model (target modules that match nothing, a model
   type without default targets, layers_to_transform), and a note says that the method's
   per-layer setup was not checked (it runs when the job builds the adapter).

Only a failure that :func:`lacks_meta_support` moves on to the next stage; any other failure is
the experiment's problem and is reported at once.
"""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Models up to this many parameters get the exact real-weight check (stage ``real-copy``): the
#: embedded models (well under a million) in a second; a 3B hub model would need gigabytes.
REAL_COPY_MAX_PARAMS = 50_000_000

STAGES = ("meta", "cpu-adapter", "cpu-layers", "real-copy", "targets")

#: What the meta device's own errors say (torch 2.x): no kernel, no data, data-dependent shapes,
#: or a meta tensor meeting a real one. A PEFT config error never speaks of meta tensors.
_META_MESSAGES = re.compile(
    r"meta tensor|'meta' backend|meta backend|register_meta|meta device|device='meta'"
    r"|type='meta'|device=meta\b|\bmeta and cpu\b|\bcpu and meta\b|is_meta",
    re.IGNORECASE,
)


def lacks_meta_support(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is the meta device lacking an
    operator or data, not a problem of the experiment: a RuntimeError (NotImplementedError
    included) whose message is one of torch's meta-tensor messages. PEFT reports config errors
    as ValueError, TypeError or KeyError, which never count."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RuntimeError) and _META_MESSAGES.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@dataclass
class Wrapped:
    """The outcome of :func:`wrap`: the wrapped model (None when only the targets could be
    checked, or on a problem), the stage that worked, a note when it was not the first, and
    the experiment's problem (an exception that is not the meta device's)."""

    model: Any = None
    stage: str | None = None
    note: str | None = None
    problem: BaseException | None = None


def wrap(factory: Callable[[], Any], exp_dir: Path, params: dict[str, Any]) -> Wrapped:
    """The base model from ``factory()`` (a fresh meta-device model per call) wrapped with the
    experiment's adapter, through the first of :data:`STAGES` the method's setup runs on."""
    from peftbench.core.metaexec import real_target_weights
    from peftbench.core.runs import wrap_peft

    first: BaseException | None = None
    for stage in STAGES:
        model = factory()
        try:
            if stage == "meta":
                with torch.device("meta"):
                    wrapped = wrap_peft(model, exp_dir, params)[0]
            elif stage == "cpu-adapter":
                wrapped = wrap_peft(model, exp_dir, params)[0]
            elif stage == "cpu-layers":
                if _tuner(exp_dir) is None:
                    continue
                with real_target_weights(exp_dir, "meta"), identity_permutations():
                    wrapped = wrap_peft(model, exp_dir, params)[0]
            elif stage == "real-copy":
                real = real_copy(model)
                if real is None:
                    continue
                wrapped = wrap_peft(real, exp_dir, params)[0]
            else:
                matched = matched_targets(model, exp_dir, params)
                if matched is None:
                    break
                return Wrapped(None, stage, _note(stage, first, matched, model))
        except Exception as exc:  # noqa: BLE001 - PEFT raises many types; each is a finding
            if not lacks_meta_support(exc):
                return Wrapped(problem=exc)
            first = first or exc
            continue
        return Wrapped(wrapped, stage, None if stage == "meta" else _note(stage, first))
    assert first is not None
    return Wrapped(stage=None, note=_note(None, first))


def _note(
    stage: str | None, cause: BaseException | None, matched: int = 0, model: Any = None
) -> str:
    why = f"the meta device cannot run its setup ({first_line(cause)})" if cause else ""
    if stage == "targets":
        size = sum(p.numel() for p in model.parameters())
        return (
            f"adapter setup not checked: {why}, and a real-weight copy of this "
            f"{size / 1e9:.1f}B-parameter model is too large for the pre-flight check; checked "
            f"instead: the config against the model ({matched} layer(s) targeted). The method's "
            "own checks run when the job builds the adapter"
        )
    if stage is None:
        return f"adapter not checked before training: {why}; every fallback failed the same way"
    how = {
        "cpu-adapter": "with its adapter tensors on the CPU",
        "cpu-layers": "with real zero weights for each adapted layer in turn",
        "real-copy": "on a real-weight copy of the model",
    }[stage]
    return f"checked {how}: {why}"


@contextmanager
def identity_permutations() -> Iterator[None]:
    """Inside: ``torch.randperm(n)`` returns the identity permutation, one of the permutations
    it may return, in O(n) instead of a shuffle: SHiRA's random mask of a 3072 x 8192 layer
    costs most of its setup in the shuffle, whose order the check does not look at."""
    original = torch.randperm

    def randperm(n: int, *args: Any, dtype: torch.dtype = torch.int64, **kwargs: Any) -> Any:
        kwargs.pop("generator", None)
        return torch.arange(n, dtype=dtype, device=kwargs.get("device"))

    torch.randperm = randperm
    try:
        yield
    finally:
        torch.randperm = original


def real_copy(model: torch.nn.Module) -> torch.nn.Module | None:
    """``model`` (on meta) with real weights on the CPU, small random values from a fixed seed
    (a decomposition of all-zero weights can degenerate), buffers zero; None when it has more
    than :data:`REAL_COPY_MAX_PARAMS` parameters."""
    if sum(p.numel() for p in model.parameters()) > REAL_COPY_MAX_PARAMS:
        return None
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.is_floating_point():
                param.normal_(0.0, 0.02, generator=generator)
            else:
                param.zero_()
        for buffer in model.buffers():
            buffer.zero_()
    return model


#: Attribute types a module copy shares instead of copying (immutable), or makes afresh when
#: empty (a module's ~15 hook registries, empty in a base model).
_ATOMIC = (bool, int, float, str, type(None))
_CONTAINERS = (dict, OrderedDict, set, list)


def clone_model(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` equal to ``copy.deepcopy(model)`` (the same attributes, every
    tensor and config copied, tied weights still tied), about four times faster on a meta
    model: the pre-flight check wraps one copy of the base per experiment, and
    ``copy.deepcopy`` spent most of its time on the generic pickling path of each submodule and
    of its empty hook registries. Modules of a class with its own copy or pickling hooks, and
    every non-module attribute, still go through ``copy.deepcopy`` (with one shared memo)."""
    return _clone(model, {})


def _plain_module(cls: type) -> bool:
    module = torch.nn.Module
    return (
        cls.__reduce_ex__ is object.__reduce_ex__
        and getattr(cls, "__deepcopy__", None) is None
        and cls.__getstate__ is module.__getstate__
        and cls.__setstate__ is module.__setstate__
    )


def _clone(obj: Any, memo: dict[int, Any]) -> Any:
    if id(obj) in memo:
        return memo[id(obj)]
    if not isinstance(obj, torch.nn.Module) or not _plain_module(type(obj)):
        return copy.deepcopy(obj, memo)
    new = object.__new__(type(obj))
    memo[id(obj)] = new
    # Keep the original alive while the memo holds its id, as copy.deepcopy does.
    memo.setdefault(id(memo), []).append(obj)
    state = {}
    for key, value in obj.__getstate__().items():
        kind = type(value)
        if key == "_modules":
            state[key] = kind((k, None if m is None else _clone(m, memo)) for k, m in value.items())
        elif kind in _ATOMIC:
            state[key] = value
        elif kind in _CONTAINERS and not value:
            state[key] = kind()
        else:
            state[key] = copy.deepcopy(value, memo)
    # What Module.__setstate__ does with a complete state.
    new.__dict__.update(state)
    return new


def matched_targets(model: Any, exp_dir: Path, params: dict[str, Any]) -> int | None:
    """PEFT's injection of the experiment's adapter into ``model`` with every layer left as it
    is: how many layers the config targets (None for a method without an injection step, the
    prompt-learning ones). Raises what PEFT raises about the config itself (no layer matched,
    no default targets for the model type)."""
    from peftbench.core.runs import wrap_peft

    tuner = _tuner(exp_dir)
    if tuner is None:
        return None
    matched: list[str] = []

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        matched.append(kwargs.get("current_key") or (args[5] if len(args) > 5 else ""))

    with _replaced(tuner, _create_and_replace=record, _pre_injection_hook=_nothing):
        with torch.device("meta"):
            wrap_peft(model, exp_dir, params)
    return len(matched)


def _tuner(exp_dir: Path) -> type | None:
    """The PEFT tuner class that injects the experiment's adapter layer by layer (None for the
    prompt-learning methods, which add their own module instead)."""
    from peft import PeftConfig
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.tuners.tuners_utils import BaseTuner

    tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(PeftConfig.from_pretrained(str(exp_dir)).peft_type)
    return tuner if isinstance(tuner, type) and issubclass(tuner, BaseTuner) else None


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


@contextmanager
def _replaced(cls: type, **methods: Callable[..., Any]) -> Iterator[None]:
    """``cls``'s ``methods`` replaced for the block (its own or inherited ones)."""
    own = {name: cls.__dict__[name] for name in methods if name in cls.__dict__}
    for name, method in methods.items():
        setattr(cls, name, method)
    try:
        yield
    finally:
        for name in methods:
            if name in own:
                setattr(cls, name, own[name])
            else:
                delattr(cls, name)
