"""The project's training loop against transformers' ``Trainer``: tokens per second on the same
batches of the embedded math task (a regression check of the loop's speed, issue 15).

    python benchmarks/loop_vs_trainer.py --workdir DIR [--steps 60] [--threads 1]

Needs a run's ``results/math/data`` and ``results/math/base_model`` in ``DIR``. Both train the
default LoRA experiment (lora/rank8-qv) with the task's default optimizer settings from a fresh
copy of the base model, on the same pre-collated batches, on one thread as a training job does;
each is timed around its whole call, and the faster of two interleaved rounds counts (other
processes on the machine slow one round or the other).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
import yaml

EXPERIMENT = "lora/rank8-qv"


def setup(workdir: Path, steps: int) -> tuple[dict, list[dict], Any]:
    """The task's training params, ``steps`` collated batches, and a model factory."""
    from peftbench.core.io import read_jsonl
    from peftbench.core.train import batch_stream, collate, encode_rows
    from peftbench.tasks.math.run import load_base

    params = yaml.safe_load((workdir / "config/config.yaml").read_text())["math"]["training"]
    params = {**params, "max_steps": steps, "log_steps": steps, "eval_steps": 0}
    model_cfg = {"source": "embedded"}
    base = workdir / "results/math/base_model"
    tokenizer, _, _ = load_base(model_cfg, base, params, torch.device("cpu"))
    examples = encode_rows(tokenizer, read_jsonl(workdir / "results/math/data/train.jsonl"), params)
    lengths = [len(e["input_ids"]) for e in examples]
    stream = batch_stream(lengths, params["batch_size"], params["bucket_factor"], seed=0)
    pad = tokenizer.pad_token_id
    batches = [
        collate([examples[i] for i in next(stream)], pad, torch.device("cpu")) for _ in range(steps)
    ]

    def model() -> Any:
        from peftbench.core.runs import wrap_peft

        torch.manual_seed(0)
        _, loaded, _ = load_base(model_cfg, base, params, torch.device("cpu"))
        return wrap_peft(loaded, workdir / "experiments/math" / EXPERIMENT, params)[0]

    return params, batches, model


def tokens(batches: list[dict]) -> int:
    return sum(int(b["attention_mask"].sum()) for b in batches)


def own_loop(params: dict, batches: list[dict], model: Any) -> float:
    from peftbench.core.loop import Step, train
    from peftbench.core.memory import MemoryTracker

    it = iter(batches)

    def loss() -> tuple[torch.Tensor, int]:
        batch = next(it)
        return model(**batch).loss, int(batch["attention_mask"].sum())

    t0 = time.perf_counter()
    train(model, Step(loss=loss), params, MemoryTracker(torch.device("cpu")), progress=False)
    return tokens(batches) / (time.perf_counter() - t0)


def trainer(params: dict, batches: list[dict], model: Any, out: Path) -> float:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=params["max_steps"],
        per_device_train_batch_size=1,  # one pre-collated batch per item
        learning_rate=params["optimizer_kwargs"]["lr"],
        weight_decay=params["optimizer_kwargs"]["weight_decay"],
        lr_scheduler_type=params["lr_scheduler"],
        warmup_steps=round(params["warmup_ratio"] * params["max_steps"]),
        max_grad_norm=params["grad_norm_clip"],
        optim="adamw_torch",
        logging_steps=params["max_steps"],
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    run = Trainer(
        model=model, args=args, train_dataset=batches, data_collator=lambda items: items[0]
    )
    t0 = time.perf_counter()
    run.train()
    return tokens(batches) / (time.perf_counter() - t0)


def compare(workdir: Path, steps: int = 60, threads: int = 1) -> float:
    """Own-loop tokens/s over Trainer tokens/s (best of two interleaved rounds each); prints both."""
    import tempfile

    torch.set_num_threads(threads)
    params, batches, model = setup(workdir, steps)
    own, theirs = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(2):
            own.append(own_loop(params, batches, model()))
            theirs.append(trainer(params, batches, model(), Path(out)))
    print(
        f"\nTokens/s on {steps} steps of {EXPERIMENT} ({tokens(batches)} tokens, {threads} thread):"
        f" own loop {max(own):.0f}, Trainer {max(theirs):.0f}"
    )
    return max(own) / max(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    ratio = compare(args.workdir, args.steps, args.threads)
    print(f"ratio {ratio:.3f}: {'PASS' if ratio >= 0.95 else 'FAIL'} (at least 0.95)")


if __name__ == "__main__":
    main()
