"""The image task's memory probe (:mod:`peftbench.core.estimate`): the FLUX.2 transformer
built from the shipped architecture config, and one batch of cached latents and prompt
embeddings at the preset's resolution and prompt length, through the run's flow-matching loss;
the evaluation is one sampling step of ``batch_size_eval`` images with true classifier-free
guidance (a conditional and an unconditional transformer pass), the transformer's share of
generation (the VAE, on the GPU only while it decodes, is not in the shipped config)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from peftbench.core.estimate import GPU, shipped_architecture
from peftbench.core.runs import torch_dtype
from peftbench.tasks.image.diffusion import flow_matching_loss, image_ids, predict, text_ids

#: Pixels per latent cell of FLUX.2's VAE codec: the AutoencoderKLFlux2 downsamples 8x and
#: the pipeline patchifies 2x2 on top (512 px -> a 32 x 32 grid of 128 channels).
FLUX2_PIXELS_PER_LATENT = 16


def architecture(task_cfg: dict[str, Any]) -> dict[str, Any]:
    """The transformer's config and the latent geometry: ``{"transformer": {...}, "grid": h,
    "text_tokens": n}`` (embedded: from the config; hub: the shipped ``transformer/config.json``)."""
    from peftbench.tasks.image.embedded import transformer_config

    model_cfg = task_cfg["base_model"]
    if model_cfg["source"] == "embedded":
        embedded = model_cfg["embedded"]
        return {
            "transformer": transformer_config(embedded),
            "grid": embedded["resolution"] // embedded["patch_size"],
            "text_tokens": embedded["max_sequence_length"],
        }
    folder = shipped_architecture(model_cfg["hub"]["model_id"])
    config = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
    return {
        "transformer": {k: v for k, v in config.items() if not k.startswith("_")},
        "grid": model_cfg["resolution"] // FLUX2_PIXELS_PER_LATENT,
        "text_tokens": model_cfg["max_sequence_length"],
    }


def build(arch: dict[str, Any], params: dict[str, Any], device: torch.device | str) -> Any:
    """The ``Flux2Transformer2DModel`` of ``arch`` at the run's dtype."""
    from diffusers import Flux2Transformer2DModel

    with torch.device(device):
        model = Flux2Transformer2DModel.from_config(arch["transformer"])
    return model.to(torch_dtype(params["dtype"], GPU))


def _placement(model: Any) -> tuple[torch.device, torch.dtype]:
    """Where the probe's inputs go: the device and dtype of the model's weights."""
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def training_loss(
    model: Any, arch: dict[str, Any], task_cfg: dict[str, Any], params: dict[str, Any]
) -> Callable[[], torch.Tensor]:
    """The run's flow-matching loss of ``batch_size`` cached latents and prompt embeddings
    (every batch has this shape: images share the resolution, prompts are padded); each call
    selects its batch anew, as each training step does from the caches."""
    config = arch["transformer"]
    device, dtype = _placement(model)
    size, grid = params["batch_size"], arch["grid"]
    generator = torch.Generator().manual_seed(0)

    def loss() -> torch.Tensor:
        latents = torch.zeros(size, config["in_channels"], grid, grid, device=device, dtype=dtype)
        embeds = torch.zeros(
            size, arch["text_tokens"], config["joint_attention_dim"], device=device, dtype=dtype
        )
        return flow_matching_loss(model, latents, embeds, generator)

    return loss


def evaluation(
    model: Any, arch: dict[str, Any], task_cfg: dict[str, Any], params: dict[str, Any]
) -> Callable[[], None]:
    """One sampling step of ``batch_size_eval`` images: the noisy latents, the conditional
    and (with guidance) the unconditional velocity, and their guided combination."""
    config = arch["transformer"]
    device, dtype = _placement(model)
    size, grid = params["batch_size_eval"], arch["grid"]

    def step() -> None:
        tokens = torch.zeros(size, grid * grid, config["in_channels"], device=device, dtype=dtype)
        embeds = torch.zeros(
            size, arch["text_tokens"], config["joint_attention_dim"], device=device, dtype=dtype
        )
        sigma = torch.ones(size, device=device, dtype=dtype)
        img, txt = image_ids(size, grid, grid, device), text_ids(embeds)
        velocity = predict(model, tokens, sigma, embeds, txt, img)
        if params.get("guidance_scale", 1.0) > 1:
            uncond = predict(model, tokens, sigma, embeds, txt, img)
            velocity = uncond + params["guidance_scale"] * (velocity - uncond)
        del velocity

    return step


def enable_gradient_checkpointing(model: Any) -> None:
    """As the run does with ``use_gc``."""
    model.enable_gradient_checkpointing()
