"""The pre-flight wrap of methods whose setup the meta device cannot run (FRoD, SHiRA, UniLoRA):
checked another way, never rejected for it, while their genuine config errors still are."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from paths import REPO

from peftbench.core import metacheck
from peftbench.core.metacheck import lacks_meta_support, wrap
from peftbench.tasks.math.embedded_lm import build_meta_model

MATH = yaml.safe_load((REPO / "config/config.yaml").read_text())["math"]
LAYERS = MATH["base_model"]["embedded"]["architecture"]["num_hidden_layers"]

#: The published suite's configs of the three methods, reduced to what matters here.
FROD = {"peft_type": "FROD", "task_type": "CAUSAL_LM", "target_modules": ["q_proj", "v_proj"]}
SHIRA = {"peft_type": "SHIRA", "r": 4, "mask_type": "random", "random_seed": 42,
         "target_modules": ["q_proj", "v_proj"]}  # fmt: skip
UNILORA = {"peft_type": "UNILORA", "task_type": "CAUSAL_LM", "r": 4, "theta_d_length": 64,
           "target_modules": ["q_proj", "v_proj"]}  # fmt: skip


@pytest.fixture(scope="module")
def factory():
    pristine = build_meta_model(MATH)
    return lambda: copy.deepcopy(pristine)


def experiment(root: Path, adapter: dict) -> Path:
    folder = root / adapter["peft_type"].lower() / "x"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(adapter))
    return folder


@pytest.mark.parametrize(
    "exc",
    [
        NotImplementedError("Cannot copy out of meta tensor; no data!"),
        NotImplementedError(
            "The register_meta function for torch.nonzero() raises unimplemented by default"
        ),
        NotImplementedError(
            "aten::bincount: attempted to run this operator with Meta tensors, but there was no "
            "fake impl or Meta kernel registered."
        ),
        RuntimeError("Tensor.item() cannot be called on meta tensors"),
        RuntimeError("Expected all tensors to be on the same device, but found meta and cpu!"),
        RuntimeError("Could not run 'aten::foo' with arguments from the 'Meta' backend."),
    ],
)
def test_the_meta_devices_own_errors_are_told_apart(exc):
    assert lacks_meta_support(exc)
    wrapped = ValueError("setting up the adapter failed")
    wrapped.__cause__ = exc
    assert lacks_meta_support(wrapped), "a meta error re-raised as another type still counts"


@pytest.mark.parametrize(
    "exc",
    [
        # What PEFT says about configs: never the meta device's fault, whatever the words.
        ValueError("Target modules {'nonexistent_proj'} not found in the base model meta-llama"),
        ValueError("cannot be computed on meta tensors"),
        TypeError("__init__() got an unexpected keyword argument 'r'"),
        RuntimeError("The size of tensor a (7) must match the size of tensor b (8)"),
        RuntimeError("model meta-llama/Llama-3.2-3B is gated"),
    ],
)
def test_config_errors_are_not_taken_for_the_meta_devices(exc):
    assert not lacks_meta_support(exc)


@pytest.mark.parametrize(
    "adapter, stage",
    [(FROD, "real-copy"), (SHIRA, "cpu-layers"), (UNILORA, "cpu-adapter")],
    ids=["frod", "shira", "unilora"],
)
def test_methods_whose_setup_needs_data_are_checked_not_rejected(adapter, stage, factory, tmp_path):
    """The issue's three false rejections: each is wrapped by the first fallback its setup
    runs on (the stage names the way), with trainable adapter weights."""
    result = wrap(factory, experiment(tmp_path, adapter), {"autocast_adapter_dtype": True})
    assert result.problem is None
    assert result.stage == stage, result.note
    assert "meta" in result.note
    assert any(p.requires_grad for p in result.model.parameters())


def test_a_model_too_large_to_copy_gets_the_config_checked_and_a_note(
    factory, tmp_path, monkeypatch
):
    """On a hub model (here: the copy limit set to 0) FRoD's decomposition is not run, but the
    config is still injected into the model, and the note says what was and was not checked."""
    monkeypatch.setattr(metacheck, "REAL_COPY_MAX_PARAMS", 0)
    result = wrap(factory, experiment(tmp_path, FROD), {"autocast_adapter_dtype": True})
    assert result.problem is None and result.model is None and result.stage == "targets"
    assert f"({2 * LAYERS} layer(s) targeted)" in result.note
    assert "not checked" in result.note and "Cannot copy out of meta tensor" in result.note


@pytest.mark.parametrize("limit", [0, metacheck.REAL_COPY_MAX_PARAMS], ids=["hub", "embedded"])
@pytest.mark.parametrize("adapter", [FROD, SHIRA, UNILORA], ids=["frod", "shira", "unilora"])
def test_bad_target_modules_are_still_rejected(adapter, limit, factory, tmp_path, monkeypatch):
    monkeypatch.setattr(metacheck, "REAL_COPY_MAX_PARAMS", limit)
    bad = {**adapter, "target_modules": ["nonexistent_proj"]}
    result = wrap(factory, experiment(tmp_path, bad), {"autocast_adapter_dtype": True})
    assert isinstance(result.problem, ValueError), result
    assert "nonexistent_proj" in str(result.problem) or "target_modules" in str(result.problem)


def test_a_method_constraint_is_still_rejected(factory, tmp_path):
    """SHiRA's own rule (no more sparse weights than the layer has) is checked at full size,
    on the stage that gives the adapted layers real weights."""
    hidden = MATH["base_model"]["embedded"]["architecture"]["hidden_size"]
    bad = {**SHIRA, "r": hidden}
    result = wrap(factory, experiment(tmp_path, bad), {"autocast_adapter_dtype": True})
    assert isinstance(result.problem, ValueError) and "more shira params" in str(result.problem)


def test_randperm_gives_the_identity_only_inside_the_check():
    with metacheck.identity_permutations():
        assert torch.equal(torch.randperm(5, generator=torch.Generator()), torch.arange(5))
    assert torch.randperm(1000).tolist() != list(range(1000))


def test_prompt_learning_has_no_injection_to_check(factory, tmp_path):
    folder = experiment(tmp_path, {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM",
                                   "num_virtual_tokens": 4})  # fmt: skip
    assert metacheck.matched_targets(factory(), folder, {"autocast_adapter_dtype": True}) is None


def _layout(model: torch.nn.Module) -> list[tuple]:
    """What a copy must reproduce: every parameter and buffer (name, shape, dtype, device,
    requires_grad) and every submodule's class and plain attributes."""
    tensors = [
        (n, tuple(t.shape), t.dtype, t.device.type, t.requires_grad)
        for n, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
    ]
    modules = [
        (
            n,
            type(m).__name__,
            {k: v for k, v in vars(m).items() if isinstance(v, int | float | str)},
        )
        for n, m in model.named_modules()
    ]
    return [tensors, modules]


