"""Tests of the several-objectives frontier and the noise-aware (bootstrap) frontier."""

import numpy as np
import pandas as pd
import pytest

from peftbench.analysis.frontier import non_dominated, pareto_mask, pareto_rank
from peftbench.analysis.noise import Bootstrap, Fallback, frontier_probability, task_frontier
from peftbench.tasks import registry

ACC_MEM = {"acc": "max", "mem": "min"}


def correctness(n: int, correct: int) -> np.ndarray:
    """A 0/1 vector with ``correct`` ones first."""
    vector = np.zeros(n)
    vector[:correct] = 1.0
    return vector


# ---------------------------------------------------------------------------------------------
# Several objectives at once
# ---------------------------------------------------------------------------------------------


def test_non_dominated_several_objectives_directions_ties_and_missing():
    df = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e", "f"],
            "acc": [0.5, 0.5, 0.6, 0.4, 0.5, 0.9],
            "mem": [2.0, 2.0, 3.0, 1.0, 2.0, 0.5],
            "time": [10.0, 5.0, 20.0, 30.0, 5.0, np.nan],
        },
        index=list("ABCDEF"),
    )
    objectives = {"acc": "max", "mem": "min", "time": "min"}
    front = non_dominated(df, objectives)
    # a is beaten by b (same acc and memory, faster); b and e tie exactly and are both kept;
    # c and d trade off; f would beat everyone but its time is missing: never on the frontier.
    assert front["name"].tolist() == ["b", "c", "d", "e"]
    assert list(front.index) == ["B", "C", "D", "E"]
    # Flipping one direction changes the answer: maximising time, the slow c/d win.
    flipped = non_dominated(df, {"acc": "max", "mem": "min", "time": "max"})
    assert set(flipped["name"]) == {"a", "c", "d"}


def test_pareto_rank_layers_ties_and_missing():
    df = pd.DataFrame(
        {
            "acc": [0.9, 0.8, 0.7, 0.7, 0.6, None],
            "mem": [3.0, 2.0, 3.0, 3.0, 4.0, 1.0],
        }
    )
    ranks = pareto_rank(df, ACC_MEM)
    assert ranks.dtype == "Int64"
    # Row 2 and 3 tie exactly (same rank); row 4 is dominated by everything above it.
    assert ranks.tolist()[:5] == [1, 1, 2, 2, 3]
    assert pd.isna(ranks.iloc[5])
    # Rank 1 is exactly the non-dominated set.
    assert (ranks == 1).fillna(False).tolist() == pareto_mask(df, ACC_MEM).tolist()


def test_pareto_rank_empty_and_all_missing():
    assert pareto_rank(pd.DataFrame({"acc": [], "mem": []}), ACC_MEM).empty
    ranks = pareto_rank(pd.DataFrame({"acc": [None, None], "mem": [1.0, 2.0]}), ACC_MEM)
    assert ranks.isna().all()


# ---------------------------------------------------------------------------------------------
# Noise-aware frontier
# ---------------------------------------------------------------------------------------------


