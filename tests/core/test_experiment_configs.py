"""Sanity checks for the experiment definitions under ``experiments/``.

Layout (same as the published PEFT MetaMathQA suite):
``experiments/<root>/<method>/<name>/adapter_config.json`` (a PEFT config as written by
``PeftConfig.save_pretrained``) plus an optional ``training_params.json`` holding overrides of the
task defaults. A folder without ``adapter_config.json`` is a full fine-tuning run, which only the
method folder ``full-finetuning`` (or a ``FULL_FINETUNING`` marker file) may be.

Every experiment root is discovered at collection time, so roots that other people are still
filling in (e.g. ``experiments/math/``) are covered by whatever they contain when the tests run.
Fast and offline: no model is downloaded; the PEFT wrapping check uses a tiny random Llama.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from paths import REPO
from peft import PeftConfig, PromptLearningConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from peftbench.core import experiments as exps
from peftbench.core.validate import quiet_meta_checks

EXPERIMENTS = REPO / "experiments"
METAMATHQA_ROOT = EXPERIMENTS / "metamathqa-llama-3.2-3b"
BASE_MODEL = "meta-llama/Llama-3.2-3B"

# Keys a training_params.json may override (the task defaults' keys).
ALLOWED_TRAINING_PARAMS = {
    "model_id",
    "dtype",
    "max_seq_length",
    "batch_size",
    "batch_size_eval",
    "max_steps",
    "eval_steps",
    "use_gc",
    "seed",
    "grad_norm_clip",
    "optimizer_type",
    "optimizer_kwargs",
    "lr_scheduler",
    "warmup_ratio",
    "generation",
    "query_template",
    "grad_accumulation_steps",
    "autocast_adapter_dtype",
    "train_on_prompt",
}
EXPERIMENT_FILES = ("adapter_config.json", "training_params.json")


def _rel(path: Path) -> str:
    return path.relative_to(EXPERIMENTS).as_posix()


def _files(name: str, root: Path = EXPERIMENTS) -> list[Path]:
    # rglob rather than a fixed depth so a misplaced file is still checked (and flagged by the
    # layout test below) instead of silently ignored.
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob(name) if p.is_file())


ADAPTER_DIRS = [p.parent for p in _files("adapter_config.json")]
METAMATHQA_ADAPTER_DIRS = [p.parent for p in _files("adapter_config.json", METAMATHQA_ROOT)]
TRAINING_PARAMS = _files("training_params.json")
EXPERIMENT_DIRS = sorted({p.parent for name in EXPERIMENT_FILES for p in _files(name)})


IMAGE_ROOTS = {"image", "dreambooth-flux2-klein"}


def test_metamathqa_root_has_experiments():
    assert METAMATHQA_ADAPTER_DIRS, f"no adapter configs found under {METAMATHQA_ROOT}"
    full_ft = METAMATHQA_ROOT / "full-finetuning" / "lr_0.00001"
    assert (full_ft / "training_params.json").is_file()
    assert not (full_ft / "adapter_config.json").exists()


@pytest.mark.parametrize("exp_dir", EXPERIMENT_DIRS, ids=_rel)
def test_experiment_layout(exp_dir: Path):
    # experiments/<root>/<method>/<name>/
    parts = exp_dir.relative_to(EXPERIMENTS).parts
    assert len(parts) == 3, f"expected <root>/<method>/<name>, got {'/'.join(parts)}"


@pytest.mark.parametrize("exp_dir", ADAPTER_DIRS, ids=_rel)
def test_adapter_config_loads(exp_dir: Path):
    config = PeftConfig.from_pretrained(str(exp_dir))
    assert config.peft_type is not None
    root = exp_dir.relative_to(EXPERIMENTS).parts[0]
    # A causal LM gets PeftModelForCausalLM; the image task's diffusers transformer must get no
    # task type (a CAUSAL_LM wrapper would feed it token ids).
    expected = None if root in IMAGE_ROOTS else "CAUSAL_LM"
    assert config.task_type == expected


@pytest.mark.parametrize("path", TRAINING_PARAMS, ids=lambda p: _rel(p.parent))
def test_training_params_keys(path: Path):
    params = json.loads(path.read_text())
    assert isinstance(params, dict), "training_params.json must be a JSON object"
    unknown = set(params) - ALLOWED_TRAINING_PARAMS
    assert not unknown, f"unknown training_params keys: {sorted(unknown)}"
    if "optimizer_kwargs" in params:
        assert isinstance(params["optimizer_kwargs"], dict)


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
        vocab_size=128,
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


ROOTS = sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir())


@pytest.mark.parametrize("root", ROOTS, ids=_rel)
def test_every_experiment_passes_the_preflight_file_checks(root: Path):
    """The shipped experiments (the published suite's layout) pass what the workflow checks
    before training: only recognised files, full fine-tuning only where explicit, PEFT configs
    field by field (the training parameters are checked with each task's defaults in
    tests/workflow/test_workflow.py's dry runs)."""
    found = exps.discover(root)
    assert found
    problems = exps.check_root(root)
    for experiment in found:
        problems += exps.check_folder(root, experiment) + exps.check_adapter_config(
            root, experiment
        )
    assert problems == []


# The tiny model is not the Llama-3.2-3B the configs name: PEFT says so, rightly, every time.
@pytest.mark.filterwarnings("ignore:The PEFT config's `base_model_name_or_path` was renamed")
@pytest.mark.parametrize("exp_dir", METAMATHQA_ADAPTER_DIRS, ids=_rel)
def test_metamathqa_adapter_wraps_tiny_llama(exp_dir: Path):
    config = PeftConfig.from_pretrained(str(exp_dir))
    assert config.base_model_name_or_path == BASE_MODEL
    with quiet_meta_checks():  # the pre-flight check's noise filter: the same wrap, the same noise
        model = get_peft_model(_tiny_llama(), _fit_to_tiny_model(config))
    trainable, total = model.get_nb_trainable_parameters()
    assert 0 < trainable < total
    # One forward pass catches shape mismatches that only show up at run time.
    input_ids = torch.randint(0, 128, (2, 8))
    loss = model(input_ids=input_ids, labels=input_ids).loss
    assert torch.isfinite(loss)
