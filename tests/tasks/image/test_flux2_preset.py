"""The FLUX.2-klein preset's experiments: every one is wrapped around a FLUX.2-klein-base-4B
transformer built on the meta device (real widths, no memory), and LoRA r=32 must reproduce the
published trainable-parameter count. Also home of the adapter-target helpers that
``test_flux2.py`` uses on its tiny model."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from paths import REPO

from peftbench.core.config import deep_merge, training_table
from peftbench.core.experiments import check_adapter_config, discover, effective_params
from peftbench.core.runs import wrap_peft
from peftbench.tasks.image import SPEC
from peftbench.tasks.image.diffusion import flow_matching_loss

PRESET_FILE = REPO / "config/presets/dreambooth-flux2-klein.yaml"
PRESET = yaml.safe_load(PRESET_FILE.read_text())["image"]
PRESET_ROOT = REPO / PRESET["experiments_dir"]
IMAGE_TABLE = training_table(SPEC.training_keys)

DOUBLE_TARGETS = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.linear_in",
    "ff.linear_out",
    "ff_context.linear_in",
    "ff_context.linear_out",
]
SINGLE_TARGETS = ["attn.to_qkv_mlp_proj"]


def expected_targets(num_layers: int, num_single_layers: int) -> set[str]:
    return {f"transformer_blocks.{i}.{t}" for i in range(num_layers) for t in DOUBLE_TARGETS} | {
        f"single_transformer_blocks.{i}.{t}"
        for i in range(num_single_layers)
        for t in SINGLE_TARGETS
    }


def adapted_modules(wrapped) -> set[str]:
    """Names (in the unwrapped model) of the modules PEFT replaced by adapter layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    prefix = "base_model.model."
    return {
        name.removeprefix(prefix)
        for name, module in wrapped.named_modules()
        if isinstance(module, BaseTunerLayer)
    }


# ------------------------------------------------------ preset experiments on FLUX.2-klein-base-4B

# Flux2Transformer2DModel of black-forest-labs/FLUX.2-klein-base-4B: 5 double-stream and 20
# single-stream blocks, 24 heads x 128 = 3072 wide, mlp_ratio 3, 3 x 2560 Qwen3 features.
KLEIN_4B = {
    "num_layers": 5,
    "num_single_layers": 20,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 7680,
    "in_channels": 128,
    "guidance_embeds": False,
}
KLEIN_4B_PARAMS = 3_875_544_576  # num_total_params of the published full fine-tuning run
# num_trainable_params of the published runs (checked for the experiments the preset has).
PUBLISHED_TRAINABLE = {
    "lora/flux2-klein-default": 38_338_560,
    "adalora/flux2-klein-default": 38_341_120,
}
PRESET_EXPERIMENTS = discover(PRESET_ROOT) if PRESET_ROOT.is_dir() else []
REQUIRED = [
    "lora/flux2-klein-default",
    "lora/flux2-klein-rank64",
    "oft/flux2-klein-default",
    "boft/flux2-klein-default",
    "loha/flux2-klein-default",
    "lokr/flux2-klein-lr1e-3",
    "ia3/flux2-klein-default",
    "vera/flux2-klein-default",
    "hra/flux2-klein-default",
    "full-finetuning/flux2-klein-default",
]


def meta_klein():
    from diffusers import Flux2Transformer2DModel

    with torch.device("meta"):
        return Flux2Transformer2DModel(**KLEIN_4B)


def meta_boft(monkeypatch) -> None:
    """Let BOFT be built on the meta device and check it as on a GPU with PEFT's fbd_cuda
    extension (where n_butterfly_factor 2 applies and its block-count constraints bind): the
    butterfly permutations are computed on the CPU, their dense matrices stay on meta."""
    from peft.tuners.boft import layer

    permutation = layer.BOFTLayer.block_butterfly_perm

    def on_cpu(self, *args, **kwargs):
        with torch.device("cpu"):
            return permutation(self, *args, **kwargs)

    monkeypatch.setattr(layer, "get_fbd_cuda", lambda: object())
    monkeypatch.setattr(layer.BOFTLayer, "block_butterfly_perm", on_cpu)
    monkeypatch.setattr(
        layer.BOFTLayer, "perm2mat", lambda self, idx: torch.empty(len(idx), len(idx))
    )


def test_preset_has_the_published_experiments():
    assert set(REQUIRED) <= set(PRESET_EXPERIMENTS)
    assert PRESET["data"]["hub"] == {
        "path": "peft-internal-testing/cat-image-dataset",
        "revision": "37df3244ae3aa36e85178b6cf946338137fc3068",
        "split": "train",
        "column": "image",
    }
    assert PRESET["base_model"]["hub"]["revision"] == "a3b4f4849157f664bdbc776fd7453c2783562f4d"
    assert len(PRESET["data"]["drift_prompts"]) == 10 and len(PRESET["data"]["sample_prompts"]) == 5


