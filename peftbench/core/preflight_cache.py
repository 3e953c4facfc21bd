"""The pre-flight checks' verdicts (the file checks of peftbench.core.experiments, the model
check of peftbench.core.validate), kept per experiment so that an unchanged experiment is not
checked again each time Snakemake builds the DAG.

Checking one adapter against the base model costs tens of milliseconds and, before that, the
import of torch, transformers and peft (seconds): paid on every ``snakemake`` call, a dry run of
500 experiments took a minute. A verdict (its problems and notes, in order) is stored under the
hash of everything it depends on:

- the checks' code (:func:`code_digest`: every module of peftbench and of the task's package, a
  superset of what they import, read without parsing) and :data:`FORMAT`;
- the versions of the libraries they run (:data:`LIBRARIES`) and of Python;
- the experiment: its folder path and name (messages name them) and the bytes of every file in
  its folder; its effective training params by what makes them (the task defaults, the merge
  mode and, for the file checks, the search grid and points): keying on the merged params
  themselves would need the merge's own checks, which import torch;
- for the model check, the base model's architecture: the task's ``base_model`` section and,
  for a model read from a local folder (a shipped architecture included), the bytes of its
  config files.

A hub model read through the Hugging Face cache has no local folder to hash: its model checks
run every time (:meth:`PreflightCache.model_key` gives None), as they did before this cache.

Entries are small JSON files written atomically (a temporary file renamed over the entry), so
concurrent Snakemake processes never read half an entry; an unreadable or malformed entry is
ignored (and rewritten by the next check). Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from peftbench.core import offline

#: Bump when the entry layout or what a verdict holds changes: old entries then never match.
FORMAT = 1

#: Where the workflow keeps verdicts, relative to its working directory (Snakemake's own state
#: folder: never under results/, and removed with it).
DEFAULT_FOLDER = Path(".snakemake/peftbench/preflight")

#: Libraries whose code the check runs (bitsandbytes: a quantized dtype is refused without it).
LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "diffusers",
    "huggingface_hub",
    "accelerate",
    "bitsandbytes",
)

#: Files of a local model folder that define its architecture (config.json, a pipeline's
#: transformer/config.json, remote code when trust_remote_code is set); weights never count.
ARCHITECTURE_SUFFIXES = (".json", ".py")


@cache
def library_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`LIBRARIES` (None when not installed)."""
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def code_digest(folders: list[Path]) -> str:
    """Hash of every Python file below ``folders`` (the package, an outside task package).

    Any edit there checks every experiment again once; the import closure the rules hash
    (peftbench.core.codehash) would spare that, but parsing it costs a quarter of a second on
    every DAG build, hundreds of times what hashing the bytes costs."""
    digest = hashlib.sha256()
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):
        for path in sorted(folder.rglob("*.py")):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _bytes_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder_files(folder: Path, suffixes: tuple[str, ...] | None = None) -> dict[str, str]:
    """Hash of each file below ``folder`` (by relative path), optionally only ``suffixes``."""
    if not folder.is_dir():
        return {}
    return {
        path.relative_to(folder).as_posix(): _bytes_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and (suffixes is None or path.suffix in suffixes)
    }


def experiment_inputs(root: Path | str, experiment: str) -> dict[str, Any]:
    """What a check of one experiment reads: its folder (messages name it) and its files' bytes
    (adapter config, training params; any other file too, to be safe)."""
    return {
        "experiments_dir": str(root),
        "experiment": experiment,
        "files": _folder_files(Path(root) / experiment),
    }


class PreflightCache:
    """Verdicts of the pre-flight checks in ``folder``; ``code``: :func:`code_digest` of the
    code that checks."""

    def __init__(self, folder: Path | str, code: str) -> None:
        self.folder = Path(folder)
        self.code = code
        self._architectures: dict[str, Any] = {}

    def architecture(self, task_cfg: Mapping[str, Any]) -> Any:
        """What the task's meta model is built from (None when it cannot be hashed locally):
        ``task_cfg`` as :func:`peftbench.core.offline.with_local_architecture` returns it."""
        model = task_cfg.get("base_model") or {}
        known = _digest(model)
        if known not in self._architectures:
            model_id = offline.hub_model_id(task_cfg)
            found: Any = {"base_model": model}
            if model_id is not None:
                local = Path(model_id).expanduser()
                found = (
                    {**found, "files": _folder_files(local, ARCHITECTURE_SUFFIXES)}
                    if local.is_dir()
                    else None
                )
            self._architectures[known] = found
        return self._architectures[known]

    def key(self, check: str, inputs: Mapping[str, Any]) -> str:
        """The entry of ``check`` (a name: which check) run on ``inputs`` (JSON-like: all that
        its verdict depends on besides the code, the libraries and Python)."""
        return _digest(
            {
                "format": FORMAT,
                "code": self.code,
                "libraries": library_versions(),
                "python": sys.version,
                "check": check,
                "inputs": inputs,
            }
        )

    def model_key(self, task_cfg: Mapping[str, Any], experiment: str) -> str | None:
        """The entry of the model-level check of ``experiment`` of ``task_cfg``; None when its
        verdict must not be kept (an architecture read through the hub). Its effective training
        params are keyed by what makes them: the task defaults, the merge mode and the files."""
        architecture = self.architecture(task_cfg)
        if architecture is None:
            return None
        inputs = {
            "architecture": architecture,
            "training": task_cfg["training"],
            "training_merge": task_cfg.get("training_merge", "deep"),
            **experiment_inputs(task_cfg["experiments_dir"], experiment),
        }
        return self.key("model", inputs)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str) -> tuple[list[str], list[str]] | None:
        """The stored (problems, notes) of ``key``; None when absent or unreadable."""
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None
        problems, notes = entry.get("problems"), entry.get("notes")
        lists = (problems, notes)
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in lists):
            return None
        return problems, notes

    def store(self, key: str, problems: list[str], notes: list[str]) -> None:
        """Keep a verdict; a folder that cannot be written only costs the next check."""
        entry = {"format": FORMAT, "problems": problems, "notes": notes}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(entry, out)
                os.replace(temporary, self._path(key))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            pass

    def problems(
        self, check: str, inputs: Mapping[str, Any], run: Callable[[], list[str]]
    ) -> list[str]:
        """The problems ``run()`` finds (a check without notes), from the cache when ``check``
        already ran on ``inputs``."""
        key = self.key(check, inputs)
        stored = self.load(key)
        if stored is not None:
            return stored[0]
        found = run()
        self.store(key, found, [])
        return found
