"""The FLUX.2 code path of the image task, offline.

* A tiny, randomly initialised ``Flux2KleinPipeline`` of the real classes (Flux2Transformer2DModel,
  AutoencoderKLFlux2, Qwen3ForCausalLM, a Qwen2 tokenizer with a chat template, the FLUX.2
  scheduler settings) is built from small configs and saved with ``save_pretrained``. It is
  loaded through ``peftbench.tasks.image.diffusion.load_image_model`` like FLUX.2-klein from the Hub, and our
  prompt encoding, VAE codec and sampler are checked against the official pipeline; then LoRA
  training and ``image_task.run_experiment`` run end to end on it.
* Every experiment of the FLUX.2-klein preset is wrapped around a FLUX.2-klein-base-4B transformer
  built on the meta device (real widths, no memory), and LoRA r=32 must reproduce the published
  trainable-parameter count.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from peftbench.core.config import deep_merge
from peftbench.core.experiments import check_adapter_config, discover, effective_params
from peftbench.core.runs import wrap_peft
from peftbench.tasks.image.data import load_images, prepare_data, split_indices
from peftbench.tasks.image.diffusion import (
    Flux2VaeCodec,
    flow_matching_loss,
    generate,
    load_image_model,
)

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
PRESET_FILE = REPO / "config/presets/dreambooth-flux2-klein.yaml"
PRESET = yaml.safe_load(PRESET_FILE.read_text())["image"]
PRESET_ROOT = REPO / PRESET["experiments_dir"]
SUBJECT = REPO / "tests/data/images/subject.parquet"  # 8 images, see tests/data/images/
CPU = torch.device("cpu")

# ------------------------------------------------------------------------- tiny FLUX.2 pipeline

RESOLUTION = 32  # VAE /2, patchify /2: an 8 x 8 grid of 16-channel latent tokens
MAX_SEQ = 16
OUT_LAYERS = [1, 2, 3]
TEXT_HIDDEN = 16
WORDS = "a photo of sks cat dog the at beach on in color drawing orange sitting chair".split()
PROMPTS = [
    "a photo of sks cat",
    "sks cat at the beach",
    "sks cat sitting on a chair",
    "a color drawing of sks cat",
    "sks cat in the photo",
    "a photo of sks cat on a chair",
    "sks cat on the beach",
    "a drawing of sks cat sitting",
]
# Qwen3's template, reduced to what Flux2KleinPipeline uses: user turns, the generation prompt
# and an empty thinking block when enable_thinking is False.
CHAT_TEMPLATE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
# FLUX.2's scheduler config (FlowMatchEulerDiscreteScheduler as shipped with the FLUX.2 models).
SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
    "time_shift_type": "exponential",
}


def tiny_tokenizer():
    """A byte-level BPE ``Qwen2TokenizerFast`` (bytes plus merges that spell out WORDS)."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab = {"<|endoftext|>": 0}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    merges = []
    for word in [*WORDS, *("\u0120" + w for w in WORDS), "user", "assistant"]:
        for end in range(2, len(word) + 1):
            if word[:end] not in vocab:
                merges.append((word[: end - 1], word[end - 1]))
                vocab[word[:end]] = len(vocab)
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        additional_special_tokens=["<|im_start|>", "<|im_end|>", "<think>", "</think>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_pipeline():
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=32,
            num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
            max_position_embeddings=64, tie_word_embeddings=True,
        )
    )  # fmt: skip
    vae = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=RESOLUTION,
    )
    # Non-trivial latent statistics, so that the batch-norm (de)normalisation is exercised.
    assert vae.bn.num_features == 16  # 4 latent channels x 2 x 2 patch
    vae.bn.running_mean.normal_(0.0, 0.5)
    vae.bn.running_var.uniform_(0.5, 2.0)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=len(OUT_LAYERS) * TEXT_HIDDEN,
        timestep_guidance_channels=32, axes_dims_rope=[2, 2, 2, 2], guidance_embeds=False,
    )  # fmt: skip
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_cfg(pipeline_dir: Path) -> dict:
    return {
        "source": "hub",
        "hub": {"model_id": str(pipeline_dir), "revision": None},
        "resolution": RESOLUTION,
        "max_sequence_length": MAX_SEQ,
        "text_encoder_out_layers": OUT_LAYERS,
    }


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flux2") / "tiny-flux2-klein"
    tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(pipeline_dir):
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def model(pipeline_dir):
    return load_image_model(model_cfg(pipeline_dir), None, CPU, torch.float32)[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Hub-format data prepared from the local parquet file (8 photos-like images)."""
    import datasets

    root = tmp_path_factory.mktemp("image_data")
    cache = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = root / "hf_cache"  # keep the Arrow cache out of ~/.cache
    try:
        prepare_data(
            {
                "source": "hub",
                "hub": {
                    "path": str(SUBJECT),
                    "revision": None,
                    "split": "train",
                    "column": "image",
                },
                "resolution": RESOLUTION,
                "valid_size": 2,
                "test_size": 2,
                "instance_prompts": PROMPTS,
                "drift_prompts": ["a photo of dog", "an orange chair", "a drawing of the beach"],
                "sample_prompts": ["a photo of sks cat", "a photo of dog"],
            },
            root / "data",
        )
    finally:
        datasets.config.HF_DATASETS_CACHE = cache
    return root / "data"


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny random DINOv2 with its image processor, saved like facebook/dinov2-base."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    path = tmp_path_factory.mktemp("encoder") / "tiny-dinov2"
    torch.manual_seed(0)
    config = Dinov2Config(image_size=RESOLUTION, patch_size=8, hidden_size=16, num_hidden_layers=1,
                          num_attention_heads=2, mlp_ratio=2)  # fmt: skip
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessor(
        do_resize=True, size={"height": RESOLUTION, "width": RESOLUTION}, do_center_crop=False,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
    ).save_pretrained(path)  # fmt: skip
    return path


# ----------------------------------------------------------- (a), (b): loading, encoding, sampling


def test_load_image_model(pipeline_dir):
    model, identity = load_image_model(model_cfg(pipeline_dir), None, CPU, torch.float32)
    assert identity == f"{pipeline_dir}@None"
    assert model.kind == "flux2" and isinstance(model.codec, Flux2VaeCodec)
    assert (model.resolution, model.max_sequence_length) == (RESOLUTION, MAX_SEQ)
    assert model.text_encoder_out_layers == tuple(OUT_LAYERS)
    assert model.dtype == torch.float32 and model.device == CPU
    assert model.codec.latent_shape(RESOLUTION) == (8, 8)
    assert model.scheduler.config.use_dynamic_shifting
    frozen = [*model.text_encoder.parameters(), *model.codec.vae.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert not model.text_encoder.training and not model.codec.vae.training
    bf16, _ = load_image_model(model_cfg(pipeline_dir), None, CPU, torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.codec.vae.dtype == torch.bfloat16


def test_encode_prompts_matches_pipeline(model, pipe):
    ours = model.encode_prompts(PROMPTS[:3])
    theirs, _ = pipe.encode_prompt(
        PROMPTS[:3], device=CPU, max_sequence_length=MAX_SEQ, text_encoder_out_layers=OUT_LAYERS
    )
    assert ours.shape == (3, MAX_SEQ, len(OUT_LAYERS) * TEXT_HIDDEN)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # The prompts survive the chat template and the truncation to MAX_SEQ tokens.
    assert not torch.allclose(ours[0], ours[1]) and not torch.allclose(ours[1], ours[2])


def test_encode_images_matches_pipeline(model, pipe, data_dir):
    from peftbench.tasks.image.data import load_manifest
    from peftbench.tasks.image.diffusion import to_pixels

    images = np.stack(load_images(data_dir, load_manifest(data_dir)["instance"][:2]))
    ours = model.encode_images(images)
    theirs = pipe._encode_vae_image(to_pixels(images, CPU, torch.float32), generator=None)
    assert ours.shape == (2, 16, 8, 8)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert model.codec.decode(ours).shape == (2, 3, RESOLUTION, RESOLUTION)


@pytest.mark.parametrize("guidance", [1.0, 3.5], ids=["no-cfg", "cfg3.5"])
def test_generate_matches_pipeline(model, pipe, guidance):
    from diffusers import Flux2KleinPipeline

    embeds = model.encode_prompts(PROMPTS[:2])
    negative = model.encode_prompts([""])
    steps = 4
    noise = torch.randn((2, 16, 8, 8), generator=torch.Generator().manual_seed(1))
    call = {"prompt_embeds": embeds, "num_inference_steps": steps, "guidance_scale": guidance,
            "height": RESOLUTION, "width": RESOLUTION, "max_sequence_length": MAX_SEQ,
            "text_encoder_out_layers": OUT_LAYERS}  # fmt: skip
    # The pipeline encodes its "" negative itself: it must equal ours.
    latents = generate(model, embeds, negative, torch.Generator(), steps, guidance, latents=noise, decode=False)  # fmt: skip
    ref = pipe(latents=noise, output_type="latent", **call).images
    # output_type="latent" returns latents after batch-norm de-normalisation and unpatchify.
    mean, std = model.codec._stats(latents)
    ours = Flux2KleinPipeline._unpatchify_latents(latents * std + mean)
    assert ours.shape == ref.shape == (2, 4, 16, 16)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(latents, noise, atol=1e-2)
    # Decoded images, and the initial noise drawn from a generator as the pipeline draws it.
    pixels = generate(model, embeds, negative, torch.Generator().manual_seed(7), steps, guidance)
    images = pipe(generator=torch.Generator().manual_seed(7), output_type="pt", **call).images
    assert pixels.shape == images.shape == (2, 3, RESOLUTION, RESOLUTION)
    torch.testing.assert_close((pixels / 2 + 0.5).clamp(0, 1), images, rtol=1e-5, atol=1e-5)


def test_guidance_changes_the_result(model):
    embeds = model.encode_prompts(PROMPTS[:1])
    negative = model.encode_prompts([""])
    noise = torch.randn((1, 16, 8, 8), generator=torch.Generator().manual_seed(3))
    plain = generate(model, embeds, negative, torch.Generator(), 3, 1.0, latents=noise, decode=False)  # fmt: skip
    guided = generate(model, embeds, negative, torch.Generator(), 3, 3.5, latents=noise, decode=False)  # fmt: skip
    assert not torch.allclose(plain, guided, atol=1e-4)


# ------------------------------------------------------------------------ (c): LoRA on the transformer

DOUBLE_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj",
                  "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out", "ff.linear_in",
                  "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out"]  # fmt: skip
SINGLE_TARGETS = ["attn.to_qkv_mlp_proj"]


def expected_targets(num_layers: int, num_single_layers: int) -> set[str]:
    return {f"transformer_blocks.{i}.{t}" for i in range(num_layers) for t in DOUBLE_TARGETS} | {
        f"single_transformer_blocks.{i}.{t}" for i in range(num_single_layers) for t in SINGLE_TARGETS
    }  # fmt: skip


def adapted_modules(wrapped) -> set[str]:
    """Names (in the unwrapped model) of the modules PEFT replaced by adapter layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    prefix = "base_model.model."
    return {
        name.removeprefix(prefix)
        for name, module in wrapped.named_modules()
        if isinstance(module, BaseTunerLayer)
    }


def test_lora_training_on_tiny_flux2(model, data_dir):
    from peftbench.core.train import make_optimizer
    from peftbench.tasks.image.data import load_manifest

    manifest = load_manifest(data_dir)
    latents = model.encode_images(np.stack(load_images(data_dir, manifest["instance"])))
    embeds = model.encode_prompts([e["prompt"] for e in manifest["instance"]])
    params = deep_merge(PRESET["training"], {"dtype": "float32", "optimizer_kwargs": {"lr": 0.01}})
    base = {n: p.detach().clone() for n, p in model.transformer.named_parameters()}
    transformer, peft_config = wrap_peft(model.transformer, PRESET_ROOT / "lora/default", params)
    transformer.enable_gradient_checkpointing()
    assert peft_config["peft_type"] == "LORA" and peft_config["r"] == 32
    assert adapted_modules(transformer) == expected_targets(1, 1)
    trainable = {n: p for n, p in transformer.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)

    def loss_at(seed: int) -> float:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            return flow_matching_loss(transformer, latents, embeds, gen).item()

    before = np.mean([loss_at(s) for s in range(3)])
    optimizer = make_optimizer(transformer, params)
    transformer.train()
    generator = torch.Generator().manual_seed(0)
    for step in range(8):
        loss = flow_matching_loss(transformer, latents, embeds, generator)
        loss.backward()
        if step == 0:
            # Gradients reach the adapter weights only (at first only lora_B's are non-zero,
            # since lora_B starts at zero).
            grads = {n for n, p in transformer.named_parameters() if p.grad is not None}
            assert grads == set(trainable)
            assert all(trainable[n].grad.abs().sum() > 0 for n in grads if ".lora_B." in n)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    transformer.eval()
    after = np.mean([loss_at(s) for s in range(3)])
    assert after < before, (before, after)
    # The base weights did not move; the adapter did.
    merged = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
              for n, p in transformer.named_parameters() if not p.requires_grad}  # fmt: skip
    assert set(merged) == set(base)
    assert all(torch.equal(merged[n], base[n]) for n in base)
    assert any(p.abs().sum() > 0 for n, p in trainable.items() if ".lora_B." in n)


