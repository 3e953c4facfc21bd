"""Tests of Pareto dominance and frontier computation."""

import math

import numpy as np
import pandas as pd
import pytest

from peftbench.analysis.frontier import dominates, frontier_line, pareto_mask
from peftbench.analysis.glossary import direction

ACC_MEM = {"acc": "max", "mem": "min"}


def test_dominates_strict_and_weak():
    assert dominates({"acc": 0.5, "mem": 1.0}, {"acc": 0.4, "mem": 2.0}, ACC_MEM)
    # Better on one objective, equal on the other, is enough.
    assert dominates({"acc": 0.5, "mem": 2.0}, {"acc": 0.4, "mem": 2.0}, ACC_MEM)
    assert not dominates({"acc": 0.4, "mem": 2.0}, {"acc": 0.5, "mem": 1.0}, ACC_MEM)


def test_dominates_ties_and_tradeoffs():
    a = {"acc": 0.5, "mem": 1.0}
    assert not dominates(a, dict(a), ACC_MEM)
    trade = {"acc": 0.6, "mem": 3.0}
    assert not dominates(a, trade, ACC_MEM)
    assert not dominates(trade, a, ACC_MEM)


def test_dominates_mixed_directions():
    # Same numbers, opposite verdicts depending on the direction of "mem".
    a, b = {"acc": 0.5, "mem": 1.0}, {"acc": 0.5, "mem": 2.0}
    assert dominates(a, b, {"acc": "max", "mem": "min"})
    assert dominates(b, a, {"acc": "max", "mem": "max"})
    assert dominates(a, b, {"acc": "min", "mem": "min"})


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA, np.nan])
def test_dominates_missing_values(missing):
    good = {"acc": 0.9, "mem": 0.1}
    partial = {"acc": missing, "mem": 5.0}
    assert not dominates(good, partial, ACC_MEM)
    assert not dominates(partial, good, ACC_MEM)


def test_dominates_accepts_series_and_rejects_bad_directions():
    a = pd.Series({"acc": 0.5, "mem": 1.0})
    b = pd.Series({"acc": 0.4, "mem": 1.0})
    assert dominates(a, b, ACC_MEM)
    with pytest.raises(ValueError, match="direction"):
        dominates(a, b, {"acc": "up"})
    with pytest.raises(ValueError):
        dominates(a, b, {})


def test_pareto_mask_known_frontier():
    df = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e", "f"],
            "acc": [0.30, 0.50, 0.45, 0.60, 0.20, 0.55],
            "mem": [1.0, 2.0, 2.5, 4.0, 0.5, 4.5],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    mask = pareto_mask(df, ACC_MEM)
    assert mask.dtype == bool
    assert list(mask.index) == list(df.index)
    # c is beaten by b (better acc, less memory); f by d.
    assert set(df.loc[mask, "name"]) == {"a", "b", "d", "e"}


def test_pareto_mask_exact_ties_both_kept():
    df = pd.DataFrame({"acc": [0.5, 0.5, 0.4], "mem": [1.0, 1.0, 1.0]})
    assert pareto_mask(df, ACC_MEM).tolist() == [True, True, False]


def test_pareto_mask_missing_values_never_on_frontier_nor_dominating():
    df = pd.DataFrame(
        {
            "acc": [0.99, 0.5, None, 0.4],
            # Row 0 would dominate everything, but its memory is unknown.
            "mem": [None, 2.0, 0.1, 3.0],
        },
        dtype=object,
    )
    assert pareto_mask(df, ACC_MEM).tolist() == [False, True, False, False]


def test_pareto_mask_nullable_dtypes():
    df = pd.DataFrame(
        {
            "acc": pd.array([0.5, pd.NA, 0.6], dtype="Float64"),
            "params": pd.array([10, 1, pd.NA], dtype="Int64"),
        }
    )
    assert pareto_mask(df, {"acc": "max", "params": "min"}).tolist() == [True, False, False]


def test_pareto_mask_three_objectives():
    df = pd.DataFrame(
        {
            "acc": [0.5, 0.5, 0.6, 0.4, 0.5],
            "mem": [2.0, 2.0, 3.0, 1.0, 2.0],
            "time": [10.0, 5.0, 20.0, 30.0, 5.0],
        }
    )
    mask = pareto_mask(df, {"acc": "max", "mem": "min", "time": "min"})
    # Row 0 is beaten by row 1 (faster); rows 1 and 4 tie exactly; 2 and 3 trade off.
    assert mask.tolist() == [False, True, True, True, True]
    # In 2-D (acc, mem) rows 0, 1, 4 all tie and row 3 survives on memory.
    assert pareto_mask(df, ACC_MEM).tolist() == [True, True, True, True, True]


def test_pareto_mask_matches_pairwise_dominates():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.integers(0, 5, size=(40, 3)).astype(float), columns=["a", "b", "c"])
    df.iloc[::7, 1] = np.nan
    objectives = {"a": "max", "b": "min", "c": "max"}
    expected = [
        not math.isnan(row["b"])
        and not any(dominates(other, row, objectives) for _, other in df.iterrows())
        for _, row in df.iterrows()
    ]
    assert pareto_mask(df, objectives).tolist() == expected


def test_pareto_mask_edge_cases():
    empty = pd.DataFrame({"acc": [], "mem": []})
    assert pareto_mask(empty, ACC_MEM).empty
    with pytest.raises(KeyError, match="mem"):
        pareto_mask(pd.DataFrame({"acc": [1.0]}), ACC_MEM)
    with pytest.raises(ValueError):
        pareto_mask(pd.DataFrame({"acc": ["high"], "mem": [1.0]}), ACC_MEM)


def test_frontier_line_sorted_by_x():
    df = pd.DataFrame(
        {
            "name": ["d", "a", "c", "b", "e"],
            "mem": [4.0, 1.0, 2.5, 2.0, 0.5],
            "acc": [0.60, 0.30, 0.45, 0.50, 0.20],
        }
    )
    line = frontier_line(df, "mem", "acc", "min", "max")
    assert line["name"].tolist() == ["e", "a", "b", "d"]
    assert list(line.columns) == list(df.columns)
    # Maximising x as well leaves only the point with the most memory and accuracy.
    assert frontier_line(df, "mem", "acc", "max", "max")["name"].tolist() == ["d"]


def test_metric_directions():
    for column in ["test_accuracy", "valid_accuracy_final", "similarity"]:
        assert direction(column) == "max"
    for column in [
        "train_memory_gb",
        "eval_memory_gb",
        "train_time_min",
        "trainable_params",
        "file_size_mb",
        "forgetting",
        "drift",
    ]:
        assert direction(column) == "min"
    # Columns that are not metrics have no direction.
    assert direction("experiment") is None and direction("no_such_column") is None
