"""The toy task's data: the fixture's points split into train/valid/test by a seeded shuffle."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from peftbench.core.config import file_hash
from peftbench.core.io import read_jsonl, write_json, write_jsonl

SPLITS = ("train", "valid", "test")


def prepare(data_cfg: dict[str, Any], out_dir: Path) -> None:
    """Write ``<split>.jsonl`` (records ``{"x": [x1, x2], "label": 0|1}``) and a manifest."""
    # The fixture is named relative to this package, so the task needs nothing outside it.
    fixture = Path(__file__).parent / data_cfg["fixture"]
    with open(fixture, newline="") as handle:
        rows = [
            {"x": [float(r["x1"]), float(r["x2"])], "label": int(r["label"])}
            for r in csv.DictReader(handle)
        ]
    order = np.random.default_rng(data_cfg["seed"]).permutation(len(rows))
    n_valid, n_test = data_cfg["valid_size"], data_cfg["test_size"]
    if n_valid + n_test >= len(rows):
        raise ValueError(f"{fixture}: {len(rows)} rows leave nothing to train on")
    parts = {
        "valid": order[:n_valid],
        "test": order[n_valid : n_valid + n_test],
        "train": order[n_valid + n_test :],
    }
    for split in SPLITS:
        write_jsonl(out_dir / f"{split}.jsonl", [rows[i] for i in parts[split]])
    rows_per_split = {split: len(parts[split]) for split in SPLITS}
    manifest = {"fixture": data_cfg["fixture"], "rows": rows_per_split}
    write_json(out_dir / "manifest.json", {**manifest, "data_hash": data_hash(out_dir)})


def load(data_dir: Path, split: str) -> tuple[list[list[float]], list[int]]:
    rows = read_jsonl(Path(data_dir) / f"{split}.jsonl")
    return [r["x"] for r in rows], [r["label"] for r in rows]


def data_hash(data_dir: Path) -> str:
    return file_hash([Path(data_dir) / f"{split}.jsonl" for split in SPLITS])