def test_preset_validates_against_the_config_schema():
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config = deep_merge(config, yaml.safe_load(PRESET_FILE.read_text()))
    validate(config, str(REPO / "config/schemas/config.schema.yaml"))
    assert config["tasks"] == ["image"]
    assert config["image"]["data"]["source"] == config["image"]["base_model"]["source"] == "hub"
    assert config["image"]["encoder"]["source"] == "hub"


@pytest.mark.parametrize("experiment", PRESET_EXPERIMENTS)
def test_preset_experiment_wraps_flux2_klein(experiment, monkeypatch):
    from peft import PeftConfig

    folder = PRESET_ROOT / experiment
    merge = PRESET.get("training_merge", "deep")
    params = effective_params(PRESET["training"], PRESET_ROOT, experiment, IMAGE_TABLE, merge)
    assert check_adapter_config(PRESET_ROOT, experiment) == []
    if not (folder / "adapter_config.json").exists():
        assert experiment.startswith("full-finetuning/")
        return
    config = PeftConfig.from_pretrained(str(folder))
    assert config.task_type is None
    # The suite's own files leave it unset; where set, it must name the preset's model.
    assert config.base_model_name_or_path in (None, PRESET["base_model"]["hub"]["model_id"])
    if config.peft_type == "BOFT":
        meta_boft(monkeypatch)
    model = meta_klein()
    base_params = {id(p) for p in model.parameters()}
    with torch.device("meta"):
        wrapped, _ = wrap_peft(model, folder, params)
    expected = expected_targets(5, 20)
    if config.peft_type == "LN_TUNING":
        blocks = [f"transformer_blocks.{i}" for i in range(5)]
        blocks += [f"single_transformer_blocks.{i}" for i in range(20)]
        expected = {f"{b}.attn.{norm}" for b in blocks for norm in ("norm_q", "norm_k")}
    assert adapted_modules(wrapped) == expected
    if config.peft_type == "BOFT":  # the butterfly factor 2 was applied, not the CPU fallback 1
        factors = {m.boft_R["default"].shape[0] for m in wrapped.modules() if hasattr(m, "boft_R")}
        assert factors == {config.boft_n_butterfly_factor}
    trainable, total = wrapped.get_nb_trainable_parameters()
    assert 0 < trainable < 0.05 * KLEIN_4B_PARAMS
    # Frozen parameters are the base model's, plus AdaLoRA's per-module rank counters (as in
    # the published AdaLoRA run's num_total_params).
    extra = {
        name: p.numel()
        for name, p in wrapped.named_parameters()
        if not p.requires_grad and id(p) not in base_params
    }
    assert all(".ranknum." in name for name in extra), sorted(extra)[:3]
    assert total - trainable - sum(extra.values()) == KLEIN_4B_PARAMS
    assert not any(p.requires_grad for p in wrapped.parameters() if id(p) in base_params)
    if experiment in PUBLISHED_TRAINABLE:
        assert trainable == PUBLISHED_TRAINABLE[experiment]
    if config.peft_type != "BOFT":  # BOFT's forward needs the CUDA extension assumed above
        wrapped.eval()
        with torch.device("meta"):
            latents, embeds = torch.randn(1, 128, 2, 2), torch.randn(1, 4, 7680)
        loss = flow_matching_loss(wrapped, latents, embeds, torch.Generator())
        assert loss.shape == () and loss.device.type == "meta"


def test_published_lora_count_excludes_single_block_out_projection():
    """The published 38,338,560 pins the targets: 12 layers per double block and only the packed
    qkv/mlp input projection per single block. Adding the single blocks' output projection
    attn.to_out (3072 attention + 9216 MLP features in, 3072 out) would give 48,168,960."""
    from peft import LoraConfig, get_peft_model

    targets = json.loads(
        (PRESET_ROOT / "lora/flux2-klein-default/adapter_config.json").read_text()
    )["target_modules"]
    counts = {}
    for extra in ([], [r"single_transformer_blocks\.\d+\.attn\.to_out"]):
        pattern = "|".join([r".*\." + re.escape(t) for t in targets] + extra)
        with torch.device("meta"):
            wrapped = get_peft_model(
                meta_klein(), LoraConfig(r=32, lora_alpha=32, target_modules=pattern)
            )
        counts[bool(extra)] = wrapped.get_nb_trainable_parameters()[0]
    assert counts == {False: 38_338_560, True: 48_168_960}
    assert sum(p.numel() for p in meta_klein().parameters()) == KLEIN_4B_PARAMS
