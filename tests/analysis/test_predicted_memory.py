"""The memory predicted before the runs (rule estimate_memory) in the summary and the report:
the torch-free reader of the estimate file, the join into ``predicted_memory_gb``, its glossary
entry and the frontier tables that set it beside the measured memory."""

import json

import pandas as pd
import pytest
from factories import make_base_result, make_result
from paths import PUBLISHED

from peftbench.analysis.glossary import direction, info, lookup
from peftbench.analysis.noise import Bootstrap
from peftbench.analysis.predicted import PREDICTED_COLUMN, read_predictions
from peftbench.analysis.published import import_published
from peftbench.analysis.summary import (
    build_summary,
    cross_task_columns,
    normalize,
    read_summary,
    write_summary_files,
)
from peftbench.analysis.tables import task_frontiers
from peftbench.report.pages import summary_page
from peftbench.report.pages_frontier import frontier_page

#: An estimate file as peftbench.core.estimate.write_estimates writes it (keys the reader does
#: not use included), with an experiment that could not be estimated and one without a run.
ESTIMATES = {
    "math": [
        {
            "experiment": "lora/r8",
            "peak_bytes": 7_500_000_000,
            "breakdown": {"frozen_params": 6_400_000_000, "activations": 900_000_000},
            "trainable_params": 2_293_760,
            "seconds": 1.5,
            "error": None,
            "reserved_bytes": 8_000_000_000,
            "eval_peak_bytes": None,
            "eval_reserved_bytes": None,
            "notes": None,
        },
        {"experiment": "oft/b16", "peak_bytes": 9_000_000_000, "error": None},
        {"experiment": "boft/b4", "peak_bytes": None, "error": "RuntimeError: needs values"},
        {"experiment": "vera/never-ran", "peak_bytes": 1_000_000_000, "error": None},
    ],
}


def local_results():
    return [
        make_base_result(test_accuracy=0.1),
        make_result("lora", "r8", test_accuracy=0.40, train_memory_peak_bytes=10**10),
        make_result("lora", "r8", seed=1, test_accuracy=0.42, train_memory_peak_bytes=10**10),
        make_result("oft", "b16", test_accuracy=0.45, train_memory_peak_bytes=2 * 10**10),
        make_result("boft", "b4", test_accuracy=0.35, train_memory_peak_bytes=3 * 10**10),
        make_result("ia3", "default", status="failed", error="RuntimeError: boom"),
    ]


@pytest.fixture
def estimate_file(tmp_path):
    path = tmp_path / "results/math/memory_estimate.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(ESTIMATES, indent=1))
    return path


def test_read_predictions(estimate_file):
    predictions = read_predictions([estimate_file])
    assert predictions[("math", "lora/r8")] == pytest.approx(7.5)
    assert predictions[("math", "oft/b16")] == pytest.approx(9.0)
    # Could not be estimated: known, but without a value.
    assert predictions[("math", "boft/b4")] is None
    assert read_predictions([]) == {}
    # One path alone is one file.
    assert read_predictions(str(estimate_file)) == predictions


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["math"]', "expected an object of tasks"),
        ('{"math": {"lora/r8": 1}}', "expected a list of estimates"),
        ('{"math": [{"peak_bytes": 1}]}', "an estimate without an experiment"),
        ('{"math": [{"experiment": "lora/r8", "peak_bytes": "1 GB"}]}', "not a byte count"),
    ],
)
def test_bad_estimate_file_names_the_file(tmp_path, text, message):
    path = tmp_path / "memory_estimate.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        read_predictions([path])
    assert str(path) in str(caught.value)


