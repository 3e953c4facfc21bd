"""The math-reasoning task: one experiment run (training and evaluation) on prepared data.

Data preparation is in ``data``; the embedded base model in ``embedded_lm``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from peftbench.core import inference, kvprefix, quant
from peftbench.core.config import file_hash
from peftbench.core.io import read_jsonl, write_jsonl
from peftbench.core.loop import train
from peftbench.core.memory import MemoryTracker
from peftbench.core.runs import (
    ADAPTER_DIR,
    BASE_METHOD,
    CHECKPOINT_DIR,
    RunContext,
    count_params,
    finish_run,
    start_run,
    wrap_peft,
)
from peftbench.core.stats import wilson_interval
from peftbench.core.train import encode, encode_rows
from peftbench.tasks.math import (
    INFER_NEW_TOKENS,
    INFER_PROMPTS,
    PRETRAINING_FILE,
    PUBLISHED_CORRECT,
    SPEC,
    answers,
)
from peftbench.tasks.math.batches import training_step
from peftbench.tasks.math.data import data_hash
from peftbench.tasks.math.evaluate import greedy_generate, heldout_loss
from peftbench.tasks.math.reference import Reference, environment


def load_base(
    model_cfg: dict[str, Any], base_dir: Path | None, params: dict[str, Any], device: torch.device
) -> tuple[Any, Any, str]:
    """Tokenizer and model through the hub code path; returns them and the base model's identity."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_cfg["source"] == "embedded":
        location, revision, identity = (
            str(base_dir),
            None,
            file_hash(sorted(Path(base_dir).glob("*.safetensors"))),
        )
    else:
        from peftbench.core.hub import resolve_revision

        location = model_cfg["hub"]["model_id"]
        # Resolved once, then loaded by sha: the recorded revision is the one actually used.
        revision = resolve_revision(location, model_cfg["hub"].get("revision"), "model")
        identity = f"{location}@{revision}"
    # trust_remote_code stays off: configs are data, and a preset has to opt in explicitly.
    remote = bool(model_cfg.get("trust_remote_code", False))
    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, trust_remote_code=remote)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        location,
        revision=revision,
        # The torch dtype, or for int8/int4 the suite's bitsandbytes config (QLoRA).
        **quant.load_kwargs(params["dtype"], device),
        attn_implementation=params.get("attn_implementation"),
        trust_remote_code=remote,
    )
    return tokenizer, quant.place(model, params["dtype"], device), identity


def accuracy(
    model: Any, tokenizer: Any, rows: list[dict], params: dict[str, Any], device: torch.device
) -> tuple[int, int, list[str]]:
    prompts = [params["query_template"].format(query=r["query"]) for r in rows]
    outputs = greedy_generate(
        model,
        tokenizer,
        prompts,
        params["batch_size_eval"],
        params["max_new_tokens"],
        device,
        # The published suite's total-length cap (its generation_kwargs max_length); None: none.
        max_length=params.get("generation_max_length"),
    )
    correct, n = answers.score(outputs, [r["answer"] for r in rows])
    return correct, n, outputs


def inference_workload(
    tokenizer: Any, rows: list[dict], params: dict[str, Any], device: torch.device
) -> inference.Workload:
    """Greedy generation of exactly :data:`INFER_NEW_TOKENS` new tokens for each of the first
    :data:`INFER_PROMPTS` of ``rows``, batched and left-padded as the evaluation does
    (:func:`~peftbench.tasks.math.evaluate.greedy_generate`). The length is forced (end of text
    suppressed until then) so that every model generates the same number of tokens, and the
    prompts are tokenized once, outside the timed calls. ``run`` returns the new ids per batch."""
    from transformers import GenerationConfig

    prompts = sorted(
        (params["query_template"].format(query=r["query"]) for r in rows[:INFER_PROMPTS]), key=len
    )
    batches, size = [], params["batch_size_eval"]
    for start in range(0, len(prompts), size):
        encoded = [tokenizer(p)["input_ids"] for p in prompts[start : start + size]]
        width = max(map(len, encoded))
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = 1
        batches.append((ids.to(device), mask.to(device)))
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=INFER_NEW_TOKENS,
        min_new_tokens=INFER_NEW_TOKENS,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )

    def run(model: Any) -> list[torch.Tensor]:
        with torch.inference_mode():
            new = [
                model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[
                    :, ids.shape[1] :
                ]
                for ids, mask in batches
            ]
        # Back on the host: the call ends when the device has finished.
        return [n.cpu() for n in new]

    return inference.Workload(run, units=len(prompts) * INFER_NEW_TOKENS, unit="tokens")


def encode_heldout(tokenizer: Any, row: dict, params: dict[str, Any]) -> dict:
    """A forgetting-probe row: plain text (loss on every token, e.g. Wikipedia for a hub model)
    or a pretraining-style problem (loss on the response, the skill the base model was built for)."""
    if "text" in row:
        ids = tokenizer(row["text"])["input_ids"][: params["max_seq_length"]]
        return {"input_ids": ids, "labels": list(ids)}
    prompt = params["query_template"].format(query=row["query"])
    return encode(tokenizer, prompt, row["response"], params["max_seq_length"], False)


def run_experiment(ctx: RunContext) -> dict[str, Any]:
    """Train (unless this is the base reference) and evaluate one experiment; write result.json
    (a failure is recorded there, see :func:`peftbench.core.runs.finish_run`)."""
    data_dir = ctx.inputs["data"]
    result, device = start_run(
        ctx,
        data_hash=data_hash(data_dir),
        metrics=SPEC.metrics,
        curves=("train_loss", SPEC.valid_curve),
    )
    return finish_run(result, lambda out: _run(ctx, result, device, out), ctx.out_dir, device)


