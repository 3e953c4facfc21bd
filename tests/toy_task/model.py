"""The toy task's model (a tiny MLP of ``Linear`` layers that PEFT adapters can target) and its
per-batch loss, the task's part of the shared training loop."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peftbench.core.loop import Step


class ToyMLP(nn.Module):
    def __init__(self, hidden: int, features: int = 2, classes: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def build_model(task_cfg: dict[str, Any]) -> ToyMLP:
    """The base model: the same seeded weights for every experiment (there is no pretraining)."""
    cfg = task_cfg["model"]
    torch.manual_seed(cfg["seed"])
    return ToyMLP(cfg["hidden"])


def build_meta_model(task_cfg: dict[str, Any]) -> ToyMLP:
    """The base model without weights (meta device), for the pre-flight adapter check."""
    with torch.device("meta"):
        return ToyMLP(task_cfg["model"]["hidden"])


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> Step:
    """Cross-entropy of a random batch drawn from a seeded generator (saved by checkpoints)."""
    generator = torch.Generator().manual_seed(seed)

    def loss() -> tuple[torch.Tensor, int]:
        index = torch.randint(len(x), (batch_size,), generator=generator)
        return nn.functional.cross_entropy(model(x[index]), y[index]), batch_size

    return Step(loss=loss, generator=generator)
