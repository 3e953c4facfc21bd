"""What a PEFT method can do, asked of the installed peft package rather than written down:
whether its adapter merges into the base weights, whether one model holds several of its
adapters and switches between them, whether it mixes with other methods' adapters, whether it
trains on a quantized (bitsandbytes) base, and which torch layer types it wraps.

Two of these are tried out on a tiny random Llama model (hidden size 256, 2 layers,
vocabulary 64, on the CPU, in well under a second): the method wraps it with its default config
(the experiment's where the default does not build), its adapter weights are perturbed so the
adapter changes the output, and

- ``mergeable``: ``merge_and_unload`` succeeds, leaves no adapter layer, and the merged model
  gives the adapted model's output (allclose in float32);
- ``multi_adapter``: ``add_adapter`` of a second adapter of the same config and ``set_adapter``
  switch the output to the second adapter's and back.

The others are read from the package: ``mixed_adapters`` from PEFT's list of tuners that
``PeftMixedModel`` combines (``peft.tuners.mixed.COMPATIBLE_TUNER_TYPES``), ``quantized_base``
from a bitsandbytes module of the tuner (``peft/tuners/<method>/bnb.py`` defining
``Linear8bitLt`` or ``Linear4bit``, read as source since bitsandbytes may not be installed),
``layer_types`` from the adapter layer classes of the tuner's ``layer`` module (the torch.nn
layer a class name ends with: ``SVDLinear`` is Linear, ``HRAConv2d`` Conv2d).

Results are cached per (peft version, PEFT type). :func:`record` is what a training job stores
in its result.json: it never raises, and it leaves every random number generator as it was.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import importlib.util
import inspect
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Config keys that name modules or sizes of the experiment's own model: the probe drops them
#: (PEFT fills them in for the tiny Llama).
_MODEL_SPECIFIC = (
    "target_modules",
    "feedforward_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "target_parameters",
    "trainable_token_indices",
    "rank_pattern",
    "alpha_pattern",
    "base_model_name_or_path",
    "revision",
    "token_dim",
    "num_transformer_submodules",
    "num_attention_heads",
    "num_layers",
    "tokenizer_name_or_path",
    "prompt_tuning_init_text",
)

_PROBE_INPUT = torch.arange(8).reshape(1, 8)
_SECOND = "probe_second"


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What one PEFT method can do, as the installed peft says (None: could not be told)."""

    peft_type: str
    peft_version: str
    mergeable: bool | None
    multi_adapter: bool | None
    mixed_adapters: bool | None
    quantized_base: bool | None
    layer_types: tuple[str, ...] | None
    #: How a value was found where it was not tried out, or why it is None.
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layer_types"] = None if self.layer_types is None else list(self.layer_types)
        return data


_CACHE: dict[tuple[str, str], Capabilities] = {}


def _peft_type(config: Any) -> str:
    """The PEFT type name (``LORA``) of an adapter config dict, a PeftConfig or a PeftType."""
    if isinstance(config, dict):
        value = config.get("peft_type")
        if value is None:
            raise ValueError("the adapter config has no peft_type")
    else:
        value = getattr(config, "peft_type", config)
    return str(getattr(value, "value", value)).upper()


def capabilities(config: Any) -> Capabilities:
    """Capabilities of the method of ``config`` (an adapter_config.json dict, a PeftConfig or a
    PeftType), cached per peft version and PEFT type. Raises when the type is unknown."""
    import peft
    from peft.utils import PeftType

    peft_type = PeftType(_peft_type(config))
    key = (peft.__version__, peft_type.value)
    if key not in _CACHE:
        given = config if isinstance(config, dict) else None
        _CACHE[key] = _derive(peft_type, given)
    return _CACHE[key]


