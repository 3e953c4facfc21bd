"""What every image run would otherwise recompute identically, computed once per task.

Every run of the image task draws the *base* model's drift and sample images from the same
noise (their seeds do not move with the training seed) and embeds the same real reference images
and the same base drift images with the similarity encoder. Rule ``image_base_reference``
computes them once (``results/image/base_reference/``); each run loads them when the folder's
manifest records exactly the settings the run would compute them with, and computes them inline
otherwise (an experiment that overrides a generation setting, another device or thread count),
so a run's numbers never depend on whether the cache was used: the arrays are stored losslessly
and computed by the same functions, in the same order, on the same kind of device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peftbench.tasks.image import GENERATION_KEYS

MANIFEST = "manifest.json"
ARRAYS = "reference.npz"


def generation_settings(
    params: dict[str, Any], device: torch.device, base_identity: str, data: str
) -> dict[str, Any]:
    """Everything the base images depend on beyond the code and the libraries (rule params): the
    generation parameters, the device (the GPU model; on the CPU, the numerics key: kernels, BLAS
    and thread count, which change how sums round), the base model's identity and the prepared
    data's hash."""
    from peftbench.core.provenance import numerics

    return {
        **{key: params[key] for key in GENERATION_KEYS},
        "device": device.type,
        "numerics": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else numerics()["key"]
        ),
        "base_model_hash": base_identity,
        "data_hash": data,
    }


@dataclass
class BaseImages:
    """The base model's images: drift prompts (drift noise) and sample prompts (test noise)."""

    drift: np.ndarray
    samples: np.ndarray


@dataclass
class Reference:
    """A loaded (or freshly computed) reference: base images, and the encoder's embeddings of
    the test and validation reference images and of the base drift images."""

    settings: dict[str, Any]
    images: BaseImages
    encoder_hash: str | None = None
    test_refs: np.ndarray | None = None
    valid_refs: np.ndarray | None = None
    drift_embeddings: np.ndarray | None = None

    def embeddings_for(self, encoder_identity: str) -> bool:
        """Whether the stored embeddings come from this encoder."""
        return self.test_refs is not None and self.encoder_hash == encoder_identity


def save_reference(out_dir: Path, reference: Reference) -> None:
    """Write the arrays (npz, lossless) and the manifest of settings they were computed with."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"drift": reference.images.drift, "samples": reference.images.samples}
    for key in ("test_refs", "valid_refs", "drift_embeddings"):
        value = getattr(reference, key)
        if value is not None:
            arrays[key] = value
    np.savez(out_dir / ARRAYS, **arrays)
    manifest = {"settings": reference.settings, "encoder_hash": reference.encoder_hash}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def load_reference(folder: Path | None, settings: dict[str, Any]) -> Reference | None:
    """The stored reference when ``folder`` holds one computed with exactly ``settings``; None
    otherwise (no folder, another setting: the run computes it inline)."""
    if folder is None or not (folder / MANIFEST).is_file():
        return None
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("settings") != settings:
        stored = manifest.get("settings") or {}
        differ = sorted(k for k in {*stored, *settings} if stored.get(k) != settings.get(k))
        print(f"base reference in {folder} not used: it differs in {', '.join(differ)}")
        return None
    with np.load(folder / ARRAYS) as arrays:
        data = {key: arrays[key] for key in arrays.files}
    return Reference(
        settings=settings,
        images=BaseImages(drift=data["drift"], samples=data["samples"]),
        encoder_hash=manifest.get("encoder_hash"),
        test_refs=data.get("test_refs"),
        valid_refs=data.get("valid_refs"),
        drift_embeddings=data.get("drift_embeddings"),
    )