# ----------------------------------------------------------------------- (d): run_experiment end to end


def run_params(root: Path, experiment: str) -> dict:
    defaults = deep_merge(
        PRESET["training"],
        {"max_steps": 2, "batch_size": 2, "batch_size_eval": 2, "eval_steps": 1, "log_steps": 1,
         "num_inference_steps": 2, "test_repeats": 2, "dtype": "float32", "use_gc": True},
    )  # fmt: skip
    return effective_params(defaults, root, experiment)


def run(tmp_path, pipeline_dir, encoder_dir, data_dir, root: Path, experiment: str) -> tuple[dict, Path]:  # fmt: skip
    from peftbench.tasks.image.run import run_experiment

    method, name = experiment.split("/")
    out = tmp_path / "runs" / experiment
    out.mkdir(parents=True)
    params = run_params(root, experiment)
    result = run_experiment(
        task="image", method=method, name=name, seed=0, exp_dir=root / experiment, params=params,
        model_cfg=model_cfg(pipeline_dir),
        encoder_cfg={"source": "hub", "hub": {"model_id": str(encoder_dir), "revision": None}},
        base_dir=None, encoder_dir=None, data_dir=data_dir, out_dir=out, threads=1,
        progress=False,
    )  # fmt: skip
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["status"] == "success", result["error"]
    assert result["config"] == params
    metrics = result["metrics"]
    assert -1 <= metrics["similarity"] <= 1
    assert metrics["similarity_ci_low"] <= metrics["similarity"] <= metrics["similarity_ci_high"]
    assert 0 <= metrics["drift"] <= 1
    # Filled; on the CPU it is the RSS growth over the loaded model, which a model this small
    # may not cause at all (freed pages are reused), so it can be 0.
    assert isinstance(metrics["train_memory_peak_bytes"], int)
    assert metrics["train_memory_peak_bytes"] >= 0 and metrics["eval_memory_peak_bytes"] >= 0
    assert metrics["train_time_s"] > 0 and metrics["generation_time_s"] > 0
    assert metrics["file_size_bytes"] > 0
    assert metrics["trainable_params"] > 0 and metrics["total_params"] > 0
    assert metrics["train_steps"] == 2 and metrics["train_samples"] == 4
    assert metrics["test_n"] == 2 * 2
    assert np.isfinite(metrics["train_loss_final"])
    assert [c["step"] for c in result["curves"]["train_loss"]] == [1, 2]
    assert [c["step"] for c in result["curves"]["valid_similarity"]] == [1, 2]
    assert metrics["valid_similarity_final"] == result["curves"]["valid_similarity"][-1]["similarity"]  # fmt: skip
    lines = (out / "test_similarity.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 2  # test_size x test_repeats
    test_prompts = [PROMPTS[i] for i in split_indices(8, 2, 2)[2]]
    scores = [json.loads(line) for line in lines]
    assert [(s["prompt"], s["repeat"]) for s in scores] == [(p, r) for r in range(2) for p in test_prompts]  # fmt: skip
    assert all(-1 <= s["similarity"] <= 1 for s in scores)
    assert np.isclose(np.mean([s["similarity"] for s in scores]), metrics["similarity"])
    assert (out / "samples.png").is_file()
    provenance = result["provenance"]
    assert provenance["base_model_hash"] == f"{pipeline_dir}@None"
    assert provenance["encoder_hash"] == f"{encoder_dir}@None"
    return result, out


def test_run_experiment_lora(tmp_path, pipeline_dir, encoder_dir, data_dir):
    result, out = run(tmp_path, pipeline_dir, encoder_dir, data_dir, PRESET_ROOT, "lora/default")
    assert result["peft_config"]["peft_type"] == "LORA"
    assert sorted(result["peft_config"]["target_modules"]) == sorted(
        json.loads((PRESET_ROOT / "lora/default/adapter_config.json").read_text())["target_modules"]
    )
    # r=32 on the tiny model's 13 adapted layers: in the double block 8 attention projections
    # (16->16) and ff/ff_context linear_in (16->96) and linear_out (48->16); in the single block
    # the packed qkv/mlp projection (16->144).
    dims = [(16, 16)] * 8 + [(16, 96), (48, 16)] * 2 + [(16, 144)]
    assert result["metrics"]["trainable_params"] == sum(32 * (i + o) for i, o in dims)
    assert (out / "adapter/adapter_config.json").is_file()
    assert result["metrics"]["file_size_bytes"] == (out / "adapter/adapter_model.safetensors").stat().st_size  # fmt: skip


def test_run_experiment_full_finetuning(tmp_path, pipeline_dir, encoder_dir, data_dir):
    root = tmp_path / "experiments"
    folder = root / "full-finetuning/default"
    folder.mkdir(parents=True)
    shutil.copy(PRESET_ROOT / "full-finetuning/default/training_params.json", folder)
    assert not (folder / "adapter_config.json").exists()
    result, _ = run(tmp_path, pipeline_dir, encoder_dir, data_dir, root, "full-finetuning/default")
    assert result["peft_config"] is None
    assert result["config"]["optimizer_kwargs"] == {"lr": 5e-05, "weight_decay": 0.01}
    metrics = result["metrics"]
    assert metrics["trainable_params"] == metrics["total_params"]
    assert metrics["drift"] is not None  # measured for full fine-tuning too (published: NaN)


# ------------------------------------------------------ preset experiments on FLUX.2-klein-base-4B

# Flux2Transformer2DModel of black-forest-labs/FLUX.2-klein-base-4B: 5 double-stream and 20
# single-stream blocks, 24 heads x 128 = 3072 wide, mlp_ratio 3, 3 x 2560 Qwen3 features.
KLEIN_4B = {"num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128,
            "num_attention_heads": 24, "joint_attention_dim": 7680, "in_channels": 128,
            "guidance_embeds": False}  # fmt: skip
KLEIN_4B_PARAMS = 3_875_544_576  # num_total_params of the published full fine-tuning run
PUBLISHED_TRAINABLE = {"lora/default": 38_338_560}  # num_trainable_params of the published runs
PRESET_EXPERIMENTS = discover(PRESET_ROOT) if PRESET_ROOT.is_dir() else []
REQUIRED = ["lora/default", "lora/rank64", "oft/default", "boft/default", "loha/default",
            "lokr/lr1e-3", "ia3/default", "vera/default", "hra/default", "full-finetuning/default"]  # fmt: skip


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
    monkeypatch.setattr(layer.BOFTLayer, "perm2mat", lambda self, idx: torch.empty(len(idx), len(idx)))  # fmt: skip


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
    params = effective_params(PRESET["training"], PRESET_ROOT, experiment)
    assert check_adapter_config(PRESET_ROOT, experiment) == []
    if not (folder / "adapter_config.json").exists():
        assert experiment.startswith("full-finetuning/")
        assert params["max_steps"] == PRESET["training"]["max_steps"]  # step-matched
        return
    config = PeftConfig.from_pretrained(str(folder))
    assert config.task_type is None
    assert config.base_model_name_or_path == PRESET["base_model"]["hub"]["model_id"]
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
    assert total - trainable == KLEIN_4B_PARAMS
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

    targets = json.loads((PRESET_ROOT / "lora/default/adapter_config.json").read_text())["target_modules"]  # fmt: skip
    counts = {}
    for extra in ([], [r"single_transformer_blocks\.\d+\.attn\.to_out"]):
        pattern = "|".join([r".*\." + re.escape(t) for t in targets] + extra)
        with torch.device("meta"):
            wrapped = get_peft_model(meta_klein(), LoraConfig(r=32, lora_alpha=32, target_modules=pattern))  # fmt: skip
        counts[bool(extra)] = wrapped.get_nb_trainable_parameters()[0]
    assert counts == {False: 38_338_560, True: 48_168_960}
    assert sum(p.numel() for p in meta_klein().parameters()) == KLEIN_4B_PARAMS