def record(adapter_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``capabilities`` entry of a result: None without an adapter config (the base model,
    full fine-tuning); otherwise :meth:`Capabilities.to_dict`, whose values are None and whose
    note says why when anything failed. Never raises; random generators are left untouched."""
    if adapter_config is None:
        return None
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            return capabilities(adapter_config).to_dict()
    except Exception as exc:  # noqa: BLE001 - a capability row must never fail a run
        peft_type = adapter_config.get("peft_type") if isinstance(adapter_config, dict) else None
        # Every field of a capability row, none of them known.
        failed = Capabilities(*[None] * len(dataclasses.fields(Capabilities))).to_dict()
        return {
            **failed,
            "peft_type": None if peft_type is None else str(peft_type),
            "peft_version": _installed_peft(),
            "note": f"{type(exc).__name__}: {exc}",
        }
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _installed_peft() -> str | None:
    try:
        import peft

        return peft.__version__
    except Exception:  # noqa: BLE001
        return None


def _derive(peft_type: Any, given: dict[str, Any] | None) -> Capabilities:
    import peft

    notes = []
    package = _tuner_package(peft_type)
    mergeable, multi, note = _try_out(peft_type, given)
    if note:
        notes.append(note)
    if mergeable is None:
        mergeable = _layers_merge(package)
        notes.append("mergeable read from the layer classes (whether they implement merge)")
    return Capabilities(
        peft_type=peft_type.value,
        peft_version=peft.__version__,
        mergeable=mergeable,
        multi_adapter=multi,
        mixed_adapters=_mixes(peft_type),
        quantized_base=_has_bnb(package),
        layer_types=_layer_types(package),
        note="; ".join(notes) or None,
    )


def _tuner_package(peft_type: Any) -> str | None:
    """The tuner's package (``peft.tuners.lora``), or None for a type without a tuner class."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type)
    return None if tuner is None else tuner.__module__.rsplit(".", 1)[0]


def _layer_classes(package: str | None) -> list[type]:
    """The adapter layer classes of the tuner's ``layer`` module, private ones left out."""
    if package is None or importlib.util.find_spec(f"{package}.layer") is None:
        return []
    from peft.tuners.tuners_utils import BaseTunerLayer

    module = importlib.import_module(f"{package}.layer")
    return [
        cls
        for name, cls in vars(module).items()
        if inspect.isclass(cls)
        and cls.__module__ == module.__name__
        and not name.startswith("_")
        and issubclass(cls, BaseTunerLayer)
        and issubclass(cls, torch.nn.Module)
    ]


def _torch_layer_names() -> list[str]:
    """torch.nn module class names, longest first (so Conv2d wins over a shorter suffix)."""
    names = [
        name
        for name, cls in vars(torch.nn).items()
        if inspect.isclass(cls) and issubclass(cls, torch.nn.Module) and not name.startswith("_")
    ]
    return sorted(names, key=len, reverse=True)


def _layer_types(package: str | None) -> tuple[str, ...]:
    """The torch.nn layer types the tuner's layer classes are named after (``SVDLinear``:
    Linear); where none is, the classes' own names (``LNTuningLayer``). Empty for a method
    without adapter layers (prompt learning)."""
    classes = [cls.__name__ for cls in _layer_classes(package)]
    torch_names = _torch_layer_names()
    found = {
        next((t for t in torch_names if name.endswith(t) and t != "Module"), None)
        for name in classes
    }
    found.discard(None)
    return tuple(sorted(found)) if found else tuple(sorted(classes))


def _layers_merge(package: str | None) -> bool:
    """Whether any adapter layer class implements ``merge`` (not the tuner base's
    NotImplementedError); False for a method without adapter layers (nothing to merge)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    classes = _layer_classes(package)
    return bool(classes) and any(
        getattr(cls, "merge", None) is not BaseTunerLayer.merge for cls in classes
    )


def _mixes(peft_type: Any) -> bool:
    from peft.tuners.mixed import COMPATIBLE_TUNER_TYPES

    return peft_type in COMPATIBLE_TUNER_TYPES


def _has_bnb(package: str | None) -> bool:
    """Whether the tuner has bitsandbytes layers: its ``bnb`` module defines Linear8bitLt or
    Linear4bit (read as source: the classes exist only where bitsandbytes is installed)."""
    if package is None:
        return False
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return False
    path = Path(next(iter(spec.submodule_search_locations))) / "bnb.py"
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    return bool(names & {"Linear8bitLt", "Linear4bit"})


# --- Trying the method out on a tiny model ---------------------------------------------------


def _tiny_model() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        # Biases too, so a method that adapts them has something to merge into.
        attention_bias=True,
        mlp_bias=True,
    )
    return LlamaForCausalLM(config).eval()


#: Sizes the probe gives settings a method leaves unset by default (prompt learning's number of
#: virtual tokens, ...): without them its default config does not build.
_PROBE_SIZES = {
    "num_virtual_tokens": 4,
    "adapter_len": 4,
    "adapter_layers": 1,
    "token_indices": [1, 2],
    "total_step": 10,
}


def _probe_configs(peft_type: Any, given: dict[str, Any] | None) -> list[Any]:
    """Configs to try on the tiny model: the method's defaults (unset sizes filled in), then
    the experiment's own settings without what names its model's modules and sizes."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    fields = {field.name: field for field in dataclasses.fields(config_cls)}
    unset = {
        name: value
        for name, value in _PROBE_SIZES.items()
        if name in fields and _default(fields[name]) in (None, [], ())
    }
    candidates = [unset]
    if given:
        own = {
            k: v
            for k, v in given.items()
            if k in fields and k not in _MODEL_SPECIFIC and k not in ("peft_type", "task_type")
        }
        candidates.append({**unset, **own})
    configs = []
    for settings in candidates:
        try:
            configs.append(config_cls(**{**settings, "task_type": "CAUSAL_LM"}))
        except Exception:  # noqa: BLE001, S112 - the next candidate may build
            continue
    return configs


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=_PROBE_INPUT).logits.float()


