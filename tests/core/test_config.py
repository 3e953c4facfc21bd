"""Training-param merging and validation, experiment discovery, the workflow config schema."""

import copy
import json
from pathlib import Path

import pytest
import toy_task
import yaml
from paths import REPO
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from peftbench.core import configfile
from peftbench.core import experiments as exps
from peftbench.core.config import (
    TRAINING_KEYS,
    ConfigError,
    deep_merge,
    training_table,
    validate_training_params,
)
from peftbench.tasks import registry
from peftbench.tasks.spec import TaskSpec

SCHEMA = str(REPO / "config/schemas/config.schema.yaml")
DEFAULTS = yaml.safe_load((REPO / "config/config.yaml").read_text())["math"]["training"]
MATH_TABLE = training_table(registry.get("math").training_keys)


def task_spec_and_folder(task: str) -> tuple[TaskSpec, Path]:
    """A built-in task's spec and package folder, or the toy task's of tests/toy_task (imported
    here as a plain package, so that it does not join the registry of the other tests)."""
    if task == "toy":
        return toy_task.SPEC, Path(toy_task.__file__).parent
    return registry.get(task), Path(registry.import_module(".", task).__file__).parent


def task_schema(task: str) -> Path:
    spec, folder = task_spec_and_folder(task)
    return folder / spec.config_schema


def test_deep_merge_keeps_nested_defaults():
    merged = deep_merge(DEFAULTS, {"optimizer_kwargs": {"lr": 0.5}})
    assert merged["optimizer_kwargs"] == {"lr": 0.5, "weight_decay": 0.1}
    assert DEFAULTS["optimizer_kwargs"]["lr"] == 0.001, "defaults are not mutated"


def test_deep_merge_replaces_non_mapping_values():
    assert deep_merge({"a": {"b": 1}}, {"a": 3}) == {"a": 3}
    assert deep_merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert deep_merge({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 5}}}) == {
        "a": {"b": {"c": 5, "d": 2}}
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"max_step": 10}, "unknown training key 'max_step'"),
        ({"max_steps": "10"}, "'max_steps' must be int"),
        ({"max_steps": -5}, "'max_steps' must be > 0"),
        ({"max_steps": True}, "'max_steps' must be int"),
        ({"optimizer_type": "SGDX"}, "'optimizer_type' must be one of"),
        ({"optimizer_kwargs": {"lr": -1}}, "'optimizer_kwargs.lr' must be > 0"),
        ({"optimizer_kwargs": {"lr": float("nan")}}, "'optimizer_kwargs.lr' must be finite"),
        ({"grad_norm_clip": float("inf")}, "'grad_norm_clip' must be a finite number"),
        ({"warmup_ratio": 1}, "'warmup_ratio' must be >= 0 and < 1, got 1"),
        ({"query_template": "Q: {query"}, "'query_template' is not a valid template"),
        ({"query_template": "{query} {x}"}, "'query_template' has the unknown field {x}"),
        ({"max_stesp": 10}, "did you mean 'max_steps'"),
        ({"query_template": "Q: {question}"}, "must contain the placeholder {query}"),
        ({"warmup_ratio": -0.1}, "'warmup_ratio' must be >= 0"),
    ],
)
def test_bad_training_params_name_file_and_key(override, message):
    problems = validate_training_params(override, "exp/training_params.json", table=MATH_TABLE)
    assert len(problems) == 1
    assert problems[0].startswith("exp/training_params.json: ")
    assert message in problems[0]


def test_defaults_are_valid():
    assert validate_training_params(DEFAULTS, "config", table=MATH_TABLE) == []


def test_a_task_key_is_unknown_to_another_task():
    """The shared table alone (or the image task's) does not know the math task's keys."""
    image_table = training_table(registry.get("image").training_keys)
    for table in (None, image_table):
        problems = validate_training_params({"max_new_tokens": 4}, "exp", table=table)
        assert problems and "unknown training key 'max_new_tokens'" in problems[0]


def schema_bound(prop: dict) -> str | None:
    """A schema property's bound in the table's words (TrainingKey.bound)."""
    if prop.get("$ref") == "#/definitions/posint" or "exclusiveMinimum" in prop:
        return "positive"
    if prop.get("minimum") == 0:
        return "fraction" if prop.get("exclusiveMaximum") == 1 else "non_negative"
    return None


@pytest.mark.parametrize("task", ["math", "image", "toy"])
def test_task_schema_training_bounds_match_the_table(task):
    """Experiment files are checked by the table, task defaults by the schema: same bounds."""
    spec, _ = task_spec_and_folder(task)
    table = training_table(spec.training_keys)
    schema = yaml.safe_load(task_schema(task).read_text())
    for key, prop in schema["properties"]["training"]["properties"].items():
        if "const" not in prop:  # a task that pins a key (image: grad_accumulation_steps: 1)
            assert schema_bound(prop) == table[key].bound, key


