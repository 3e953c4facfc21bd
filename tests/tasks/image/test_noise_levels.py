"""How image training draws noise levels (peftbench.tasks.image.noise_levels): the default stays
the continuous U[0, 1) draw it always was, and ``noise_levels: scheduler`` draws the training
scheduler's discrete sigmas the way the published suite does (u from diffusers' density,
``sigmas[floor(u * num_train_timesteps)]`` of the untouched scheduler)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling

from peftbench.core.config import training_table, validate_training_params
from peftbench.tasks.image import SPEC
from peftbench.tasks.image.diffusion import flow_matching_loss, pack
from peftbench.tasks.image.noise_levels import NoiseLevels, noise_levels, training_sigmas
from peftbench.tasks.image.run import diffusion_step

# FLUX.2's scheduler shifts dynamically (by the image's sequence length at sampling time), so
# its training sigmas are the unshifted 1, 0.999, ..., 0.001.
FLUX2_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
PUBLISHED = {
    "noise_levels": "scheduler",
    "weighting_scheme": "none",
    "logit_mean": 0.0,
    "logit_std": 1.0,
    "mode_scale": 1.29,
}


class SigmaRecorder(torch.nn.Module):
    """A transformer stand-in: predicts zeros and records the timesteps (noise levels) it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"guidance_embeds": False})()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.timesteps: list[torch.Tensor] = []

    def forward(self, hidden_states, timestep, **_) -> tuple[torch.Tensor]:
        self.timesteps.append(timestep.detach().clone())
        return (hidden_states * self.weight,)


def batch(seed: int = 0, b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 4, 4, generator=g), torch.randn(b, 5, 8, generator=g)


def test_default_draw_is_the_continuous_one_bit_for_bit():
    """No keys: sigma ~ U[0, 1) drawn right after the noise from the same generator, exactly
    as before the option existed, so the embedded default's results do not move."""
    latents, embeds = batch()
    model = SigmaRecorder()
    loss = flow_matching_loss(model, latents, embeds, torch.Generator().manual_seed(3))
    # The former loss, written out: noise, then U[0, 1) levels, x_s = (1 - s) x0 + s e.
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(latents.shape, generator=g)
    sigma = torch.rand(len(latents), generator=g)
    assert torch.equal(model.timesteps[0], sigma)
    target = pack(noise - latents)
    assert torch.equal(loss, F.mse_loss(torch.zeros_like(target), target))
    # The sampler the run builds from params without the keys is that same draw.
    levels = noise_levels({}, FlowMatchEulerDiscreteScheduler(**FLUX2_SCHEDULER))
    assert levels.table is None
    again = SigmaRecorder()
    flow_matching_loss(again, latents, embeds, torch.Generator().manual_seed(3), levels)
    assert torch.equal(again.timesteps[0], sigma)
    # Explicit continuous/none keys change nothing either.
    explicit = noise_levels(
        {**PUBLISHED, "noise_levels": "continuous"}, FlowMatchEulerDiscreteScheduler()
    )
    assert torch.equal(
        explicit(4, torch.Generator().manual_seed(9)),
        torch.rand(4, generator=torch.Generator().manual_seed(9)),
    )


def test_scheduler_levels_are_the_published_discrete_sigmas():
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX2_SCHEDULER)
    levels = noise_levels(PUBLISHED, scheduler)
    drawn = levels(4096, torch.Generator().manual_seed(0))
    # The published rule, with diffusers' own pieces: u from the density, an index into the
    # sigmas (and timesteps) of the scheduler as built.
    g = torch.Generator().manual_seed(0)
    u = compute_density_for_timestep_sampling("none", 4096, 0.0, 1.0, 1.29, generator=g)
    index = (u * scheduler.config.num_train_timesteps).long()
    assert torch.equal(drawn, scheduler.sigmas[index])
    assert torch.allclose(drawn * 1000, scheduler.timesteps[index])
    # 1000 levels k/1000, k = 1..1000, in descending order: u near 0 is pure noise.
    assert torch.allclose(drawn * 1000, (drawn * 1000).round(), atol=1e-3)
    assert drawn.max() == 1.0 and drawn.min() >= 0.001 - 1e-7
    assert not torch.equal(drawn, u)  # not the continuous levels
    assert torch.allclose(drawn, 1 - index.float() / 1000)