def _perturb(model: Any, adapter: str, seed: int) -> None:
    """Move ``adapter``'s trainable weights off their initial values (many start as a no-op)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and f".{adapter}" in name and param.is_floating_point():
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.add_(0.2 * noise.to(param.dtype))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-3, atol=1e-4)


def _try_out(peft_type: Any, given: dict[str, Any] | None) -> tuple[bool | None, bool | None, str]:
    """(mergeable, multi_adapter, note) from wrapping the tiny model; None where the method
    could not be tried (the note says why)."""
    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    configs = _probe_configs(peft_type, given)
    if not configs:
        return None, None, "no config of the method builds for a tiny Llama model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = _tiny_model()
        reference = _logits(base)
        problem = "no config of the method builds for a tiny Llama model"
        for config in configs:
            try:
                model = get_peft_model(copy.deepcopy(base), copy.deepcopy(config))
                _perturb(model, "default", 0)
                adapted = _logits(model)
            except Exception as exc:  # noqa: BLE001 - try the next config
                problem = f"could not wrap a tiny Llama model: {_short(exc)}"
                continue
            if _same(adapted, reference):
                problem = "the adapter does not change a tiny Llama model's output"
                continue
            multi, notes = _multi(
                get_peft_model(copy.deepcopy(base), copy.deepcopy(config)), config
            )
            try:
                merged = model.merge_and_unload()
                if any(isinstance(m, BaseTunerLayer) for m in merged.modules()):
                    notes.append("merge_and_unload left adapter layers")
                elif not _same(_logits(merged), adapted):
                    notes.append("merge_and_unload changed the output")
            except Exception as exc:  # noqa: BLE001 - not mergeable
                notes.append(f"merge_and_unload: {_short(exc)}")
            mergeable = not any(note.startswith("merge_and_unload") for note in notes)
            return mergeable, multi, "; ".join(notes)
    return None, None, problem


def _short(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."


def _multi(model: Any, config: Any) -> tuple[bool, list[str]]:
    """Whether a second adapter can be added and switched to, and back (and why not)."""
    try:
        _perturb(model, "default", 0)
        first = _logits(model)
        model.add_adapter(_SECOND, copy.deepcopy(config))
        model.set_adapter(_SECOND)
        _perturb(model, _SECOND, 1)
        second = _logits(model)
        model.set_adapter("default")
        back = _logits(model)
    except Exception as exc:  # noqa: BLE001 - not supported
        return False, [f"second adapter: {_short(exc)}"]
    if _same(first, second):
        return False, ["a second adapter did not change the output"]
    if not _same(first, back):
        return False, ["switching back to the first adapter did not restore its output"]
    return True, []
