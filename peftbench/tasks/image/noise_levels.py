"""How training draws the noise level sigma of each image (training keys ``noise_levels``,
``weighting_scheme``, ``logit_mean``, ``logit_std``, ``mode_scale``).

A number u in [0, 1] is drawn per image from the density of ``weighting_scheme`` (diffusers'
``compute_density_for_timestep_sampling``: ``none`` is uniform, ``logit_normal`` is
sigmoid(N(logit_mean, logit_std)), ``mode`` is SD3's mode-skewed density with ``mode_scale``),
and turned into sigma by ``noise_levels``:

* ``continuous`` (the default, and what every run did before the key existed): sigma = u, so
  with ``none`` sigma ~ U[0, 1) and any level can occur;
* ``scheduler`` (the published suite, after diffusers' DreamBooth scripts): sigma =
  ``sigmas[floor(u * num_train_timesteps)]`` of the training scheduler as it is built (before
  any ``set_timesteps``). Those are the scheduler's discrete training levels in *descending*
  order (1, 0.999, ..., 0.001 for FLUX.2's 1000 unshifted steps), so u near 0 means pure
  noise; a scheduler that shifts statically (``shift`` != 1, no dynamic shifting) shifts them.

The loss-weighting schemes of diffusers (``sigma_sqrt``, ``cosmap``) are not offered: they
reweight the loss rather than the sampling, and no published run uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

NOISE_LEVELS = ("continuous", "scheduler")
WEIGHTING_SCHEMES = ("none", "logit_normal", "mode")


@dataclass(frozen=True)
class NoiseLevels:
    """Draws the noise levels of a batch: ``levels(batch, generator)`` -> sigma (batch,)."""

    #: The scheduler's training sigmas (``scheduler`` mode); None: continuous levels.
    table: torch.Tensor | None = None
    #: ``num_train_timesteps`` of that scheduler: u is scaled by it to an index, as published.
    num_train_timesteps: int = 1000
    weighting_scheme: str = "none"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29

    def __call__(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        if self.weighting_scheme == "none":
            # Exactly the draw of the continuous default before these keys existed, so that the
            # embedded default's results stay bit-identical (diffusers' "none" draws the same).
            u = torch.rand(batch, generator=generator)
        else:
            # Lazily: diffusers' training utilities take seconds to import.
            from diffusers.training_utils import compute_density_for_timestep_sampling

            u = compute_density_for_timestep_sampling(
                weighting_scheme=self.weighting_scheme,
                batch_size=batch,
                logit_mean=self.logit_mean,
                logit_std=self.logit_std,
                mode_scale=self.mode_scale,
                generator=generator,
            )
        if self.table is None:
            return u
        # u can reach 1.0 (sigmoid rounding, "mode" at u = 0), which the published code would
        # index past the end with; the last level is taken instead.
        index = (u * self.num_train_timesteps).long().clamp(0, len(self.table) - 1)
        return self.table[index]


def training_sigmas(scheduler: Any) -> torch.Tensor:
    """The noise levels a scheduler is built with (its training schedule), from a fresh copy:
    ``set_timesteps`` replaces a scheduler's sigmas with its sampling steps."""
    fresh = type(scheduler).from_config(scheduler.config)
    return fresh.sigmas.to(torch.float32).clone()


def noise_levels(params: dict[str, Any], scheduler: Any) -> NoiseLevels:
    """The sampler that the training keys of ``params`` ask for (absent keys: the default,
    continuous U[0, 1)); ``scheduler`` is the base model's (used in ``scheduler`` mode)."""
    kind = params.get("noise_levels", "continuous")
    if kind not in NOISE_LEVELS:  # checked with the experiment's file name before any run
        raise ValueError(f"noise_levels: {kind!r} is not one of {', '.join(NOISE_LEVELS)}")
    table = training_sigmas(scheduler) if kind == "scheduler" else None
    return NoiseLevels(
        table=table,
        num_train_timesteps=int(scheduler.config.num_train_timesteps),
        weighting_scheme=params.get("weighting_scheme", "none"),
        logit_mean=float(params.get("logit_mean", 0.0)),
        logit_std=float(params.get("logit_std", 1.0)),
        mode_scale=float(params.get("mode_scale", 1.29)),
    )
