"""File checks that need torch or peft, but no model: an optimizer's keyword arguments against
its signature, and a PEFT config's keys and value types against the PEFT config dataclass of its
``peft_type`` (peft's own loader only warns about an unknown key and runs with the default, and
passes a string rank straight on to a layer constructor).

Imported while the DAG is built (where torch is available anyway); peftbench.core.config holds
the torch-free checks.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import json
import math
import types
import typing
import warnings
from collections.abc import Mapping
from functools import cache
from typing import Any

from peftbench.core.config import did_you_mean

# --- optimizers -------------------------------------------------------------------------------

#: Keys LoRA+ takes out of its ``**kwargs`` before they reach the optimizer class (peft 0.21).
_LORAPLUS_EXTRA = ("loraplus_lr_embedding", "loraplus_weight_decay")


@cache
def optimizer_parameters(optimizer_type: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments the factory of ``optimizer_type`` (peftbench.core.optim) accepts."""
    import torch

    adamw = dict(inspect.signature(torch.optim.AdamW).parameters)
    del adamw["params"]
    if optimizer_type == "AdamW":
        return adamw
    if optimizer_type == "lora+":
        from peft.optimizers import create_loraplus_optimizer

        own = dict(inspect.signature(create_loraplus_optimizer).parameters)
        for name in ("model", "optimizer_cls", "kwargs"):
            own.pop(name, None)
        extra = {
            name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=0.0)
            for name in _LORAPLUS_EXTRA
        }
        return {**adamw, **extra, **own}
    if optimizer_type == "lora-fa":
        from peft.optimizers import create_lorafa_optimizer

        own = dict(inspect.signature(create_lorafa_optimizer).parameters)
        own.pop("model", None)
        return own
    if optimizer_type == "riemannian":
        # Its own keywords (lr, required; reg) and, through **kwargs, AdamW's, which it wraps.
        from peft.optimizers import create_riemannian_optimizer

        own = dict(inspect.signature(create_riemannian_optimizer).parameters)
        for name in ("model", "optimizer_cls", "kwargs"):
            own.pop(name, None)
        return {**adamw, **own}
    return {}


def _annotation_name(param: inspect.Parameter) -> str:
    annotation = param.annotation
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")


def optimizer_problems(params: Mapping[str, Any], source: str) -> list[str]:
    """``optimizer_kwargs`` against the signature of the chosen ``optimizer_type``: unknown keys
    (closest one suggested), missing required ones, flags that are not booleans."""
    kind, kwargs = params.get("optimizer_type"), params.get("optimizer_kwargs")
    accepted = optimizer_parameters(kind) if isinstance(kind, str) else {}
    if not accepted or not isinstance(kwargs, Mapping):
        return []
    problems = []
    for key, value in kwargs.items():
        name = f"'optimizer_kwargs.{key}'"
        param = accepted.get(key)
        if param is None:
            hint = did_you_mean(key, accepted)
            problems.append(
                f"{source}: {name} is not an argument of the {kind} optimizer{hint} "
                f"(accepted: {', '.join(accepted)})"
            )
        elif (isinstance(param.default, bool) or "bool" in _annotation_name(param)) and not (
            isinstance(value, bool) or (value is None and param.default is None)
        ):
            problems.append(f"{source}: {name} must be true or false, got {json.dumps(value)}")
        elif _annotation_name(param) == "int" and (
            not isinstance(value, int) or isinstance(value, bool) or value <= 0
        ):
            problems.append(f"{source}: {name} must be an integer > 0, got {json.dumps(value)}")
    for key, param in accepted.items():
        if param.default is inspect.Parameter.empty and key not in kwargs:
            problems.append(
                f"{source}: 'optimizer_kwargs.{key}' is required by the {kind} optimizer"
            )
    return problems


# --- PEFT configs -----------------------------------------------------------------------------


