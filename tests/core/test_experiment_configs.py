"""Sanity checks for the experiment definitions under ``experiments/``.

Layout (same as the published PEFT MetaMathQA suite):
``experiments/<root>/<method>/<name>/adapter_config.json`` (a PEFT config as written by
``PeftConfig.save_pretrained``) plus an optional ``training_params.json`` holding overrides of the
task defaults and, optionally, a ``search`` grid (peftbench.core.search), which is not a training
key. A folder without ``adapter_config.json`` is a full fine-tuning run, which only the method
folder ``full-finetuning`` (or a ``FULL_FINETUNING`` marker file) may be.

Every experiment root is discovered at collection time, so roots that other people are still
filling in are covered by whatever they contain when the tests run. Each root is checked with
the task section of every config that runs it (config/config.yaml, and each preset merged over
it as ``--configfile`` does): its training defaults, ``training_merge`` and ``search``.
The preset roots hold the published suite's folders verbatim, whose adapter configs may leave
``base_model_name_or_path`` and ``task_type`` null, as the published runs did.
Fast and offline: no model is downloaded; the PEFT wrapping check uses a tiny random Llama.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from paths import REPO
from peft import PeftConfig, PeftModel, PeftModelForCausalLM, PromptLearningConfig, get_peft_model
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from peftbench.core import experiments as exps
from peftbench.core import search
from peftbench.core.config import deep_merge, read_json_object, training_table
from peftbench.core.configfile import load_config_file
from peftbench.core.validate import quiet_meta_checks
from peftbench.tasks import registry

EXPERIMENTS = REPO / "experiments"
METAMATHQA_ROOT = EXPERIMENTS / "metamathqa-llama-3.2-3b"
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
PRESETS = sorted((REPO / "config" / "presets").glob("*.yaml"))
EXPERIMENT_FILES = ("adapter_config.json", "training_params.json")


class TaskUse(NamedTuple):
    """One config's task section that runs an experiment root."""

    config: str
    task: str
    section: dict[str, Any]
    preset: bool

    @property
    def table(self) -> dict:
        return training_table(registry.get(self.task).training_keys)

    @property
    def grid(self) -> dict[str, Any]:
        return {
            "task_search": self.section.get("search"),
            "points": self.section.get("search_points", "all"),
        }

    @property
    def merge(self) -> str:
        return self.section.get("training_merge", "deep")


def _task_uses() -> dict[Path, list[TaskUse]]:
    """Experiment root -> the task sections that run it, for the default config and for each
    preset deep-merged over it (what ``snakemake --configfile <preset>`` sees)."""
    default = load_config_file(DEFAULT_CONFIG)
    configs = [(DEFAULT_CONFIG, default, False)]
    configs += [(p, deep_merge(default, load_config_file(p)), True) for p in PRESETS]
    uses: dict[Path, list[TaskUse]] = {}
    for path, config, is_preset in configs:
        for task in config.get("tasks") or []:
            section = config[task]
            root = (REPO / section["experiments_dir"]).resolve()
            # A preset's own root holds the suite's folders; a root it merely inherits from the
            # default config (the embedded image task under the math preset) does not.
            own = is_preset and "experiments_dir" in load_config_file(path).get(task, {})
            rel = path.relative_to(REPO).as_posix()
            uses.setdefault(root, []).append(TaskUse(rel, task, section, own))
    return uses


TASK_USES = _task_uses()


def _uses(root: Path) -> list[TaskUse]:
    found = TASK_USES.get(root.resolve())
    assert found, (
        f"{root}: no config runs this experiment root (experiments_dir of a task in "
        f"{DEFAULT_CONFIG.name} or config/presets/*.yaml)"
    )
    return found


def _rel(path: Path) -> str:
    return path.relative_to(EXPERIMENTS).as_posix()


def _root_of(path: Path) -> Path:
    return EXPERIMENTS / path.relative_to(EXPERIMENTS).parts[0]


def _files(name: str, root: Path = EXPERIMENTS) -> list[Path]:
    # rglob rather than a fixed depth so a misplaced file is still checked (and flagged by the
    # layout test below) instead of silently ignored.
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob(name) if p.is_file())


ROOTS = sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir())
ADAPTER_DIRS = [p.parent for p in _files("adapter_config.json")]
TRAINING_PARAMS = _files("training_params.json")
EXPERIMENT_DIRS = sorted({p.parent for name in EXPERIMENT_FILES for p in _files(name)})
#: Math roots of a preset: the published suite's MetaMathQA folders, for Llama-3.2-3B.
PRESET_MATH_ADAPTER_DIRS = [
    d for d in ADAPTER_DIRS if any(u.preset and u.task == "math" for u in _uses(_root_of(d)))
]


