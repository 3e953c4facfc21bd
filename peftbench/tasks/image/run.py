"""The image task: teach a text-to-image model a new concept from a few images (DreamBooth style).

One run: load the base model, cache prompt embeddings and instance latents, drop the text encoder,
take the drift and sample images of the *base* model (computed once per task by rule
image_base_reference, see :mod:`peftbench.tasks.image.reference`; inline when its settings differ),
fine-tune the transformer (PEFT adapter or all weights) with the flow-matching loss, then generate
the test, drift and sample images of the fine-tuned model from the same noise, load the
similarity encoder and score them.

Differences from the published benchmark, on purpose (see README):
* the similarity encoder is not resident while training, so the memory figure is the training's;
* train time sums optimizer steps only (no caching, no evaluation);
* drift is measured for full fine-tuning too: the base model's images are generated from the
  same noise as the fine-tuned model's, with the same settings, code and device kind;
* validation images are generated during training but scored after it (encoder not resident);
* by default noise levels are drawn from U[0, 1) (continuous), not from the 1000 discrete
  sigmas of the training scheduler; ``noise_levels: scheduler`` draws them the published way
  (the FLUX.2 preset does), see :mod:`peftbench.tasks.image.noise_levels`.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from peftbench.core import inference
from peftbench.core.io import write_jsonl
from peftbench.core.loop import Step, train
from peftbench.core.memory import MemoryTracker
from peftbench.core.runs import (
    ADAPTER_DIR,
    BASE_METHOD,
    CHECKPOINT_DIR,
    RunContext,
    count_params,
    finish_run,
    start_run,
    torch_dtype,
    wrap_peft,
)
from peftbench.core.stats import bootstrap_ci
from peftbench.tasks.image import INFER_IMAGES, INFER_STEPS, SPEC
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
from peftbench.tasks.image.noise_levels import NoiseLevels, noise_levels
from peftbench.tasks.image.reference import (
    BaseImages,
    Reference,
    generation_settings,
    load_reference,
)
from peftbench.tasks.image.similarity import load_encoder

#: Seeds of the evaluation noise: test, validation and sample images share one stream, drift
#: images have their own, so base and fine-tuned images pair up. They are the published
#: benchmark's (100_000 and 100_000_000 plus its seed 0) but do not move with the training seed:
#: every run is evaluated on the same noise, like a fixed test set, so differences between runs
#: are the training's and the seed-to-seed spread is not inflated by new test draws.
TEST_SEED, DRIFT_SEED = 100_000, 100_000_000


def generate_images(
    model: ImageModel,
    embeds: torch.Tensor,
    negative: torch.Tensor,
    generator: torch.Generator,
    params: dict[str, Any],
) -> np.ndarray:
    """uint8 images for each row of ``embeds``, in batches of ``batch_size_eval``; the noise of
    every batch is drawn in order from ``generator``."""
    out = []
    with codec_on_device(model):
        for start in range(0, len(embeds), params["batch_size_eval"]):
            pixels = generate(
                model,
                embeds[start : start + params["batch_size_eval"]],
                negative,
                generator,
                params["num_inference_steps"],
                params["guidance_scale"],
            )
            out.append(to_uint8(pixels))
    return np.concatenate(out)


def inference_workload(
    model: ImageModel, embeds: torch.Tensor, negative: torch.Tensor, params: dict[str, Any]
) -> inference.Workload:
    """Denoising :data:`INFER_IMAGES` images of the first prompts of ``embeds`` with at most
    :data:`INFER_STEPS` sampling steps, the run's guidance, batched as the evaluation batches,
    from the test noise, by the transformer ``run`` is given. Decoding is left out: the codec is
    the same for every variant, and on a GPU the VAE would travel to it at every call
    (:func:`codec_on_device`). ``run`` returns the latents."""
    prompts = embeds[:INFER_IMAGES]
    steps = min(params["num_inference_steps"], INFER_STEPS)
    batch = params["batch_size_eval"]

    def run(transformer: Any) -> torch.Tensor:
        timed = dataclasses.replace(model, transformer=transformer)
        generator = torch.Generator().manual_seed(TEST_SEED)
        latents = [
            generate(
                timed,
                prompts[start : start + batch],
                negative,
                generator,
                steps,
                params["guidance_scale"],
                decode=False,
            )
            for start in range(0, len(prompts), batch)
        ]
        # Back on the host: the call ends when the device has finished.
        return torch.cat(latents).cpu()

    return inference.Workload(run, units=len(prompts), unit="images")


def prompt_embeddings(
    model: ImageModel, manifest: dict
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Embeddings of every prompt set of the data (one batch per set) and of the empty prompt."""
    prompt_sets = {k: [e["prompt"] for e in manifest[k]] for k in ("instance", "valid", "test")}
    prompt_sets |= {"drift": manifest["drift_prompts"], "samples": manifest["sample_prompts"]}
    return {k: model.encode_prompts(v) for k, v in prompt_sets.items()}, model.encode_prompts([""])


