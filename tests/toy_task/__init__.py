"""The toy task: a third task that lives only under tests/, to prove that adding a task takes no
edit to generic code (issue 10). Classify 2-D points from a fixture file with a tiny MLP.

The workflow finds it through the config (``task_packages: {toy: tests/toy_task}``); this module
is its torch-free spec, and the modules it names (relative to this package) do the work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peftbench.tasks.spec import Column, TaskSpec


def _correct(item: Mapping[str, Any]) -> float:
    return float(item["correct"])


SPEC = TaskSpec(
    name="toy",
    title="Toy classification",
    description="Two-class points from a fixture file, classified by a tiny MLP.",
    quality=Column(
        "toy_accuracy",
        "toy accuracy",
        "Share (0-1) of test points classified correctly.",
        direction="max",
        axis_title="Toy test accuracy",
        fraction=True,
    ),
    quality_description="share of test points classified correctly",
    proportion=True,
    side_effect=Column(
        "toy_shift",
        "toy shift",
        "Mean absolute change (0-1) of the predicted probability of class 1 on probe points "
        "spread over the plane, fine-tuned vs. base model; lower is better.",
        direction="min",
        axis_title="Toy prediction shift (lower is better)",
        fraction=True,
    ),
    valid_curve="toy_valid_accuracy",
    valid_value="accuracy",
    item_file="test_items.jsonl",
    item_score=_correct,
    metrics=(
        "toy_accuracy",
        "toy_accuracy_ci_low",
        "toy_accuracy_ci_high",
        "toy_correct",
        "toy_shift",
        "toy_valid_accuracy_final",
    ),
    run_module=".run",
    data_module=".data",
    meta_model=".model",
)
