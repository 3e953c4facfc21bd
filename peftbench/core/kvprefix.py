"""The published suite's ``init_kv_cache_prefix`` training key: a prefix-tuning (or cartridge)
adapter starts from the key/value cache the base model computes for a text, instead of random
values. The suite calls PEFT's ``initialize_kv_prefix_from_text`` once, after building the
optimizer and before the first step; :func:`initialize` does the same for a task whose run has
a tokenizer and a causal LM (the math task; its spec lists :data:`TRAINING_KEY`).

Torch-free at import: the task spec imports :data:`TRAINING_KEY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peftbench.tasks.spec import TrainingKey

KEY = "init_kv_cache_prefix"

#: The row of a task's training table (null, the default, keeps PEFT's initialisation).
TRAINING_KEY = TrainingKey(
    (str, type(None)),
    "text whose key/value cache starts a prefix-tuning adapter (the published suite's "
    "init_kv_cache_prefix); null: PEFT's own initialisation",
)

#: PEFT types whose prefix PEFT can fill from a key/value cache.
KV_PREFIX_TYPES = ("PREFIX_TUNING", "CARTRIDGE")


def adapter_problems(
    text: Any, adapter: Mapping[str, Any] | None, source: str, adapter_source: str
) -> list[str]:
    """Why ``init_kv_cache_prefix`` (``text``) cannot apply to the experiment's ``adapter``
    config (None: full fine-tuning): PEFT's own conditions, checked before any job starts."""
    if text is None:
        return []
    if not isinstance(text, str) or not text.strip():
        return [f"{source}: '{KEY}' must be a non-empty text or null, got {text!r}"]
    peft_type = (adapter or {}).get("peft_type")
    if peft_type not in KV_PREFIX_TYPES:
        what = f"a {peft_type} adapter ({adapter_source})" if peft_type else "full fine-tuning"
        return [
            f"{source}: '{KEY}' initialises a prefix-tuning or cartridge adapter from the base "
            f"model's key/value cache; this experiment is {what}"
        ]
    if adapter.get("prefix_projection"):
        return [
            f"{source}: '{KEY}' needs 'prefix_projection': false in {adapter_source} (PEFT cannot "
            "invert the projection to set the prefix)"
        ]
    return []


def initialize(model: Any, tokenizer: Any, params: Mapping[str, Any]) -> bool:
    """Fill the prefix of the PEFT ``model`` from the base model's cache of the params'
    ``init_kv_cache_prefix`` text, as the suite does (PEFT's helper, its defaults: the text as
    a system message through the tokenizer's chat template when it has one, plain otherwise).
    Call it after wrapping and before training; the prefix is overwritten in place, so an
    optimizer built earlier trains it. Returns whether there was a text."""
    text = params.get(KEY)
    if text is None:
        return False
    from peft import initialize_kv_prefix_from_text

    initialize_kv_prefix_from_text(model, tokenizer, text=text)
    return True