def test_scheduler_levels_ignore_set_timesteps_and_follow_a_static_shift():
    """The training levels are the scheduler's as built: sampling (set_timesteps) on the model's
    scheduler does not change them, and a static shift shifts them."""
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX2_SCHEDULER)
    before = training_sigmas(scheduler)
    scheduler.set_timesteps(num_inference_steps=4, mu=1.0)
    assert len(scheduler.sigmas) == 5
    assert torch.equal(training_sigmas(scheduler), before)
    assert len(before) == 1000 and before[0] == 1.0
    shifted = training_sigmas(FlowMatchEulerDiscreteScheduler(shift=3.0))
    plain = torch.linspace(1.0, 0.001, 1000)
    assert torch.allclose(shifted, 3 * plain / (1 + 2 * plain), atol=1e-6)


@pytest.mark.parametrize("kind", ["continuous", "scheduler"])
def test_weighting_schemes_shape_the_levels(kind):
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX2_SCHEDULER)

    def draw(**keys) -> torch.Tensor:
        levels = noise_levels({**PUBLISHED, "noise_levels": kind, **keys}, scheduler)
        return levels(4000, torch.Generator().manual_seed(1))

    def middle(sigmas: torch.Tensor) -> float:
        return float(((sigmas > 0.25) & (sigmas < 0.75)).float().mean())

    uniform = draw()
    assert abs(float(uniform.mean()) - 0.5) < 0.02 and abs(middle(uniform) - 0.5) < 0.03
    # u = sigmoid(N(2, 1)) is mostly near 1: high levels as sigma = u, low ones through the
    # scheduler's descending table (the published code's index rule).
    skewed = float(draw(weighting_scheme="logit_normal", logit_mean=2.0).mean())
    assert (skewed > 0.75) if kind == "continuous" else (skewed < 0.25)
    # SD3's mode density with scale 1.29 puts about 73% of the levels in the middle half.
    assert middle(draw(weighting_scheme="mode", mode_scale=1.29)) > 0.68
    a = noise_levels({**PUBLISHED, "weighting_scheme": "logit_normal"}, scheduler)
    same = [a(8, torch.Generator().manual_seed(4)) for _ in range(2)]
    assert torch.equal(*same)  # drawn from the run's generator, not the global RNG


def test_u_of_one_takes_the_last_level(monkeypatch):
    """u = 1 (sigmoid rounding, or "mode" at 0) would index past the table; the last level
    is used."""
    import diffusers.training_utils

    monkeypatch.setattr(
        diffusers.training_utils,
        "compute_density_for_timestep_sampling",
        lambda **kw: torch.tensor([1.0, 0.0, 0.9995]),
    )
    table = training_sigmas(FlowMatchEulerDiscreteScheduler())
    levels = NoiseLevels(table=table, weighting_scheme="mode")
    assert levels(3, torch.Generator()).tolist() == [table[-1], table[0], table[-1]]


def test_diffusion_step_uses_the_levels():
    latents, embeds = batch(b=3)
    model = SigmaRecorder()
    table = training_sigmas(FlowMatchEulerDiscreteScheduler())
    params = {"max_steps": 4, "batch_size": 2}
    step = diffusion_step(model, latents, embeds, params, seed=0, levels=NoiseLevels(table=table))
    for _ in range(4):
        step.loss()
    sigmas = torch.cat(model.timesteps)
    assert len(sigmas) == 8 and all(bool((table == s).any()) for s in sigmas)
    continuous = SigmaRecorder()
    step = diffusion_step(continuous, latents, embeds, params, seed=0)
    step.loss()
    assert not any(bool((table == s).any()) for s in continuous.timesteps[0])


def test_noise_level_keys_are_checked():
    table = training_table(SPEC.training_keys)
    assert validate_training_params(PUBLISHED, "exp/training_params.json", table=table) == []
    bad = {"noise_levels": "discrete", "weighting_scheme": "sigma_sqrt", "logit_std": 0}
    problems = validate_training_params(bad, "exp/training_params.json", table=table)
    assert len(problems) == 3
    assert all(p.startswith("exp/training_params.json") for p in problems)
    keys = ["logit_std", "noise_levels", "weighting_scheme"]
    for problem, key in zip(sorted(problems), keys, strict=True):
        assert f"'{key}'" in problem
