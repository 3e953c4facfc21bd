"""Search grids (peftbench.core.search) and how experiments expand into runs and merge."""

import json

import pytest

from peftbench.core import experiments as exps
from peftbench.core.config import ConfigError, training_table
from peftbench.core.search import (
    apply_point,
    base_experiment,
    parse_space,
    points,
    run_names,
    split_run_name,
)

TABLE = training_table()
DEFAULTS = {
    "max_steps": 10,
    "batch_size": 4,
    "optimizer_type": "AdamW",
    "optimizer_kwargs": {"lr": 1e-3, "weight_decay": 0.1},
}


def make_experiment(root, name, params=None, adapter=True):
    folder = root / name
    folder.mkdir(parents=True)
    if adapter:
        (folder / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]})
        )
    if params is not None:
        (folder / "training_params.json").write_text(json.dumps(params))
    return folder


def test_points_are_the_product_in_written_order_with_folder_safe_labels():
    space = parse_space({"optimizer_kwargs.lr": [3e-4, 0.001], "max_steps": [5, 10]}, "f", TABLE)
    labels = [label for label, _ in points(space)]
    assert labels == [
        "lr=0.0003,max_steps=5",
        "lr=0.0003,max_steps=10",
        "lr=0.001,max_steps=5",
        "lr=0.001,max_steps=10",
    ]
    assert run_names("rank8", space)[0] == "rank8@lr=0.0003,max_steps=5"
    assert run_names("rank8", []) == ["rank8"]
    assert split_run_name("rank8@lr=0.001") == ("rank8", "lr=0.001")
    assert split_run_name("rank8") == ("rank8", None)
    assert base_experiment("lora/rank8@lr=0.001") == "lora/rank8"


def test_apply_point_sets_nested_keys_on_a_copy():
    merged = apply_point(DEFAULTS, {"optimizer_kwargs.lr": 0.01, "max_steps": 3})
    assert merged["optimizer_kwargs"] == {"lr": 0.01, "weight_decay": 0.1}
    assert merged["max_steps"] == 3 and DEFAULTS["optimizer_kwargs"]["lr"] == 1e-3


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"optimizer_kwargs.lrr": [1]}, None),  # checked later, against the optimizer
        ({"max_stepz": [1]}, "unknown training key 'max_stepz' (did you mean 'max_steps'?)"),
        ({"max_steps.x": [1]}, "'max_steps' is not an object"),
        ({"max_steps": []}, "non-empty list"),
        ({"max_steps": 5}, "non-empty list"),
        ({"max_steps": [5, 5]}, "repeated value"),
        ({"optimizer_type": ["a/b"]}, "cannot name a run folder"),
        ([1, 2], "must be an object"),
    ],
)
def test_bad_spaces_name_the_file_and_key(space, message):
    if message is None:
        parse_space(space, "exp/training_params.json", TABLE)
        return
    with pytest.raises(ConfigError, match="exp/training_params.json") as info:
        parse_space(space, "exp/training_params.json", TABLE)
    assert message in str(info.value)


def test_experiment_grid_replaces_the_task_grid_and_empty_opts_out(tmp_path):
    task_grid = {"optimizer_kwargs.lr": [0.001, 0.01]}
    make_experiment(tmp_path, "lora/a")
    make_experiment(tmp_path, "lora/b", {"search": {"max_steps": [1, 2, 3]}})
    make_experiment(tmp_path, "lora/c", {"search": {}})
    assert exps.run_ids(tmp_path, "lora/a", task_grid, TABLE) == [
        "lora/a@lr=0.001",
        "lora/a@lr=0.01",
    ]
    assert len(exps.run_ids(tmp_path, "lora/b", task_grid, TABLE)) == 3
    assert exps.run_ids(tmp_path, "lora/c", task_grid, TABLE) == ["lora/c"]
    assert exps.run_ids(tmp_path, "base/no-finetuning", task_grid, TABLE) == ["base/no-finetuning"]


def test_effective_params_of_a_point(tmp_path):
    make_experiment(tmp_path, "lora/a", {"max_steps": 7, "search": {"optimizer_kwargs.lr": [0.5]}})
    params = exps.effective_params(DEFAULTS, tmp_path, "lora/a@lr=0.5", TABLE)
    assert params["optimizer_kwargs"] == {"lr": 0.5, "weight_decay": 0.1}
    assert params["max_steps"] == 7 and "search" not in params
    with pytest.raises(ConfigError, match="no grid point 'lr=0.7'"):
        exps.effective_params(DEFAULTS, tmp_path, "lora/a@lr=0.7", TABLE)


def test_a_bad_grid_value_fails_the_file_checks(tmp_path):
    make_experiment(tmp_path, "lora/a", {"search": {"optimizer_kwargs.lr": [0.001, -1.0]}})
    problems = exps.file_problems(tmp_path, "lora/a", DEFAULTS, TABLE)
    assert any("lr=-1" in p and "lr" in p for p in problems), problems


def test_shallow_merge_replaces_whole_objects_as_the_published_suite_does(tmp_path):
    make_experiment(tmp_path, "lora/a", {"optimizer_kwargs": {"lr": 0.01}})
    deep = exps.effective_params(DEFAULTS, tmp_path, "lora/a", TABLE)
    shallow = exps.effective_params(DEFAULTS, tmp_path, "lora/a", TABLE, merge="shallow")
    assert deep["optimizer_kwargs"] == {"lr": 0.01, "weight_decay": 0.1}
    assert shallow["optimizer_kwargs"] == {"lr": 0.01}
    with pytest.raises(ConfigError, match="training_merge"):
        exps.effective_params(DEFAULTS, tmp_path, "lora/a", TABLE, merge="wide")


def test_middle_mode_runs_each_experiment_once_at_its_middle_point(tmp_path):
    make_experiment(tmp_path, "lora/a", {"search": {"optimizer_kwargs.lr": [0.1, 0.2, 0.3, 0.4]}})
    assert exps.run_ids(tmp_path, "lora/a", None, TABLE, "middle") == ["lora/a"]
    params = exps.effective_params(DEFAULTS, tmp_path, "lora/a", TABLE, points="middle")
    assert params["optimizer_kwargs"]["lr"] == 0.2
    # Without a grid, nothing changes.
    make_experiment(tmp_path, "lora/b")
    plain = exps.effective_params(DEFAULTS, tmp_path, "lora/b", TABLE, points="middle")
    assert plain == DEFAULTS


def test_a_value_set_by_the_experiment_is_not_overridden_by_the_task_grid(tmp_path):
    task_grid = {"optimizer_kwargs.lr": [0.001, 0.01], "max_steps": [5, 10]}
    make_experiment(tmp_path, "lora/a", {"optimizer_kwargs": {"lr": 1e30}})
    assert exps.run_ids(tmp_path, "lora/a", task_grid, TABLE) == [
        "lora/a@max_steps=5",
        "lora/a@max_steps=10",
    ]
    middle = exps.effective_params(
        DEFAULTS, tmp_path, "lora/a", TABLE, task_search=task_grid, points="middle"
    )
    assert middle["optimizer_kwargs"]["lr"] == 1e30 and middle["max_steps"] == 5
