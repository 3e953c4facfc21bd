"""Where a run's files are: the names shared by the jobs that write them and the analysis that
reads them. Torch-free, so the report environment and the DAG builder can import it.

A run folder is ``<results>/<task>/runs/<method>/<name>/seed<seed>/``; it holds
:data:`RESULT_FILE` and the task's own files (its spec's ``item_file`` and ``samples_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Method and name of the base-model reference run (no fine-tuning).
BASE_METHOD, BASE_NAME = "base", "no-finetuning"

#: The result document of one run (``peftbench/schemas/result.schema.json``).
RESULT_FILE = "result.json"

#: The memory predicted for every experiment of a task before any run (``<results>/<task>/``;
#: written by rule estimate_memory, read by the summary).
ESTIMATE_FILE = "memory_estimate.json"

#: Architecture config files of the presets' hub models, one folder per model id, which the
#: memory estimate reads instead of downloading.
ARCHITECTURES = Path(__file__).resolve().parents[2] / "config" / "presets" / "architectures"


def run_dir(root: Path | str, task: str, experiment: str, seed: Any) -> Path:
    """Folder of one run below the results root (``<root>/<task>/runs/<experiment>/seed<seed>``)."""
    return Path(root) / task / "runs" / experiment / f"seed{int(seed)}"
