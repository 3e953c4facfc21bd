"""Text-to-image flow matching with FLUX.2 components: one code path for every image model.

An :class:`ImageModel` is a ``Flux2Transformer2DModel`` (the part that is fine-tuned), a frozen
text encoder, a frozen *codec* between pixels and the transformer's latent grid, and a
``FlowMatchEulerDiscreteScheduler``:

* FLUX.2-klein (hub): Qwen3 text encoder (hidden states of several layers, stacked, as in
  ``Flux2KleinPipeline``), and the ``AutoencoderKLFlux2`` VAE with 2x2 patchify and batch-norm
  normalisation of its latents;
* the embedded default: a small ``CLIPTextModel`` with a word-level tokenizer and a weightless
  codec that cuts 32x32 pixels into 4x4 patches, so the model diffuses in pixel space.

Both are saved with ``save_pretrained`` and loaded with ``from_pretrained(dir, subfolder=...)``.
Training (:func:`flow_matching_loss`) and sampling (:func:`generate`) are the same for both, and
a test checks :func:`generate` against ``Flux2KleinPipeline.__call__`` on a tiny random pipeline.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from peftbench.tasks.image.noise_levels import NoiseLevels

#: Written next to the embedded model's subfolders; says how to rebuild the codec.
MODEL_INFO = "peftbench_image_model.json"


class PixelCodec:
    """Pixels in [-1, 1] <-> a grid of ``patch x patch`` pixel patches (no weights)."""

    def __init__(self, patch_size: int) -> None:
        self.patch_size = patch_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(pixels, self.patch_size)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents, self.patch_size)

    def latent_shape(self, resolution: int) -> tuple[int, int]:
        return resolution // self.patch_size, resolution // self.patch_size


class Flux2VaeCodec:
    """``AutoencoderKLFlux2`` latents, 2x2-patchified and normalised by the VAE's batch norm,
    exactly as ``Flux2KleinPipeline`` prepares and decodes them."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps)
        return mean, std.to(like.device, like.dtype)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        from diffusers import Flux2KleinPipeline

        latents = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode()
        latents = Flux2KleinPipeline._patchify_latents(latents)
        mean, std = self._stats(latents)
        return (latents - mean) / std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        from diffusers import Flux2KleinPipeline

        mean, std = self._stats(latents)
        latents = Flux2KleinPipeline._unpatchify_latents(latents * std + mean)
        return self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]

    def latent_shape(self, resolution: int) -> tuple[int, int]:
        # The VAE downsamples by 2**(blocks-1); patchify halves once more.
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) * 2
        return resolution // factor, resolution // factor


@dataclass
class ImageModel:
    transformer: Any
    text_encoder: Any
    tokenizer: Any
    codec: PixelCodec | Flux2VaeCodec
    scheduler: Any
    kind: str  # "embedded" (CLIP text encoder, pixel codec) or "flux2" (Qwen3, VAE)
    resolution: int
    max_sequence_length: int
    text_encoder_out_layers: tuple[int, ...] = ()

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompt embeddings (B, L, D) in the transformer's dtype."""
        if self.kind == "flux2":
            from diffusers import Flux2KleinPipeline

            return Flux2KleinPipeline._get_qwen3_prompt_embeds(
                text_encoder=self.text_encoder,
                tokenizer=self.tokenizer,
                prompt=prompts,
                dtype=self.dtype,
                device=self.device,
                max_sequence_length=self.max_sequence_length,
                hidden_states_layers=list(self.text_encoder_out_layers),
            )
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            return_tensors="pt",
        ).to(self.text_encoder.device)
        hidden = self.text_encoder(**tokens).last_hidden_state
        return hidden.to(self.device, self.dtype)

    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images (N, H, W, 3) at the model's resolution -> latents (N, C, h, w)."""
        return self.codec.encode(to_pixels(images, self.device, self.dtype))


def offload_codec(model: ImageModel) -> None:
    """Move a VAE off the GPU (training never needs it: latents are cached)."""
    vae = getattr(model.codec, "vae", None)
    if vae is not None and model.device.type == "cuda":
        vae.to("cpu")
        torch.cuda.empty_cache()


