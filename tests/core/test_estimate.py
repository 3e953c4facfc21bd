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
    GPU_BLOCK,
    MemoryEstimate,
    account_training_step,
    compact_storages,
    estimate_experiment,
    format_estimates,
    gpu_optimizer,
    load_probe,
    read_estimates,
    write_estimates,
)
from peftbench.core.layout import ARCHITECTURES
from peftbench.core.metaexec import MetaValues, wrap_adapter
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
#: LoRA and full fine-tuning on both; prefix tuning's attention has a mask (another kernel);
#: BOFT's setup asks meta tensors for values (set up on the CPU instead).
EXPERIMENTS = {
    "math": [
        "lora/llama-3.2-3B-rank32",
        "full-finetuning/llama-3.2-3B-lr_0.00001",
        "prefixtuning/llama-3.2-3B-lr_0.001",
        "boft/llama-3.2-3B-default",
    ],
    "image": ["lora/flux2-klein-default", "full-finetuning/flux2-klein-default"],
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
        evaluation=probe.evaluation,
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
    # Same architecture, dtype and adapter: the weights and the optimizer's moments are byte
    # for byte the same; activations may differ only by the attention kernel's extras. AdamW's
    # step counters stay on the CPU, so they count in the CPU run only (one block each).
    for category in ("frozen_params", "trainable_params"):
        assert predicted.breakdown[category] == real.breakdown[category], category
    counters = real.breakdown["optimizer_state"] - predicted.breakdown["optimizer_state"]
    assert 0 <= counters <= GPU_BLOCK * real.trainable_params
    assert counters % GPU_BLOCK == 0
    assert predicted.peak_bytes == pytest.approx(real.peak_bytes, rel=0.05)
    # The allocator model sees nearly the same requests in the same order.
    assert predicted.reserved_bytes >= predicted.peak_bytes
    assert predicted.reserved_bytes == pytest.approx(real.reserved_bytes, rel=0.15)


def test_reduced_presets_keep_their_dtypes() -> None:
    """bf16 base weights and fp32 adapter weights (autocast_adapter_dtype), as on the GPU."""
    task_cfg = task_config("math")
    probe = reduced_probe("math", task_cfg)
    params = task_cfg["training"]
    model = probe.build(probe.architecture(task_cfg), params, "meta")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    table = training_table(registry.get("math").training_keys)
    estimate = estimate_experiment(probe, task_cfg, "lora/llama-3.2-3B-rank32", table)
    folder = Path(task_cfg["experiments_dir"]) / "lora/llama-3.2-3B-rank32"
    wrapped, _ = wrap_adapter(probe, probe.architecture(task_cfg), params, "meta", folder)
    sizes = [4 * p.numel() for p in wrapped.parameters() if p.requires_grad]  # fp32 adapters
    blocks = [-(-size // GPU_BLOCK) * GPU_BLOCK for size in sizes]  # as the GPU hands them out
    assert estimate.trainable_params == sum(sizes) // 4
    assert estimate.breakdown["trainable_params"] == sum(blocks)
    # AdamW: two fp32 moments per trainable parameter (its step counters are on the CPU).
    assert estimate.breakdown["optimizer_state"] == 2 * sum(blocks)


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
            MemoryEstimate(
                "lora/a",
                2_000_000_000,
                {"frozen_params": 2_000_000_000},
                5,
                1.0,
                reserved_bytes=2_100_000_000,
                notes="a note",
            ),
            MemoryEstimate("bad/b", error="RuntimeError: no"),
        ]
    }
    path = tmp_path / "estimates.json"
    write_estimates(path, estimates)
    assert read_estimates(path) == estimates
    assert json.loads(path.read_text())["math"][0]["peak_bytes"] == 2_000_000_000
    text = format_estimates(estimates["math"], "title")
    assert "lora/a" in text and "2.00" in text and "2.10" in text and "RuntimeError: no" in text
    assert "(a note)" in text


def test_fallbacks_and_answers_are_noted(tmp_path: Path) -> None:
    """BOFT's setup builds permutation matrices from index tensors (on the CPU instead);
    VB-LoRA's step checks its logits for infinities (answered: none), and its prediction still
    matches the real run's accounting."""
    table = training_table(registry.get("math").training_keys)
    task_cfg = task_config("math")
    boft = estimate_experiment(
        reduced_probe("math", task_cfg), task_cfg, "boft/llama-3.2-3B-default", table
    )
    assert boft.error is None and "CPU" in boft.notes
    table = training_table(registry.get("image").training_keys)
    task_cfg = task_config("image")
    source = Path(task_cfg["experiments_dir"]) / "vblora/flux2-klein-default"
    folder = tmp_path / "vblora/small"
    folder.mkdir(parents=True)
    config = json.loads((source / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "vector_length": 16}))
    task_cfg["experiments_dir"] = str(tmp_path)
    probe = reduced_probe("image", task_cfg)
    vblora = estimate_experiment(probe, task_cfg, "vblora/small", table)
    assert vblora.error is None and "value check" in vblora.notes
    real = estimate_experiment(probe, task_cfg, "vblora/small", table, device="cpu")
    assert real.error is None and real.notes is None
    assert vblora.breakdown["trainable_params"] == real.breakdown["trainable_params"]
    assert vblora.peak_bytes == pytest.approx(real.peak_bytes, rel=0.05)
    full = estimate_experiment(probe, task_cfg, "full-finetuning/flux2-klein-default", table)
    assert full.error is None and full.notes is None