@pytest.mark.parametrize("task", ["math", "image", "toy"])
def test_task_schema_training_section_matches_the_table(task):
    """One table of training keys: each task's schema lists exactly the shared keys and the
    task's own (its spec's training_keys), so the checks and the schema cannot drift apart."""
    schema = yaml.safe_load(task_schema(task).read_text())
    in_schema = set(schema["properties"]["training"]["properties"])
    assert in_schema == set(training_table(task_spec_and_folder(task)[0].training_keys))
    assert set(TRAINING_KEYS) <= in_schema


def make_experiment(root: Path, name: str, adapter: dict | None = None, params=None) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    if adapter is not None:
        (folder / "adapter_config.json").write_text(json.dumps(adapter))
    if params is not None:
        (folder / "training_params.json").write_text(
            params if isinstance(params, str) else json.dumps(params)
        )


def test_discover_select_and_effective_params(tmp_path):
    make_experiment(tmp_path, "lora/r8", {"peft_type": "LORA"}, {"optimizer_kwargs": {"lr": 0.01}})
    make_experiment(tmp_path, "full-finetuning/lr1e-3", params={"max_steps": 5})
    (tmp_path / "empty/none").mkdir(parents=True)
    found = exps.discover(tmp_path)
    assert found == ["full-finetuning/lr1e-3", "lora/r8"]
    assert exps.select(found, ["lora/*"]) == ["lora/r8"]
    assert exps.select(found, []) == found
    with pytest.raises(ConfigError, match="pattern 'vera/\\*' matches no experiment"):
        exps.select(found, ["vera/*"])
    with pytest.raises(ConfigError, match="it matches lora/r8 in another case"):
        exps.select(found, ["LORA/*"])
    with pytest.raises(ConfigError, match="did you mean 'lora/r8'"):
        exps.select(found, ["lora/r8", "lora/r9"], "select.math")
    params = exps.effective_params(DEFAULTS, tmp_path, "lora/r8", MATH_TABLE)
    assert params["optimizer_kwargs"] == {"lr": 0.01, "weight_decay": 0.1}
    assert exps.experiment_files(tmp_path, "full-finetuning/lr1e-3") == [
        str(tmp_path / "full-finetuning/lr1e-3/training_params.json")
    ]


def test_effective_params_errors_name_the_file(tmp_path):
    make_experiment(tmp_path, "lora/bad-json", {"peft_type": "LORA"}, "{not json")
    make_experiment(tmp_path, "lora/bad-key", {"peft_type": "LORA"}, {"lr": 0.1})
    with pytest.raises(ConfigError, match=r"lora/bad-json/training_params.json: invalid JSON"):
        exps.effective_params(DEFAULTS, tmp_path, "lora/bad-json", MATH_TABLE)
    with pytest.raises(
        ConfigError, match=r"bad-key/training_params.json: unknown training key 'lr'"
    ):
        exps.effective_params(DEFAULTS, tmp_path, "lora/bad-key", MATH_TABLE)


def test_check_adapter_config(tmp_path):
    make_experiment(tmp_path, "x/unknown-type", {"peft_type": "NOT_A_METHOD"})
    make_experiment(tmp_path, "x/list", None)
    (tmp_path / "x/list/adapter_config.json").write_text("[1, 2]")
    assert "not a PEFT method" in exps.check_adapter_config(tmp_path, "x/unknown-type")[0]
    assert "expected a JSON object" in exps.check_adapter_config(tmp_path, "x/list")[0]


def load_config(*files: str) -> dict:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for name in files:
        config = deep_merge(config, yaml.safe_load((REPO / name).read_text()))
    return config


@pytest.mark.parametrize(
    "files", [(), ("config/test.yaml",), ("config/presets/metamathqa-llama-3.2-3b.yaml",)]
)
def test_shipped_configs_validate(files):
    config = load_config(*files)
    validate(config, SCHEMA)
    for task in ("math", "image"):
        validate(config[task], str(task_schema(task)))


