"""Math reasoning: fine-tune a causal LM on word problems, score exact-match accuracy.

Embedded default: generated arithmetic problems and a tiny Llama pretrained by the workflow;
preset: Llama-3.2-3B on MetaMathQA, tested on GSM8K. This module is the task's torch-free spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peftbench.core import inference, kvprefix
from peftbench.core.config import dtype_key
from peftbench.tasks.math.answers import answers_match
from peftbench.tasks.spec import Column, PublishedFormat, TaskSpec, TrainingKey

#: Base model folder the task's own rules build for the embedded default.
EMBEDDED_BASE = "results/math/base_model"
#: The work every run of the task shares, done once (rule math_base_reference; ``reference``).
REFERENCE_DIR = "results/math/base_reference"
#: What that folder records about its pretraining, its skill included (``embedded_lm``).
PRETRAINING_FILE = "pretraining.json"
#: Key of an item line (``test_predictions.jsonl``) holding its correctness under the published
#: suite's rule (``answers.published_correct``); runs older than it lack the key.
PUBLISHED_CORRECT = "published_correct"
#: Inference timing (:mod:`peftbench.core.inference`, ``run.inference_workload``): the first
#: test prompts, each generating exactly this many new tokens; small, so that it adds under a
#: second to an embedded job.
INFER_PROMPTS, INFER_NEW_TOKENS = 8, 12


def _correctness(item: Mapping[str, Any]) -> float:
    return float(answers_match(item.get("parsed"), item.get("answer")))


def _published_correctness(item: Mapping[str, Any]) -> float | None:
    # Read back, never re-derived: the rule needs the prompt template the run used.
    value = item.get(PUBLISHED_CORRECT)
    return None if value is None else float(value)


def base_inputs(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The base model folder the task's own rules build, if the config uses one."""
    return {"base": EMBEDDED_BASE} if cfg["base_model"]["source"] == "embedded" else {}


def _extra_inputs(cfg: Mapping[str, Any]) -> dict[str, str]:
    return {**base_inputs(cfg), "reference": REFERENCE_DIR}


SPEC = TaskSpec(
    name="math",
    title="Math reasoning",
    description="GSM8K-style word problems: exact-match accuracy of the final answer.",
    quality=Column(
        "test_accuracy",
        "test accuracy",
        "Share (0-1) of test problems whose parsed final answer equals the reference, with "
        "greedy decoding.",
        direction="max",
        axis_title="Test accuracy",
        fraction=True,
    ),
    quality_description="exact-match accuracy of the final answer, greedy decoding",
    proportion=True,
    side_effect=Column(
        "forgetting",
        "forgetting",
        "Held-out loss after minus before fine-tuning (nats per token) on pretraining-style "
        "text; lower is better, negative means it improved.",
        direction="min",
        axis_title="Forgetting (held-out loss increase)",
    ),
    valid_curve="valid_accuracy",
    valid_value="accuracy",
    item_file="test_predictions.jsonl",
    item_score=_correctness,
    columns=(
        Column(
            "valid_accuracy_final",
            "final valid acc.",
            "Validation accuracy at the last evaluation.",
            direction="max",
            axis_title="Final validation accuracy",
            fraction=True,
        ),
        Column(
            "test_accuracy_published",
            "test acc. (published parser)",
            "Test accuracy under the published suite's answer parser (no thousands separators, "
            "units, LaTeX or letter-case tolerance; prompt and generation searched): the score "
            "comparable with published rows.",
            direction="max",
            axis_title="Test accuracy (published parser)",
            fraction=True,
        ),
        Column(
            "train_tokens_per_s",
            "tokens/s",
            "Non-padding training tokens per second of training time.",
            direction="max",
            axis_title="Training throughput (tokens/s)",
        ),
        Column(
            "infer_tokens_per_s",
            "inference tokens/s",
            "Greedy generation throughput with the adapter unmerged (as trained): new tokens "
            f"per second over the inference timing's fixed prompts (the first {INFER_PROMPTS} "
            f"test prompts, {INFER_NEW_TOKENS} new tokens each, batched as the evaluation "
            f"batches; median of {inference.REPEATS} timed calls after a warm-up).",
            direction="max",
            axis_title="Inference throughput, unmerged (tokens/s)",
        ),
        Column(
            "infer_merged_tokens_per_s",
            "merged tokens/s",
            "The same with the adapter merged into the weights (merge_and_unload); empty where "
            "the method cannot merge (infer note says why).",
            direction="max",
            axis_title="Inference throughput, merged (tokens/s)",
        ),
    ),
    metrics=(
        "test_accuracy",
        "test_accuracy_ci_low",
        "test_accuracy_ci_high",
        "test_correct",
        "test_accuracy_published",
        "valid_accuracy_final",
        "train_tokens",
        "train_tokens_per_s",
        "heldout_loss_before",
        "heldout_loss_after",
        "forgetting",
        *inference.metric_keys("tokens"),
    ),
    training_keys={
        "max_seq_length": TrainingKey(
            (int,), "training sequences are truncated to this many tokens", "positive"
        ),  # noqa: E501
        "attn_implementation": TrainingKey((str, type(None)), "passed to from_pretrained"),
        "query_template": TrainingKey(
            (str,), "prompt template; must contain {query}", placeholder="{query}"
        ),
        "train_on_prompt": TrainingKey(
            (bool,), "compute the loss on prompt tokens too (the reference does)"
        ),  # noqa: E501
        "bucket_factor": TrainingKey(
            (int,), "length-bucketing: sort groups of batch_size*bucket_factor samples", "positive"
        ),  # noqa: E501
        "max_new_tokens": TrainingKey((int,), "greedy generation length limit", "positive"),
        # The base model may be loaded quantized (int8/int4, QLoRA; peftbench.core.quant).
        "dtype": dtype_key(quantized=True),
        kvprefix.KEY: kvprefix.TRAINING_KEY,
        # The three keys below are optional: a missing key is the embedded default's behaviour
        # (the value named first); the published-compatible values are the math preset's.
        "train_order": TrainingKey(
            (str,),
            "shuffled (each epoch and its batches) | stored (the published suite's: the data "
            "front to back, length-sorted within each bucket)",
            choices=frozenset({"shuffled", "stored"}),
        ),
        "generation_max_length": TrainingKey(
            (int, type(None)),
            "cap on a generation batch's total length, padded prompt plus new tokens (the "
            "published suite's generation max_length); null: no cap",
            "positive",
        ),
        "empty_cache_steps": TrainingKey(
            (int,),
            "empty the CUDA allocator cache every N steps (0: never; the published suite: 10)",
            "non_negative",
        ),
    },
    published=PublishedFormat(
        name="metamathqa",
        metric_keys=frozenset({"test accuracy", "valid accuracy"}),
        config_keys=frozenset({"generation_kwargs", "query_template"}),
        quality_key="test accuracy",
        side_effect_key="forgetting",
        valid_key="valid accuracy",
        test_n=1319,  # GSM8K test split
        validation_means={"train_tokens_per_s": "tokens / sec"},
        comparable_quality="test_accuracy_published",
        comparable_item_score=_published_correctness,
    ),
    run_module="peftbench.tasks.math.run",
    data_module="peftbench.tasks.math.data",
    meta_model="peftbench.tasks.math.embedded_lm",
    memory_probe="peftbench.tasks.math.memory_probe",
    rules="rules.smk",
    extra_inputs=_extra_inputs,
)
