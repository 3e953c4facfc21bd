"""Choosing each experiment's grid point on validation (peftbench.analysis.search)."""

import itertools

import pytest
from factories import make_base_result, make_result

from peftbench.analysis.aggregate import summarize
from peftbench.analysis.search import choose, grid_table
from peftbench.report.pages_search import search_page


def grid_results(valid, test, seeds=(0,)):
    """Results of one experiment lora/r8 searched over three learning rates, plus a plain
    experiment and the base run; ``valid``/``test``: per point."""
    results = [make_base_result(seed=s) for s in seeds]
    for seed in seeds:
        results.append(make_result("lora", "plain", seed, test_accuracy=0.4))
        for lr, v, t in zip(("0.0003", "0.001", "0.003"), valid, test, strict=True):
            results.append(
                make_result(
                    "lora",
                    f"r8@lr={lr}",
                    seed,
                    lr=float(lr),
                    valid_accuracy_final=v,
                    test_accuracy=t,
                )
            )
    return results


def chosen_point(results):
    table = summarize(results)
    rows = table[table["experiment"].str.startswith("lora/r8@")]
    assert rows["search_point"].nunique() == 1
    return rows["search_point"].iloc[0]


def test_best_validation_point_is_kept_and_labelled():
    table = summarize(grid_results(valid=[0.2, 0.5, 0.3], test=[0.9, 0.1, 0.8]))
    searched = table[table["experiment"].str.startswith("lora/r8")]
    assert list(searched["experiment"]) == ["lora/r8@lr=0.001"]
    assert searched["search_point"].iloc[0] == "lr=0.001"
    assert searched["search_size"].iloc[0] == 3
    plain = table[table["experiment"] == "lora/plain"]
    assert plain["search_point"].isna().all() and plain["search_size"].isna().all()


@pytest.mark.parametrize("test", list(itertools.permutations([0.1, 0.5, 0.9])))
def test_changing_test_scores_cannot_change_the_choice(test):
    assert chosen_point(grid_results(valid=[0.2, 0.5, 0.3], test=list(test))) == "lr=0.001"


def test_ties_go_to_the_cheaper_then_the_smaller_value():
    results = grid_results(valid=[0.5, 0.5, 0.5], test=[0.1, 0.2, 0.3])
    assert chosen_point(results) == "lr=0.0003"  # same memory: smallest lr
    for r in results:
        if r["name"] == "r8@lr=0.003":
            r["metrics"]["train_memory_peak_bytes"] //= 2
            r["metrics"]["train_tensor_peak_bytes"] = None
    assert chosen_point(results) == "lr=0.003"


def test_mean_over_seeds_and_failed_seed_ranks_last():
    results = grid_results(valid=[0.2, 0.5, 0.3], test=[0.5, 0.5, 0.5], seeds=(0, 1))
    # Seed 1 of lr=0.003 is much better: the mean decides.
    for r in results:
        if r["name"] == "r8@lr=0.003" and r["seed"] == 1:
            r["metrics"]["valid_accuracy_final"] = 0.9
    assert chosen_point(results) == "lr=0.003"  # mean 0.6 > 0.5
    results = [r for r in results if not (r["name"] == "r8@lr=0.003" and r["seed"] == 1)]
    results.append(make_result("lora", "r8@lr=0.003", 1, status="failed"))
    assert chosen_point(results) == "lr=0.001"


def test_grid_table_lists_every_point_with_valid_and_test():
    table = summarize(grid_results(valid=[0.2, 0.5, 0.3], test=[0.9, 0.1, 0.8]), False)
    grid = grid_table(table)
    assert list(grid["point"]) == ["lr=0.0003", "lr=0.001", "lr=0.003"]
    assert list(grid["valid"]) == [0.2, 0.5, 0.3]
    assert list(grid["quality"]) == [0.9, 0.1, 0.8]
    assert list(grid["chosen"]) == [False, True, False]
    assert set(grid["experiment"]) == {"lora/r8"}


def test_without_grids_nothing_changes():
    results = [make_base_result(), make_result("lora", "a"), make_result("lora", "b")]
    assert len(summarize(results)) == 3
    assert grid_table(summarize(results, False)).empty
    assert choose(summarize(results, False))["search_point"].isna().all()


@pytest.mark.parametrize(
    ("valid", "edge"),
    [([0.2, 0.5, 0.3], ""), ([0.6, 0.5, 0.3], "lr"), ([0.2, 0.5, 0.7], "lr")],
)
def test_a_choice_at_an_end_of_the_grid_is_flagged(valid, edge):
    grid = grid_table(summarize(grid_results(valid=valid, test=[0.5, 0.5, 0.5]), False))
    assert list(grid.loc[grid["chosen"], "edge"]) == [edge]
    assert (grid.loc[~grid["chosen"], "edge"] == "").all()
    page = search_page("math", grid)
    assert ("at an end of their grid" in page) == bool(edge)


@pytest.mark.parametrize("later", [0.0, 0.3, 1.0])
def test_with_search_on_the_first_seed_later_seeds_cannot_change_the_choice(later):
    """search_seeds: first. Only the chosen point (lr=0.001, best on seed 0) runs seeds 1 and 2;
    whatever they score, the points are compared on the seed they all ran."""
    results = grid_results(valid=[0.2, 0.5, 0.3], test=[0.1, 0.5, 0.9], seeds=(0,))
    for seed in (1, 2):
        results.append(
            make_result(
                "lora", "r8@lr=0.001", seed, lr=0.001, valid_accuracy_final=later, test_accuracy=0.2
            )
        )
    grid = grid_table(summarize(results, choose_points=False))
    assert grid.loc[grid["chosen"], "point"].tolist() == ["lr=0.001"]
    chosen = grid.set_index("point").loc["lr=0.001"]
    # Validation is seed 0's (the choice's), test quality the mean over all three seeds.
    assert chosen["valid"] == 0.5 and chosen["seeds"] == 3
    assert chosen["quality"] == pytest.approx((0.5 + 0.2 + 0.2) / 3)
    table = summarize(results)
    assert sorted(table.loc[table["experiment"] == "lora/r8@lr=0.001", "seed"]) == [0, 1, 2]


def test_one_tasks_choice_does_not_keep_another_tasks_point():
    """Both tasks search lora/r8 over the same grid and choose different points: each task keeps
    only its own choice (keyed by task, not by run id alone)."""
    math = grid_results(valid=[0.2, 0.5, 0.3], test=[0.1, 0.5, 0.9])
    image = [
        {**r, "task": "image", "metrics": dict(r["metrics"])}
        for r in grid_results(valid=[0.9, 0.5, 0.3], test=[0.1, 0.5, 0.9])
    ]
    for r in image:
        r["metrics"]["valid_similarity_final"] = r["metrics"].get("valid_accuracy_final")
    table = summarize(math + image)
    kept = {
        task: sorted(set(rows.loc[rows["experiment"].str.startswith("lora/r8@"), "experiment"]))
        for task, rows in table.groupby("task")
    }
    assert kept == {"image": ["lora/r8@lr=0.0003"], "math": ["lora/r8@lr=0.001"]}
