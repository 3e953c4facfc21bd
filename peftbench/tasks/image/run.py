"""The image task: teach a text-to-image model a new concept from a few images (DreamBooth style).

One run: load the base model, cache prompt embeddings and instance latents, drop the text encoder,
generate the drift and sample images of the *base* model, fine-tune the transformer (PEFT adapter
or all weights) with the flow-matching loss, then generate the test, drift and sample images of
the fine-tuned model from the same noise, load the similarity encoder and score them.

Differences from the published benchmark, on purpose (see README):
* the similarity encoder is not resident while training, so the memory figure is the training's;
* train time sums optimizer steps only (no caching, no evaluation);
* drift is measured for full fine-tuning too: the base model's images come from the same run,
  generated before training from the same noise as the fine-tuned model's;
* validation images are generated during training but scored after it (encoder not resident);
* noise levels are drawn from U[0, 1) (continuous), not from the 1000 discrete sigmas of the
  training scheduler.
"""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from peftbench.core.io import atomic_path, write_jsonl
from peftbench.core.memory import MemoryTracker
from peftbench.core.runs import (
    BASE_METHOD,
    EMPTY_METRICS,
    count_params,
    finish_run,
    start_run,
    torch_dtype,
    wrap_peft,
)
from peftbench.core.stats import bootstrap_ci
from peftbench.core.train import (
    NonFiniteLossError,
    TrainStats,
    Updater,
    make_optimizer,
    make_scheduler,
    record_peak,
)
from peftbench.tasks.image.data import data_hash, load_images, load_manifest
from peftbench.tasks.image.diffusion import (
    ImageModel,
    codec_on_device,
    flow_matching_loss,
    generate,
    load_image_model,
    offload_codec,
    to_uint8,
)
from peftbench.tasks.image.similarity import load_encoder

#: Seeds of the evaluation noise: test, validation and sample images share one stream, drift
#: images have their own, so base and fine-tuned images pair up. They are the published
#: benchmark's (100_000 and 100_000_000 plus its seed 0) but do not move with the training seed:
#: every run is evaluated on the same noise, like a fixed test set, so differences between runs
#: are the training's and the seed-to-seed spread is not inflated by new test draws.
TEST_SEED, DRIFT_SEED = 100_000, 100_000_000

IMAGE_METRICS = {
    "similarity": None,
    "similarity_ci_low": None,
    "similarity_ci_high": None,
    "drift": None,
    "valid_similarity_final": None,
    "generation_time_s": None,
    "train_samples": None,
}


def generate_images(model: ImageModel, embeds: torch.Tensor, negative: torch.Tensor,
                    generator: torch.Generator, params: dict[str, Any]) -> np.ndarray:  # fmt: skip
    """uint8 images for each row of ``embeds``, in batches of ``batch_size_eval``; the noise of
    every batch is drawn in order from ``generator``."""
    out = []
    with codec_on_device(model):
        for start in range(0, len(embeds), params["batch_size_eval"]):
            pixels = generate(
                model, embeds[start : start + params["batch_size_eval"]], negative, generator,
                params["num_inference_steps"], params["guidance_scale"],
            )  # fmt: skip
            out.append(to_uint8(pixels))
    return np.concatenate(out)


