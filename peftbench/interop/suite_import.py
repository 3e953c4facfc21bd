"""Copy the published suite's experiment folders into this workflow's experiments layout.

The suite keeps an experiment in ``experiments/<method>/<name>/`` with an
``adapter_config.json`` and/or a ``training_params.json``; so does this workflow
(:mod:`peftbench.core.experiments`), and the experiment id ``<method>/<name>`` is kept as the
suite wrote it, so that published and own rows of the same experiment line up. What is converted,
and why:

* **The files are copied byte for byte**, as the suite wrote them. Training parameters are
  overrides of the suite's defaults, and a preset that reproduces the suite merges them as the
  suite does (``training_merge: shallow``). What this workflow does not support (a training key,
  an adapter-config key of another peft version) is left for the dry run to judge and report
  with its own message; the import does not guess.
* **A folder without an adapter config** is full fine-tuning in the suite (its runner falls back
  to it). Outside ``full-finetuning/`` this workflow asks for that to be explicit, so the import
  adds the ``FULL_FINETUNING`` marker file.

Every folder is checked with the same rules the workflow applies
(:func:`peftbench.core.experiments.check_folder`), on exactly the files that would be written; a
folder that breaks them (a stray or misspelled file, a nested folder, a reserved or unusable
name, a full fine-tuning folder with an adapter config, invalid JSON) is refused with the reason
and nothing of it is written. An existing folder with other contents is never overwritten without
``force``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from peftbench.core.config import ConfigError, read_json_object
from peftbench.core.experiments import (
    ADAPTER_CONFIG,
    FULL_FINETUNING_MARKER,
    FULL_FINETUNING_METHOD,
    TRAINING_PARAMS,
    check_folder,
    check_root,
    discover,
    select,
)
from peftbench.core.io import atomic_dir

#: Files the suite keeps next to its ``experiments/`` folder (a task folder, not the experiments).
_SUITE_TASK_FILES = ("default_training_params.json", "run.py")


class ImportSourceError(ValueError):
    """The import cannot start (a missing or wrong folder, a filter that matches nothing)."""


@dataclass
class ImportReport:
    """What :func:`import_experiments` did, experiment by experiment."""

    source: Path
    into: Path
    dry_run: bool = False
    copied: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: Experiment -> why it was not imported.
    refused: dict[str, list[str]] = field(default_factory=dict)
    #: Entries of the source that belong to no experiment (not imported).
    skipped: list[str] = field(default_factory=list)
    #: Experiment -> what was converted.
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.refused

    def lines(self) -> list[str]:
        """The report as text lines, one per experiment and note."""
        verb = "would be " if self.dry_run else ""
        lines = []
        for label, names in (
            (f"{verb}copied", self.copied),
            (f"{verb}replaced (--force)", self.replaced),
            ("unchanged (already there, same files)", self.unchanged),
        ):
            lines += [f"{label}: {name}" for name in names]
            lines += [f"  note: {note}" for name in names for note in self.notes.get(name, [])]
        for name, problems in self.refused.items():
            lines.append(f"REFUSED: {name}")
            lines += [f"  {problem}" for problem in problems]
        lines += [f"skipped: {entry}" for entry in self.skipped]
        done = len(self.copied) + len(self.replaced)
        lines.append(
            f"{done} experiment(s) {verb}imported from {self.source} into {self.into}, "
            f"{len(self.unchanged)} unchanged, {len(self.refused)} refused, "
            f"{len(self.skipped)} other entr{'y' if len(self.skipped) == 1 else 'ies'} skipped"
        )
        return lines


def _check_source(source: Path, into: Path) -> None:
    if not source.exists():
        raise ImportSourceError(f"{source}: suite experiments folder does not exist")
    if not source.is_dir():
        raise ImportSourceError(f"{source}: not a folder (expected the suite's experiments/)")
    if (source / "experiments").is_dir() and any((source / f).exists() for f in _SUITE_TASK_FILES):
        raise ImportSourceError(
            f"{source}: this is a suite task folder; pass its experiments folder, "
            f"{source / 'experiments'}"
        )
    if into.exists() and not into.is_dir():
        raise ImportSourceError(f"{into}: --into is a file, not an experiments folder")
    resolved, target = source.resolve(), into.resolve()
    if target == resolved or resolved in target.parents:
        raise ImportSourceError(f"{into}: --into must not be the source folder or inside it")


def _stage(source: Path, stage: Path, experiment: str) -> None:
    """Copy the visible entries of the source folder into ``stage``, as they are: files by
    content, folders and broken links as such, so :func:`check_folder` sees what is there."""
    folder, target = source / experiment, stage / experiment
    target.mkdir(parents=True)
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue  # .DS_Store and the like: not looked at by the workflow either
        if entry.is_symlink() and not entry.exists():
            os.symlink(os.readlink(entry), target / entry.name)
        elif entry.is_dir():
            (target / entry.name).mkdir()
        else:
            shutil.copyfile(entry, target / entry.name)


def _convert(stage: Path, experiment: str) -> tuple[list[str], list[str]]:
    """Convert the staged folder in place; returns ``(problems, notes)``."""
    folder = stage / experiment
    notes = []
    names = {p.name for p in folder.iterdir()}
    method = experiment.split("/")[0]
    implicit_full = (
        ADAPTER_CONFIG not in names
        and TRAINING_PARAMS in names
        and FULL_FINETUNING_MARKER not in names
        and method != FULL_FINETUNING_METHOD
    )
    if implicit_full:
        (folder / FULL_FINETUNING_MARKER).write_text(
            "Full fine-tuning: the suite runs a folder without adapter_config.json this way.\n"
        )
        notes.append(f"no {ADAPTER_CONFIG}: added the {FULL_FINETUNING_MARKER} marker file")
    problems = check_folder(stage, experiment)
    if problems:
        return problems, notes
    for name in (ADAPTER_CONFIG, TRAINING_PARAMS):
        if (folder / name).exists():
            try:
                read_json_object(folder / name)
            except ConfigError as exc:
                problems.append(str(exc))
    return problems, notes


def _contents(folder: Path) -> dict[str, bytes] | None:
    """Visible files of ``folder`` by name; None when it holds anything but plain files."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if any(p.is_dir() or not p.is_file() for p in entries):
        return None
    return {p.name: p.read_bytes() for p in entries}