def _run(ctx: RunContext, result: dict, device: torch.device, out_dir: Path) -> None:
    """The run itself; its files go to ``out_dir`` (moved into the run folder at the end)."""
    params, data_dir = ctx.params, ctx.inputs["data"]
    metrics, curves = result["metrics"], result["curves"]
    valid_rows = read_jsonl(data_dir / "valid.jsonl")
    test_rows = read_jsonl(data_dir / "test.jsonl")
    tracker = MemoryTracker(device)
    if device.type == "cuda":
        tracker.set_baseline()  # CUDA: include the weights, as the published benchmark does
    tokenizer, model, identity = load_base(
        ctx.task_cfg["base_model"], ctx.input("base"), params, device
    )
    result["provenance"]["base_model_hash"] = identity
    if ctx.task_cfg["base_model"]["source"] == "embedded":
        # The embedded base's own skill gate (see embedded_lm.build_embedded_base), so that every
        # row says how capable the model it fine-tuned was.
        pretraining = json.loads((ctx.input("base") / PRETRAINING_FILE).read_text("utf-8"))
        result["provenance"]["base_model_skill"] = pretraining.get("skill")
    if device.type != "cuda":
        tracker.set_baseline()  # CPU: RSS after loading; see memory.py
    metrics["memory_measure"] = tracker.measure

    # What every run with these settings computes identically comes from the task's reference
    # (rule math_base_reference) where it matches this run exactly; the rest is computed here.
    shared = Reference(ctx.input("reference"))
    hashes = (result["provenance"]["data_hash"], identity)
    heldout = shared.examples("heldout", params, *hashes) or [
        encode_heldout(tokenizer, row, params) for row in read_jsonl(data_dir / "heldout.jsonl")
    ]

    def loss_on_heldout(m: Any) -> float:
        return heldout_loss(m, heldout, params["batch_size"], tokenizer.pad_token_id, device)

    before = shared.heldout_loss_before(params, *hashes, environment(device, ctx.threads))
    metrics["heldout_loss_before"] = loss_on_heldout(model) if before is None else before
    print(f"heldout_loss_before: {'inline' if before is None else 'from the task reference'}")
    is_base = result["method"] == BASE_METHOD
    if not is_base:
        model, result["peft_config"] = wrap_peft(model, ctx.exp_dir, params)
        # init_kv_cache_prefix: a prefix-tuning adapter starts from a text's key/value cache.
        kvprefix.initialize(model, tokenizer, params)
        if params["use_gc"]:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        examples = shared.examples("train", params, *hashes)
        print(f"training examples: {'inline' if examples is None else 'from the task reference'}")
        examples = examples or encode_rows(tokenizer, read_jsonl(data_dir / "train.jsonl"), params)

        def validate(step: int) -> dict[str, float]:
            correct, n, _ = accuracy(model, tokenizer, valid_rows, params, device)
            return {SPEC.valid_value: correct / n}

        step = training_step(model, examples, params, ctx.seed, tokenizer.pad_token_id, device)
        checkpoints = ctx.out_dir / CHECKPOINT_DIR  # in the run folder: a rerun resumes
        stats = train(model, step, params, tracker, validate, ctx.progress, checkpoints)
        metrics.update(
            **stats.result_metrics(),
            train_tokens=stats.items,
            train_tokens_per_s=stats.items / stats.train_time_s if stats.train_time_s else None,
            valid_accuracy_final=stats.valid_curve[-1][SPEC.valid_value],
        )
        curves["train_loss"], curves[SPEC.valid_curve] = stats.loss_curve, stats.valid_curve
    trainable, total = count_params(model)
    metrics.update(trainable_params=0 if is_base else trainable, total_params=total)

    tracker.reset()
    t0 = time.perf_counter()
    correct, n, outputs = accuracy(model, tokenizer, test_rows, params, device)
    metrics["eval_time_s"] = time.perf_counter() - t0
    metrics["eval_memory_peak_bytes"], metrics["eval_memory_allocated_peak_bytes"] = tracker.peak()
    low, high = wilson_interval(correct, n)
    metrics.update(
        test_accuracy=correct / n,
        test_accuracy_ci_low=low,
        test_accuracy_ci_high=high,
        test_correct=correct,
        test_n=n,
    )
    # Each item scored again as the published suite scores it (answers.py), for comparisons with
    # its rows: recorded per item so that such comparisons get an item bootstrap, and the score
    # is their mean, so the two agree by construction.
    published = [
        answers.published_correct(params["query_template"].format(query=r["query"]), o, r["answer"])
        for r, o in zip(test_rows, outputs, strict=True)
    ]
    metrics["test_accuracy_published"] = sum(published) / n
    write_jsonl(
        out_dir / SPEC.item_file,
        [
            {
                "query": r["query"],
                "answer": r["answer"],
                "output": o,
                "parsed": answers.parse_answer(o),
                PUBLISHED_CORRECT: p,
            }
            for r, o, p in zip(test_rows, outputs, published, strict=True)
        ],
    )

    metrics["heldout_loss_after"] = loss_on_heldout(model)
    metrics["forgetting"] = metrics["heldout_loss_after"] - metrics["heldout_loss_before"]
    if not is_base:
        adapter_dir = out_dir / ADAPTER_DIR
        model.save_pretrained(adapter_dir)
        metrics["file_size_bytes"] = sum(
            f.stat().st_size for f in adapter_dir.glob("*.safetensors")
        )

    # Last: merging changes the weights, and no other figure may include the timing.
    plain = inference.BASE_MODEL_NOTE if is_base else inference.FULL_FINETUNING_NOTE
    workload = inference_workload(tokenizer, test_rows, params, device)
    metrics.update(inference.measure(model, workload, plain_note=plain))