def test_clone_model_is_a_deep_copy_like_deepcopy():
    """The fast copy that the pre-flight check wraps: the same layout as copy.deepcopy, tied
    weights still tied, and nothing shared with the original (config, parameters, hooks)."""
    pristine = build_meta_model(MATH)
    clone = metacheck.clone_model(pristine)
    assert _layout(clone) == _layout(copy.deepcopy(pristine)) == _layout(pristine)
    assert clone.lm_head.weight is clone.model.embed_tokens.weight
    assert clone.lm_head.weight is not pristine.lm_head.weight
    assert clone.config is not pristine.config
    assert clone.model.layers[0].self_attn.config is clone.config  # one copy, shared as before
    clone.config.vocab_size += 1
    clone.model.layers[0].register_forward_hook(lambda *args: None)
    assert pristine.config.vocab_size == MATH["base_model"]["embedded"]["vocab_size"]
    assert not pristine.model.layers[0]._forward_hooks


def test_wrapping_a_clone_leaves_the_original_untouched(tmp_path):
    pristine = build_meta_model(MATH)
    before = _layout(pristine)
    adapter = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "target_modules": ["q_proj"]}
    folder = experiment(tmp_path, adapter)
    params = {"autocast_adapter_dtype": True}
    wrapped = wrap(lambda: metacheck.clone_model(pristine), folder, params)
    assert wrapped.stage == "meta" and wrapped.problem is None
    assert _layout(pristine) == before


def test_a_module_with_its_own_copy_hook_is_copied_by_it():
    class Counted(torch.nn.Linear):
        copies = 0

        def __deepcopy__(self, memo):
            Counted.copies += 1
            return torch.nn.Linear.__new__(Counted)

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), Counted(2, 2))
    clone = metacheck.clone_model(model)
    assert Counted.copies == 1 and isinstance(clone[1], Counted)
    assert clone[0].weight is not model[0].weight
    assert torch.equal(clone[0].weight, model[0].weight)