@contextmanager
def codec_on_device(model: ImageModel) -> Iterator[None]:
    """The VAE on the model's GPU for the duration of a generation, as the published benchmark
    does (``offload_models``), so that it is not part of the training memory."""
    vae = getattr(model.codec, "vae", None)
    if vae is None or model.device.type != "cuda":
        yield
        return
    vae.to(model.device)
    try:
        yield
    finally:
        offload_codec(model)


def to_pixels(images: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return (x.to(device=device, dtype=torch.float32) / 127.5 - 1.0).to(dtype)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C) tokens, row-major like ``Flux2KleinPipeline._pack_latents``."""
    b, c, h, w = latents.shape
    return latents.reshape(b, c, h * w).permute(0, 2, 1)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c = tokens.shape
    return tokens.permute(0, 2, 1).reshape(b, c, h, w)


def image_ids(batch: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """4-D positions (t, h, w, l) of the latent tokens, as the FLUX.2 pipelines build them."""
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    return ids.unsqueeze(0).expand(batch, -1, -1).to(device)


def text_ids(embeds: torch.Tensor) -> torch.Tensor:
    """4-D positions (0, 0, 0, l) of the text tokens."""
    b, length, _ = embeds.shape
    ids = torch.cartesian_prod(
        torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length)
    )
    return ids.unsqueeze(0).expand(b, -1, -1).to(embeds.device)


def predict(
    transformer: Any,
    tokens: torch.Tensor,
    sigma: torch.Tensor,
    embeds: torch.Tensor,
    txt_ids: torch.Tensor,
    img_ids: torch.Tensor,
) -> torch.Tensor:
    """The transformer's velocity for noisy tokens at noise levels ``sigma`` (B,) in [0, 1];
    ``txt_ids``/``img_ids`` are the positions of :func:`text_ids` and :func:`image_ids`."""
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full_like(sigma, 1.0)
    out = transformer(
        hidden_states=tokens,
        timestep=sigma.to(tokens.dtype),
        guidance=guidance,
        encoder_hidden_states=embeds,
        txt_ids=txt_ids,
        img_ids=img_ids,
        return_dict=False,
    )[0]
    return out[:, : tokens.shape[1]]


def flow_matching_loss(
    transformer: Any,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    generator: torch.Generator,
    levels: Callable[[int, torch.Generator], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Rectified-flow loss: x_s = (1 - s) x0 + s e, target velocity e - x0, with noise levels
    s from ``levels`` (:mod:`peftbench.tasks.image.noise_levels`; None: s ~ U[0, 1)).

    Noise and noise levels come from ``generator`` (on the CPU, so a seed gives the same
    numbers everywhere), the noise first as in the published benchmark; the loss is computed
    in float32 like there.
    """
    b, _, h, w = latents.shape
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    draw = levels if levels is not None else NoiseLevels()
    sigma = draw(b, generator).to(latents.device, latents.dtype)
    s = sigma.view(b, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise
    ids = image_ids(b, h, w, latents.device)
    pred = predict(transformer, pack(noisy), sigma, embeds, text_ids(embeds), ids)
    target = pack(noise - latents)
    return F.mse_loss(pred.float(), target.float())


def sampling_timesteps(scheduler: Any, steps: int, seq_len: int, device: torch.device) -> Any:
    """A copy of ``scheduler`` set up like ``Flux2KleinPipeline``: sigmas linspace(1, 1/n, n),
    shifted by the empirical ``mu`` of the sequence length when the scheduler shifts dynamically."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    scheduler = copy.deepcopy(scheduler)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    kwargs = {}
    if scheduler.config.get("use_dynamic_shifting"):
        kwargs["mu"] = compute_empirical_mu(image_seq_len=seq_len, num_steps=steps)
    scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
    scheduler.set_begin_index(0)
    return scheduler


@torch.no_grad()
def generate(
    model: ImageModel,
    embeds: torch.Tensor,
    negative: torch.Tensor | None,
    generator: torch.Generator,
    steps: int,
    guidance_scale: float,
    latents: torch.Tensor | None = None,
    decode: bool = True,
) -> torch.Tensor:
    """Euler sampling with true classifier-free guidance (two passes when guidance > 1), as
    ``Flux2KleinPipeline`` does for a non-distilled model. Returns pixels in [-1, 1]
    (or latents with ``decode=False``). Initial noise is drawn from ``generator`` on the CPU."""
    transformer = model.transformer
    b = embeds.shape[0]
    h, w = model.codec.latent_shape(model.resolution)
    channels = transformer.config.in_channels
    if latents is None:
        latents = torch.randn((b, channels, h, w), generator=generator)
    tokens = pack(latents.to(model.device, model.dtype))
    use_cfg = guidance_scale > 1 and negative is not None
    if use_cfg:
        negative = negative.expand(b, -1, -1)
    scheduler = sampling_timesteps(model.scheduler, steps, h * w, model.device)
    # Positions are the same at every step: built once, not per transformer call.
    img, cond_txt = image_ids(b, h, w, model.device), text_ids(embeds)
    uncond_txt = text_ids(negative) if use_cfg else None
    for t in scheduler.timesteps:
        sigma = (t / 1000).expand(b)
        velocity = predict(transformer, tokens, sigma, embeds, cond_txt, img)
        if use_cfg:
            uncond = predict(transformer, tokens, sigma, negative, uncond_txt, img)
            velocity = uncond + guidance_scale * (velocity - uncond)
        tokens = scheduler.step(velocity, t, tokens, return_dict=False)[0]
    out = unpack(tokens, h, w)
    return model.codec.decode(out) if decode else out


def load_image_model(
    model_cfg: dict[str, Any], base_dir: Path | None, device: torch.device, dtype: torch.dtype
) -> tuple[ImageModel, str]:
    """The base model through ``from_pretrained``; returns it and its identity (hash or hub sha)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    if model_cfg["source"] == "embedded":
        from transformers import CLIPTextModel, PreTrainedTokenizerFast

        from peftbench.core.config import file_hash

        root = Path(base_dir)
        info = json.loads((root / MODEL_INFO).read_text())
        # A str, not a Path: the name is written into adapter model cards as YAML.
        location = str(root)
        transformer = Flux2Transformer2DModel.from_pretrained(
            location, subfolder="transformer", torch_dtype=dtype
        )
        text_encoder = CLIPTextModel.from_pretrained(location, subfolder="text_encoder")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(root / "tokenizer"))
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(location, subfolder="scheduler")
        identity = file_hash(sorted(root.glob("*/*.safetensors")))
        model = ImageModel(
            transformer=transformer.to(device),
            text_encoder=text_encoder.to(device).eval(),
            tokenizer=tokenizer,
            codec=PixelCodec(info["patch_size"]),
            scheduler=scheduler,
            kind="embedded",
            resolution=info["resolution"],
            max_sequence_length=info["max_sequence_length"],
        )
    else:
        from diffusers import AutoencoderKLFlux2
        from transformers import AutoTokenizer, Qwen3ForCausalLM

        from peftbench.core.hub import resolve_revision

        hub = model_cfg["hub"]
        location = hub["model_id"]
        revision = resolve_revision(location, hub.get("revision"), "model")
        kw = {"revision": revision}
        transformer = Flux2Transformer2DModel.from_pretrained(
            location, subfolder="transformer", torch_dtype=dtype, **kw
        )
        vae = AutoencoderKLFlux2.from_pretrained(location, subfolder="vae", torch_dtype=dtype, **kw)
        text_encoder = Qwen3ForCausalLM.from_pretrained(
            location, subfolder="text_encoder", dtype=dtype, **kw
        )
        tokenizer = AutoTokenizer.from_pretrained(location, subfolder="tokenizer", **kw)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
            location, subfolder="scheduler", **kw
        )
        identity = f"{location}@{revision}"
        model = ImageModel(
            transformer=transformer.to(device),
            text_encoder=text_encoder.to(device).eval(),
            tokenizer=tokenizer,
            codec=Flux2VaeCodec(vae.to(device).eval()),
            scheduler=scheduler,
            kind="flux2",
            resolution=model_cfg["resolution"],
            max_sequence_length=model_cfg.get("max_sequence_length", 512),
            text_encoder_out_layers=tuple(model_cfg.get("text_encoder_out_layers", (9, 18, 27))),
        )
    for module in (model.text_encoder, getattr(model.codec, "vae", None)):
        if module is not None:
            module.requires_grad_(False)
    return model, identity
