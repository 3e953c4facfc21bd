"""The FLUX.2 code path of the image task, offline.

* A tiny, randomly initialised ``Flux2KleinPipeline`` of the real classes (Flux2Transformer2DModel,
  AutoencoderKLFlux2, Qwen3ForCausalLM, a Qwen2 tokenizer with a chat template, the FLUX.2
  scheduler settings) is built from small configs and saved with ``save_pretrained``. It is
  loaded through ``peftbench.tasks.image.diffusion.load_image_model`` like FLUX.2-klein from the Hub, and our
  prompt encoding, VAE codec and sampler are checked against the official pipeline; then LoRA
  training and ``image_task.run_experiment`` run end to end on it.
* The preset's experiments on the real FLUX.2-klein-base-4B shape: ``test_flux2_preset.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import REPO
from test_flux2_preset import IMAGE_TABLE, PRESET, PRESET_ROOT, adapted_modules, expected_targets

from peftbench.core.config import deep_merge
from peftbench.core.experiments import effective_params
from peftbench.core.runs import RunContext, wrap_peft
from peftbench.tasks.image.data import load_images, prepare_data, split_indices
from peftbench.tasks.image.diffusion import (
    Flux2VaeCodec,
    flow_matching_loss,
    generate,
    load_image_model,
)

torch.set_num_threads(1)

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
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=64,
            tie_word_embeddings=True,
        )
    )
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
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=len(OUT_LAYERS) * TEXT_HIDDEN,
        timestep_guidance_channels=32,
        axes_dims_rope=[2, 2, 2, 2],
        guidance_embeds=False,
    )
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
    config = Dinov2Config(
        image_size=RESOLUTION,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        mlp_ratio=2,
    )
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessor(
        do_resize=True,
        size={"height": RESOLUTION, "width": RESOLUTION},
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    ).save_pretrained(path)
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
    call = {
        "prompt_embeds": embeds,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "height": RESOLUTION,
        "width": RESOLUTION,
        "max_sequence_length": MAX_SEQ,
        "text_encoder_out_layers": OUT_LAYERS,
    }
    # The pipeline encodes its "" negative itself: it must equal ours.
    latents = generate(
        model, embeds, negative, torch.Generator(), steps, guidance, latents=noise, decode=False
    )
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
    plain = generate(
        model, embeds, negative, torch.Generator(), 3, 1.0, latents=noise, decode=False
    )
    guided = generate(
        model, embeds, negative, torch.Generator(), 3, 3.5, latents=noise, decode=False
    )
    assert not torch.allclose(plain, guided, atol=1e-4)


# ------------------------------------------------------------------------ (c): LoRA on the transformer


def test_lora_training_on_tiny_flux2(model, data_dir):
    from peftbench.core.optim import make_optimizer
    from peftbench.tasks.image.data import load_manifest

    manifest = load_manifest(data_dir)
    latents = model.encode_images(np.stack(load_images(data_dir, manifest["instance"])))
    embeds = model.encode_prompts([e["prompt"] for e in manifest["instance"]])
    params = deep_merge(PRESET["training"], {"dtype": "float32", "optimizer_kwargs": {"lr": 0.01}})
    base = {n: p.detach().clone() for n, p in model.transformer.named_parameters()}
    transformer, peft_config = wrap_peft(
        model.transformer, PRESET_ROOT / "lora/flux2-klein-default", params
    )
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
    merged = {
        n.removeprefix("base_model.model.").replace(".base_layer", ""): p
        for n, p in transformer.named_parameters()
        if not p.requires_grad
    }
    assert set(merged) == set(base)
    assert all(torch.equal(merged[n], base[n]) for n in base)
    assert any(p.abs().sum() > 0 for n, p in trainable.items() if ".lora_B." in n)


# ----------------------------------------------------------------------- (d): run_experiment end to end


def run_params(root: Path, experiment: str) -> dict:
    defaults = deep_merge(
        PRESET["training"],
        {
            "max_steps": 2,
            "batch_size": 2,
            "batch_size_eval": 2,
            "eval_steps": 1,
            "log_steps": 1,
            "num_inference_steps": 2,
            "test_repeats": 2,
            "dtype": "float32",
            "use_gc": True,
        },
    )
    merge = PRESET.get("training_merge", "deep")
    return effective_params(defaults, root, experiment, IMAGE_TABLE, merge)


def run(
    tmp_path, pipeline_dir, encoder_dir, data_dir, root: Path, experiment: str
) -> tuple[dict, Path]:
    from peftbench.tasks.image.run import run_experiment

    method, name = experiment.split("/")
    out = tmp_path / "runs" / experiment
    out.mkdir(parents=True)
    params = run_params(root, experiment)
    encoder_cfg = {"source": "hub", "hub": {"model_id": str(encoder_dir), "revision": None}}
    ctx = RunContext(
        task="image",
        method=method,
        name=name,
        seed=0,
        exp_dir=root / experiment,
        params=params,
        task_cfg={"base_model": model_cfg(pipeline_dir), "encoder": encoder_cfg},
        inputs={"data": data_dir},
        out_dir=out,
        threads=1,
        progress=False,
    )
    result = run_experiment(ctx)
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
    assert (
        metrics["valid_similarity_final"] == result["curves"]["valid_similarity"][-1]["similarity"]
    )
    lines = (out / "test_similarity.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 2  # test_size x test_repeats
    test_prompts = [PROMPTS[i] for i in split_indices(8, 2, 2)[2]]
    scores = [json.loads(line) for line in lines]
    assert [(s["prompt"], s["repeat"]) for s in scores] == [
        (p, r) for r in range(2) for p in test_prompts
    ]
    assert all(-1 <= s["similarity"] <= 1 for s in scores)
    assert np.isclose(np.mean([s["similarity"] for s in scores]), metrics["similarity"])
    assert (out / "samples.png").is_file()
    provenance = result["provenance"]
    assert provenance["base_model_hash"] == f"{pipeline_dir}@None"
    assert provenance["encoder_hash"] == f"{encoder_dir}@None"
    return result, out


def test_run_experiment_lora(tmp_path, pipeline_dir, encoder_dir, data_dir):
    result, out = run(
        tmp_path, pipeline_dir, encoder_dir, data_dir, PRESET_ROOT, "lora/flux2-klein-default"
    )
    assert result["peft_config"]["peft_type"] == "LORA"
    # As a set: the suite's file lists to_add_out twice.
    listed = json.loads((PRESET_ROOT / "lora/flux2-klein-default/adapter_config.json").read_text())[
        "target_modules"
    ]
    assert sorted(result["peft_config"]["target_modules"]) == sorted(set(listed))
    # r=32 on the tiny model's 13 adapted layers: in the double block 8 attention projections
    # (16->16) and ff/ff_context linear_in (16->96) and linear_out (48->16); in the single block
    # the packed qkv/mlp projection (16->144).
    dims = [(16, 16)] * 8 + [(16, 96), (48, 16)] * 2 + [(16, 144)]
    assert result["metrics"]["trainable_params"] == sum(32 * (i + o) for i, o in dims)
    assert (out / "adapter/adapter_config.json").is_file()
    assert (
        result["metrics"]["file_size_bytes"]
        == (out / "adapter/adapter_model.safetensors").stat().st_size
    )


def test_run_experiment_full_finetuning(tmp_path, pipeline_dir, encoder_dir, data_dir):
    root = tmp_path / "experiments"
    folder = root / "full-finetuning/flux2-klein-default"
    folder.mkdir(parents=True)
    # The preset's overrides but its run length (published: 300 steps) and evaluation period.
    overrides = json.loads(
        (PRESET_ROOT / "full-finetuning/flux2-klein-default/training_params.json").read_text()
    )
    for key in ("max_steps", "eval_steps"):
        overrides.pop(key, None)
    (folder / "training_params.json").write_text(json.dumps(overrides))
    assert not (folder / "adapter_config.json").exists()
    result, _ = run(
        tmp_path, pipeline_dir, encoder_dir, data_dir, root, "full-finetuning/flux2-klein-default"
    )
    assert result["peft_config"] is None
    assert result["config"]["optimizer_kwargs"] == {"lr": 5e-05, "weight_decay": 0.01}
    metrics = result["metrics"]
    assert metrics["trainable_params"] == metrics["total_params"]
    assert metrics["drift"] is not None  # measured for full fine-tuning too (published: NaN)
