"""The embedded default's language model: a locally trained tokenizer and a tiny ``LlamaForCausalLM``.

Both are saved with ``save_pretrained`` and every experiment reloads them with
``AutoTokenizer.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained``, the same code path as a
hub model such as Llama-3.2-3B.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from peftbench.core.io import read_jsonl, write_json
from peftbench.core.loop import train
from peftbench.core.memory import MemoryTracker
from peftbench.core.train import encode_rows, lm_step
from peftbench.tasks.math import PRETRAINING_FILE, answers
from peftbench.tasks.math.evaluate import greedy_generate

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, split_digits: bool = False
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts``.

    With ``split_digits`` every digit is its own token (arithmetic per digit, as in Llama-3);
    without it the small numbers of the embedded task become single tokens, which a model of a
    million parameters learns to add far more reliably than digit by digit.
    """
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=split_digits),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL["bos_token"]
    # A BOS on every encoded prompt, like the Llama tokenizers.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def build_model(model_cfg: dict[str, Any], tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A randomly initialised Llama sized by ``model_cfg`` (hidden_size, num_hidden_layers, ...)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **model_cfg,
    )
    return LlamaForCausalLM(config)


class BaseSkillError(RuntimeError):
    """The pretrained base model failed its own skill gate (``min_skill``)."""


def skill(model: Any, tokenizer: Any, rows: list[dict], params: dict[str, Any]) -> float:
    """Greedy exact-match accuracy on pretraining-distribution problems (``heldout.jsonl``): what
    the base model was built to do. Fine-tuning composes these skills, so a base that has not
    mastered them gives results that hinge on how far pretraining happened to get."""
    longest = max(len(tokenizer(r["response"])["input_ids"]) for r in rows)
    outputs = greedy_generate(
        model,
        tokenizer,
        [params["query_template"].format(query=r["query"]) for r in rows],
        len(rows),
        longest + 4,
        torch.device("cpu"),
    )
    return answers.score(outputs, [r["answer"] for r in rows])[0] / len(rows)


def build_embedded_base(model_cfg: dict[str, Any], data_dir: Path, out: Path, threads: int) -> dict:
    """Train a tokenizer and pretrain a tiny Llama on the pretraining distribution; save both.

    The base is gated on its own skill: below ``model_cfg["min_skill"]`` (accuracy on unseen
    pretraining problems) it is refused with :class:`BaseSkillError` and nothing is saved.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(model_cfg["seed"])
    pretrain = read_jsonl(data_dir / "pretrain.jsonl")
    finetune = read_jsonl(data_dir / "train.jsonl")
    # The tokenizer sees the fine-tuning wording too (as a hub tokenizer would have); the model's
    # weights only ever see the pretraining distribution.
    tokenizer = train_tokenizer(
        [f"{r['query']} {r['response']}" for r in pretrain + finetune], model_cfg["vocab_size"]
    )
    model = build_model(model_cfg["architecture"], tokenizer)
    params = model_cfg["pretraining"]
    examples = encode_rows(tokenizer, pretrain, params)
    device = torch.device("cpu")
    tracker = MemoryTracker(device)
    tracker.set_baseline()
    step = lm_step(model, examples, params, model_cfg["seed"], tokenizer.pad_token_id, device)
    stats = train(model, step, params, tracker)
    info = {
        "parameters": model.num_parameters(),
        "train_time_s": stats.train_time_s,
        "final_loss": stats.loss_curve[-1]["loss"],
        "steps": stats.steps,
        "skill": skill(model, tokenizer, read_jsonl(data_dir / "heldout.jsonl"), params),
        "min_skill": model_cfg.get("min_skill", 0.0),
        "loss_curve": stats.loss_curve,
    }
    if info["skill"] < info["min_skill"]:
        raise BaseSkillError(
            f"embedded base model (seed {model_cfg['seed']}): skill {info['skill']:.1%} on unseen "
            f"pretraining problems is below base_model.embedded.min_skill "
            f"{info['min_skill']:.0%}; the fine-tuning results would hinge on an unfinished "
            "pretraining. Raise base_model.embedded.pretraining.max_steps."
        )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_json(out / PRETRAINING_FILE, {"config": model_cfg, **info})
    return info


def build_meta_model(task_cfg: dict[str, Any]) -> Any:
    """The task's base causal LM with no weights allocated (meta device), for the pre-flight check
    of every adapter config (``TaskSpec.meta_model``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_cfg = task_cfg["base_model"]
    remote = bool(model_cfg.get("trust_remote_code", False))
    if model_cfg["source"] == "embedded":
        embedded = model_cfg["embedded"]
        config = LlamaConfig(
            vocab_size=embedded["vocab_size"], tie_word_embeddings=True, **embedded["architecture"]
        )
    else:
        hub = model_cfg["hub"]
        config = AutoConfig.from_pretrained(
            hub["model_id"], revision=hub.get("revision"), trust_remote_code=remote
        )
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=remote)
