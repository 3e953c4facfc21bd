"""The shared training loop serves the non-LM trainings too: the image task's diffusion
fine-tuning resumes exactly from a checkpoint, and the similarity encoder's training stops on a
non-finite loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from paths import REPO

from peftbench.core.config import deep_merge
from peftbench.core.loop import CHECKPOINT, NonFiniteLossError, Step, train
from peftbench.core.memory import MemoryTracker
from peftbench.tasks.image.embedded import build_components
from peftbench.tasks.image.run import diffusion_step
from peftbench.tasks.image.similarity import train_embedded_encoder

CONFIG = deep_merge(
    yaml.safe_load((REPO / "config/config.yaml").read_text()),
    yaml.safe_load((REPO / "config/test.yaml").read_text()),
)["image"]
PARAMS = {
    "max_steps": 6,
    "batch_size": 2,
    "log_steps": 1,
    "optimizer_type": "AdamW",
    "optimizer_kwargs": {"lr": 1e-3, "weight_decay": 0.01},
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.5,
    "grad_norm_clip": 1.0,
    "checkpoint_steps": 2,
}


class Interrupted(Exception):
    """Stands in for a kill in the middle of a run."""


def fine_tune(folder: Path, stop_after: int | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Fully fine-tune a freshly built tiny transformer on fixed latents with the image task's
    step; with ``stop_after``, the run dies when that many batches have been drawn."""
    transformer = build_components(CONFIG["base_model"]["embedded"]).transformer
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(3, 48, 8, 8, generator=generator)
    embeds = torch.randn(
        3, 6, CONFIG["base_model"]["embedded"]["text_encoder"]["hidden_size"], generator=generator
    )
    step = diffusion_step(transformer, latents, embeds, PARAMS, seed=0)
    if stop_after is not None:
        draws, inner = 0, step.loss

        def loss() -> tuple[torch.Tensor, int]:
            nonlocal draws
            draws += 1
            if draws > stop_after:
                raise Interrupted
            return inner()

        step = Step(loss=loss, generator=step.generator, skip=step.skip)
    stats = train(
        transformer,
        step,
        PARAMS,
        MemoryTracker(torch.device("cpu")),
        progress=False,
        checkpoint_dir=folder,
    )
    return transformer, stats.loss_curve


def test_diffusion_fine_tuning_resumes_exactly(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    reference, reference_curve = fine_tune(tmp_path / "uninterrupted")
    with pytest.raises(Interrupted):
        fine_tune(tmp_path / "killed", stop_after=5)  # dies in step 5, after the step-4 save
    assert torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=False)["step"] == 4
    resumed, resumed_curve = fine_tune(tmp_path / "killed")
    assert resumed_curve == reference_curve
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in resumed.state_dict().items())
    assert [p["step"] for p in resumed_curve] == list(range(1, 7))


def test_encoder_training_stops_on_a_non_finite_loss(tmp_path: Path) -> None:
    # An infinite learning rate turns the weights into inf/NaN after the first update.
    cfg = {**CONFIG["encoder"]["embedded"], "lr": float("inf"), "max_steps": 3}
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        train_embedded_encoder(cfg, tmp_path / "encoder", 1, progress=False)
    assert not (tmp_path / "encoder").exists(), "nothing is saved from a diverged training"