def base_images(
    model: ImageModel, embeds: dict[str, torch.Tensor], negative: torch.Tensor, params: dict
) -> BaseImages:
    """The untouched model's drift images (drift noise) and sample images (test noise)."""
    return BaseImages(
        drift=generate_images(
            model, embeds["drift"], negative, torch.Generator().manual_seed(DRIFT_SEED), params
        ),
        samples=generate_images(
            model, embeds["samples"], negative, torch.Generator().manual_seed(TEST_SEED), params
        ),
    )


def embed_references(
    reference: Reference, encoder: Any, identity: str, data_dir: Path, manifest: dict
) -> None:
    """Fill ``reference``'s encoder embeddings (real test and validation images, base drift
    images) unless it holds this encoder's already."""
    if reference.embeddings_for(identity):
        return
    reference.encoder_hash = identity
    reference.test_refs = encoder.embed(load_images(data_dir, manifest["test"]))
    reference.valid_refs = encoder.embed(load_images(data_dir, manifest["valid"]))
    reference.drift_embeddings = encoder.embed(reference.images.drift)


def compute_reference(
    task_cfg: dict, params: dict, inputs: dict[str, Path], device: torch.device
) -> Reference:
    """The whole reference as a run would compute it (rule ``image_base_reference``)."""
    data_dir = inputs["data"]
    manifest = load_manifest(data_dir)
    model, identity = load_image_model(
        task_cfg["base_model"], inputs.get("base"), device, torch_dtype(params["dtype"], device)
    )
    embeds, negative = prompt_embeddings(model, manifest)
    model.text_encoder = None
    offload_codec(model)
    settings = generation_settings(params, device, identity, data_hash(data_dir))
    reference = Reference(settings, base_images(model, embeds, negative, params))
    model = embeds = None  # type: ignore[assignment]
    gc.collect()
    encoder, encoder_identity = load_encoder(task_cfg["encoder"], inputs.get("encoder"), device)
    embed_references(reference, encoder, encoder_identity, data_dir, manifest)
    return reference


def sample_grid(base: np.ndarray, tuned: np.ndarray, scale: int) -> Image.Image:
    """One row per sample prompt: the base model's image | the fine-tuned model's, same noise."""
    rows = [
        np.concatenate([b, np.full_like(b[:, :2], 255), t], axis=1)
        for b, t in zip(base, tuned, strict=True)
    ]
    grid = np.concatenate([np.pad(r, ((1, 1), (0, 0), (0, 0)), constant_values=255) for r in rows])
    image = Image.fromarray(grid)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def run_experiment(ctx: RunContext) -> dict[str, Any]:
    """Train (unless this is the base reference) and evaluate one experiment; write result.json
    (a failure is recorded there, see :func:`peftbench.core.runs.finish_run`)."""
    result, device = start_run(
        ctx,
        data_hash=data_hash(ctx.inputs["data"]),
        metrics=SPEC.metrics,
        curves=("train_loss", SPEC.valid_curve),
        provenance={"encoder_hash": None},
    )
    return finish_run(result, lambda out: _run(ctx, result, device, out), ctx.out_dir, device)