def test_summary_joins_predictions_by_task_and_experiment(estimate_file, tmp_path):
    published = import_published({"math": PUBLISHED})
    # A prediction named like a published experiment must not reach the published row.
    predictions = {
        **read_predictions([estimate_file]),
        ("math", "miss/llama-3.2-3B-default"): 5.0,
        ("image", "lora/r8"): 3.0,  # another task's experiment of the same name
    }
    table = build_summary(local_results(), published, predictions)
    columns = cross_task_columns()
    assert list(table.columns) == columns
    # Beside the headline memory figure it is compared with.
    assert columns.index(PREDICTED_COLUMN) == columns.index("memory_gb") + 1
    assert table[PREDICTED_COLUMN].dtype == "float64"
    this_run = table[table["source"] == "this run"].set_index(["experiment", "seed"])
    predicted = this_run[PREDICTED_COLUMN]
    # Every seed of an experiment has the experiment's prediction.
    assert predicted.loc[("lora/r8", 0)] == pytest.approx(7.5)
    assert predicted.loc[("lora/r8", 1)] == pytest.approx(7.5)
    assert predicted.loc[("oft/b16", 0)] == pytest.approx(9.0)
    # Empty: not estimated (error), no estimate at all, and the base reference.
    for experiment in ("boft/b4", "ia3/default", "base/no-finetuning"):
        assert pd.isna(predicted.loc[(experiment, 0)]), experiment
    # Published rows never carry this run's prediction; an estimate without a run adds no row.
    assert table.loc[table["source"] == "published", PREDICTED_COLUMN].isna().all()
    assert "vera/never-ran" not in set(table["experiment"])
    # The measured figures are untouched and sit next to it.
    assert this_run.loc[("lora/r8", 0), "train_memory_gb"] == pytest.approx(10.0)

    # It survives the files the summary rule writes and the report reads.
    write_summary_files(table, tmp_path / "s.parquet", tmp_path / "s.csv")
    for name in ("s.parquet", "s.csv"):
        back = read_summary(tmp_path / name)
        assert back[PREDICTED_COLUMN].tolist() == pytest.approx(
            table[PREDICTED_COLUMN].tolist(), nan_ok=True
        )


def test_summary_without_predictions_has_an_empty_column():
    table = build_summary(local_results())
    assert PREDICTED_COLUMN in table.columns and table[PREDICTED_COLUMN].isna().all()
    # An older summary without the column reads back with it, empty.
    older = normalize(table.drop(columns=[PREDICTED_COLUMN]))
    assert older[PREDICTED_COLUMN].isna().all()


def test_glossary_explains_the_prediction():
    column = lookup(PREDICTED_COLUMN)
    assert column is not None and direction(PREDICTED_COLUMN) == "min"
    header, text = info(PREDICTED_COLUMN)
    assert header == "predicted memory (GB)"
    for words in ("predicted", "before any run", "estimate_memory", "memory_estimate.json"):
        assert words in text
    assert column.axis == "Predicted peak training memory (GB)"


def test_report_tables_show_predicted_beside_measured(estimate_file):
    published = import_published({"math": PUBLISHED})
    table = build_summary(local_results(), published, read_predictions([estimate_file]))
    frontiers = task_frontiers(table, "math", options=Bootstrap(n_boot=50))
    memory = frontiers["memory"].set_index(["source", "experiment"])
    ours = memory.loc["this run"]
    assert ours.loc["lora/r8", PREDICTED_COLUMN] == pytest.approx(7.5)
    assert ours.loc["lora/r8", "train_memory_gb"] == pytest.approx(10.0)
    # A failed experiment keeps its (missing) prediction; no seed of it succeeded.
    assert pd.isna(ours.loc["ia3/default", PREDICTED_COLUMN])

    page = frontier_page("math", frontiers, pd.DataFrame())
    tables, glossary = page.split("<details>", 1)
    memory_section, *other_axes = tables.split("<h2>")[1:]
    ours_table, published_table = memory_section.split("<h3>")[1:3]
    headers = [h.split(">")[-1] for h in ours_table.split("</th>")[:-1]]
    at = headers.index("memory (GB)")
    assert headers[at + 1 : at + 3] == ["predicted memory (GB)", "train memory (GB)"]
    # Published rows have no prediction: the column is left out of their table.
    assert "predicted memory (GB)" not in published_table
    # Only the memory axis shows it, and the glossary explains it.
    assert len(other_axes) == 3
    assert all("predicted memory (GB)" not in section for section in other_axes)
    assert "predicted memory (GB)" in glossary
    assert "predicted memory (GB)" in summary_page(table)