def known_case() -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Four experiments on the same 1000 test items, plus one without a memory figure.

    * clear: 90% correct at memory 3, far ahead of everything: always on the frontier.
    * dominated: 50% correct at memory 4: always beaten by the others.
    * near: 50% at memory 1.
    * near_plus: the same answers as near plus 10 more correct items, at memory 2. Its lead
      over near is tiny, but on the same items it is never worse: a paired bootstrap sees a
      real lead even though the two intervals overlap.
    * unmeasured: would be best, but its memory is missing.
    """
    n = 1000
    rng = np.random.default_rng(7)
    near = (rng.random(n) < 0.5).astype(float)
    near_plus = near.copy()
    near_plus[np.flatnonzero(near == 0)[:10]] = 1.0
    items = {
        0: correctness(n, 900),
        1: correctness(n, 480),
        2: near,
        3: near_plus,
    }
    df = pd.DataFrame(
        {
            "experiment": ["clear", "dominated", "near", "near_plus", "unmeasured"],
            "acc": [items[0].mean(), items[1].mean(), near.mean(), near_plus.mean(), 0.99],
            "mem": [3.0, 4.0, 1.0, 2.0, np.nan],
            "test_n": [n] * 5,
        }
    )
    return df, items


def test_frontier_probability_known_answer():
    df, items = known_case()
    result = frontier_probability(
        df, ACC_MEM, items=items, options=Bootstrap(n_boot=400, seed=1)
    ).set_index("experiment")
    assert result.loc["clear", "frontier_prob"] == 1.0
    assert result.loc["dominated", "frontier_prob"] == 0.0
    assert result.loc["near", "frontier_prob"] == 1.0  # the cheapest: nothing can beat it
    # near_plus loses its place only in the rare draws that miss all 10 extra items.
    assert result.loc["near_plus", "frontier_prob"] > 0.99
    assert result.loc[["clear", "near", "near_plus"], "on_frontier"].all()
    assert not result.loc["dominated", "on_frontier"]

    # Best first; each frontier point compared with the next one by quality.
    assert result.loc["clear", "next"] == "near_plus"
    assert result.loc["near_plus", "next"] == "near"
    assert result.loc["near_plus", "lead"] == pytest.approx(0.010)
    # Paired: near_plus is never worse, so its small lead is beyond noise...
    assert result.loc["near_plus", "lead_prob"] > 0.99
    assert not result.loc["near_plus", "within_noise"]
    # ...although the two 95% intervals overlap (an unpaired reading would call it noise).
    assert result.loc["near_plus", "intervals_overlap"]
    assert (
        0.0 <= result.loc["near_plus", "lead_low"] <= 0.01 <= result.loc["near_plus", "lead_high"]
    )
    # The cheapest frontier point has no next one: explicit <NA>, not False.
    assert pd.isna(result.loc["near", "within_noise"]) and pd.isna(result.loc["near", "next"])

    # The missing memory is explicit, never on the frontier, and still shows its accuracy.
    assert result.loc["unmeasured", "missing"] == "mem"
    assert result.loc["unmeasured", "frontier_prob"] == 0.0
    assert not result.loc["unmeasured", "on_frontier"]
    assert result.loc["unmeasured", "acc"] == pytest.approx(0.99)
    assert result.loc["unmeasured", "n_seeds"] == 0
    # Complete experiments first, by accuracy; the partly measured one last.
    assert list(result.index) == ["clear", "near_plus", "near", "dominated", "unmeasured"]


def test_frontier_probability_intervals_match_binomial_theory():
    df, items = known_case()
    result = frontier_probability(df, ACC_MEM, items=items, options=Bootstrap(n_boot=2000, seed=0))
    clear = result.set_index("experiment").loc["clear"]
    # A resampled 0/1 vector with p = 0.9, n = 1000: sd = sqrt(p (1 - p) / n) = 0.0095.
    half_width = 1.96 * np.sqrt(0.9 * 0.1 / 1000)
    assert clear["acc_low"] == pytest.approx(0.9 - half_width, abs=0.004)
    assert clear["acc_high"] == pytest.approx(0.9 + half_width, abs=0.004)
    assert clear["noise"] == "items" and clear["n_items"] == 1000


def test_frontier_probability_lead_within_noise():
    # Two experiments 1 point apart on independent 200-item vectors: not separable.
    n = 200
    rng = np.random.default_rng(3)
    a = (rng.random(n) < 0.5).astype(float)
    b = (rng.random(n) < 0.5).astype(float)
    a_acc, b_acc = a.mean(), b.mean()
    cheap, dear = (a, b) if a_acc < b_acc else (b, a)
    df = pd.DataFrame(
        {"experiment": ["cheap", "dear"], "acc": [cheap.mean(), dear.mean()], "mem": [1.0, 2.0]}
    )
    result = frontier_probability(
        df, ACC_MEM, items={0: cheap, 1: dear}, options=Bootstrap(n_boot=500)
    )
    dear_row = result.set_index("experiment").loc["dear"]
    assert dear_row["on_frontier"] and dear_row["next"] == "cheap"
    assert dear_row["lead_prob"] < 0.95
    assert dear_row["within_noise"]
    # A frontier point whose lead may be noise is also sometimes dominated.
    assert 0.0 < dear_row["frontier_prob"] < 1.0


def test_frontier_probability_exact_ties():
    vector = correctness(100, 40)
    df = pd.DataFrame({"experiment": ["x", "y"], "acc": [0.4, 0.4], "mem": [1.0, 1.0]})
    result = frontier_probability(
        df, ACC_MEM, items={0: vector, 1: vector.copy()}, options=Bootstrap(n_boot=200)
    )
    # Identical measurements never dominate each other: both always on the frontier...
    assert result["frontier_prob"].tolist() == [1.0, 1.0]
    assert result["on_frontier"].all()
    # ...and the lead of one over the other is exactly zero, i.e. within noise.
    first = result.iloc[0]
    assert first["lead"] == 0.0 and first["lead_prob"] == 0.0 and first["within_noise"]


def test_frontier_probability_directions():
    # "cost" maximised: the larger value is the better one.
    df = pd.DataFrame({"experiment": ["a", "b"], "acc": [0.5, 0.5], "cost": [1.0, 2.0]})
    low = frontier_probability(df, {"acc": "max", "cost": "min"}, options=Bootstrap(n_boot=50))
    high = frontier_probability(df, {"acc": "max", "cost": "max"}, options=Bootstrap(n_boot=50))
    assert low.set_index("experiment")["on_frontier"].to_dict() == {"a": True, "b": False}
    assert high.set_index("experiment")["on_frontier"].to_dict() == {"a": False, "b": True}
    # Without per-item scores, test_n nor an interval, there is no noise to resample.
    assert set(low["noise"]) == {"none"}


def test_frontier_probability_seeds_widen_the_interval():
    n = 500
    seeds = [correctness(n, 150), correctness(n, 250), correctness(n, 350)]
    single = correctness(n, 250)
    df = pd.DataFrame(
        {
            "experiment": ["spread"] * 3 + ["single"],
            "seed": [0, 1, 2, 0],
            "acc": [v.mean() for v in seeds] + [single.mean()],
            "mem": [1.0, 1.2, 1.4, 5.0],
        }
    )
    items = {0: seeds[0], 1: seeds[1], 2: seeds[2], 3: single}
    result = frontier_probability(df, ACC_MEM, items=items, options=Bootstrap(n_boot=600, seed=2))
    result = result.set_index("experiment")
    assert result.loc["spread", "n_seeds"] == 3
    assert result.loc["spread", "acc"] == pytest.approx(0.5)
    assert result.loc["spread", "mem"] == pytest.approx(1.2)  # mean over seeds
    spread_width = result.loc["spread", "acc_high"] - result.loc["spread", "acc_low"]
    single_width = result.loc["single", "acc_high"] - result.loc["single", "acc_low"]
    # Seed-to-seed variation (0.3 to 0.7) dwarfs the item noise of one 500-item run.
    assert spread_width > 3 * single_width


def test_frontier_probability_fallback_noise_models():
    df = pd.DataFrame(
        {
            "experiment": ["test-n-only", "normal", "fixed"],
            "acc": [0.5, 0.5, 0.5],
            "mem": [1.0, 2.0, 3.0],
            "test_n": [100, None, None],
            "test_accuracy_ci_low": [None, 0.4, None],
            "test_accuracy_ci_high": [None, 0.6, None],
        }
    )
    # Without per-item scores, only the run's stored interval is noise; a test-set size alone
    # (a published accuracy) is not turned into a binomial interval.
    fallback = Fallback(("test_accuracy_ci_low", "test_accuracy_ci_high"))
    result = frontier_probability(
        df, ACC_MEM, fallback=fallback, options=Bootstrap(n_boot=2000, seed=0)
    ).set_index("experiment")
    assert result["noise"].to_dict() == {
        "test-n-only": "none",
        "normal": "normal",
        "fixed": "none",
    }
    assert result.loc["normal", "acc_low"] == pytest.approx(0.40, abs=0.02)
    assert result.loc["normal", "acc_high"] == pytest.approx(0.60, abs=0.02)
    # No noise: no interval (not a zero-width one) and no P(frontier).
    for name in ("test-n-only", "fixed"):
        assert np.isnan(result.loc[name, "acc_low"]) and np.isnan(result.loc[name, "acc_high"])
        assert np.isnan(result.loc[name, "frontier_prob"])
    assert result.loc["normal", "frontier_prob"] < 1.0  # its own noise: not always on top


def test_single_runs_without_items_are_never_beyond_noise():
    """One run, no per-item scores, no interval (a published row): its lead over a clearly
    worse one, and any lead over it, is "cannot be judged", never "beyond noise"."""
    df = pd.DataFrame(
        {
            "experiment": ["top", "middle", "bottom"],
            "acc": [0.9, 0.5, 0.1],
            "mem": [3.0, 2.0, 1.0],
            "test_n": [1319, 1319, 1319],
        }
    )
    result = frontier_probability(df, ACC_MEM, options=Bootstrap(n_boot=200)).set_index(
        "experiment"
    )
    assert result["on_frontier"].all()
    assert result.loc["top", "lead"] == pytest.approx(0.4)
    for name in ("top", "middle"):
        assert result.loc[name, "lead_verdict"] == "cannot be judged"
        assert pd.isna(result.loc[name, "within_noise"])
        assert np.isnan(result.loc[name, "lead_prob"]) and np.isnan(result.loc[name, "lead_low"])
        assert pd.isna(result.loc[name, "intervals_overlap"])
    assert pd.isna(result.loc["bottom", "lead_verdict"])  # no next one


def test_a_lead_over_a_run_without_noise_cannot_be_judged():
    """A measured experiment against an unmeasured one: one side's noise is unknown."""
    df = pd.DataFrame(
        {"experiment": ["measured", "unmeasured"], "acc": [0.9, 0.2], "mem": [2.0, 1.0]}
    )
    items = {0: correctness(1000, 900)}
    result = frontier_probability(
        df, ACC_MEM, items=items, options=Bootstrap(n_boot=200)
    ).set_index("experiment")
    assert result.loc["measured", "noise"] == "items"
    assert result.loc["measured", "acc_low"] < 0.9 < result.loc["measured", "acc_high"]
    assert result.loc["measured", "frontier_prob"] == 1.0
    assert result.loc["measured", "lead_verdict"] == "cannot be judged"
    assert np.isnan(result.loc["unmeasured", "frontier_prob"])


