"""Loading data sets and pinning hub revisions, for every task, through ``datasets``.

``path`` is either a Hub dataset id (only used by the real preset, which needs the network or a
warm Hugging Face cache) or a local file/directory, which is loaded fully offline:

* a ``.json``/``.jsonl``/``.parquet`` file is read with the matching ``datasets`` builder and is
  the whole split, so ``split`` is not consulted;
* a directory (e.g. a snapshot of the Hub repository) is handed to ``datasets`` itself, which
  reads its README configs or infers splits from file names, and ``split`` selects one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def is_local(path: str) -> bool:
    """Whether ``path`` names a local file/dir rather than a Hub id.

    Paths that look local but do not exist raise here, instead of being sent to the Hub as a
    bogus dataset id (which would fail later with a confusing network error).
    """
    p = Path(path).expanduser()
    if p.exists():
        return True
    if p.suffix.lower() in _BUILDERS or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"dataset file or directory not found: {path}")
    return False


def load_split(path: str, revision: str | None, split: str, config_name: str | None = None) -> Any:
    """Load one split of ``path`` as a ``datasets.Dataset``."""
    # Imported lazily: `datasets` is slow to import and only the data rules need it.
    import datasets

    if not is_local(path):
        return datasets.load_dataset(path, config_name, revision=revision, split=split)
    p = Path(path).expanduser()
    if p.is_dir():
        # A plain folder of files only has the "default" config; use the requested config only
        # when the folder (a Hub snapshot with README configs) declares it.
        configs = datasets.get_dataset_config_names(str(p))
        name = config_name if config_name in configs else None
        if name is None and configs != ["default"]:
            raise ValueError(f"{path}: config {config_name!r} not found; available: {configs}")
        return datasets.load_dataset(str(p), name, split=split)
    builder = _BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise ValueError(
            f"{path}: unsupported file type {p.suffix!r}; expected one of {sorted(_BUILDERS)}"
        )
    # A single data file is exposed by `datasets` as its "train" split whatever its role.
    return datasets.load_dataset(builder, data_files=str(p), split="train")


def columns(ds: Any, path: str, required: list[str]) -> dict[str, list[Any]]:
    """Return the ``required`` columns as Python lists, or name the missing one."""
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{path}: missing required column(s) {missing}; found columns {ds.column_names}"
        )
    return ds.select_columns(required).to_dict()


def load_text(
    path: str, revision: str | None, split: str, n: int, column: str = "text"
) -> list[str]:
    """The first ``n`` non-empty texts of ``column`` (the forgetting probe, e.g. finewiki).

    Hub corpora are streamed so that only ``n`` rows are downloaded.
    """
    if is_local(path):
        texts = columns(load_split(path, revision, split), path, [column])[column]
    else:
        import datasets

        stream = datasets.load_dataset(path, split=split, revision=revision, streaming=True)
        texts = []
        for row in stream:
            if column not in row:
                raise ValueError(f"{path}: missing required column '{column}'; found {sorted(row)}")
            texts.append(row[column])
            if len(texts) >= n:
                break
    texts = [t for t in texts if t and t.strip()][:n]
    if not texts:
        raise ValueError(f"{path}: no non-empty '{column}' rows for the forgetting probe")
    return texts


def resolve_revision(repo_id: str, revision: str | None, repo_type: str = "dataset") -> str | None:
    """Resolve a branch or tag to the commit sha it points at now, so that the data (or model)
    is loaded from, and recorded as, one immutable commit. Local paths resolve to None."""
    if Path(repo_id).expanduser().exists():
        return None
    from huggingface_hub import HfApi

    info = HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type)
    return info.sha
