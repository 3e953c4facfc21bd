"""Atomic file output: a killed job never leaves a half-written result behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary file is in the same folder so ``os.replace`` is an atomic rename: readers
    (and Snakemake) never see a half-written output. It keeps the final suffix so writers
    that infer the format from the extension still work. On error it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name that the writer itself creates (unlike mkstemp) gets normal permissions.
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_jsonl(path: Path | str) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path | str, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; rename it onto ``path`` when the block succeeds.

    A folder output (a saved model, a data set) is then either complete or absent; on error
    the temporary folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove(path: Path) -> None:
    """Remove a file, a link or a folder tree; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def clear_dir(folder: Path | str, keep: Collection[str] = ()) -> None:
    """Remove every entry of ``folder`` but those named in ``keep``."""
    for entry in Path(folder).iterdir():
        if entry.name not in keep:
            remove(entry)


@contextmanager
def staged_dir(final: Path | str, last: str, keep: Collection[str] = ()) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``final``; when the block succeeds, ``final`` holds
    exactly its entries, ``last`` moved in after all the others (plus ``keep`` entries it had).

    For an output of several files whose ``last`` one is what Snakemake waits for (a run folder:
    adapter/, per-item file, images, then result.json): every move is an atomic rename on the
    same file system, and ``last`` appears only when everything else is in place, so its presence
    means the folder is complete. Other entries already in ``final`` (the files of an earlier run)
    are removed first, except those named in ``keep`` (a resumable checkpoint). If the block or a
    move fails, nothing staged stays behind: the entries moved so far are removed again, the
    temporary folder always is, and the error propagates. A temporary folder that a killed
    attempt left next to ``final`` is removed when the next attempt starts.
    """
    final = Path(final)
    final.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[0-9a-f]{{32}}\.tmp")
    for stale in final.parent.iterdir():
        if pattern.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        _publish(tmp, final, last, keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path, last: str, keep: Collection[str]) -> None:
    """Move the entries of ``tmp`` into ``final`` (see :func:`staged_dir`), ``last`` last."""
    staged = sorted(tmp.iterdir(), key=lambda entry: (entry.name == last, entry.name))
    clear_dir(final, keep)
    moved: list[Path] = []
    try:
        for entry in staged:
            os.replace(entry, final / entry.name)
            moved.append(final / entry.name)
    except BaseException:
        # Part of an output is no output: take back what was moved (as far as possible).
        for path in moved:
            with contextlib.suppress(OSError):
                remove(path)
        raise