def test_metamathqa_root_has_experiments():
    assert any(u.preset for u in _uses(METAMATHQA_ROOT)), "the math preset no longer runs it"
    assert _files("adapter_config.json", METAMATHQA_ROOT), (
        f"no adapter configs in {METAMATHQA_ROOT}"
    )
    # The suite's id, kept verbatim so own and published rows line up.
    full_ft = METAMATHQA_ROOT / "full-finetuning" / "llama-3.2-3B-lr_0.00001"
    assert (full_ft / "training_params.json").is_file()
    assert not (full_ft / "adapter_config.json").exists()


PRESET_USES = [(root, u) for root, uses in TASK_USES.items() for u in uses if u.preset]


@pytest.mark.parametrize("root, use", PRESET_USES, ids=[u.config for _, u in PRESET_USES])
def test_presets_run_the_suite_folders_as_published(root: Path, use: TaskUse):
    # The suite's folders were tuned under its shallow merge, and each ran once at its own
    # learning rate: no grid, neither the task's nor a folder's.
    assert use.merge == "shallow"
    assert use.grid["task_search"] in (None, {})
    for experiment in exps.discover(root):
        assert exps.run_ids(root, experiment, table=use.table, **use.grid) == [experiment]


@pytest.mark.parametrize("root", ROOTS, ids=_rel)
def test_every_root_is_run_by_one_task(root: Path):
    # An experiment folder no config names would never run; one two tasks share would be
    # checked against two tasks' keys.
    assert len({u.task for u in _uses(root)}) == 1


@pytest.mark.parametrize("exp_dir", EXPERIMENT_DIRS, ids=_rel)
def test_experiment_layout(exp_dir: Path):
    # experiments/<root>/<method>/<name>/
    parts = exp_dir.relative_to(EXPERIMENTS).parts
    assert len(parts) == 3, f"expected <root>/<method>/<name>, got {'/'.join(parts)}"


def _preset_model(use: TaskUse) -> str:
    return use.section["base_model"]["hub"]["model_id"]


@pytest.mark.parametrize("exp_dir", ADAPTER_DIRS, ids=_rel)
def test_adapter_config_loads(exp_dir: Path):
    config = PeftConfig.from_pretrained(str(exp_dir))
    assert config.peft_type is not None
    for use in _uses(_root_of(exp_dir)):
        # The image task's diffusers transformer must get no task type (a CAUSAL_LM wrapper
        # would feed it token ids); our own math folders are causal LMs. The suite's verbatim
        # math folders leave it null or CAUSAL_LM (null wraps as a plain PeftModel, whose
        # forward and generate the tiny-Llama test below checks).
        if use.task == "image":
            allowed = {None}
        elif use.preset:
            allowed = {None, "CAUSAL_LM"}
        else:
            allowed = {"CAUSAL_LM"}
        assert config.task_type in allowed, f"{use.config}: task {use.task}"
        if use.preset:
            # Null (as the suite saves many) or the model the preset trains, nothing else.
            assert config.base_model_name_or_path in {None, _preset_model(use)}


