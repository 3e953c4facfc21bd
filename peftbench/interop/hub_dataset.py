"""Export the summary table as a Hugging Face Hub dataset folder
(``peftbench export --to hub-dataset FOLDER``).

The folder holds what a dataset repository on the Hub holds, ready to upload as it is
(``hf upload <user>/<name> FOLDER . --repo-type dataset``, or ``HfApi().upload_folder``):

* ``data/summary.parquet``: the tidy summary table (``results/summary.parquet``, the workflow's
  rule summary: one row per experiment x seed of this run, with the points chosen on
  validation, plus the imported published results), every column as the workflow wrote it;
* ``README.md``: the dataset card, its YAML metadata naming that file as the ``train`` split of
  the ``default`` config (so ``datasets.load_dataset`` and the Hub's viewer read it), with what
  the table holds, where it came from (tasks, sources, package versions, code revisions) and
  what every column means (:mod:`peftbench.analysis.glossary`).

The card holds no export time, so exporting the same table twice changes nothing; when either
file exists with other contents, nothing is written without ``force``. Other files in the
folder are listed and left as they are.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from peftbench.analysis.glossary import lookup
from peftbench.analysis.summary import SOURCE_THIS_RUN, read_summary
from peftbench.core.config import ConfigError
from peftbench.core.experiments import select
from peftbench.core.io import atomic_path
from peftbench.interop.run_results import ExportError

TARGET = "hub-dataset"
DATA_FILE, CARD_FILE = "data/summary.parquet", "README.md"
SPLIT = "train"  # the Hub's name for the one split of a dataset that has one


@dataclass
class HubDatasetReport:
    """What :func:`export_hub_dataset` wrote and left alone."""

    out: Path
    rows: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    #: Files in the folder that this export did not write.
    others: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused

    def lines(self) -> list[str]:
        lines = [f"wrote {path}" for path in self.written]
        lines += [f"unchanged {path}" for path in self.unchanged]
        lines += [f"REFUSED {problem}" for problem in self.refused]
        if self.others:
            lines.append(
                f"{len(self.others)} other file(s) in {self.out} (not from this export; left as "
                f"they are, and uploaded with the folder): {', '.join(self.others[:5])}"
                + (" ..." if len(self.others) > 5 else "")
            )
        lines.append(
            f"{self.rows} row(s) in {self.out / DATA_FILE}; {len(self.written)} file(s) written, "
            f"{len(self.unchanged)} unchanged, {len(self.refused)} refused"
        )
        return lines


def _size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a number of rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < limit:
            return name
    return "100K<n<1M"


def _cell(text: str) -> str:
    """Text for a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _values(table: pd.DataFrame, column: str) -> str:
    """The distinct values of a column, sorted, or "not recorded"."""
    if column not in table.columns:
        return "not recorded"
    values = sorted({str(v) for v in table[column].dropna()})
    return ", ".join(values) if values else "not recorded"


def card_metadata(table: pd.DataFrame, license_id: str | None = None) -> dict:
    """The card's YAML metadata (the Hub's dataset card fields)."""
    metadata: dict = {"pretty_name": "peftbench results"}
    if license_id:
        metadata["license"] = license_id
    metadata |= {
        "tags": ["peft", "peftbench", "benchmark", "parameter-efficient-fine-tuning", "tabular"],
        "size_categories": [_size_category(len(table))],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": SPLIT, "path": DATA_FILE}],
            }
        ],
    }
    return metadata


