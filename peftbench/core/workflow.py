"""Glue for the Snakemake ``script:`` entry points in ``scripts/``."""

from __future__ import annotations

import atexit
import importlib.abc
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from peftbench.core import progress

#: The training stack: seconds to import (torch, transformers' models, peft, diffusers). Report
#: and aggregation jobs read result files only, so they run without it (by contract: task specs,
#: ``peftbench.analysis`` and ``peftbench.report`` are torch-free).
TRAINING_STACK = ("torch", "transformers", "peft", "diffusers", "accelerate")


#: The generic training rule (rules/train.smk): its jobs show console lines by default.
TRAIN_RULE = "train"


def redirect_log(snakemake: Any, progress_lines: bool | None = None) -> None:
    """Send stdout, stderr (warnings, tracebacks) and logging, libraries' own handlers included,
    to the rule's log file, progress bars as plain lines (:class:`progress.PlainLog`).

    With ``progress_lines`` (None: for the training rule's jobs), the job also writes a few
    lines to the terminal it inherited (:mod:`peftbench.core.progress`): started, training
    steps now and then, and at exit its outcome. That terminal is this process's stderr before
    the redirection: Snakemake's, also in a job forked by the local worker, which runs on the
    standard streams the job handed over."""
    if not snakemake.log:
        return
    terminal = sys.stderr
    raw = open(snakemake.log[0], "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - the job's
    stream = progress.PlainLog(raw)
    previous = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    sys.stdout = sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, force=True)
    _reroute_handlers(previous, stream)
    atexit.register(stream.finish)  # a last line without its newline
    rule = getattr(snakemake, "rule", None)
    wanted = progress_lines if progress_lines is not None else rule == TRAIN_RULE
    if wanted and progress.start(job_label(snakemake), terminal) is not None:
        atexit.register(_report_end, snakemake)  # runs before stream.finish: last in, first out


def _reroute_handlers(previous: set[int], stream: TextIO) -> None:
    """Point at ``stream`` every logging handler that writes to one of the streams (by id)
    ``previous``: transformers and diffusers give their loggers their own handler on the
    stderr of the moment they were imported, which for a job forked by the worker, or one that
    imported them before redirecting, is the terminal."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # placeholders have none
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and id(handler.stream) in previous
            ):
                handler.setStream(stream)


def job_label(snakemake: Any) -> str:
    """How a job's console lines start: ``math lora/rank8-qv seed0`` for a training run (its
    run id), else the rule and its wildcards (``math_base_model``)."""
    wildcards = snakemake.wildcards
    if getattr(snakemake, "rule", None) == TRAIN_RULE:
        return f"{wildcards.task} {wildcards.method}/{wildcards.name} seed{wildcards.seed}"
    return " ".join([snakemake.rule, *(str(value) for value in wildcards)])


def _report_end(snakemake: Any) -> None:
    """At exit, the job's end line unless its script wrote its own (``progress.finish``, the
    last thing a builder script does, so its absence means the job failed): a training run's
    status and headline quality, from its result.json (which a failed run writes too)."""
    console = progress.current()
    if console is None or console.finished:
        return
    log = snakemake.log[0]
    result = Path(snakemake.output.result) if snakemake.rule == TRAIN_RULE else None
    try:
        if result is None or not result.exists():
            progress.finish(f"see {log}", ok=False)
        else:
            outcome, ok = run_outcome(result, snakemake.wildcards.task)
            progress.finish(outcome if ok else f"{outcome}; see {log}", ok=ok)
    except Exception as exc:  # noqa: BLE001 - an end line must never fail a finished job
        progress.finish(f"no summary ({exc!r}); see {log}")


def run_outcome(result_json: Path, task: str) -> tuple[str, bool]:
    """``success, test_accuracy 0.325`` (the task's headline quality), or the first line of the
    error of a failed run, from its result.json; and whether the run succeeded."""
    from peftbench.tasks import registry  # the registry only: a task's spec is torch-free

    result = json.loads(result_json.read_text())
    status = result.get("status", "unknown")
    if status != "success":
        error = (result.get("error") or "").strip().splitlines()
        return (error[0][:160] if error else status), False
    quality = registry.get(task).quality
    key = quality.metric or quality.name
    value = result.get("metrics", {}).get(key)
    return (f"{status}, {key} {value:.3f}" if isinstance(value, int | float) else status), True


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
