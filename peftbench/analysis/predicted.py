"""Predicted GPU memory as the summary reads it, without torch.

The workflow's ``estimate_memory`` step (``scripts/estimate_memory.py``) predicts every
selected experiment's peak training memory before any run and writes
``results/<task>/memory_estimate.json`` with :func:`peftbench.core.estimate.write_estimates`:
``{task: [{"experiment": ..., "peak_bytes": ..., "error": ..., ...}, ...]}``. That module
imports torch, which the analysis layer must not, so this reads the same file as plain JSON.
Only ``experiment``, ``peak_bytes`` and ``error`` are read; other keys are ignored, so the
estimate's record can grow without an edit here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: The summary column of the prediction: its peak live-tensor memory in GB (1e9 bytes).
PREDICTED_COLUMN = "predicted_memory_gb"

#: (task, experiment) -> predicted peak in GB; None where the experiment could not be estimated.
Predictions = dict[tuple[str, str], float | None]


def _entry_gb(entry: Mapping[str, Any], source: str) -> float | None:
    """The predicted peak of one estimate record in GB (None when it failed or has none)."""
    if entry.get("error") is not None:
        return None
    peak = entry.get("peak_bytes")
    if peak is None:
        return None
    if isinstance(peak, bool) or not isinstance(peak, int | float) or peak < 0:
        raise ValueError(
            f"{source}: experiment {entry.get('experiment')!r}: peak_bytes is not a byte count: "
            f"{peak!r}"
        )
    return peak / 1e9


def parse_predictions(document: Any, source: str = "<estimates>") -> Predictions:
    """The predictions of one estimate document (what ``write_estimates`` wrote).

    Raises ValueError naming ``source`` when the document is not ``{task: [record, ...]}`` with
    an ``experiment`` name in every record.
    """
    if not isinstance(document, Mapping):
        raise ValueError(f"{source}: expected an object of tasks, got {type(document).__name__}")
    found: Predictions = {}
    for task, entries in document.items():
        if not isinstance(entries, list):
            raise ValueError(f"{source}: task {task!r}: expected a list of estimates")
        for entry in entries:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("experiment"), str):
                raise ValueError(f"{source}: task {task!r}: an estimate without an experiment")
            found[(str(task), entry["experiment"])] = _entry_gb(entry, source)
    return found


def read_predictions(paths: Iterable[Path | str] | Path | str) -> Predictions:
    """The predictions of every estimate file in ``paths`` (later files win on a repeat); one
    path alone is one file."""
    if isinstance(paths, str | Path):
        paths = [paths]
    found: Predictions = {}
    for path in map(Path, paths):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        found.update(parse_predictions(document, str(path)))
    return found
