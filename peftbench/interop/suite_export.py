"""Write this workflow's run results in the published suite's result layout.

Every run folder ``<results>/<task>/runs/<method>/<name>/seed<k>/result.json`` of a task whose
spec maps to a suite task (its ``published`` format, :data:`~.suite_document.SUITE_TASKS`)
becomes one document (:func:`~.suite_document.result_document`) at the place the suite's runner
would have written it, below ``<out>/<suite task>/`` (``MetaMathQA`` for math, ``image-gen`` for
image), so that ``<out>`` can stand in for the suite's ``method_comparison`` folder:

* a successful run: ``results/<method>--<name>.json``, the folder the suite's app reads;
* a failed run (the suite does not log those): ``temporary_results/`` (the suite's folder for
  runs outside its published set), with the run's start time in the name, as the suite writes;
* an experiment with more than one exported seed gets ``--seed<k>`` after its name (the suite
  runs one seed; each document's ``run_info.train_config.seed`` says which).

The base-model reference run has no counterpart in the suite and is left out. A document that
exists with other contents is not overwritten without ``force``; other files already in those
folders are listed, not removed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.core.io import atomic_path
from peftbench.core.layout import BASE_METHOD
from peftbench.interop.run_results import load_runs
from peftbench.interop.suite_document import SUITE_TASKS, result_document
from peftbench.tasks import registry

FORMAT = "hf-method-comparison"
RESULTS, TEMPORARY = "results", "temporary_results"


@dataclass
class ExportReport:
    """What :func:`export_results` wrote and left out."""

    out: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    #: Result files that could not be read or are not valid results.
    invalid: list[str] = field(default_factory=list)
    #: Valid runs without a counterpart in the suite (the base-model reference, another task).
    skipped: list[str] = field(default_factory=list)
    #: Suite field -> number of documents written without a value for it.
    unmeasured: Counter = field(default_factory=Counter)
    #: Suite field -> (number of documents, what stands in for it) under ``fill_for_app``.
    filled: dict[str, list[Any]] = field(default_factory=dict)
    #: Documents of successful runs the suite's app cannot load, and the fields why.
    app_missing: dict[str, list[str]] = field(default_factory=dict)
    #: Other JSON files in the folders written to (an earlier export's, the suite's own).
    others: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.invalid

    def lines(self) -> list[str]:
        lines = [f"wrote {path}" for path in self.written]
        lines += [f"unchanged {path}" for path in self.unchanged]
        lines += [f"REFUSED {problem}" for problem in self.refused]
        lines += [f"INVALID {entry}" for entry in self.invalid]
        lines += [f"skipped {entry}" for entry in self.skipped]
        if self.unmeasured:
            lines.append(
                "Fields written without a value (NaN or null; not measured or not recorded by "
                "this workflow), with the number of documents:"
            )
            lines += [f"  {path}: {n}" for path, n in sorted(self.unmeasured.items())]
        if self.filled:
            lines.append("Stand-ins written for the suite's app (--fill-for-app):")
            lines += [f"  {path}: {n} x {how}" for path, (n, how) in sorted(self.filled.items())]
        if self.app_missing:
            fields = sorted({f for paths in self.app_missing.values() for f in paths})
            lines.append(
                f"The suite's app cannot load {len(self.app_missing)} document(s): it needs "
                f"integers in {', '.join(fields)}, which were not measured; --fill-for-app "
                "writes stand-ins (each named in the document's peftbench.filled)."
            )
        if self.others:
            lines.append(
                f"{len(self.others)} other JSON file(s) in the folders written to (not from this "
                f"export; left as they are): {', '.join(self.others[:5])}"
                + (" ..." if len(self.others) > 5 else "")
            )
        lines.append(
            f"{len(self.written)} document(s) written to {self.out}, {len(self.unchanged)} "
            f"unchanged, {len(self.refused)} refused, {len(self.invalid)} invalid, "
            f"{len(self.skipped)} skipped"
        )
        return lines


def _no_counterpart(result: dict[str, Any]) -> str | None:
    """Why the suite has no counterpart for ``result`` (its task, the base reference), if so."""
    fmt = registry.get(result["task"]).published
    if fmt is None or fmt.name not in SUITE_TASKS:
        return f"task {result['task']} has no suite counterpart"
    if result["method"] == BASE_METHOD:
        return "the base-model reference has no suite counterpart"
    return None


def _file_name(result: dict[str, Any], several_seeds: bool) -> Path:
    """Where the suite keeps the run's document, below its task folder."""
    stem = result["experiment"].replace("/", "--")
    if several_seeds:
        stem += f"--seed{result['seed']}"
    if result["status"] == "success":
        return Path(RESULTS) / f"{stem}.json"
    created = str(result["provenance"].get("created_at") or "unknown-time").replace(":", "-")
    return Path(TEMPORARY) / f"{stem}--{created}.json"


def _record(report: ExportReport, document: dict[str, Any], name: str) -> None:
    block = document["peftbench"]
    report.unmeasured.update(block["unmeasured"])
    for path, how in block["filled"].items():
        report.filled.setdefault(path, [0, how])[0] += 1
    if block["app_missing"]:
        report.app_missing[name] = block["app_missing"]


def export_results(
    results: Path | str,
    out: Path | str,
    *,
    patterns: list[str] | None = None,
    fill_for_app: bool = False,
    force: bool = False,
    all_points: bool = False,
) -> ExportReport:
    """Export every run below ``results`` (or those whose experiment id matches a glob of
    ``patterns``) into ``out`` in the suite's layout; see the module docstring. Of a search
    grid only the point chosen on validation is exported, unless ``all_points``."""
    results, out = Path(results), Path(out)
    report = ExportReport(out=out)
    found = load_runs(results, patterns, all_points, exclude=_no_counterpart)
    runs = found.runs
    report.invalid += found.invalid
    report.skipped += found.skipped
    seeds = defaultdict(set)
    for _, result in runs:
        seeds[result["task"], result["experiment"]].add(result["seed"])
    folders, targets = set(), set()
    for path, result in runs:
        spec = registry.get(result["task"])
        folder = out / SUITE_TASKS[spec.published.name].folder
        target = folder / _file_name(result, len(seeds[result["task"], result["experiment"]]) > 1)
        folders.add(target.parent)
        targets.add(str(target))
        document = result_document(
            result, spec, fill_for_app=fill_for_app, source=str(path.relative_to(results))
        )
        # NaN as the suite writes it (a bare token, which Python's json reads back).
        text = json.dumps(document, indent=2) + "\n"
        if target.exists() and target.read_text(encoding="utf-8") == text:
            report.unchanged.append(str(target))
        elif target.exists() and not force:
            report.refused.append(f"{target}: exists with other contents; pass --force")
            continue
        else:
            with atomic_path(target) as tmp:
                tmp.write_text(text, encoding="utf-8")
            report.written.append(str(target))
        _record(report, document, str(target))
    report.others = sorted(
        str(p) for folder in folders for p in folder.glob("*.json") if str(p) not in targets
    )
    return report
