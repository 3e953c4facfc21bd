"""The capability columns of the summary (result.json ``capabilities``) and the report's
capabilities table; torch-free, from faked results."""

import pandas as pd
import pytest
from factories import make_base_result, make_result

from peftbench.analysis.aggregate import (
    CAPABILITY_COLUMNS,
    summarize,
    summary_columns,
    validate_result,
)
from peftbench.analysis.glossary import lookup
from peftbench.analysis.summary import build_summary, read_summary, write_summary_files
from peftbench.report.pages import capabilities_table, summary_page

LORA = {
    "peft_type": "LORA",
    "peft_version": "0.21.2",
    "mergeable": True,
    "multi_adapter": True,
    "mixed_adapters": True,
    "quantized_base": True,
    "layer_types": ["Conv2d", "Embedding", "Linear"],
    "note": None,
}
PROMPT = {
    **LORA,
    "peft_type": "PROMPT_TUNING",
    "mergeable": False,
    "mixed_adapters": False,
    "quantized_base": False,
    "layer_types": [],
}
UNKNOWN = {**dict.fromkeys(LORA), "peft_type": "LORA", "note": "RuntimeError: boom"}


def with_capabilities(result, capabilities):
    return {**result, "capabilities": capabilities}


def results():
    return [
        make_base_result(test_accuracy=0.1),
        with_capabilities(make_result("lora", "r8", test_accuracy=0.4), LORA),
        with_capabilities(make_result("lora", "r8", seed=1, test_accuracy=0.42), LORA),
        with_capabilities(
            make_result("prompt", "t8", peft_type="PROMPT_TUNING", test_accuracy=0.3), PROMPT
        ),
        with_capabilities(make_result("ia3", "default", peft_type="IA3"), UNKNOWN),
        with_capabilities(make_result("full-finetuning", "all", peft_type=None), None),
        make_result("oft", "b16", peft_type="OFT"),  # written before capabilities existed
    ]


def by_experiment(table):
    return {e: rows.iloc[0] for e, rows in table.groupby("experiment")}


def test_results_with_capabilities_validate_and_wrong_types_do_not():
    for result in results():
        validate_result(result)
    bad = with_capabilities(make_result(), {**LORA, "mergeable": "yes"})
    with pytest.raises(ValueError, match="capabilities.mergeable"):
        validate_result(bad)


def test_summary_columns_come_from_the_result():
    table = summarize(results())
    assert [c for c in summary_columns() if c in CAPABILITY_COLUMNS] == CAPABILITY_COLUMNS
    rows = by_experiment(table)
    lora = rows["lora/r8"]
    assert lora["mergeable"] is True and lora["multi_adapter"] is True
    assert lora["mixed_adapters"] is True and lora["quantized_base"] is True
    assert lora["layer_types"] == "Conv2d, Embedding, Linear"
    prompt = rows["prompt/t8"]
    assert prompt["mergeable"] is False and prompt["layer_types"] == "none"
    # Unknown, not applicable or not recorded: missing, never False or 0.0.
    for experiment in ("ia3/default", "full-finetuning/all", "oft/b16", "base/no-finetuning"):
        assert all(pd.isna(rows[experiment][c]) for c in CAPABILITY_COLUMNS), experiment
    # The cross-task summary keeps them as None (object columns, like the other text).
    summary = by_experiment(build_summary(results()))
    assert all(summary["oft/b16"][c] is None for c in CAPABILITY_COLUMNS)
    assert summary["lora/r8"]["mergeable"] is True


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_capability_columns_survive_the_summary_files(tmp_path, suffix):
    table = build_summary(results())
    path = tmp_path / f"summary.{suffix}"
    write_summary_files(table, **{f"{suffix}_path": path})
    back = by_experiment(read_summary(path))
    assert bool(back["lora/r8"]["mergeable"]) is True
    assert bool(back["prompt/t8"]["mergeable"]) is False
    assert back["lora/r8"]["layer_types"] == "Conv2d, Embedding, Linear"
    assert back["oft/b16"]["mergeable"] is None


def test_every_capability_column_is_explained():
    for column in CAPABILITY_COLUMNS:
        assert lookup(column) is not None and lookup(column).description, column


def test_report_capabilities_table_one_row_per_method():
    table = capabilities_table(build_summary(results()))
    assert table[["method", "peft_type"]].values.tolist() == [
        ["lora", "LORA"],
        ["prompt", "PROMPT_TUNING"],
    ]
    page = summary_page(build_summary(results()))
    assert "<h2>Method capabilities</h2>" in page and 'id="capabilities"' in page
    assert "multi-adapter" in page and "quantized base" in page
    # Without any recorded capabilities there is no such table.
    plain = [make_result("lora", "r8"), make_base_result()]
    assert capabilities_table(build_summary(plain)).empty
    assert "Method capabilities" not in summary_page(build_summary(plain))
