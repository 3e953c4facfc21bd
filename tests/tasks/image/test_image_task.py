"""The image task's own code on a tiny embedded setup: the flow-matching pieces, the embedded
base model's save/reload round trip, the similarity encoder, and real fine-tuning runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from image_setup import CONFIG, TIMING
from paths import REPO

from peftbench.analysis.aggregate import validate_result
from peftbench.core.runs import SHARED_METRICS, RunContext
from peftbench.core.stats import bootstrap_ci
from peftbench.tasks.image import SPEC, shapes
from peftbench.tasks.image.diffusion import (
    PixelCodec,
    generate,
    load_image_model,
    pack,
    to_pixels,
    to_uint8,
    unpack,
)
from peftbench.tasks.image.run import run_experiment
from peftbench.tasks.image.similarity import SimilarityEncoder, separation, train_embedded_encoder


def run(
    tiny: Path, experiment: str, out: str, exp_dir: Path | None = None, seed: int = 0, **overrides
) -> dict:
    method, name = experiment.split("/")
    if exp_dir is None and method != "base":
        exp_dir = REPO / "experiments/image" / experiment
    ctx = RunContext(
        task="image",
        method=method,
        name=name,
        seed=seed,
        exp_dir=exp_dir,
        params={**CONFIG["training"], **overrides},
        task_cfg=CONFIG,
        inputs={"data": tiny / "data", "base": tiny / "base", "encoder": tiny / "encoder"},
        out_dir=tiny / out,
        threads=1,
        progress=False,
    )
    return run_experiment(ctx)


def test_pixels_and_tokens_round_trip() -> None:
    images = shapes.pretraining_set(3, 0, 32)[0]
    pixels = to_pixels(images, torch.device("cpu"), torch.float32)
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert np.array_equal(to_uint8(pixels), images)
    codec = PixelCodec(4)
    latents = codec.encode(pixels)
    assert latents.shape == (3, 48, 8, 8)
    assert torch.equal(codec.decode(latents), pixels)
    assert torch.equal(unpack(pack(latents), 8, 8), latents)
    # Token i*8+j is the patch at row i, column j (row-major, as the FLUX.2 position ids say).
    assert torch.equal(pack(latents)[:, 8 * 2 + 5], latents[:, :, 2, 5])


def test_bootstrap_interval_contains_the_mean() -> None:
    values = np.random.default_rng(0).normal(0.5, 0.1, 200)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and high - low < 0.05
    assert bootstrap_ci(np.full(10, 0.3)) == pytest.approx((0.3, 0.3))


def test_base_model_reloads_through_from_pretrained(tiny_image: Path) -> None:
    info = json.loads((tiny_image / "base/pretraining.json").read_text())
    assert info["loss_curve"][-1]["loss"] < info["loss_curve"][0]["loss"]
    a, identity_a = load_image_model(
        CONFIG["base_model"], tiny_image / "base", torch.device("cpu"), torch.float32
    )
    b, identity_b = load_image_model(
        CONFIG["base_model"], tiny_image / "base", torch.device("cpu"), torch.float32
    )
    assert identity_a == identity_b
    prompts = ["a red circle on a navy background", "a photo of sks object", ""]
    embeds = a.encode_prompts(prompts)
    assert embeds.shape == (3, CONFIG["base_model"]["embedded"]["max_sequence_length"], 64)
    assert torch.equal(embeds, b.encode_prompts(prompts))
    # The same noise gives the same images; other noise, other images.
    negative = a.encode_prompts([""])
    first = generate(a, embeds, negative, torch.Generator().manual_seed(1), 3, 3.0)
    again = generate(b, embeds, negative, torch.Generator().manual_seed(1), 3, 3.0)
    other = generate(a, embeds, negative, torch.Generator().manual_seed(2), 3, 3.0)
    assert first.shape == (3, 3, 32, 32)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_similarity_encoder_separates_the_concept(tmp_path: Path) -> None:
    """Trained briefly, the encoder already scores real concept images far above other images;
    an untrained one of the same shape does not."""
    cfg = {
        **CONFIG["encoder"]["embedded"],
        "num_images": 1500,
        "max_steps": 80,
        "batch_size": 32,
        "architecture": {**CONFIG["encoder"]["embedded"]["architecture"], "hidden_size": 48},
    }
    info = train_embedded_encoder(cfg, tmp_path / "trained", 1, progress=False)
    trained = info["separation"]
    assert trained["concept_vs_concept"] - trained["other_vs_concept"] > 0.3, trained
    # Same architecture, no training steps: the margin is the encoder's doing.
    untrained_cfg = {**cfg, "max_steps": 1, "lr": 1e-9}
    train_embedded_encoder(untrained_cfg, tmp_path / "untrained", 1, progress=False)
    encoder = SimilarityEncoder(str(tmp_path / "untrained"), None, torch.device("cpu"))
    untrained = separation(encoder, cfg["seed"] + 1000, cfg["resolution"])
    margin = trained["concept_vs_concept"] - trained["other_vs_concept"]
    assert margin > untrained["concept_vs_concept"] - untrained["other_vs_concept"] + 0.1


def test_lora_fine_tuning_run(tiny_image: Path) -> None:
    result = run(tiny_image, "lora/rank4", "lora")
    assert result["status"] == "success", result["error"]
    m = result["metrics"]
    assert result["peft_config"]["peft_type"] == "LORA"
    assert 0 < m["trainable_params"] < m["total_params"]
    assert m["train_steps"] == CONFIG["training"]["max_steps"]
    assert m["train_samples"] == m["train_steps"] * CONFIG["training"]["batch_size"]
    assert -1 <= m["similarity_ci_low"] <= m["similarity"] <= m["similarity_ci_high"] <= 1
    assert m["test_n"] == 3 * CONFIG["training"]["test_repeats"]
    assert 0 < m["drift"] <= 1  # the adapter changed what the model draws
    assert m["file_size_bytes"] > 0 and m["train_memory_peak_bytes"] >= 0
    # The shared metrics and the image task's own, nothing of another task's.
    assert set(m) == {*SHARED_METRICS, *SPEC.metrics} and "test_accuracy" not in m
    validate_result(json.loads((tiny_image / "lora/result.json").read_text()))
    assert (tiny_image / "lora/adapter/adapter_model.safetensors").exists()
    # Same seed, same numbers (timing and memory aside); the base reference has zero drift.
    again = run(tiny_image, "lora/rank4", "lora-again")
    assert {k: v for k, v in again["metrics"].items() if k not in TIMING} == {
        k: v for k, v in m.items() if k not in TIMING
    }
    base = run(tiny_image, "base/no-finetuning", "base_run")
    assert base["status"] == "success" and base["metrics"]["drift"] == 0.0
    assert base["metrics"]["trainable_params"] == 0


def test_a_broken_experiment_fails_alone(tiny_image: Path, tmp_path: Path) -> None:
    exp_dir = tmp_path / "lora/missing"
    exp_dir.mkdir(parents=True)
    (exp_dir / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["no_such_module"]})
    )
    result = run(tiny_image, "lora/missing", "missing", exp_dir=exp_dir)
    assert result["status"] == "failed" and "no_such_module" in result["error"]
    written = json.loads((tiny_image / "missing/result.json").read_text())
    assert written["status"] == "failed" and written["metrics"]["similarity"] is None


def test_image_experiments_are_checked_against_the_architecture(tmp_path: Path) -> None:
    from peftbench.core.config import training_table
    from peftbench.core.experiments import discover
    from peftbench.core.validate import validate_task
    from peftbench.tasks.image.embedded import build_meta_model

    full = yaml.safe_load((REPO / "config/config.yaml").read_text())["image"]
    table = training_table(SPEC.training_keys)
    found = discover(REPO / "experiments/image")
    assert validate_task(full, found, build_meta_model, table) == []
    target = "^single_transformer_blocks\\.\\d+\\.attn\\.to_out$"
    bad = {
        "boft/block7": {"peft_type": "BOFT", "boft_block_size": 7, "target_modules": target},
        "lora/missing": {"peft_type": "LORA", "r": 4, "target_modules": ["no_such_module"]},
    }
    for name, adapter in bad.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "adapter_config.json").write_text(json.dumps(adapter))
    cfg = {**full, "experiments_dir": str(tmp_path)}
    problems = validate_task(cfg, sorted(bad), build_meta_model, table)
    assert len(problems) == 2, problems
    assert str(tmp_path / "boft/block7/adapter_config.json") in problems[0]
    assert "no_such_module" in problems[1] and "lora/missing/adapter_config.json" in problems[1]


def test_adalora_reallocates_ranks_in_an_image_run(tiny_image: Path, tmp_path: Path) -> None:
    """AdaLoRA works in the image task: the shared loop's Updater calls PEFT's
    update_and_allocate after every step (as the published suite does), so the rank budget is
    enforced and the final rank pattern lands in the saved adapter config."""
    exp_dir = tmp_path / "adalora/tiny"
    exp_dir.mkdir(parents=True)
    target_r = 2
    adapter = {
        "peft_type": "ADALORA",
        "init_r": 4,
        "target_r": target_r,
        "lora_alpha": 4,
        "target_modules": ["to_q", "to_k", "to_v"],
        # Budgeting from step 2, final pattern at step total_step - tfinal (PEFT requires
        # total_step in the file; the published config says 750, its max_steps).
        "tinit": 1,
        "tfinal": 1,
        "deltaT": 1,
        "total_step": CONFIG["training"]["max_steps"],
    }
    (exp_dir / "adapter_config.json").write_text(json.dumps(adapter))
    result = run(tiny_image, "adalora/tiny", "adalora", exp_dir=exp_dir)
    assert result["status"] == "success", result["error"]
    saved = json.loads((tiny_image / "adalora/adapter/adapter_config.json").read_text())
    pattern = saved["rank_pattern"]  # set by update_and_allocate only; None without it
    assert pattern, saved
    kept = sum(sum(bool(x) for x in mask) for mask in pattern.values())
    assert kept == target_r * len(pattern) < adapter["init_r"] * len(pattern)


def test_noise_level_option_reaches_training(tiny_image: Path, monkeypatch) -> None:
    """``noise_levels: scheduler`` in the training params makes the run draw the base model's
    scheduler sigmas; without the key it draws continuous levels as it always did."""
    import peftbench.tasks.image.run as image_run

    seen = []
    real = image_run.flow_matching_loss

    def recording(transformer, latents, embeds, generator, levels=None):
        seen.append(levels)
        return real(transformer, latents, embeds, generator, levels)

    monkeypatch.setattr(image_run, "flow_matching_loss", recording)
    result = run(tiny_image, "lora/rank4", "lora-scheduler", noise_levels="scheduler")
    assert result["status"] == "success", result["error"]
    assert len(seen) == CONFIG["training"]["max_steps"]
    assert all(s.table is not None and len(s.table) == 1000 for s in seen)
    seen.clear()
    assert run(tiny_image, "base/no-finetuning", "base-levels")["status"] == "success"
    assert seen == []  # the base reference does not train
    assert run(tiny_image, "lora/rank4", "lora-default")["status"] == "success"
    assert seen and all(s.table is None for s in seen)
