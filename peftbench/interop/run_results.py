"""The run results an export reads: every valid ``result.json`` below a results folder, the
experiments a ``--select`` glob names, and of a search grid the point chosen on validation.

Shared by the exports that write one record per run: :mod:`~peftbench.interop.mlflow_export`
keeps every valid run, :mod:`~peftbench.interop.suite_export` leaves out (``exclude``) the tasks
and runs the published suite has no counterpart for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.analysis.aggregate import summarize, validate_result
from peftbench.analysis.search import grid_table, unchosen_runs
from peftbench.core.config import ConfigError
from peftbench.core.experiments import select
from peftbench.core.layout import RESULT_FILE


class ExportError(ValueError):
    """Nothing can be exported (no results folder, a filter that matches nothing)."""


def find_results(results: Path | str) -> list[Path]:
    """Every ``<task>/runs/<method>/<name>/seed<k>/result.json`` below ``results``, sorted."""
    results = Path(results)
    if not results.is_dir():
        raise ExportError(f"{results}: results folder does not exist")
    return sorted(results.glob(f"*/runs/*/*/seed*/{RESULT_FILE}"))


#: One run: its result file and the validated document in it.
Run = tuple[Path, dict[str, Any]]


@dataclass
class LoadedRuns:
    """What :func:`load_runs` found."""

    runs: list[Run] = field(default_factory=list)
    #: Result files that could not be read or are not valid results, with the reason.
    invalid: list[str] = field(default_factory=list)
    #: Valid runs left out, with the reason (grid points not chosen on validation).
    skipped: list[str] = field(default_factory=list)


def load_runs(
    results: Path | str,
    patterns: list[str] | None = None,
    all_points: bool = False,
    exclude: Callable[[dict[str, Any]], str | None] | None = None,
) -> LoadedRuns:
    """The valid runs below ``results`` (sorted by path) whose experiment id matches a glob of
    ``patterns`` (all when empty); of a search grid only the point chosen on validation
    (:mod:`peftbench.analysis.search`, the summary's rule) unless ``all_points``. A run for
    which ``exclude`` gives a reason is skipped with it before the patterns are matched.

    Raises :class:`ExportError` when ``results`` is not a folder, holds no result file, or a
    pattern matches no experiment.
    """
    paths = find_results(results)
    if not paths:
        raise ExportError(f"{results}: no run results (<task>/runs/<method>/<name>/seed<k>/)")
    found = LoadedRuns()
    for path in paths:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            validate_result(document, source=str(path))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            found.invalid.append(f"{path}: skipped, not a valid result file: {exc}")
            continue
        reason = exclude(document) if exclude is not None else None
        if reason:
            found.skipped.append(f"{path}: {reason}")
            continue
        found.runs.append((path, document))
    try:
        chosen = set(select(sorted({r["experiment"] for _, r in found.runs}), patterns, "--select"))
    except ConfigError as exc:
        raise ExportError(str(exc)) from exc
    found.runs = [(path, r) for path, r in found.runs if r["experiment"] in chosen]
    if not all_points and found.runs:
        grid = grid_table(summarize([r for _, r in found.runs], choose_points=False))
        dropped = unchosen_runs(grid)
        for path, result in found.runs:
            if (result["task"], result["experiment"]) in dropped:
                found.skipped.append(f"{path}: grid point not chosen on validation (--all-points)")
        found.runs = [
            (path, r) for path, r in found.runs if (r["task"], r["experiment"]) not in dropped
        ]
    return found
