"""``peftbench advise --published-score`` when only some runs record per-item scores of the
published-compatible score (``published_correct``): the others are named in a note and still
compared."""

import numpy as np
from factories import make_result

from peftbench.analysis.summary import build_summary
from peftbench.cli import advise

N = 100
# experiment -> (published-compatible accuracy per seed, training memory in bytes)
RUNS = {"lora/big": ([0.6, 0.62], 15e9), "lora/small": ([0.55], 10e9), "oft/old": ([0.4], 8e9)}


def _summary():
    results = [
        make_result(
            *experiment.split("/"),
            seed,
            test_accuracy=share,
            test_accuracy_published=share,
            test_n=N,
            train_memory_peak_bytes=memory,
        )
        for experiment, (shares, memory) in RUNS.items()
        for seed, share in enumerate(shares)
    ]
    return build_summary(results)


def _items(summary, keep) -> dict:
    """0/1 item vectors of the runs ``keep`` selects, keyed by row label, as a results folder
    would give them."""
    return {
        label: (np.arange(N) < round(row["test_accuracy_published"] * N)).astype(float)
        for label, row in summary.iterrows()
        if keep(row)
    }


def _advise(summary, items):
    return advise(
        summary, "math", 20, published_score=True, comparable_items=items, n_boot=50, seed=1
    )


def test_runs_without_published_item_scores_are_named():
    summary = _summary()
    lacking = lambda row: row["experiment"] == "oft/old" or row["seed"] == 1  # noqa: E731
    frontier, table, notes = _advise(summary, _items(summary, lambda row: not lacking(row)))
    partial = [note for note in notes if "have no per-item scores" in note]
    assert partial == [
        "2 run(s) scored by test_accuracy_published have no per-item scores of it recorded "
        "(lora/big seed 1, oft/old seed 0): they are compared all the same, without "
        "resampling their test items (a single such run has no interval)"
    ]
    assert not any("whose per-item scores are not recorded" in note for note in notes)
    # The same rows are compared as when every run has its item scores.
    _, full_table, full_notes = _advise(summary, _items(summary, lambda row: True))
    assert sorted(table["experiment"]) == sorted(full_table["experiment"])
    assert not any("per-item scores" in note for note in full_notes)
    assert table.set_index("experiment").loc["oft/old", "noise"] == "none"


def test_no_run_with_published_item_scores_keeps_the_single_note():
    _, _, notes = _advise(_summary(), {})
    assert [note for note in notes if "per-item scores" in note] == [
        "this run's rows are scored by test_accuracy_published, whose per-item scores are not "
        "recorded: their intervals cover seeds only, and a single run has none"
    ]