def sample_grid(base: np.ndarray, tuned: np.ndarray, scale: int) -> Image.Image:
    """One row per sample prompt: the base model's image | the fine-tuned model's, same noise."""
    rows = [np.concatenate([b, np.full_like(b[:, :2], 255), t], axis=1) for b, t in zip(base, tuned, strict=True)]  # fmt: skip
    grid = np.concatenate([np.pad(r, ((1, 1), (0, 0), (0, 0)), constant_values=255) for r in rows])
    image = Image.fromarray(grid)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def run_experiment(
    *,
    task: str,
    method: str,
    name: str,
    seed: int,
    exp_dir: Path | None,
    params: dict[str, Any],
    model_cfg: dict[str, Any],
    encoder_cfg: dict[str, Any],
    base_dir: Path | None,
    encoder_dir: Path | None,
    data_dir: Path,
    out_dir: Path,
    threads: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (unless this is the base reference) and evaluate one experiment; write result.json
    (a failure is recorded there, see :func:`peftbench.core.runs.finish_run`)."""
    result, device = start_run(
        task=task, method=method, name=name, seed=seed, exp_dir=exp_dir, params=params,
        threads=threads, data_hash=data_hash(data_dir), metrics={**EMPTY_METRICS, **IMAGE_METRICS},
        curves={"train_loss": [], "valid_similarity": []}, provenance={"encoder_hash": None},
    )  # fmt: skip

    def body() -> None:
        _run(result, exp_dir, params, model_cfg, encoder_cfg, base_dir, encoder_dir, data_dir,
             out_dir, seed, device, progress)  # fmt: skip

    return finish_run(result, body, out_dir, device)


def _run(result: dict, exp_dir: Path | None, params: dict, model_cfg: dict, encoder_cfg: dict,
         base_dir: Path | None, encoder_dir: Path | None, data_dir: Path, out_dir: Path,
         seed: int, device: torch.device, progress: bool) -> None:  # fmt: skip
    metrics, curves = result["metrics"], result["curves"]
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(data_dir)
    tracker = MemoryTracker(device)
    if device.type == "cuda":
        tracker.set_baseline()  # CUDA: include the weights, as the published benchmark does
    model, identity = load_image_model(
        model_cfg, base_dir, device, torch_dtype(params["dtype"], device)
    )
    result["provenance"]["base_model_hash"] = identity

    # Caches, then the text encoder goes: training never needs it (frozen, as in the reference).
    instance = manifest["instance"]
    prompt_sets = {k: [e["prompt"] for e in manifest[k]] for k in ("instance", "valid", "test")}
    prompt_sets |= {"drift": manifest["drift_prompts"], "samples": manifest["sample_prompts"]}
    embeds = {k: model.encode_prompts(v) for k, v in prompt_sets.items()}
    negative = model.encode_prompts([""])
    latents = model.encode_images(np.stack(load_images(data_dir, instance)))
    model.text_encoder = None
    offload_codec(model)
    gc.collect()

    repeats = params["test_repeats"]
    test_embeds = embeds["test"].repeat(repeats, 1, 1)  # repeat r of prompt i at r * n + i
    base_drift = generate_images(model, embeds["drift"], negative,
                                 torch.Generator().manual_seed(DRIFT_SEED), params)  # fmt: skip
    base_samples = generate_images(model, embeds["samples"], negative,
                                   torch.Generator().manual_seed(TEST_SEED), params)  # fmt: skip
    if device.type != "cuda":
        tracker.set_baseline()  # CPU: RSS with the model loaded; see memory.py
    metrics["memory_measure"] = tracker.measure

    is_base = result["method"] == BASE_METHOD
    valid_images: list[tuple[int, np.ndarray]] = []
    if not is_base:
        transformer, result["peft_config"] = wrap_peft(model.transformer, exp_dir, params)
        model.transformer = transformer
        if params["use_gc"]:
            transformer.enable_gradient_checkpointing()

        def validate(step: int) -> None:
            generator = torch.Generator().manual_seed(TEST_SEED)
            valid_images.append((step, generate_images(model, embeds["valid"], negative, generator, params)))  # fmt: skip

        _train(model, latents, embeds["instance"], params, seed, tracker, metrics, curves, validate, progress)  # fmt: skip
    trainable, total = count_params(model.transformer)
    metrics.update(trainable_params=0 if is_base else trainable, total_params=total)

    tracker.reset()
    t0 = time.perf_counter()
    test_images = generate_images(model, test_embeds, negative,
                                  torch.Generator().manual_seed(TEST_SEED), params)  # fmt: skip
    metrics["generation_time_s"] = time.perf_counter() - t0
    if is_base:  # the untouched model: its images are the base images drawn above
        drift_images, samples = base_drift, base_samples
    else:
        drift_images = generate_images(model, embeds["drift"], negative,
                                       torch.Generator().manual_seed(DRIFT_SEED), params)  # fmt: skip
        samples = generate_images(model, embeds["samples"], negative,
                                  torch.Generator().manual_seed(TEST_SEED), params)  # fmt: skip
    metrics["eval_memory_peak_bytes"], metrics["eval_memory_allocated_peak_bytes"] = tracker.peak()
    with atomic_path(out_dir / "samples.png") as tmp:
        sample_grid(base_samples, samples, max(1, 96 // model.resolution)).save(tmp)

    if not is_base:
        adapter_dir = out_dir / "adapter"
        shutil.rmtree(adapter_dir, ignore_errors=True)  # a rerun's leftovers would be mixed in
        model.transformer.save_pretrained(adapter_dir)
        metrics["file_size_bytes"] = sum(f.stat().st_size for f in adapter_dir.glob("*.safetensors"))  # fmt: skip
    # The model goes before the encoder comes: neither phase counts the other's memory.
    model = latents = embeds = None  # type: ignore[assignment]
    gc.collect()

    encoder, encoder_identity = load_encoder(encoder_cfg, encoder_dir, device)
    result["provenance"]["encoder_hash"] = encoder_identity
    scores = _score(encoder, data_dir, manifest, test_images, repeats)
    write_jsonl(out_dir / "test_similarity.jsonl", scores)
    values = np.array([s["similarity"] for s in scores])
    low, high = bootstrap_ci(values, seed)
    metrics.update(
        similarity=float(values.mean()), similarity_ci_low=low, similarity_ci_high=high,
        test_n=len(values),
    )  # fmt: skip
    pairs = (encoder.embed(drift_images) * encoder.embed(base_drift)).sum(1)
    # An image identical to the base model's is at distance 0 exactly, not float32 rounding away.
    same = (drift_images == base_drift).reshape(len(pairs), -1).all(1)
    pairs[same] = 1.0
    metrics["drift"] = float((1.0 - pairs.mean()) / 2.0)
    refs = encoder.embed(load_images(data_dir, manifest["valid"]))
    for step, images in valid_images:
        similarity = float((encoder.embed(images) * refs).sum(1).mean())
        curves["valid_similarity"].append({"step": step, "similarity": similarity})
    if curves["valid_similarity"]:
        metrics["valid_similarity_final"] = curves["valid_similarity"][-1]["similarity"]
    metrics["eval_time_s"] = time.perf_counter() - t0


def _score(encoder: Any, data_dir: Path, manifest: dict, images: np.ndarray, repeats: int) -> list[dict]:  # fmt: skip
    """Cosine of each generated test image to the reference image of its prompt."""
    refs = encoder.embed(load_images(data_dir, manifest["test"]))
    generated = encoder.embed(images)
    n = len(manifest["test"])
    return [
        {"prompt": manifest["test"][i]["prompt"], "repeat": r,
         "similarity": float(generated[r * n + i] @ refs[i])}
        for r in range(repeats) for i in range(n)
    ]  # fmt: skip


def _train(model: ImageModel, latents: torch.Tensor, embeds: torch.Tensor, params: dict,
           seed: int, tracker: MemoryTracker, metrics: dict, curves: dict,
           validate: Any, progress: bool) -> None:  # fmt: skip
    """Fine-tune ``model.transformer`` on the cached instance latents; fills metrics and curves."""
    transformer = model.transformer
    optimizer = make_optimizer(transformer, params)
    scheduler = make_scheduler(optimizer, params)
    update = Updater(transformer, optimizer, scheduler, params)
    generator = torch.Generator().manual_seed(seed)
    n, batch, steps = len(latents), params["batch_size"], params["max_steps"]
    # Every image once per pass, in a new order each pass (the published benchmark's sampler).
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(steps * batch // n + 1)])  # fmt: skip
    transformer.train()
    tracker.reset()
    stats, window = TrainStats(), []

    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        idx = order[(step - 1) * batch : step * batch]
        loss = flow_matching_loss(transformer, latents[idx], embeds[idx], generator)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at step {step}")
        loss.backward()
        update(step)
        stats.train_time_s += time.perf_counter() - t0
        window.append(loss.item())
        if step % params["log_steps"] == 0 or step == steps:
            curves["train_loss"].append({"step": step, "loss": float(np.mean(window)), "lr": scheduler.get_last_lr()[0]})  # fmt: skip
            if progress:
                print(f"step {step} loss {curves['train_loss'][-1]['loss']:.4f}", flush=True)
            window = []
        if (params["eval_steps"] and step % params["eval_steps"] == 0) or step == steps:
            record_peak(stats, tracker)
            transformer.eval()
            validate(step)
            transformer.train()
            tracker.reset()
    record_peak(stats, tracker)
    transformer.eval()
    metrics.update(
        train_memory_peak_bytes=stats.peak_bytes,
        train_memory_allocated_peak_bytes=stats.peak_allocated_bytes,
        train_time_s=stats.train_time_s,
        train_steps=steps,
        train_samples=steps * batch,
        train_loss_final=curves["train_loss"][-1]["loss"],
    )
