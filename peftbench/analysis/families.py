"""Method families: a coarse grouping of PEFT methods by how they change the base model.

The family is looked up from the experiment's method folder name first (it is what a user
chose), then from the PEFT config's ``peft_type``; unknown methods are "other".
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping

#: Families in display order (legends, tables).
FAMILIES: tuple[str, ...] = (
    "lora-like",
    "orthogonal",
    "multiplicative/scaling",
    "prompt-based",
    "full",
    "base",
    "other",
)

#: One line per family, for captions and the report.
FAMILY_DESCRIPTIONS: dict[str, str] = {
    "lora-like": "adds a learned weight update (low-rank, Kronecker/Hadamard products, sparse or "
    "spectral) to frozen weights: LoRA and its variants, AdaLoRA, LoHa, LoKr, Lily, VB-LoRA, ...",
    "orthogonal": "multiplies frozen weights by a learned orthogonal/rotation matrix: OFT, BOFT, "
    "HRA, RoAd, PSOFT, OSF",
    "multiplicative/scaling": "learns scaling vectors or biases on top of frozen (possibly random) "
    "weights: IA3, VeRA, PVeRA, BEFT, LayerNorm tuning",
    "prompt-based": "learns virtual tokens or key/value prefixes, weights untouched: prompt tuning, "
    "prefix tuning, P-tuning, adaption prompt",
    "full": "every weight is trained (full fine-tuning)",
    "base": "the base model without fine-tuning (reference)",
    "other": "methods not in the lists above",
}

_MEMBERS: dict[str, tuple[str, ...]] = {
    "lora-like": (
        "lora",
        "dora",
        "adalora",
        "loha",
        "lokr",
        "lily",
        "vblora",
        "randlora",
        "tinylora",
        "unilora",
        "delora",
        "gralora",
        "glora",
        "hira",
        "miss",
        "bone",
        "deft",
        "peanut",
        "frod",
        "shira",
        "c3a",
        "fourierft",
        "waveft",
        "adamss",
        "supertuning",
    ),
    "orthogonal": ("oft", "boft", "hra", "road", "psoft", "osf", "goft"),
    "multiplicative/scaling": ("ia3", "vera", "pvera", "beft", "ln_tuning"),
    "prompt-based": (
        "prompt_tuning",
        "prefix_tuning",
        "prefixtuning",
        "p_tuning",
        "ptuning",
        "adaption_prompt",
        "adaptionprompt",
        "multitask_prompt_tuning",
        "cpt",
    ),
    "full": ("full_finetuning", "full", "fft"),
    "base": ("base",),
}
_FAMILY_OF: dict[str, str] = {
    member: family for family, members in _MEMBERS.items() for member in members
}

# Hue (degrees) and saturation of each family's colour ramp; methods of one family get
# shades of one hue, so a chart reads by family at a glance while every method keeps its own,
# stable colour.
_FAMILY_HUES: dict[str, tuple[float, float]] = {
    "lora-like": (212, 0.70),
    "orthogonal": (135, 0.55),
    "multiplicative/scaling": (30, 0.85),
    "prompt-based": (285, 0.50),
    "full": (356, 0.75),
    "base": (0, 0.0),
    "other": (40, 0.25),
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def method_family(method: str | None, peft_type: str | None = None) -> str:
    """Family of a method folder name (e.g. "lora", "full-finetuning") or PEFT type ("IA3")."""
    for candidate in (method, peft_type):
        if isinstance(candidate, str) and candidate:
            family = _FAMILY_OF.get(_key(candidate))
            if family is not None:
                return family
    return "other"


def family_order(family: str) -> int:
    """Position of ``family`` in :data:`FAMILIES` (unknown families last)."""
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def method_colors(method_families: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """A stable hex colour per method: each family a hue, each method a shade of it.

    ``method_families`` maps method -> family. Methods are ordered by family then name, and
    shades are spread over the family's methods from dark to light, so the same table always
    gives the same colours in every chart.
    """
    pairs = dict(
        method_families.items() if isinstance(method_families, Mapping) else method_families
    )
    by_family: dict[str, list[str]] = {}
    for method, family in pairs.items():
        by_family.setdefault(family, []).append(method)
    colors = {}
    for family, methods in by_family.items():
        hue, saturation = _FAMILY_HUES.get(family, _FAMILY_HUES["other"])
        methods = sorted(methods)
        for i, method in enumerate(methods):
            # Spread the family's methods over a +-20 degree hue band and a lightness range
            # (dark to light); alternating saturation separates neighbours further.
            spread = i / (len(methods) - 1) if len(methods) > 1 else 0.5
            shade_hue = (hue - 20 + 40 * spread) % 360 if saturation else hue
            lightness = 0.30 + 0.34 * spread
            sat = saturation * (1.0 if i % 2 == 0 else 0.75)
            r, g, b = colorsys.hls_to_rgb(shade_hue / 360.0, lightness, sat)
            colors[method] = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return colors