def _leaves(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every non-object value of ``params``."""
    for key, value in params.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _runs(use: TaskUse, root: Path, experiment: str) -> list[tuple[str, dict[str, Any]]]:
    """``(run id, grid assignment)`` of every run of ``experiment`` under ``use``."""
    space = exps.search_space(root, experiment, use.grid["task_search"], use.table)
    runs = exps.run_ids(root, experiment, table=use.table, **use.grid)
    if not space:
        return [(run, {}) for run in runs]
    if use.grid["points"] == "middle":
        return [(run, search.middle_point(space)) for run in runs]
    return [(run, dict(search.points(space))[run.partition("@")[2]]) for run in runs]


@pytest.mark.parametrize("path", TRAINING_PARAMS, ids=lambda p: _rel(p.parent))
def test_training_params_reach_the_effective_config(path: Path):
    overrides = read_json_object(path)
    root = _root_of(path)
    experiment = path.parent.relative_to(root).as_posix()
    for use in _uses(root):
        where = f"{path} under {use.config} ({use.task}, {use.merge} merge)"
        if search.SEARCH_KEY in overrides:
            # The only non-training key: a grid of the task's training keys.
            search.parse_space(overrides[search.SEARCH_KEY], str(path), use.table)
        training = {k: v for k, v in overrides.items() if k != search.SEARCH_KEY}
        set_by_file = dict(_leaves(training))
        defaults = use.section["training"]
        for run, assignment in _runs(use, root, experiment):
            params = exps.effective_params(
                defaults, root, run, use.table, merge=use.merge, **use.grid
            )
            assert search.SEARCH_KEY not in params, where
            effective = dict(_leaves(params))
            # Every value the file sets is what runs, unless this run's grid point sets it.
            for key, value in set_by_file.items():
                assert effective[key] == assignment.get(key, value), f"{where}: {run} {key}"
            for key, value in assignment.items():
                assert effective[key] == value, f"{where}: {run} {key}"
            for key, value in _leaves(defaults):
                top = key.split(".")[0]
                if key in assignment or key in set_by_file:
                    continue
                replaced = use.merge == "shallow" or not isinstance(training.get(top), Mapping)
                if top in training and replaced:
                    # The suite's merge replaces an overridden object whole (its
                    # {"optimizer_kwargs": {"lr": ...}} drops the default weight decay); either
                    # merge replaces an object by a non-object.
                    assert key not in effective, f"{where}: {run} kept default {key}"
                else:
                    assert effective[key] == value, f"{where}: {run} {key}"


@pytest.mark.parametrize("root", ROOTS, ids=_rel)
def test_every_experiment_passes_the_preflight_file_checks(root: Path):
    """The shipped experiments pass what the workflow checks before training, with each task's
    defaults, merge mode and search grid: only recognised files, full fine-tuning only where
    explicit, PEFT configs field by field, the training parameters at every grid point."""
    found = exps.discover(root)
    assert found
    problems = exps.check_root(root)
    for use in _uses(root):
        for experiment in found:
            problems += exps.file_problems(
                root, experiment, use.section["training"], use.table, use.merge, **use.grid
            )
    assert problems == []


VOCAB = 128


def _tiny_llama() -> LlamaForCausalLM:
    # Same module names as Llama-3.2 (q/k/v/o_proj, gate/up/down_proj, GQA), but tiny.
    # hidden_size 64 is divisible by OFT's r=32 (block 2) and BOFT's block size 4, which is all the
    # size-dependent adapter settings need; Lily's r=896 > 64 and stride_A=14 > 2 layers are
    # accepted by PEFT (one shared A for both layers).
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config)


def _fit_to_tiny_model(config: PeftConfig) -> PeftConfig:
    if isinstance(config, PromptLearningConfig):
        # Prefix tuning pins the real model's shape (token_dim 3072, 28 layers, 24 heads). Here
        # those would build a 28-layer KV prefix for a 2-layer model, so clear them and let PEFT
        # infer them from the tiny model, as it would for any model.
        config = dataclasses.replace(
            config, token_dim=None, num_layers=None, num_attention_heads=None
        )
    return config


def _wrap(config: PeftConfig) -> PeftModel:
    with quiet_meta_checks():  # the pre-flight check's noise filter: the same wrap, the same noise
        return get_peft_model(_tiny_llama(), _fit_to_tiny_model(config))


def _inputs() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, VOCAB, (2, 8))


def _loss_and_greedy(model: PeftModel) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids = _inputs()
    loss = model(input_ids=input_ids, labels=input_ids).loss
    model.eval()
    greedy = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=4, pad_token_id=0)
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, generation_config=greedy)
    return loss.detach(), out


#: Tuners whose own forward adds a regulariser to the loss (AdaLoRA's orthogonality term). Only
#: a task-typed wrapper (PeftModelForCausalLM) calls the tuner's forward; a plain PeftModel calls
#: the adapted transformers model directly, so the suite's null task type trains without the
#: term, in the published runs and in ours alike (both take ``model(**batch).loss``).
LOSS_TERM_TUNERS = {"ADALORA"}


# The tiny model is not the Llama-3.2-3B the configs name: PEFT says so, rightly, every time.
@pytest.mark.filterwarnings("ignore:The PEFT config's `base_model_name_or_path` was renamed")
@pytest.mark.parametrize("exp_dir", PRESET_MATH_ADAPTER_DIRS, ids=_rel)
def test_preset_math_adapter_wraps_tiny_llama(exp_dir: Path):
    config = PeftConfig.from_pretrained(str(exp_dir))
    model = _wrap(config)
    trainable, total = model.get_nb_trainable_parameters()
    assert 0 < trainable < total
    # One forward pass and a short greedy generation catch shape mismatches that only show up
    # at run time.
    loss, out = _loss_and_greedy(model)
    assert torch.isfinite(loss)
    assert out.shape == (2, 8 + 4)
    if config.task_type is not None:
        assert isinstance(model, PeftModelForCausalLM)
        return
    # The suite's null task type wraps as a plain PeftModel, which runs the adapted model as is;
    # it must generate what the CAUSAL_LM wrapper would, and compute the same loss but for a
    # tuner's own loss term (same seed, so the same adapter initialisation).
    assert type(model) is PeftModel
    model.train()
    with torch.no_grad():
        adapted = model.get_base_model()(input_ids=_inputs(), labels=_inputs()).loss
    torch.testing.assert_close(loss, adapted)
    twin = _wrap(dataclasses.replace(config, task_type="CAUSAL_LM"))
    assert isinstance(twin, PeftModelForCausalLM)
    twin_loss, twin_out = _loss_and_greedy(twin)
    assert torch.equal(out, twin_out)
    if config.peft_type in LOSS_TERM_TUNERS:
        assert twin_loss > loss, "the CAUSAL_LM wrapper should add the tuner's loss term"
    else:
        torch.testing.assert_close(loss, twin_loss)