def test_toy_config_validates():
    config = load_config("tests/toy_task/config.yaml")
    validate(config, SCHEMA)
    validate(config["toy"], str(task_schema("toy")))


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("math", "training", "max_steps"), 0, "max_steps"),
        (("math", "training", "dtype"), "fp8", "dtype"),
        (("math", "data", "source"), "ftp", "source"),
        (("math", "data", "embedded", "test_size"), "many", "test_size"),
        (("seeds",), [-1], "seeds"),
        (("math", "training", "query_template"), "no placeholder", "query_template"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(path, value, key):
    config = copy.deepcopy(load_config())
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(WorkflowError) as info:
        validate(config, SCHEMA)
        # A task's section is checked by the task's own schema.
        if path[0] in registry.BUILTIN:
            validate(config[path[0]], str(task_schema(path[0])))
    assert key in str(info.value)


@pytest.mark.parametrize("task", ["math", "image", "toy"])
def test_task_schemas_close_every_level(task):
    """Every object of a task schema with named properties rejects other keys (a typo is an
    error), except the ones handed on as keyword arguments (architecture, optimizer_kwargs)."""

    def walk(node: object, where: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        open_here = "properties" in node and node.get("additionalProperties") is not False
        found = [where] if open_here and not where.endswith("optimizer_kwargs") else []
        for key, value in node.items():
            children = value.items() if key in ("properties", "definitions") else []
            for name, child in children:
                found += walk(child, f"{where}.{name}")
        return found

    assert walk(yaml.safe_load(task_schema(task).read_text()), task) == []


def test_config_file_duplicate_keys_name_file_line_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("math:\n  training:\n    max_steps: 1\n    max_steps: 2\nseeds: [0]\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml, line 4: duplicate key 'math.training.max_steps'"
    ):
        configfile.load_config_file(path)
    path.write_text("base: &b {x: 1}\nother:\n  <<: *b\n  x: 2\n")
    assert configfile.load_config_file(path)["other"] == {"x": 2}, "merge keys are no duplicates"
    path.write_text("seeds: [0\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        configfile.load_config_file(path)


def test_schema_problems_give_key_paths_and_blame_the_winning_file():
    config = copy.deepcopy(load_config())
    config["math"]["training"]["max_steps"] = 0
    config["math"]["data"]["embedded"]["tset_size"] = 3
    found = configfile.schema_problems(config["math"], task_schema("math"), ("math",))
    files = {
        "config/config.yaml": load_config(),
        "extra.yaml": {"math": {"training": {"max_steps": 0}}},
    }
    lines = configfile.blame(found, files)
    assert (
        "config/config.yaml: math.data.embedded.tset_size: unknown key (did you mean 'test_size'?)"
        in lines[0]
    )
    assert lines[1] == "extra.yaml: math.training.max_steps: 0 is less than the minimum of 1"


def test_experiment_layout_checks(tmp_path):
    with pytest.raises(ConfigError, match="experiments_dir is a file"):
        exps.discover(REPO / "config/config.yaml")
    make_experiment(tmp_path, "lora/r8", {"peft_type": "LORA"})
    make_experiment(tmp_path, "full-finetuning/x", params={})
    (tmp_path / "README.md").write_text("docs are fine")
    assert exps.check_root(tmp_path) == []
    assert exps.check_folder(tmp_path, "lora/r8") == []
    assert exps.check_folder(tmp_path, "full-finetuning/x") == []
    (tmp_path / "lora/r8/adapter_config.json.bak").write_text("")
    assert "unknown file" in exps.check_folder(tmp_path, "lora/r8")[0]


def test_training_problems_check_optimizer_kwargs_against_the_optimizer():
    merged = deep_merge(DEFAULTS, {"optimizer_kwargs": {"lr": 0.1, "momentum": 0.9}})
    problems = exps.training_problems(merged, "x.json", MATH_TABLE)
    assert len(problems) == 1 and "'optimizer_kwargs.momentum' is not an argument of" in problems[0]
    lora_plus = deep_merge(
        DEFAULTS, {"optimizer_type": "lora+", "optimizer_kwargs": {"loraplus_lr_ratio": 16}}
    )
    assert exps.training_problems(lora_plus, "x.json", MATH_TABLE) == []
    assert exps.training_problems(DEFAULTS, "config", MATH_TABLE) == []


SHIPPED = [
    (),
    ("config/test.yaml",),
    ("config/presets/metamathqa-llama-3.2-3b.yaml",),
    ("config/presets/dreambooth-flux2-klein.yaml",),
    ("tests/toy_task/config.yaml",),
]


@pytest.mark.parametrize("files", SHIPPED, ids=lambda f: f[0] if f else "config.yaml")
def test_shipped_configs_pass_the_preflight_config_checks(files):
    """What rules/common.smk checks of a config, on every shipped one (the presets cannot be
    dry-run offline: their model check needs the hub): no duplicate keys, no schema problem at
    any level, task defaults sound (optimizer_kwargs against the optimizer, templates)."""
    for name in ("config/config.yaml", *files):
        configfile.load_config_file(REPO / name)
    config = load_config(*files)
    assert configfile.schema_problems(config, SCHEMA) == []
    for task in config["tasks"]:
        spec, _ = task_spec_and_folder(task)
        assert configfile.schema_problems(config[task], task_schema(task), (task,)) == []
        table = training_table(spec.training_keys)
        assert exps.training_problems(config[task]["training"], task, table) == []