def _conforms(value: Any, hint: Any) -> bool | None:
    """Whether a JSON ``value`` fits the type ``hint``; None where that cannot be told from the
    hint alone (a nested config class, a pattern such as 'pissa_niter_[number of iters]')."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if hint is str:
        return isinstance(value, str)
    if origin in (typing.Union, types.UnionType):
        results = [_conforms(value, arm) for arm in args]
        return True if True in results else None if None in results else False
    if origin is typing.Literal:
        if value in args:
            return True
        return None if any(isinstance(a, str) and "[" in a for a in args) else False
    if hint in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list):
            return False
        item = args[0] if args and (origin is not tuple or args[-1] is Ellipsis) else Any
        results = [_conforms(v, item) for v in value]
        return False if False in results else None if None in results else True
    if hint is dict or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value in {m.value for m in hint} or value in hint.__members__
    return None


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (list, tuple, collections.abc.Sequence):
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
        item = args[0] if args else None
        return f"a list of {plural[item]}" if item in plural else "a list"
    return getattr(hint, "__name__", str(hint))


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a PEFT config class (once per class: resolving them costs
    milliseconds, paid per experiment on a cold DAG build otherwise). Read-only."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable forward reference: skip the type checks
        return {f.name: Any for f in dataclasses.fields(cls)}


@cache
def _defaults_elsewhere() -> dict[str, list[Any]]:
    """Field name -> the JSON form of its default in each PEFT config class that has it."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    found: dict[str, list[Any]] = {}
    for cls in set(PEFT_TYPE_TO_CONFIG_MAPPING.values()):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            found.setdefault(f.name, []).append(default)
    return found


def _foreign_default(key: str, value: Any) -> bool:
    """Whether ``key`` is a field of another PEFT config class and ``value`` its default there.

    save_pretrained writes every field of the peft version that saved the config: the published
    suite's C3A, UniLoRA and OFT configs carry ``exclude_modules: null``, ``fan_in_fan_out:
    false`` or ``rank_pattern: {}``, fields this peft version's class lacks. peft drops such a key
    (with a warning) and so does the run; at its usual default it asks for nothing, whereas a
    misspelled key (``lora_alhpa``) is a field of no class and stays an error."""
    return any(
        value == default and type(value) is type(default)
        for default in _defaults_elsewhere().get(key, ())
    )


def peft_config_problems(data: Mapping[str, Any], source: str) -> list[str]:
    """Problems of an adapter config whose ``peft_type`` is known: keys that are not fields of
    its PEFT config class (closest field suggested), values of the wrong type, an empty
    ``target_modules``, and what the class itself rejects when it is built (no model needed)."""
    import peft
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    cls = PEFT_TYPE_TO_CONFIG_MAPPING[data["peft_type"]]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _type_hints(cls)
    problems = []
    for key, value in data.items():
        if key not in fields and _foreign_default(key, value):
            continue  # what another peft version writes for an option left alone
        if key not in fields:
            problems.append(
                f"{source}: unknown key '{key}'{did_you_mean(key, fields)} (not a field of "
                f"{cls.__name__} in peft {peft.__version__})"
            )
        elif value is None and fields[key].default is None:
            continue  # annotated `int` but defaulting to None (token_dim): null means "infer"
        elif _conforms(value, hints.get(key, Any)) is False:
            problems.append(
                f"{source}: '{key}' must be {_describe(hints[key])}, got {json.dumps(value)}"
            )
    if data.get("target_modules") in ([], "") and not data.get("target_parameters"):
        problems.append(f"{source}: 'target_modules' is empty: the adapter would wrap no layer")
    if problems:
        return problems
    try:
        # The class's own checks (__post_init__): conflicting options, bad values. Its warnings
        # repeat in the run's log, where they belong.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(**{k: v for k, v in data.items() if k in fields and fields[k].init})
    except Exception as exc:  # noqa: BLE001 - PEFT raises many types; each is a finding
        return [f"{source}: {type(exc).__name__}: {exc}"]
    return []
