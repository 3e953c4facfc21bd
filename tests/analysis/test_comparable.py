"""Tests of the published-compatible score beside published rows (analysis/comparable.py)."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from factories import make_base_result, make_result
from paths import PUBLISHED

from peftbench.analysis.comparable import (
    PUBLISHED_SCORE,
    comparable_column,
    items_for,
    scored_column,
    shows_published,
    with_score,
)
from peftbench.analysis.noise import Bootstrap
from peftbench.analysis.published import import_published
from peftbench.analysis.summary import build_summary
from peftbench.analysis.tables import multi_objective_table, task_frontiers
from peftbench.tasks import registry

MATH = registry.get("math")


@pytest.fixture(scope="module")
def summary():
    # Our parser and the published one disagree on these runs: by our score lora/a is best,
    # by the published rule lora/b is (e.g. lora/a writes "1,000", which the suite rejects).
    runs = [
        make_base_result(test_accuracy=0.10, test_accuracy_published=0.05),
        make_result(
            "lora",
            "a",
            test_accuracy=0.60,
            test_accuracy_published=0.30,
            train_memory_peak_bytes=10 * 10**9,
        ),
        make_result(
            "lora",
            "b",
            test_accuracy=0.50,
            test_accuracy_published=0.48,
            train_memory_peak_bytes=10 * 10**9,
        ),
    ]
    return build_summary(runs, import_published({"math": PUBLISHED}))


def this_run(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["source"] == "this run"]


def test_comparable_column_from_the_spec():
    assert comparable_column(MATH) == "test_accuracy_published"
    # The image task's similarity is the published one already: no second score.
    assert comparable_column(registry.get("image")) is None
    assert scored_column(MATH, True) == "test_accuracy_published"
    assert scored_column(MATH, False) == "test_accuracy"
    assert scored_column(registry.get("image"), True) == "similarity"


def test_comparable_column_is_declared_not_derived_from_a_name():
    # The spec names the column; a task whose quality is published already declares none,
    # even with a column named like one.
    assert MATH.published.comparable_quality in {column.name for column in MATH.columns}
    assert MATH.published.comparable_quality in MATH.metrics
    undeclared = replace(MATH, published=replace(MATH.published, comparable_quality=None))
    assert comparable_column(undeclared) is None
    assert scored_column(undeclared, True) == "test_accuracy"
    renamed = replace(MATH, published=replace(MATH.published, comparable_quality="other_score"))
    assert comparable_column(renamed) == "other_score"
    # The per-item scorer reads the recorded correctness; a line without it has none.
    score = MATH.published.comparable_item_score
    assert score({"published_correct": True}) == 1.0 and score({"published_correct": False}) == 0.0
    assert score({"parsed": "5", "answer": "5"}) is None
    assert registry.get("image").published.comparable_item_score is None


def test_with_score_replaces_only_our_rows_and_drops_their_interval(summary):
    assert shows_published(summary, "math") and not shows_published(this_run(summary), "math")
    scored = with_score(summary[summary["task"] == "math"], MATH, True)
    ours = this_run(scored).set_index("experiment")
    assert ours.loc["lora/a", "test_accuracy"] == pytest.approx(0.30)
    assert ours.loc["lora/a", "score"] == "test_accuracy_published"
    # The stored (Wilson) interval is of our own score: not carried over.
    assert ours["test_accuracy_ci_low"].isna().all() and ours["test_accuracy_ci_high"].isna().all()
    theirs = scored[scored["source"] == "published"].set_index("experiment")
    published = summary[(summary["source"] == "published") & (summary["task"] == "math")]
    published = published.set_index("experiment")
    assert set(theirs["score"]) == {PUBLISHED_SCORE}
    pd.testing.assert_series_equal(theirs["test_accuracy"], published["test_accuracy"])
    # Not as published: nothing changes but the score column.
    own = this_run(with_score(summary[summary["task"] == "math"], MATH, False))
    assert own.set_index("experiment").loc["lora/a", "test_accuracy"] == pytest.approx(0.60)
    assert set(own["score"]) == {"test_accuracy"}


def test_a_result_without_the_published_score_is_missing_not_mixed(summary):
    rows = this_run(summary[summary["task"] == "math"]).copy()
    rows.loc[rows["experiment"] == "lora/a", "test_accuracy_published"] = np.nan
    scored = with_score(rows, MATH, True).set_index("experiment")
    assert np.isnan(scored.loc["lora/a", "test_accuracy"])
    # A summary without the column at all (an older one): every quality missing.
    older = with_score(rows.drop(columns="test_accuracy_published"), MATH, True)
    assert older["test_accuracy"].isna().all()


def test_items_follow_the_score(summary):
    scored = with_score(summary[summary["task"] == "math"], MATH, True)
    ours = this_run(scored).index
    own = {label: np.ones(5) for label in scored.index}
    comparable = {ours[0]: np.zeros(5)}
    chosen = items_for(scored, MATH, own, comparable)
    # Rescored rows take the comparable items (or none); published rows never take ours.
    assert set(chosen) == {ours[0]} and chosen[ours[0]].sum() == 0
    unscored = with_score(summary[summary["task"] == "math"], MATH, False)
    chosen = items_for(unscored, MATH, own, comparable)
    assert set(this_run(unscored).index) <= set(chosen)
    assert all(chosen[label].sum() == 5 for label in this_run(unscored).index)


def test_frontier_beside_published_rows_uses_the_published_score(summary):
    options = Bootstrap(n_boot=50)
    frontiers = task_frontiers(summary, "math", options=options)
    ours = this_run(frontiers["memory"]).set_index("experiment")
    # Scored as published, lora/b beats lora/a at the same memory; by our parser it is the
    # other way round.
    assert ours.loc["lora/b", "on_frontier"] and not ours.loc["lora/a", "on_frontier"]
    assert set(ours["score"]) == {"test_accuracy_published"}
    alone = task_frontiers(this_run(summary), "math", options=options)["memory"]
    alone = alone.set_index("experiment")
    assert alone.loc["lora/a", "on_frontier"] and not alone.loc["lora/b", "on_frontier"]
    assert set(alone["score"]) == {"test_accuracy"}
    # Changing our own score cannot change the comparison with published rows.
    changed = summary.copy()
    changed.loc[changed["source"] == "this run", "test_accuracy"] = 0.99
    again = this_run(task_frontiers(changed, "math", options=options)["memory"])
    pd.testing.assert_series_equal(
        again.set_index("experiment")["test_accuracy"], ours["test_accuracy"]
    )


def test_multi_objective_table_beside_published_rows(summary):
    table = this_run(multi_objective_table(summary, "math")).set_index("experiment")
    assert table.loc["lora/b", "test_accuracy"] == pytest.approx(0.48)
    assert table.loc["lora/b", "pareto_rank"] == 1 and table.loc["lora/a", "pareto_rank"] == 2
    alone = multi_objective_table(this_run(summary), "math").set_index("experiment")
    assert alone.loc["lora/a", "test_accuracy"] == pytest.approx(0.60)


def test_a_stale_published_interval_is_not_noise(summary):
    """A summary written before published rows lost their derived (Wilson) interval still has
    one: it is not used, so published rows stay without an interval."""
    stale = summary.copy()
    published = stale["source"] == "published"
    stale.loc[published, "test_accuracy_ci_low"] = stale.loc[published, "test_accuracy"] - 0.03
    stale.loc[published, "test_accuracy_ci_high"] = stale.loc[published, "test_accuracy"] + 0.03
    memory = task_frontiers(stale, "math", options=Bootstrap(n_boot=50))["memory"]
    theirs = memory[memory["source"] == "published"]
    assert set(theirs["noise"]) == {"none"} and theirs["test_accuracy_low"].isna().all()
    # Our own stored interval still counts for our own score.
    ours = task_frontiers(this_run(stale), "math", options=Bootstrap(n_boot=50))["memory"]
    assert set(ours.loc[ours["missing"] == "", "noise"]) == {"normal"}
