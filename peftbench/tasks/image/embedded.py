"""The embedded default's image model: a tiny FLUX.2 transformer in pixel space, pretrained here.

A word-level tokenizer over the procedural captions (``shapes.vocabulary``), a small
``CLIPTextModel`` and a ``Flux2Transformer2DModel`` on 4x4 pixel patches are trained together with
the flow-matching loss on captioned shapes (``shapes.pretraining_set``). The concept of the
benchmark (and the words "photo", "sks", "object") never occurs in pretraining. Everything is
saved with ``save_pretrained`` in diffusers' subfolder layout and every experiment reloads it
through :func:`peftbench.tasks.image.diffusion.load_image_model`, like a hub model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peftbench.core.io import write_json
from peftbench.core.loop import Step, train
from peftbench.core.memory import MemoryTracker
from peftbench.tasks.image import shapes
from peftbench.tasks.image.diffusion import (
    MODEL_INFO,
    ImageModel,
    PixelCodec,
    flow_matching_loss,
    generate,
    to_uint8,
)

SPECIAL = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def word_tokenizer(words: list[str], max_length: int) -> Any:
    """A word-level tokenizer (one id per word, BOS and EOS around every prompt)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL.values(), *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos, eos = SPECIAL["bos_token"], SPECIAL["eos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **SPECIAL)


def transformer_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``Flux2Transformer2DModel`` arguments of the embedded model: the config's architecture,
    RGB patches in, the text encoder's width as the joint attention width, no guidance input."""
    return {
        **cfg["transformer"],
        "in_channels": 3 * cfg["patch_size"] ** 2,
        "joint_attention_dim": cfg["text_encoder"]["hidden_size"],
        "guidance_embeds": False,
    }


def build_components(cfg: dict[str, Any]) -> ImageModel:
    """Randomly initialised embedded model sized by ``cfg`` (config ``image.base_model.embedded``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(cfg["seed"])
    tokenizer = word_tokenizer(shapes.vocabulary(), cfg["max_sequence_length"])
    text = cfg["text_encoder"]
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=cfg["max_sequence_length"],
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **text,
        )
    )
    transformer = Flux2Transformer2DModel(**transformer_config(cfg))
    return ImageModel(
        transformer=transformer,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        codec=PixelCodec(cfg["patch_size"]),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        kind="embedded",
        resolution=cfg["resolution"],
        max_sequence_length=cfg["max_sequence_length"],
    )


def save(model: ImageModel, out: Path) -> None:
    model.transformer.save_pretrained(out / "transformer")
    model.text_encoder.save_pretrained(out / "text_encoder")
    model.tokenizer.save_pretrained(out / "tokenizer")
    model.scheduler.save_pretrained(out / "scheduler")
    write_json(
        out / MODEL_INFO,
        {
            "patch_size": model.codec.patch_size,
            "resolution": model.resolution,
            "max_sequence_length": model.max_sequence_length,
        },
    )


def pretrain(model: ImageModel, cfg: dict[str, Any], progress: bool = True) -> list[dict]:
    """Train transformer and text encoder on captioned shapes; returns the loss curve.

    A share of captions is replaced by the empty prompt so that the model also learns the
    unconditional velocity that classifier-free guidance needs.
    """
    pre = cfg["pretraining"]
    images, captions = shapes.pretraining_set(
        pre["num_images"], pre["data_seed"], cfg["resolution"]
    )
    generator = torch.Generator().manual_seed(cfg["seed"])

    def loss() -> tuple[torch.Tensor, int]:
        idx = torch.randint(len(images), (pre["batch_size"],), generator=generator).numpy()
        drop = torch.rand(len(idx), generator=generator) < pre["caption_dropout"]
        prompts = ["" if d else captions[i] for i, d in zip(idx, drop.tolist(), strict=True)]
        tokens = model.tokenizer(
            prompts,
            padding="max_length",
            max_length=model.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )
        embeds = model.text_encoder(**tokens).last_hidden_state
        with torch.no_grad():
            latents = model.encode_images(images[idx])
        return flow_matching_loss(model.transformer, latents, embeds, generator), len(idx)

    params = {
        "max_steps": pre["max_steps"],
        "log_steps": pre["log_steps"],
        "optimizer_type": "AdamW",
        "optimizer_kwargs": {"lr": pre["lr"], "weight_decay": pre["weight_decay"]},
        "lr_scheduler": "shifted_warmup_cosine",
        "warmup_ratio": pre["warmup_ratio"],
        "grad_norm_clip": 1.0,
    }
    # Both parts learn together: one module, so that the loop sees all their parameters.
    both = torch.nn.ModuleList([model.transformer, model.text_encoder])
    tracker = MemoryTracker(torch.device("cpu"))
    tracker.set_baseline()
    stats = train(both, Step(loss=loss, generator=generator), params, tracker, progress=progress)
    return stats.loss_curve


def caption_check(model: ImageModel, n: int, seed: int, steps: int, guidance: float) -> dict:
    """Does the base model draw what captions ask? Mean colour distance of the generated object's
    and background's colours to the named ones, against a shuffled-caption control."""
    rng = np.random.default_rng(seed)
    combos = [
        (
            rng.choice(shapes.PRETRAIN_SHAPES),
            rng.choice(shapes.PRETRAIN_COLORS),
            rng.choice(shapes.BACKGROUNDS),
        )
        for _ in range(n)
    ]
    prompts = [shapes.caption(*c) for c in combos]
    embeds = model.encode_prompts(prompts)
    negative = model.encode_prompts([""])
    pixels = generate(model, embeds, negative, torch.Generator().manual_seed(seed), steps, guidance)
    images = to_uint8(pixels).astype(float)
    corner = images[:, :3, :3].reshape(n, -1, 3).mean(1)
    bg = np.array([shapes.COLORS[c[2]] for c in combos], dtype=float)
    bg_err = np.linalg.norm(corner - bg, axis=1)
    shuffled = np.linalg.norm(corner - np.roll(bg, 1, axis=0), axis=1)
    return {
        "background_color_error": float(bg_err.mean()),
        "background_color_error_shuffled_captions": float(shuffled.mean()),
    }


def build_embedded_image_base(cfg: dict[str, Any], out: Path, threads: int) -> dict[str, Any]:
    """Build, pretrain, save and check the embedded base model; returns a summary."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = build_components(cfg)
    curve = pretrain(model, cfg)
    out.mkdir(parents=True, exist_ok=True)
    save(model, out)
    check = caption_check(model, 32, cfg["seed"], 20, 3.0)
    info = {
        "pretraining_time_s": time.perf_counter() - t0,
        "transformer_params": sum(p.numel() for p in model.transformer.parameters()),
        "text_encoder_params": sum(p.numel() for p in model.text_encoder.parameters()),
        "loss_curve": curve,
        "caption_check": check,
    }
    write_json(out / "pretraining.json", info)
    return info


def build_meta_model(task_cfg: dict[str, Any]) -> Any:
    """The image model's ``Flux2Transformer2DModel`` (what an adapter wraps) with no weights
    allocated (meta device), for the pre-flight check of every adapter config
    (``TaskSpec.meta_model``)."""
    from diffusers import Flux2Transformer2DModel

    model_cfg = task_cfg["base_model"]
    if model_cfg["source"] == "embedded":
        config = transformer_config(model_cfg["embedded"])
    else:
        hub = model_cfg["hub"]
        config = Flux2Transformer2DModel.load_config(
            hub["model_id"], subfolder="transformer", revision=hub.get("revision")
        )
    with torch.device("meta"):
        return Flux2Transformer2DModel.from_config(config)
