"""Glue for the Snakemake ``script:`` entry points in ``scripts/``."""

from __future__ import annotations

import importlib.abc
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: The training stack: seconds to import (torch, transformers' models, peft, diffusers). Report
#: and aggregation jobs read result files only, so they run without it (by contract: task specs,
#: ``peftbench.analysis`` and ``peftbench.report`` are torch-free).
TRAINING_STACK = ("torch", "transformers", "peft", "diffusers", "accelerate")


def redirect_log(snakemake: Any) -> None:
    """Send stdout, stderr (tqdm, warnings, tracebacks) and logging to the rule's log file."""
    if snakemake.log:
        stream = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115 - lives for the job
        sys.stdout = sys.stderr = stream
        logging.basicConfig(stream=stream, level=logging.INFO, force=True)


def register_task_packages(snakemake: Any) -> None:
    """Make the config's tasks outside the package (``task_packages``) known to the registry in
    a job, as rules/common.smk does while the DAG is built: folders are relative to the
    workflow folder, the parent of ``scripts/``."""
    # The registry only (no task): it imports a task's spec when asked for it.
    from peftbench.tasks import registry

    workflow_dir = Path(snakemake.scriptdir).parent
    registry.register_packages(snakemake.config.get("task_packages"), workflow_dir)


class _Forbidden(importlib.abc.MetaPathFinder):
    """Refuses the packages ``names`` (and their submodules), naming the job's contract."""

    def __init__(self, names: tuple[str, ...], job: str) -> None:
        self.names, self.job = names, job

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            # ModuleNotFoundError: a library that probes for an optional torch
            # (``try: import torch``) carries on as if it were absent, which is what we want.
            raise ModuleNotFoundError(
                f"peftbench: the {self.job} job must not import {fullname!r}: it is torch-free "
                f"by contract (no {', '.join(self.names)}), so it starts in a fraction of a second "
                "and runs where the training stack is not installed. Import it lazily in the "
                "training code instead (the traceback shows who asked for it).",
                name=fullname,
            )


def forbid_imports(job: str, names: Iterable[str] = TRAINING_STACK) -> None:
    """Make importing any of ``names`` in this process an error from now on: a run-time check
    of a job's import contract (report and aggregation jobs stay torch-free). Raises at once if
    one of them is already imported."""
    names = tuple(names)
    already = sorted(name for name in names if name in sys.modules)
    if already:
        raise RuntimeError(
            f"peftbench: the {job} job must not import {', '.join(already)}, but it is already "
            "imported; look for an eager import above the forbid_imports call"
        )
    if not any(isinstance(finder, _Forbidden) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Forbidden(names, job))


#: Device files of a GPU driver (NVIDIA, ROCm, WSL): without any, torch can see no GPU.
_GPU_DEVICE_FILES = (
    "/dev/nvidiactl",
    "/dev/nvidia0",
    "/dev/kfd",
    "/dev/dxg",
    "/proc/driver/nvidia",
)


def gpu_device_present() -> bool:
    """Whether this machine may have a GPU torch can use: False on a Linux machine without any
    GPU driver device file, which the DAG can tell without importing torch (a second or more
    of every plan); True elsewhere (ask torch)."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(path) for path in _GPU_DEVICE_FILES)
