"""Math task data preparation: every source ends up in the same prepared form, so training and
evaluation do not know whether they run the embedded default or MetaMathQA/GSM8K:

    <data_dir>/train.jsonl, valid.jsonl, test.jsonl   records {"query", "response", "answer"}
    <data_dir>/heldout.jsonl   forgetting probe: {"text"} (hub corpus) or {"query", "response"}
    <data_dir>/pretrain.jsonl                         embedded only: base-model pretraining set
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.core.config import file_hash
from peftbench.core.io import read_jsonl, write_json, write_jsonl
from peftbench.tasks.math import mathgen

DATA_FILES = ["train.jsonl", "valid.jsonl", "test.jsonl", "heldout.jsonl"]


def prepare_embedded(cfg: dict[str, Any], out: Path) -> None:
    """Generate disjoint splits: fine-tuning train/valid/test, pretraining and held-out text."""
    seed = cfg["seed"]
    test = mathgen.sample("finetune", cfg["test_size"], seed + 1)
    valid = mathgen.sample(
        "finetune", cfg["valid_size"], seed + 2, exclude={r["query"] for r in test}
    )
    held = {r["query"] for r in test + valid}
    train_rows = mathgen.sample("finetune", cfg["train_size"], seed + 3, exclude=held)
    heldout = mathgen.sample("pretrain", cfg["heldout_size"], seed + 4)
    pretrain = mathgen.sample(
        "pretrain", cfg["pretrain_size"], seed + 5, exclude={r["query"] for r in heldout}
    )
    write_jsonl(out / "pretrain.jsonl", pretrain)
    # Forgetting probe: the pretraining skill itself (response loss on unseen pretraining problems).
    write_jsonl(out / "heldout.jsonl", heldout)
    for name, rows in [("train", train_rows), ("valid", valid), ("test", test)]:
        write_jsonl(out / f"{name}.jsonl", rows)


def prepare_hub(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """MetaMathQA for training, GSM8K for validation and test, a text corpus for forgetting.

    Each revision is first resolved to a commit sha and that sha is loaded, so the manifest
    records the data actually used. Returns the split configs with the resolved revisions.
    """
    from peftbench.core import hub
    from peftbench.tasks.math import loaders

    used = {
        split: {**c, "revision": hub.resolve_revision(c["path"], c.get("revision"))}
        for split, c in cfg.items()
    }
    train_cfg, valid_cfg, test_cfg, held_cfg = (
        used[k] for k in ("train", "valid", "test", "heldout")
    )
    train_rows = loaders.load_metamathqa(
        train_cfg["path"],
        train_cfg["revision"],
        max_chars=train_cfg["max_chars"],
        max_rows=train_cfg.get("max_rows"),
    )
    valid_all = loaders.load_gsm8k(
        valid_cfg["path"], valid_cfg["revision"], valid_cfg.get("name", "main"), valid_cfg["split"]
    )
    valid = loaders.gsm8k_valid_subset(valid_all, valid_cfg["n"], valid_cfg["seed"])
    test = loaders.load_gsm8k(
        test_cfg["path"], test_cfg["revision"], test_cfg.get("name", "main"), test_cfg["split"]
    )
    texts = hub.load_text(
        held_cfg["path"],
        held_cfg["revision"],
        held_cfg["split"],
        held_cfg["n"],
        held_cfg.get("column", "text"),
    )
    write_jsonl(out / "heldout.jsonl", [{"text": t} for t in texts])
    for name, rows in [("train", train_rows), ("valid", valid), ("test", test)]:
        write_jsonl(out / f"{name}.jsonl", rows)
    return used


def prepare_data(data_cfg: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if data_cfg["source"] == "embedded":
        prepare_embedded(data_cfg["embedded"], out)
        used = data_cfg["embedded"]
    else:
        used = prepare_hub(data_cfg["hub"], out)
    for name in DATA_FILES:
        if not read_jsonl(out / name):
            raise ValueError(f"{out / name}: prepared split is empty; check the data config")
    manifest = {name: sum(1 for _ in open(out / name)) for name in DATA_FILES}
    write_json(
        out / "manifest.json",
        {
            "source": data_cfg["source"],
            "config": used,
            "rows": manifest,
            "data_hash": data_hash(out),
        },
    )


#: The task's data entry point (``TaskSpec.data_module``), called by the rule prepare_data.
prepare = prepare_data


def data_hash(data_dir: Path) -> str:
    return file_hash([Path(data_dir) / name for name in DATA_FILES])
