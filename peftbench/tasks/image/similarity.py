"""Image similarity: cosine of L2-normalised CLS embeddings of a DINOv2 model.

The FLUX.2 preset uses ``facebook/dinov2-base`` as the published benchmark does (CLS token of
``last_hidden_state``, which is after DINOv2's final layer norm). The embedded default cannot
download it, so the workflow trains a tiny ``Dinov2Model`` of its own on procedural shapes
(:func:`train_embedded_encoder`): it learns to tell shapes, colours, stripe patterns and
backgrounds apart, and is saved with ``save_pretrained`` together with its image processor.
Both are then loaded and used by the same code (:class:`SimilarityEncoder`).

The encoder never sees the benchmark's concept (a striped yellow/magenta diamond) in training;
``separation`` records how far real concept images score above other images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from peftbench.core.io import write_json
from peftbench.core.loop import Step, train
from peftbench.core.memory import MemoryTracker
from peftbench.tasks.image import shapes

LABELS = ["shape", "color", "color2", "pattern", "background"]


class SimilarityEncoder:
    """``embed`` images (uint8 HxWx3 arrays) into unit vectors; ``cosine`` compares pairs."""

    def __init__(self, location: str, revision: str | None, device: torch.device) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.processor = AutoImageProcessor.from_pretrained(location, revision=revision)
        self.model = AutoModel.from_pretrained(location, revision=revision).to(device).eval()
        self.device = device

    @torch.no_grad()
    def embed(self, images: list[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            batch = [np.asarray(im) for im in images[start : start + batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            cls = self.model(**inputs).last_hidden_state[:, 0].float()
            out.append(torch.nn.functional.normalize(cls, dim=-1).cpu().numpy())
        return np.concatenate(out)

    def release(self) -> None:
        """Free the model (the training phase must not count its memory)."""
        self.model = None


def load_encoder(
    cfg: dict[str, Any], encoder_dir: Path | None, device: torch.device
) -> tuple[SimilarityEncoder, str]:
    """The configured encoder and its identity (weights hash or hub id@sha)."""
    if cfg["source"] == "embedded":
        from peftbench.core.config import file_hash

        return SimilarityEncoder(str(encoder_dir), None, device), file_hash(
            sorted(Path(encoder_dir).glob("*.safetensors"))
        )
    from peftbench.core.hub import resolve_revision

    hub = cfg["hub"]
    revision = resolve_revision(hub["model_id"], hub.get("revision"), "model")
    return SimilarityEncoder(hub["model_id"], revision, device), f"{hub['model_id']}@{revision}"


def separation(encoder: SimilarityEncoder, seed: int, size: int) -> dict[str, float]:
    """Mean cosine of real concept images to other real concept images (new backgrounds, new
    draws) against that of pretraining-style images to the same references."""
    prompts = shapes.default_prompts()
    backgrounds = list(prompts.test_backgrounds) * 4
    refs = encoder.embed(shapes.concept_set(backgrounds, seed, size))
    others = encoder.embed(shapes.concept_set(backgrounds, seed + 1, size))
    non_concept = encoder.embed(shapes.pretraining_set(len(backgrounds), seed + 2, size)[0])
    return {
        "concept_vs_concept": float((refs * others).sum(1).mean()),
        "other_vs_concept": float((refs * non_concept).sum(1).mean()),
    }


def train_embedded_encoder(
    cfg: dict[str, Any], out: Path, threads: int, progress: bool = True
) -> dict[str, Any]:
    """Train a tiny DINOv2 to predict shape, colours, pattern and background from its CLS token;
    save model and image processor to ``out``; returns training and separation figures."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    t0 = time.perf_counter()
    size = cfg["resolution"]
    images, labels = shapes.encoder_set(cfg["num_images"], cfg["data_seed"], size)
    model = Dinov2Model(Dinov2Config(image_size=size, **cfg["architecture"]))
    hidden = model.config.hidden_size
    classes = {
        "shape": len(shapes.ENCODER_SHAPES),
        "color": len(shapes.ENCODER_COLORS),
        "color2": len(shapes.ENCODER_COLORS),
        "pattern": len(shapes.PATTERNS),
        "background": len(shapes.BACKGROUNDS),
    }
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(hidden, n) for k, n in classes.items()})
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    targets = {k: torch.from_numpy(v).long() for k, v in labels.items()}
    generator = torch.Generator().manual_seed(cfg["seed"])

    def loss() -> tuple[torch.Tensor, int]:
        idx = torch.randint(len(pixels), (cfg["batch_size"],), generator=generator)
        cls = model(pixel_values=pixels[idx]).last_hidden_state[:, 0]
        heads_loss = [F.cross_entropy(heads[k](cls), targets[k][idx]) for k in classes]
        return sum(heads_loss), len(idx)

    params = {
        "max_steps": cfg["max_steps"],
        "log_steps": cfg["log_steps"],
        "optimizer_type": "AdamW",
        "optimizer_kwargs": {"lr": cfg["lr"], "weight_decay": cfg["weight_decay"]},
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.0,
        "grad_norm_clip": 0,  # never clipped
    }
    tracker = MemoryTracker(torch.device("cpu"))
    tracker.set_baseline()
    both = torch.nn.ModuleList([model, heads])
    stats = train(both, Step(loss=loss, generator=generator), params, tracker, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    # Same preprocessing as in training: [0, 255] -> [-1, 1], no resizing of 32 px images.
    BitImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    ).save_pretrained(out)
    encoder = SimilarityEncoder(str(out), None, torch.device("cpu"))
    info = {
        "training_time_s": time.perf_counter() - t0,
        "params": sum(p.numel() for p in model.parameters()),
        "loss_curve": stats.loss_curve,
        "separation": separation(encoder, cfg["seed"] + 1000, size),
    }
    write_json(out / "encoder_training.json", info)
    return info