def test_meta_values_answers_checks_and_masks() -> None:
    with MetaValues() as values:
        logits = torch.zeros(4, 8, device="meta")
        assert not bool(logits.isinf().any())
        kept = torch.zeros(6, device="meta")[torch.ones(6, dtype=torch.bool, device="meta")]
    assert kept.shape == (6,)
    assert len(values.asked) == 2


def test_the_evaluation_phase_is_accounted_after_training() -> None:
    table = training_table(registry.get("math").training_keys)
    task_cfg = task_config("math")
    probe = reduced_probe("math", task_cfg)
    options = {"max_length": 40, "prompt_tokens": 16}
    estimate = estimate_experiment(
        probe, task_cfg, "lora/llama-3.2-3B-rank32", table, evaluation=options
    )
    assert estimate.error is None, estimate.error
    assert 0 < estimate.eval_peak_bytes
    # The evaluation starts from the training's cache: it can only add to the reserve.
    assert estimate.eval_reserved_bytes >= estimate.reserved_bytes
    assert estimate.reserved_gb(with_evaluation=True) == estimate.eval_reserved_bytes / 1e9
    image_cfg = task_config("image")
    image = estimate_experiment(
        reduced_probe("image", image_cfg),
        image_cfg,
        "lora/flux2-klein-default",
        training_table(registry.get("image").training_keys),
        evaluation={},
    )
    assert image.error is None and 0 < image.eval_peak_bytes


def test_the_optimizer_runs_its_gpu_implementation() -> None:
    """On CUDA AdamW updates all tensors at once and holds a temporary as large as them."""
    model = torch.nn.Linear(256, 256, bias=False, dtype=torch.bfloat16, device="meta")
    weight = 256 * 256 * 2
    params = {
        "optimizer_type": "AdamW",
        "optimizer_kwargs": {"lr": 1e-3},
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_steps": 3,
        "grad_norm_clip": 1.0,
    }
    x = torch.zeros(4, 256, dtype=torch.bfloat16, device="meta")
    accountant, asked = account_training_step(model, lambda: model(x).float().sum(), params)
    # Weight, gradient, two moments and the square-root temporary at once.
    assert accountant.peak_bytes() >= 5 * weight and not asked
    optimizer = gpu_optimizer(torch.optim.AdamW(model.parameters()))
    assert optimizer.param_groups[0]["foreach"] is True


def test_moving_a_model_compacts_views_of_larger_storages() -> None:
    module = torch.nn.Module()
    factor = torch.zeros(64, 64, device="meta")
    module.register_buffer("rows", factor[:4])  # contiguous, on all of factor's storage
    module.weight = torch.nn.Parameter(torch.zeros(64, 64, device="meta")[:2])
    compact_storages(module)
    assert module.rows.untyped_storage().nbytes() == 4 * 64 * 4
    assert module.weight.untyped_storage().nbytes() == 2 * 64 * 4
    assert isinstance(module.weight, torch.nn.Parameter)
