"""A tiny embedded setup shared by the tests that really train (see conftest.py's ``tiny``)."""

import json
from pathlib import Path

import yaml
from paths import REPO

from peftbench.core.config import deep_merge
from peftbench.core.runs import RunContext
from peftbench.tasks.math import run as math_task

CONFIG = deep_merge(
    yaml.safe_load((REPO / "config/config.yaml").read_text()),
    yaml.safe_load((REPO / "config/test.yaml").read_text()),
)["math"]
PARAMS = CONFIG["training"]
TIMING_KEYS = {
    "train_memory_peak_bytes",
    "train_memory_allocated_peak_bytes",
    "eval_memory_peak_bytes",
    "eval_memory_allocated_peak_bytes",
    "train_time_s",
    "valid_time_s",
    "eval_time_s",
    "train_tokens_per_s",
    # Inference timing (peftbench.core.inference); its note is not a timing.
    "infer_latency_s",
    "infer_merged_latency_s",
    "infer_base_latency_s",
    "infer_overhead",
    "infer_merged_overhead",
    "infer_tokens_per_s",
    "infer_merged_tokens_per_s",
    "infer_base_tokens_per_s",
}


def run(tiny: Path, experiment: str, out: str, params=PARAMS, adapter: dict | None = None) -> dict:
    method, name = experiment.split("/")
    exp_dir = REPO / "experiments/math" / experiment
    if adapter is not None:
        exp_dir = tiny / "experiments" / experiment
        exp_dir.mkdir(parents=True, exist_ok=True)
        (exp_dir / "adapter_config.json").write_text(json.dumps(adapter))
    ctx = RunContext(
        task="math",
        method=method,
        name=name,
        seed=0,
        exp_dir=exp_dir if method != "base" else None,
        params=params,
        task_cfg=CONFIG,
        inputs={"data": tiny / "data", "base": tiny / "base"},
        out_dir=tiny / out,
        threads=1,
        progress=False,
    )
    return math_task.run_experiment(ctx)


def random_llama(hidden: int = 32, layers: int = 2, vocab: int = 40):
    """A seeded, randomly initialised Llama of a few thousand parameters (ids 0/1/2: pad, bos,
    eos), for tests of generation and wrapping that need no training."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config)
