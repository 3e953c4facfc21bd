"""Provenance recorded in every result: library versions, code revision, hardware."""

from __future__ import annotations

import os
import platform
import re
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

#: Environment variables that choose CPU kernels (and so can change floating-point results):
#: torch's vectorised kernels, MKL's code path, oneDNN's instruction set, the thread counts.
NUMERICS_ENV = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "OPENBLAS_CORETYPE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build_setting(name: str) -> str | None:
    """A ``NAME=value`` entry of torch's build settings (e.g. BLAS_INFO=mkl)."""
    match = re.search(rf"\b{name}=([^,\s]+)", torch.__config__.show())
    return match.group(1) if match else None


def numerics() -> dict[str, Any]:
    """What decides this process's CPU floating-point results: the CPU, the kernels torch picked
    for it, the BLAS, the settings that override those choices, and the thread count. Two runs
    with equal ``key`` compute the same bits for the same inputs; different keys may not."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": _build_setting("BLAS_INFO"),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "threads": torch.get_num_threads(),
        "env": {name: os.environ.get(name) for name in NUMERICS_ENV},
    }
    pinned = ",".join(f"{k}={v}" for k, v in info["env"].items() if v and "THREADS" not in k)
    info["key"] = f"{info['cpu_capability']}/{info['blas']}/{pinned or 'unpinned'}"
    info["key"] += f"/threads={info['threads']}"
    return info


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "system": platform.system(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numerics": numerics(),
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