def test_several_seeds_without_items_are_noise():
    """Seeds measure noise too: several runs without per-item scores get a seed interval and
    their leads are judged."""
    df = pd.DataFrame(
        {
            "experiment": ["a", "a", "a", "b", "b", "b"],
            "acc": [0.50, 0.60, 0.70, 0.40, 0.50, 0.60],
            "mem": [2.0, 2.0, 2.0, 1.0, 1.0, 1.0],
        }
    )
    result = frontier_probability(df, ACC_MEM, options=Bootstrap(n_boot=500)).set_index(
        "experiment"
    )
    assert set(result["noise"]) == {"seeds"} and (result["n_seeds"] == 3).all()
    assert result.loc["a", "acc_low"] < 0.6 < result.loc["a", "acc_high"]
    assert result.loc["a", "lead_verdict"] == "within noise"
    assert bool(result.loc["a", "within_noise"]) and 0 < result.loc["a", "lead_prob"] < 0.95


def test_frontier_probability_seeded_and_pure():
    df, items = known_case()
    before = df.copy()
    first = frontier_probability(df, ACC_MEM, items=items, options=Bootstrap(n_boot=100, seed=5))
    again = frontier_probability(df, ACC_MEM, items=items, options=Bootstrap(n_boot=100, seed=5))
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(df, before)


