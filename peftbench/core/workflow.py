"""Glue for the Snakemake ``script:`` entry points in ``scripts/``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any


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
