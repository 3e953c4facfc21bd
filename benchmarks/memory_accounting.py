"""Measure what the live-tensor accounting costs in training time, and print it.

    python benchmarks/memory_accounting.py [--repeats 3] [--threads 1] [--steps N]

Trains the embedded math model's architecture (``config/config.yaml``, random weights, LoRA
q/v r=8 and full fine-tuning) with the shared loop on synthetic sequences of the embedded
length range, once with the accounting of one step (the default) and once with it switched
off, ``--repeats`` times each, interleaved. Prints the median training times and the
overhead, which must stay under 5%; and, more directly, one accounted step's extra time over
the same step unaccounted, as a share of a whole training's time. Also prints each run's
accounted peak and categories (the embedded memory table per method).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import peftbench.core.loop as loop  # noqa: E402
from peftbench.core.memory import MemoryTracker  # noqa: E402
from peftbench.core.memtrack import TensorAccountant  # noqa: E402
from peftbench.core.train import lm_step  # noqa: E402

CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())["math"]


def build(method: str) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    embedded = CONFIG["base_model"]["embedded"]
    config = LlamaConfig(
        vocab_size=embedded["vocab_size"], tie_word_embeddings=True, **embedded["architecture"]
    )
    model = LlamaForCausalLM(config)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    return model


def examples(n: int, max_len: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(max_len // 4, max_len + 1, (n,), generator=generator).tolist()
    return [
        {"input_ids": ids, "labels": list(ids)}
        for ids in (torch.randint(1, 500, (k,), generator=generator).tolist() for k in lengths)
    ]


def train_time(method: str, params: dict, account: bool) -> tuple[float, loop.TrainStats]:
    model = build(method)
    step = lm_step(
        model, examples(2000, params["max_seq_length"]), params, 0, 0, torch.device("cpu")
    )
    original = loop.accounted_step
    if not account:
        loop.accounted_step = lambda *args, **kwargs: 0  # no step is number 0: none accounted
    try:
        stats = loop.train(model, step, params, MemoryTracker(torch.device("cpu")), progress=False)
    finally:
        loop.accounted_step = original
    return stats.train_time_s, stats


def one_step_extra(method: str, params: dict) -> float:
    """Seconds an accounted step takes beyond the same step unaccounted (after a warm-up)."""
    from peftbench.core.optim import Updater, make_optimizer, make_scheduler

    model = build(method)
    batch = examples(params["batch_size"], params["max_seq_length"])
    step = lm_step(model, batch, {**params, "bucket_factor": 1}, 0, 0, torch.device("cpu"))
    optimizer = make_optimizer(model, params)
    update = Updater(model, optimizer, make_scheduler(optimizer, params), 1.0)
    times = {True: [], False: []}
    for i in range(9):
        account = i % 2 == 1
        accountant = TensorAccountant(model, optimizer) if account else None
        t0 = time.perf_counter()
        if accountant:
            accountant.__enter__()
        step.loss()[0].backward()
        update(i + 1)
        if accountant:
            accountant.__exit__(None, None, None)
        if i >= 1:
            times[account].append(time.perf_counter() - t0)
    return statistics.median(times[True]) - statistics.median(times[False])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=CONFIG["resources"]["threads"])
    parser.add_argument("--steps", type=int, default=CONFIG["training"]["max_steps"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = {**CONFIG["training"], "max_steps": args.steps, "eval_steps": 0}
    for method in ("lora", "full"):
        runs: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for account in (False, True):
                seconds, stats = train_time(method, params, account)
                runs[account].append(seconds)
        with_, without = statistics.median(runs[True]), statistics.median(runs[False])
        extra = one_step_extra(method, params)
        print(
            f"== {method}: {args.steps} steps, batch {params['batch_size']}, {args.threads} thread(s)"
        )
        print(
            f"  train time, median of {args.repeats}: accounted {with_:.2f} s, not {without:.2f} s"
        )
        print(f"  overhead from the medians: {(with_ - without) / without:+.1%}")
        print(
            f"  one accounted step's extra time: {extra * 1000:.0f} ms = "
            f"{extra / without:.2%} of the training (target < 5%)"
        )
        breakdown = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in stats.tensor_breakdown.items())
        print(
            f"  accounted peak (step {stats.tensor_step}): {stats.tensor_peak_bytes / 1e6:.2f} MB "
            f"= {breakdown} (MB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