def test_frontier_probability_three_objectives():
    df = pd.DataFrame(
        {
            "experiment": ["a", "b", "c"],
            "acc": [0.5, 0.5, 0.4],
            "mem": [1.0, 1.0, 1.0],
            "time": [2.0, 1.0, 0.5],
        }
    )
    result = frontier_probability(
        df, {"acc": "max", "mem": "min", "time": "min"}, options=Bootstrap(n_boot=20)
    )
    assert result.set_index("experiment")["on_frontier"].to_dict() == {
        "a": False,
        "b": True,
        "c": True,
    }


def test_frontier_probability_failed_runs_and_errors():
    df = pd.DataFrame({"experiment": ["ok", "failed"], "acc": [0.5, None], "mem": [1.0, None]})
    result = frontier_probability(df, ACC_MEM, options=Bootstrap(n_boot=10)).set_index("experiment")
    assert result.loc["failed", "missing"] == "acc,mem"
    assert pd.isna(result.loc["failed", "acc"]) and result.loc["failed", "frontier_prob"] == 0.0
    empty = frontier_probability(df.iloc[:0], ACC_MEM, options=Bootstrap(n_boot=10))
    assert empty.empty and "frontier_prob" in empty.columns
    with pytest.raises(ValueError, match="quality"):
        frontier_probability(df, ACC_MEM, quality="mem_x")
    with pytest.raises(ValueError, match="max"):
        frontier_probability(df, {"mem": "min"})
    with pytest.raises(KeyError):
        frontier_probability(df, {"acc": "max", "absent": "min"})


