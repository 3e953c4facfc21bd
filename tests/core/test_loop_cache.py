"""Periodic emptying of the device cache (``empty_cache_steps``), as the published math suite
does every 10 steps; tested without CUDA through the loop's injectable ``empty_cache``."""

from __future__ import annotations

import pytest
import torch

from peftbench.core.loop import Step, empty_device_cache, train
from peftbench.core.memory import MemoryTracker

PARAMS = {
    "max_steps": 25,
    "log_steps": 5,
    "optimizer_type": "AdamW",
    "optimizer_kwargs": {"lr": 1e-2},
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "eval_steps": 5,
}


def run(params: dict, accum: int = 1) -> list[tuple[str, int]]:
    """Train a one-parameter model; returns the events in order: ("step", n) after each
    optimizer step's batches, ("valid", step) and ("empty", steps done so far)."""
    weight = torch.nn.Parameter(torch.ones(()))
    model = torch.nn.Module()
    model.weight = weight
    events: list[tuple[str, int]] = []
    draws = 0

    def loss() -> tuple[torch.Tensor, int]:
        nonlocal draws
        draws += 1
        if draws % accum == 0:
            events.append(("step", draws // accum))
        return (weight - 3) ** 2, 1

    def validate(step: int) -> None:
        events.append(("valid", step))

    def empty() -> None:
        events.append(("empty", draws // accum))

    train(
        model,
        Step(loss=loss),
        {**params, "grad_accumulation_steps": accum},
        MemoryTracker(torch.device("cpu")),
        validate,
        progress=False,
        empty_cache=empty,
    )
    return events


def emptied(events: list[tuple[str, int]]) -> list[int]:
    return [n for kind, n in events if kind == "empty"]


@pytest.mark.parametrize("accum", [1, 3])
def test_cache_is_emptied_every_n_optimizer_steps(accum):
    events = run({**PARAMS, "empty_cache_steps": 10}, accum)
    assert emptied(events) == [10, 20]
    # After the step's validation, as the suite empties it after its evaluation.
    at_10 = events.index(("empty", 10))
    assert events[at_10 - 1] == ("valid", 10) and events[at_10 + 1] == ("step", 11)


def test_every_step_and_the_last_one():
    assert emptied(run({**PARAMS, "empty_cache_steps": 1})) == list(range(1, 26))
    assert emptied(run({**PARAMS, "empty_cache_steps": 25})) == [25]


@pytest.mark.parametrize("params", [{**PARAMS, "empty_cache_steps": 0}, PARAMS])
def test_never_by_default_or_with_zero(params):
    events = run(params)
    assert emptied(events) == [] and ("step", 25) in events


def test_the_default_empties_the_cuda_cache(monkeypatch):
    empty_device_cache()  # no CUDA here: nothing to do, and no error
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    model = torch.nn.Linear(1, 1)
    params = {**PARAMS, "empty_cache_steps": 10, "eval_steps": 0}

    def loss() -> tuple[torch.Tensor, int]:
        return model(torch.ones(1, 1)).sum() ** 2, 1

    train(model, Step(loss=loss), params, MemoryTracker(torch.device("cpu")), progress=False)
    assert len(calls) == 2
