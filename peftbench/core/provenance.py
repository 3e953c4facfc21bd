"""Provenance recorded in every result: library versions, code revision, hardware."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = [
    "torch",
    "transformers",
    "peft",
    "datasets",
    "tokenizers",
    "accelerate",
    "diffusers",
    "safetensors",
    "numpy",
    "snakemake",
]
REPO = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_revision(repo: Path = REPO) -> str:
    """git commit of the workflow code, '+dirty' when tracked files differ; 'unknown' outside git."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("PEFTBENCH_CODE_REVISION", "unknown")
    return rev + ("+dirty" if dirty else "")


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "system": platform.system(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            accelerator=props.name,
            accelerator_memory_bytes=props.total_memory,
            cuda=torch.version.cuda,
        )
    return info


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