def test_task_frontier_noise_fallback_follows_the_task():
    """Without items, a run's stored interval of the task's quality is its noise; a test-set
    size alone is not (an accuracy is not made binomial from it), whatever the task."""
    df = pd.DataFrame(
        {
            "experiment": ["with-ci", "without-ci", "items"],
            "similarity": [0.5, 0.6, 0.7],
            "train_memory_gb": [1.0, 2.0, 3.0],
            "test_n": [40, 40, 4],
            "similarity_ci_low": [0.4, None, None],
            "similarity_ci_high": [0.6, None, None],
        }
    )
    objectives = {"similarity": "max", "train_memory_gb": "min"}
    items = {2: np.array([0.6, 0.8, 0.6, 0.8])}
    options = Bootstrap(n_boot=2000, seed=0, threshold=0.95)
    result = task_frontier(df, objectives, registry.get("image"), items, options)
    result = result.set_index("experiment")
    assert result["noise"].to_dict() == {
        "with-ci": "normal",
        "without-ci": "none",
        "items": "items",
    }
    assert result.loc["with-ci", "similarity_high"] == pytest.approx(0.6, abs=0.02)
    assert np.isnan(result.loc["without-ci", "similarity_low"])
    assert result.loc["items", "n_items"] == 4
    accuracy = df.rename(
        columns={
            "similarity": "test_accuracy",
            "similarity_ci_low": "test_accuracy_ci_low",
            "similarity_ci_high": "test_accuracy_ci_high",
        }
    )
    objectives = {"test_accuracy": "max", "train_memory_gb": "min"}
    result = task_frontier(accuracy, objectives, registry.get("math"), {}, options)
    result = result.set_index("experiment")
    assert result["noise"].to_dict() == {"with-ci": "normal", "without-ci": "none", "items": "none"}
