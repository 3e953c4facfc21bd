"""The GPU-memory prediction (peftbench.core.estimate) on a CPU: each preset's forward and
backward code path runs for real on a reduced architecture (fewer layers, small widths, the
preset's dtype and adapter placement), so dtype and shape mistakes in the GPU presets surface
here; and the prediction on the meta device equals the accounting of that real run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from paths import REPO

from peftbench.core.config import deep_merge, training_table
from peftbench.core.estimate import (
    ARCHITECTURES,
    MemoryEstimate,
    estimate_experiment,
    format_estimates,
    load_probe,
    read_estimates,
    write_estimates,
)
from peftbench.tasks import registry

PRESETS = {
    "math": "config/presets/metamathqa-llama-3.2-3b.yaml",
    "image": "config/presets/dreambooth-flux2-klein.yaml",
}
#: Each preset's architecture with its layer kinds kept but far fewer and narrower.
REDUCED = {
    "math": {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 256,
    },
    "image": {
        "num_layers": 1,
        "num_single_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 48,
        "in_channels": 16,
        "timestep_guidance_channels": 32,
        "axes_dims_rope": [4, 4, 4, 4],
    },
}
#: Small batches: the shapes change, the code path does not.
SMALL = {"math": {"max_seq_length": 24}, "image": {}}
#: LoRA and full fine-tuning on both; prefix tuning's attention has a mask (another kernel).
EXPERIMENTS = {
    "math": ["lora/rank32", "full-finetuning/lr_0.00001", "prefixtuning/lr_0.001"],
    "image": ["lora/default", "full-finetuning/default"],
}


def task_config(task: str) -> dict:
    config = deep_merge(
        yaml.safe_load((REPO / "config/config.yaml").read_text()),
        yaml.safe_load((REPO / PRESETS[task]).read_text()),
    )[task]
    config["experiments_dir"] = str(REPO / config["experiments_dir"])
    config["training"] = {**config["training"], **SMALL[task]}
    return config


def reduced_probe(task: str, task_cfg: dict) -> SimpleNamespace:
    """The task's probe with the preset's architecture shrunk (and a short prompt for images)."""
    probe = load_probe(registry.get(task).memory_probe)
    arch = probe.architecture(task_cfg)
    if task == "math":
        arch = {**arch, **REDUCED[task]}
    else:
        arch = {**arch, "transformer": {**arch["transformer"], **REDUCED[task]}}
        arch |= {"grid": 4, "text_tokens": 8}
    return SimpleNamespace(
        architecture=lambda cfg: arch,
        build=probe.build,
        training_loss=probe.training_loss,
        enable_gradient_checkpointing=probe.enable_gradient_checkpointing,
    )


@pytest.mark.parametrize(
    ("task", "experiment"), [(t, e) for t, names in EXPERIMENTS.items() for e in names]
)
def test_reduced_preset_trains_on_cpu_and_the_meta_prediction_matches(
    task: str, experiment: str
) -> None:
    task_cfg = task_config(task)
    probe = reduced_probe(task, task_cfg)
    table = training_table(registry.get(task).training_keys)
    real = estimate_experiment(probe, task_cfg, experiment, table, device="cpu")
    assert real.error is None, real.error
    predicted = estimate_experiment(probe, task_cfg, experiment, table, device="meta")
    assert predicted.error is None, predicted.error
    assert real.trainable_params == predicted.trainable_params > 0
    # Same architecture, dtype and adapter: the weights, gradients and optimizer state are
    # byte for byte the same; activations may differ only by the attention kernel's extras.
    for category in ("frozen_params", "trainable_params", "optimizer_state"):
        assert predicted.breakdown[category] == real.breakdown[category], category
    assert predicted.peak_bytes == pytest.approx(real.peak_bytes, rel=0.05)


def test_reduced_presets_keep_their_dtypes() -> None:
    """bf16 base weights and fp32 adapter weights (autocast_adapter_dtype), as on the GPU."""
    task_cfg = task_config("math")
    probe = reduced_probe("math", task_cfg)
    params = task_cfg["training"]
    model = probe.build(probe.architecture(task_cfg), params, "meta")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    table = training_table(registry.get("math").training_keys)
    estimate = estimate_experiment(probe, task_cfg, "lora/rank32", table)
    n = estimate.trainable_params
    assert estimate.breakdown["trainable_params"] == 4 * n  # fp32 adapters
    # AdamW: two fp32 moments per trainable parameter, plus a 4-byte step per tensor.
    assert 8 * n < estimate.breakdown["optimizer_state"] < 8 * n + 4096


def test_shipped_architectures_have_the_published_parameter_counts() -> None:
    """Total parameters of the published full fine-tuning runs (num_total_params)."""
    published = {"math": 3_212_749_824, "image": 3_875_544_576}
    for task, expected in published.items():
        task_cfg = task_config(task)
        probe = load_probe(registry.get(task).memory_probe)
        model = probe.build(probe.architecture(task_cfg), task_cfg["training"], "meta")
        assert sum(p.numel() for p in model.parameters()) == expected, task
    assert (ARCHITECTURES / "meta-llama/Llama-3.2-3B/config.json").is_file()


def test_estimates_round_trip_and_format(tmp_path: Path) -> None:
    estimates = {
        "math": [
            MemoryEstimate("lora/a", 2_000_000_000, {"frozen_params": 2_000_000_000}, 5, 1.0),
            MemoryEstimate("bad/b", error="RuntimeError: no"),
        ]
    }
    path = tmp_path / "estimates.json"
    write_estimates(path, estimates)
    assert read_estimates(path) == estimates
    assert json.loads(path.read_text())["math"][0]["peak_bytes"] == 2_000_000_000
    text = format_estimates(estimates["math"], "title")
    assert "lora/a" in text and "2.00" in text and "RuntimeError: no" in text