def _outcome(target: Path, files: dict[str, bytes], force: bool) -> tuple[str, str | None]:
    """``(kind, problem)``: kind ``copied``, ``replaced``, ``unchanged`` or ``refused`` (and
    then the problem) for writing ``files`` as the folder ``target``."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        return "refused", f"{target}: exists and is not a folder; remove it"
    existing = _contents(target) if target.exists() else {}
    if existing == {}:
        return "copied", None  # an empty folder is as good as none
    if existing == files:
        return "unchanged", None
    if not force:
        return "refused", (
            f"{target}: exists with other contents; pass --force to replace the whole folder"
        )
    return "replaced", None


def _write(target: Path, files: dict[str, bytes]) -> None:
    with atomic_dir(target) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)


def import_experiments(
    source: Path | str,
    into: Path | str,
    patterns: list[str] | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Import the experiment folders of the suite's ``source`` (``.../experiments``) into
    ``into``, keeping their ids; ``patterns`` (globs on ``<method>/<name>``) select some.

    Raises ImportSourceError when nothing can be imported at all; a bad or clashing folder is
    refused in the report and the others are imported.
    """
    source, into = Path(source), Path(into)
    _check_source(source, into)
    experiments = discover(source)
    if not experiments:
        raise ImportSourceError(
            f"{source}: no experiment folders <method>/<name>/ found (pass the suite's "
            "MetaMathQA/experiments or image-gen/experiments folder)"
        )
    try:
        experiments = select(experiments, patterns, where="--select")
    except ConfigError as exc:
        raise ImportSourceError(str(exc)) from exc
    report = ImportReport(source=source, into=into, dry_run=dry_run)
    report.skipped = check_root(source)
    with tempfile.TemporaryDirectory(prefix="peftbench-import-") as tmp:
        stage = Path(tmp)
        for experiment in experiments:
            try:
                _stage(source, stage, experiment)
            except OSError as exc:  # an unreadable file: that folder only
                report.refused[experiment] = [f"{source / experiment}: cannot read: {exc}"]
                continue
            problems, notes = _convert(stage, experiment)
            if problems:
                # The checks ran on the staged copy: name the source's files.
                report.refused[experiment] = [p.replace(str(stage), str(source)) for p in problems]
                continue
            report.notes[experiment] = notes
            files = _contents(stage / experiment) or {}
            kind, problem = _outcome(into / experiment, files, force)
            if problem is not None:
                report.refused[experiment] = [problem]
                continue
            getattr(report, kind).append(experiment)
            if kind != "unchanged" and not dry_run:
                _write(into / experiment, files)
    return report