def card_text(table: pd.DataFrame, license_id: str | None = None) -> str:
    """The dataset card (README.md): YAML metadata, then what the table is, where it came from
    and what its columns mean."""
    metadata = yaml.safe_dump(card_metadata(table, license_id), sort_keys=False)
    counts = table.groupby(["task", "source"], dropna=False).size()
    composition = "\n".join(
        f"| {_cell(task)} | {_cell(source)} | {n} | "
        f"{table.loc[(table['task'] == task) & (table['source'] == source), 'experiment'].nunique()}"
        " |"
        for (task, source), n in counts.items()
    )
    failed = int((table["status"] != "success").sum())
    own = table[table["source"] == SOURCE_THIS_RUN]
    columns = "\n".join(
        f"| `{name}` | {_cell(column.description) if (column := lookup(name)) else ''} |"
        for name in table.columns
    )
    license_note = (
        ""
        if license_id
        else "\nNo license is set: add one to the YAML header (`license:`) before publishing, "
        "or pass `--license` to the export.\n"
    )
    return f"""---
{metadata}---

# peftbench results

Parameter-efficient fine-tuning (PEFT) methods compared on quality, memory and time by
peftbench, a Snakemake workflow: its summary table, one row per experiment and seed,
{len(table)} rows ({failed} of failed runs: listed, never on a frontier). An experiment with
a hyperparameter grid is represented by the point chosen on validation quality
(`search_point`). `on_frontier` marks the Pareto frontier of each task and source (quality
up, training memory down).

| task | source | rows | experiments |
| --- | --- | --- | --- |
{composition}

Provenance of this workflow's runs (the published rows' is in their own columns):

* PEFT: {_values(own, "peft_version")}; PyTorch: {_values(own, "torch_version")};
  Transformers: {_values(own, "transformers_version")}
* devices: {_values(own, "device")}; code revisions: {_values(own, "code_revision")}
{license_note}
## Use

```python
from datasets import load_dataset

rows = load_dataset("<user>/<name>", split="{SPLIT}")  # once uploaded
rows = load_dataset("parquet", data_files="{DATA_FILE}", split="{SPLIT}")  # this folder
```

Upload this folder as it is: `hf upload <user>/<name> . . --repo-type dataset` (or
`huggingface_hub.HfApi().upload_folder(folder_path=".", repo_id="<user>/<name>",
repo_type="dataset")`).

## Columns

Units: GB = 1e9 bytes, MB = 1e6 bytes, minutes. Empty: not measured or not applicable.

| column | meaning |
| --- | --- |
{columns}
"""


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def export_hub_dataset(
    summary: Path | str,
    out: Path | str,
    *,
    patterns: list[str] | None = None,
    force: bool = False,
    license_id: str | None = None,
) -> HubDatasetReport:
    """Write the summary table ``summary`` (.parquet or .csv; the rows whose experiment id
    matches a glob of ``patterns``, all when empty) as a Hub dataset folder ``out``; see the
    module docstring."""
    summary, out = Path(summary), Path(out)
    if not summary.is_file():
        raise ExportError(
            f"{summary}: no summary table; run the workflow first (it writes "
            "results/summary.parquet) or pass --summary"
        )
    table = read_summary(summary)
    if patterns:
        try:
            chosen = select(sorted(set(table["experiment"].dropna())), patterns, "--select")
        except ConfigError as exc:
            raise ExportError(str(exc)) from exc
        table = table[table["experiment"].isin(chosen)].reset_index(drop=True)
    report = HubDatasetReport(out=out, rows=len(table))
    contents = {
        DATA_FILE: _parquet_bytes(table),
        CARD_FILE: card_text(table, license_id).encode("utf-8"),
    }
    changed = {}
    for name, data in contents.items():
        target = out / name
        if target.is_file() and target.read_bytes() == data:
            report.unchanged.append(str(target))
        elif target.exists() and not force:
            report.refused.append(f"{target}: exists with other contents; pass --force")
        else:
            changed[target] = data
    # All or nothing: a card written over another table would describe rows it does not hold.
    if not report.refused:
        for target, data in changed.items():
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            report.written.append(str(target))
    if out.is_dir():
        report.others = sorted(
            str(path.relative_to(out))
            for path in out.rglob("*")
            if path.is_file() and path.relative_to(out).as_posix() not in contents
        )
    return report
