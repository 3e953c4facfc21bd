"""Tests of ``peftbench export --to hub-dataset`` (peftbench.interop.hub_dataset): the summary
table as a Hub dataset folder, read back offline by ``datasets`` (as a folder, through its
card's configs, and as a bare parquet file) and its card by ``huggingface_hub``."""

import math

import datasets
import pandas as pd
import pytest
from factories import make_base_result, make_result
from huggingface_hub import DatasetCard
from paths import PUBLISHED

from peftbench.analysis.glossary import lookup
from peftbench.analysis.published import import_published
from peftbench.analysis.summary import build_summary, write_summary_files
from peftbench.cli import main
from peftbench.interop.hub_dataset import CARD_FILE, DATA_FILE, export_hub_dataset
from peftbench.interop.run_results import ExportError


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    # Read back from the folder alone: no hub, and a cache of the test's own.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))


def summary_table() -> pd.DataFrame:
    results = [
        make_base_result(),
        make_result("lora", "r8", 0, test_accuracy=0.5),
        make_result("lora", "r8", 1, test_accuracy=0.46),
        make_result("oft", "broken", status="failed", peft_type="OFT"),
        make_result("lora", "r4", task="image", similarity=0.7),
    ]
    return build_summary(results, import_published({"math": PUBLISHED}))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    write_summary_files(summary_table(), root / "summary.parquet")
    return root


def same(a, b) -> bool:
    """Equal, with every kind of missing (None, NaN, pd.NA) equal to every other."""
    if a is None or a is pd.NA or (isinstance(a, float) and math.isnan(a)):
        return b is None or b is pd.NA or (isinstance(b, float) and math.isnan(b))
    return b == pytest.approx(a) if isinstance(a, float) else a == b


def assert_rows(loaded: datasets.Dataset, table: pd.DataFrame) -> None:
    assert loaded.num_rows == len(table) and loaded.column_names == list(table.columns)
    for i, row in enumerate(loaded):
        for column in table.columns:
            assert same(table.iloc[i][column], row[column]), (i, column)


def test_datasets_reads_the_folder_offline(results, tmp_path):
    out = tmp_path / "dataset"
    report = export_hub_dataset(results / "summary.parquet", out)
    assert report.ok and sorted(report.written) == sorted(
        [str(out / DATA_FILE), str(out / CARD_FILE)]
    )
    table = pd.read_parquet(results / "summary.parquet")
    assert (table["source"] == "published").any() and (table["task"] == "image").any()
    cache = str(tmp_path / "cache")
    # The folder, through the card's configs: the Hub's way of reading a dataset repository.
    assert_rows(datasets.load_dataset(str(out), split="train", cache_dir=cache), table)
    assert list(datasets.load_dataset(str(out), cache_dir=cache)) == ["train"]
    # The bare parquet file.
    bare = datasets.load_dataset(
        "parquet", data_files=str(out / DATA_FILE), split="train", cache_dir=cache
    )
    assert_rows(bare, table)


def test_the_card(results, tmp_path):
    out = tmp_path / "dataset"
    export_hub_dataset(results / "summary.parquet", out, license_id="cc-by-4.0")
    card = DatasetCard.load(out / CARD_FILE)
    assert card.data.license == "cc-by-4.0"
    assert card.data.configs == [
        {"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}
    ]
    assert card.data.size_categories == ["n<1K"] and "peft" in card.data.tags
    text = card.text
    table = pd.read_parquet(results / "summary.parquet")
    for column in table.columns:
        assert f"| `{column}` |" in text, column
    # Columns explained from the glossary, the composition counted from the table.
    for column in ("test_accuracy", "similarity", "memory_gb"):
        description = " ".join(lookup(column).description.split()).replace("|", "\\|")
        assert f"| `{column}` | {description} |" in text, column
    published = int(((table["source"] == "published") & (table["task"] == "math")).sum())
    assert f"| math | published | {published} |" in text
    assert "| math | this run | 4 | 3 |" in text
    assert "PEFT: 0.21.2" in text
    assert "No license is set" not in text
    export_hub_dataset(results / "summary.parquet", tmp_path / "plain")
    plain = DatasetCard.load(tmp_path / "plain" / CARD_FILE)
    assert plain.data.license is None and "No license is set" in plain.text


def test_unchanged_refused_and_forced(results, tmp_path):
    out = tmp_path / "dataset"
    export_hub_dataset(results / "summary.parquet", out)
    (out / ".gitattributes").write_text("*.parquet filter=lfs\n")
    again = export_hub_dataset(results / "summary.parquet", out)
    assert again.ok and again.written == [] and len(again.unchanged) == 2
    assert again.others == [".gitattributes"]
    card = (out / CARD_FILE).read_text()
    # Another table: neither file is replaced without --force (the card describes the table).
    refused = export_hub_dataset(results / "summary.parquet", out, patterns=["lora/*"])
    assert not refused.ok and len(refused.refused) == 2 and refused.written == []
    assert (out / CARD_FILE).read_text() == card
    forced = export_hub_dataset(results / "summary.parquet", out, patterns=["lora/*"], force=True)
    assert forced.ok and len(forced.written) == 2
    rows = pd.read_parquet(out / DATA_FILE)
    assert set(rows["method"]) == {"lora"} and len(rows) == forced.rows
    with pytest.raises(ExportError, match="--select: pattern 'lora/nope' matches no"):
        export_hub_dataset(results / "summary.parquet", out, patterns=["lora/nope"])


def test_command_line(results, tmp_path, capsys):
    out = tmp_path / "dataset"
    args = ["export", "--to", "hub-dataset", str(out), "--results", str(results)]
    assert main(args) == 0
    output = capsys.readouterr().out
    assert f"wrote {out / DATA_FILE}" in output and "0 refused" in output
    assert (out / CARD_FILE).is_file()
    # The older spelling still works for every target.
    assert main(["export", "--format", "hub-dataset", str(out), "--results", str(results)]) == 0
    assert "2 unchanged" in capsys.readouterr().out
    assert main([*args, "--all-points"]) == 2
    assert "--all-points do(es) not apply to --to hub-dataset" in capsys.readouterr().err
    assert main(["export", "--to", "hub-dataset", str(out), "--results", str(tmp_path)]) == 2
    assert "no summary table" in capsys.readouterr().err
    csv = tmp_path / "summary.csv"
    summary_table().to_csv(csv, index=False)
    assert main(["export", "--to", "hub-dataset", str(tmp_path / "b"), "--summary", str(csv)]) == 0
