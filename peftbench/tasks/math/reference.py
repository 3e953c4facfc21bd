"""What every math run of a task would compute identically, computed once (rule
math_base_reference) and read back by the training jobs: the tokenized training and held-out
examples, and the base model's held-out loss before fine-tuning (``heldout_loss_before``).

A run takes each part only when everything that part depends on matches its own: the training
keys in :data:`TOKEN_KEYS` (tokenization) or :data:`LOSS_KEYS` (the loss), the data and base
model hashes, the libraries and, for the loss, the device and thread count (a CPU matmul's
summation order follows the threads). Anything else (an experiment with its own
``max_seq_length``, a reference built on another machine) is computed inline, as before, so a
run's numbers do not depend on whether it used the reference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.core.io import read_jsonl, write_json
from peftbench.tasks.math import REFERENCE_DIR

__all__ = ["LOSS_KEYS", "REFERENCE_DIR", "TOKEN_KEYS", "Reference", "build_reference", "settings"]

if TYPE_CHECKING:
    import torch

# torch and numpy are imported where used: rules.smk reads this module while the DAG is built.
MANIFEST = "manifest.json"
#: Training keys the tokenized examples depend on.
TOKEN_KEYS = ("query_template", "max_seq_length", "train_on_prompt")
#: Training keys the held-out loss depends on (model loading, batching and its examples).
LOSS_KEYS = (*TOKEN_KEYS, "batch_size", "dtype", "attn_implementation")
_PARTS = ("train", "heldout")


def settings(params: dict[str, Any], keys: tuple[str, ...] = LOSS_KEYS) -> dict[str, Any]:
    """The values of ``keys`` in ``params`` (a missing key is None, as ``params.get`` reads it)."""
    return {key: params.get(key) for key in keys}


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    """What a forward pass's floats depend on beyond the model and its inputs."""
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": threads,
    }


def _save_examples(path: Path, examples: list[dict]) -> None:
    # Flat int arrays with offsets: loading 370,000 MetaMathQA rows stays a fraction of a second.
    import numpy as np

    arrays = {}
    for key in ("input_ids", "labels"):
        rows = [e[key] for e in examples]
        arrays[key] = np.fromiter((t for r in rows for t in r), dtype=np.int64)
        arrays[f"{key}_offsets"] = np.cumsum([0, *map(len, rows)], dtype=np.int64)
    np.savez(path, **arrays)


def _load_examples(path: Path) -> list[dict]:
    import numpy as np

    with np.load(path) as data:
        columns = {}
        for key in ("input_ids", "labels"):
            flat, offsets = data[key].tolist(), data[f"{key}_offsets"].tolist()
            columns[key] = [flat[a:b] for a, b in zip(offsets, offsets[1:], strict=False)]
    return [
        {"input_ids": ids, "labels": labels}
        for ids, labels in zip(columns["input_ids"], columns["labels"], strict=True)
    ]


class Reference:
    """A built reference folder, or none (``folder`` None): every lookup then returns None."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        path = folder / MANIFEST if folder else None
        self.manifest: dict[str, Any] = (
            json.loads(path.read_text("utf-8")) if path and path.is_file() else {}
        )

    def _matches(self, params: dict[str, Any], keys: tuple[str, ...], identity: dict) -> bool:
        m = self.manifest
        return (
            bool(m)
            and settings(m["settings"], keys) == settings(params, keys)
            and all(m.get(key) == value for key, value in identity.items())
        )

    def examples(
        self, part: str, params: dict[str, Any], data_hash: str, base_hash: str
    ) -> list[dict] | None:
        """The tokenized ``part`` ("train" or "heldout") when it was tokenized as ``params``
        would tokenize it; else None."""
        identity = {"data_hash": data_hash, "base_model_hash": base_hash}
        if not self._matches(params, TOKEN_KEYS, identity):
            return None
        return _load_examples(self.folder / f"{part}.npz")

    def heldout_loss_before(
        self, params: dict[str, Any], data_hash: str, base_hash: str, env: dict[str, Any]
    ) -> float | None:
        """The base model's held-out loss when it was computed as this run would; else None."""
        identity = {"data_hash": data_hash, "base_model_hash": base_hash, "environment": env}
        if not self._matches(params, LOSS_KEYS, identity):
            return None
        return self.manifest["heldout_loss_before"]


def build_reference(ctx: Any) -> dict[str, Any]:
    """Compute and write the reference for a :class:`~peftbench.core.runs.RunContext` whose
    ``params`` are the task's training defaults (``out_dir`` is the reference folder). The same
    calls as a run makes, in the same order, so the values are the ones a run would compute."""
    import torch
    from transformers import set_seed

    from peftbench.core.runs import pick_device
    from peftbench.core.train import encode_rows
    from peftbench.tasks.math.data import data_hash
    from peftbench.tasks.math.evaluate import heldout_loss
    from peftbench.tasks.math.run import encode_heldout, load_base

    params, data_dir, out = ctx.params, ctx.inputs["data"], ctx.out_dir
    torch.set_num_threads(ctx.threads)
    set_seed(ctx.seed)
    device = pick_device()
    t0 = time.perf_counter()
    tokenizer, model, identity = load_base(
        ctx.task_cfg["base_model"], ctx.input("base"), params, device
    )
    heldout = [encode_heldout(tokenizer, r, params) for r in read_jsonl(data_dir / "heldout.jsonl")]
    train_examples = encode_rows(tokenizer, read_jsonl(data_dir / "train.jsonl"), params)
    loss = heldout_loss(model, heldout, params["batch_size"], tokenizer.pad_token_id, device)
    out.mkdir(parents=True, exist_ok=True)
    _save_examples(out / "train.npz", train_examples)
    _save_examples(out / "heldout.npz", heldout)
    manifest = {
        "settings": settings(params),
        "data_hash": data_hash(data_dir),
        "base_model_hash": identity,
        "environment": environment(device, ctx.threads),
        "heldout_loss_before": loss,
        "rows": {"train": len(train_examples), "heldout": len(heldout)},
        "build_time_s": time.perf_counter() - t0,
    }
    write_json(out / MANIFEST, manifest)
    return manifest
