"""Glue for the Snakemake ``script:`` entry points in ``scripts/``."""

from __future__ import annotations

import logging
import sys
from typing import Any


def redirect_log(snakemake: Any) -> None:
    """Send stdout, stderr (tqdm, warnings, tracebacks) and logging to the rule's log file."""
    if snakemake.log:
        stream = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115 - lives for the job
        sys.stdout = sys.stderr = stream
        logging.basicConfig(stream=stream, level=logging.INFO, force=True)