def _run(ctx: RunContext, result: dict, device: torch.device, out_dir: Path) -> None:
    """The run itself; its files go to ``out_dir`` (moved into the run folder at the end)."""
    params, data_dir = ctx.params, ctx.inputs["data"]
    metrics, curves = result["metrics"], result["curves"]
    manifest = load_manifest(data_dir)
    tracker = MemoryTracker(device)
    if device.type == "cuda":
        tracker.set_baseline()  # CUDA: include the weights, as the published benchmark does
    model, identity = load_image_model(
        ctx.task_cfg["base_model"], ctx.input("base"), device, torch_dtype(params["dtype"], device)
    )
    result["provenance"]["base_model_hash"] = identity

    # Caches, then the text encoder goes: training never needs it (frozen, as in the reference).
    instance = manifest["instance"]
    embeds, negative = prompt_embeddings(model, manifest)
    latents = model.encode_images(np.stack(load_images(data_dir, instance)))
    model.text_encoder = None
    offload_codec(model)
    gc.collect()

    repeats = params["test_repeats"]
    test_embeds = embeds["test"].repeat(repeats, 1, 1)  # repeat r of prompt i at r * n + i
    # Validation draws as many images per prompt as the test: one image per prompt made the
    # choice of a learning rate hinge on a single draw of noise.
    valid_embeds = embeds["valid"].repeat(repeats, 1, 1)
    # The same for every run with these settings: computed once by rule image_base_reference.
    settings = generation_settings(params, device, identity, result["provenance"]["data_hash"])
    reference = load_reference(ctx.input("reference"), settings)
    result["provenance"]["base_reference"] = "inline" if reference is None else "shared"
    if reference is None:
        reference = Reference(settings, base_images(model, embeds, negative, params))
    base_drift, base_samples = reference.images.drift, reference.images.samples
    if device.type != "cuda":
        tracker.set_baseline()  # CPU: RSS with the model loaded; see memory.py
    metrics["memory_measure"] = tracker.measure

    is_base = result["method"] == BASE_METHOD
    valid_images: list[tuple[int, np.ndarray]] = []
    if not is_base:
        transformer, result["peft_config"] = wrap_peft(model.transformer, ctx.exp_dir, params)
        model.transformer = transformer
        if params["use_gc"]:
            transformer.enable_gradient_checkpointing()

        def validate(step: int) -> None:
            # Generated now, scored after training: the encoder is not resident while training.
            generator = torch.Generator().manual_seed(TEST_SEED)
            images = generate_images(model, valid_embeds, negative, generator, params)
            valid_images.append((step, images))

        levels = noise_levels(params, model.scheduler)
        step = diffusion_step(transformer, latents, embeds["instance"], params, ctx.seed, levels)
        checkpoints = ctx.out_dir / CHECKPOINT_DIR  # in the run folder: a rerun resumes
        stats = train(transformer, step, params, tracker, validate, ctx.progress, checkpoints)
        metrics.update(
            **stats.result_metrics(),
            train_samples=stats.items,
        )
        curves["train_loss"] = stats.loss_curve
    trainable, total = count_params(model.transformer)
    metrics.update(trainable_params=0 if is_base else trainable, total_params=total)

    tracker.reset()
    t0 = time.perf_counter()
    test_images = generate_images(
        model, test_embeds, negative, torch.Generator().manual_seed(TEST_SEED), params
    )
    metrics["generation_time_s"] = time.perf_counter() - t0
    if is_base:  # the untouched model: its images are the base images drawn above
        drift_images, samples = base_drift, base_samples
    else:
        drift_images = generate_images(
            model, embeds["drift"], negative, torch.Generator().manual_seed(DRIFT_SEED), params
        )
        samples = generate_images(
            model, embeds["samples"], negative, torch.Generator().manual_seed(TEST_SEED), params
        )
    metrics["eval_memory_peak_bytes"], metrics["eval_memory_allocated_peak_bytes"] = tracker.peak()
    sample_grid(base_samples, samples, max(1, 96 // model.resolution)).save(
        out_dir / SPEC.samples_file
    )

    if not is_base:
        adapter_dir = out_dir / ADAPTER_DIR
        model.transformer.save_pretrained(adapter_dir)
        metrics["file_size_bytes"] = sum(
            f.stat().st_size for f in adapter_dir.glob("*.safetensors")
        )
    # The inference timing keeps the transformer (and the first test prompts) for the very end:
    # merging changes the weights, and no other figure may include the timing.
    workload = inference_workload(model, embeds["test"], negative, params)
    timed_transformer = model.transformer
    # The rest of the model goes before the encoder comes (every memory figure is taken).
    model = latents = embeds = None  # type: ignore[assignment]
    gc.collect()

    encoder, encoder_identity = load_encoder(ctx.task_cfg["encoder"], ctx.input("encoder"), device)
    result["provenance"]["encoder_hash"] = encoder_identity
    embed_references(reference, encoder, encoder_identity, data_dir, manifest)
    scores = _score(reference.test_refs, manifest, encoder.embed(test_images), repeats)
    write_jsonl(out_dir / SPEC.item_file, scores)
    values = np.array([s["similarity"] for s in scores])
    low, high = bootstrap_ci(values, ctx.seed)
    metrics.update(
        similarity=float(values.mean()),
        similarity_ci_low=low,
        similarity_ci_high=high,
        test_n=len(values),
    )
    pairs = (encoder.embed(drift_images) * reference.drift_embeddings).sum(1)
    # An image identical to the base model's is at distance 0 exactly, not float32 rounding away.
    same = (drift_images == base_drift).reshape(len(pairs), -1).all(1)
    pairs[same] = 1.0
    metrics["drift"] = float((1.0 - pairs.mean()) / 2.0)
    refs = np.tile(reference.valid_refs, (repeats, 1))  # the layout of valid_embeds
    for step, images in valid_images:
        similarity = float((encoder.embed(images) * refs).sum(1).mean())
        curves[SPEC.valid_curve].append({"step": step, SPEC.valid_value: similarity})
    if curves[SPEC.valid_curve]:
        metrics["valid_similarity_final"] = curves[SPEC.valid_curve][-1][SPEC.valid_value]
    metrics["eval_time_s"] = time.perf_counter() - t0

    plain = inference.BASE_MODEL_NOTE if is_base else inference.FULL_FINETUNING_NOTE
    metrics.update(inference.measure(timed_transformer, workload, plain_note=plain))


def _score(refs: np.ndarray, manifest: dict, generated: np.ndarray, repeats: int) -> list[dict]:
    """Cosine of each generated test image (embedded) to the reference image of its prompt."""
    n = len(manifest["test"])
    return [
        {
            "prompt": manifest["test"][i]["prompt"],
            "repeat": r,
            "similarity": float(generated[r * n + i] @ refs[i]),
        }
        for r in range(repeats)
        for i in range(n)
    ]


def diffusion_step(
    transformer: Any,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    params: dict,
    seed: int,
    levels: NoiseLevels | None = None,
) -> Step:
    """The flow-matching loss of the next batch of the cached instance latents (its size: the
    images). Every image once per pass, in a new order each pass (the published benchmark's
    sampler); the order, the noise and the noise levels (drawn by ``levels``; None: U[0, 1))
    come from one generator seeded with the run's seed."""
    generator = torch.Generator().manual_seed(seed)
    n, batch = len(latents), params["batch_size"]
    batches = params["max_steps"] * params.get("grad_accumulation_steps", 1)
    passes = batches * batch // n + 1
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
    position = 0

    def loss() -> tuple[torch.Tensor, int]:
        nonlocal position
        idx = order[position : position + batch]
        position += batch
        loss = flow_matching_loss(transformer, latents[idx], embeds[idx], generator, levels)
        return loss, len(idx)

    def skip(count: int) -> None:
        # The order is drawn up front; the generator's state (noise) comes from the checkpoint.
        nonlocal position
        position += count * batch

    return Step(loss=loss, generator=generator, skip=skip)
