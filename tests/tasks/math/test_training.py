"""Real training and evaluation runs on a tiny embedded model (a few seconds each)."""

import json

import pytest
import torch
from tiny import CONFIG, PARAMS, TIMING_KEYS, random_llama, run  # noqa: E402

from peftbench.analysis.aggregate import validate_result
from peftbench.core.config import deep_merge
from peftbench.core.runs import SHARED_METRICS
from peftbench.core.train import batch_stream, encode
from peftbench.tasks.math import SPEC


def test_prepared_data_is_disjoint_and_complete(tiny):
    manifest = json.loads((tiny / "data/manifest.json").read_text())
    assert manifest["rows"]["test.jsonl"] == CONFIG["data"]["embedded"]["test_size"]
    queries = {}
    for split in ("train", "valid", "test"):
        lines = (tiny / "data" / f"{split}.jsonl").read_text().splitlines()
        queries[split] = {json.loads(line)["query"] for line in lines}
    assert not queries["train"] & queries["test"] and not queries["valid"] & queries["test"]


def test_base_model_reloads_like_a_hub_model(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny / "base")
    model = AutoModelForCausalLM.from_pretrained(tiny / "base")
    assert type(model).__name__ == "LlamaForCausalLM"
    text = "Sam has 5 apples. 5 + 3 = 8"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_lora_run_writes_a_valid_result(tiny):
    result = run(tiny, "lora/rank8-qv", "lora")
    assert result["status"] == "success", result["error"]
    validate_result(json.loads((tiny / "lora/result.json").read_text()))
    m = result["metrics"]
    assert set(m) == {*SHARED_METRICS, *SPEC.metrics}  # the shared metrics and math's own
    assert 0 < m["trainable_params"] < m["total_params"]
    assert m["train_steps"] == PARAMS["max_steps"]
    assert m["train_time_s"] > 0 and m["eval_time_s"] > 0 and m["train_tokens"] > 0
    assert m["file_size_bytes"] > 0 and m["test_n"] == CONFIG["data"]["embedded"]["test_size"]
    assert m["forgetting"] == pytest.approx(m["heldout_loss_after"] - m["heldout_loss_before"])
    assert [p["step"] for p in result["curves"]["valid_accuracy"]] == [3, 6]
    assert (tiny / "lora/adapter/adapter_model.safetensors").exists()
    assert len((tiny / "lora/test_predictions.jsonl").read_text().splitlines()) == m["test_n"]


def test_base_reference_row(tiny):
    result = run(tiny, "base/no-finetuning", "base_run")
    assert result["status"] == "success", result["error"]
    assert result["metrics"]["trainable_params"] == 0 and result["metrics"]["train_time_s"] is None
    assert result["metrics"]["forgetting"] == 0


def test_same_seed_same_numbers(tiny):
    first = run(tiny, "lora/rank8-qv", "det1")["metrics"]
    second = run(tiny, "lora/rank8-qv", "det2")["metrics"]
    assert {k: v for k, v in first.items() if k not in TIMING_KEYS} == {
        k: v for k, v in second.items() if k not in TIMING_KEYS
    }


def test_nan_loss_fails_the_run_but_writes_a_result(tiny):
    # lora_alpha = Infinity makes the adapter's scaling infinite: the first loss is NaN.
    adapter = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 4,
        "lora_alpha": float("inf"),
        "target_modules": ["q_proj", "v_proj"],
    }
    result = run(tiny, "lora/nan", "nan", adapter=adapter)
    assert result["status"] == "failed"
    assert "NonFiniteLossError" in result["error"]
    saved = json.loads((tiny / "nan/result.json").read_text())
    validate_result(saved)
    assert saved["status"] == "failed" and saved["metrics"]["test_accuracy"] is None


def test_training_learns(tiny):
    """Full fine-tuning for a few more steps lowers the training loss."""
    params = deep_merge(
        PARAMS,
        {"max_steps": 30, "log_steps": 10, "eval_steps": 0, "optimizer_kwargs": {"lr": 0.003}},
    )
    result = run(tiny, "full-finetuning/default", "full", params=params)
    losses = [p["loss"] for p in result["curves"]["train_loss"]]
    assert losses[-1] < losses[0]


def test_encode_masks_the_prompt_unless_asked():
    class Tok:
        eos_token_id = 9

        def __call__(self, text, add_special_tokens=True):
            ids = [ord(c) - 96 for c in text]
            return {"input_ids": ([0] if add_special_tokens else []) + ids}

    masked = encode(Tok(), "ab", "c", 10, train_on_prompt=False)
    assert masked["input_ids"] == [0, 1, 2, 3, 9]
    assert masked["labels"] == [-100, -100, -100, 3, 9]
    assert encode(Tok(), "ab", "c", 10, train_on_prompt=True)["labels"] == [0, 1, 2, 3, 9]
    assert encode(Tok(), "ab", "cd", 4, train_on_prompt=False)["input_ids"] == [0, 1, 2, 3]


def test_batch_stream_is_deterministic_and_bucketed():
    lengths = [
        int(x) for x in torch.randint(5, 60, (200,), generator=torch.Generator().manual_seed(0))
    ]
    a, b = batch_stream(lengths, 8, 4, seed=1), batch_stream(lengths, 8, 4, seed=1)
    first = [next(a) for _ in range(50)]
    assert first == [next(b) for _ in range(50)]
    epoch = sorted(i for batch in first[:25] for i in batch)
    assert epoch == list(range(200)), "one epoch covers every sample exactly once"
    spread = sum(max(lengths[i] for i in x) - min(lengths[i] for i in x) for x in first[:25]) / 25
    assert spread < 20, "length bucketing keeps batches homogeneous"


def test_gradient_checkpointing_and_accumulation(tiny):
    params = deep_merge(PARAMS, {"use_gc": True, "grad_accumulation_steps": 2, "eval_steps": 0})
    result = run(tiny, "lora/rank8-all-linear", "gc", params=params)
    assert result["status"] == "success", result["error"]
    assert result["metrics"]["train_steps"] == PARAMS["max_steps"]


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("lora+", {"lr": 1e-3, "loraplus_lr_ratio": 16}),
        ("lora-fa", {"lr": 1e-3, "r": 4, "lora_alpha": 8}),
    ],
)
def test_peft_optimizers(kind, kwargs):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftbench.core.optim import make_optimizer

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = get_peft_model(
        LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    optimizer = make_optimizer(model, {"optimizer_type": kind, "optimizer_kwargs": kwargs})
    lrs = {group["lr"] for group in optimizer.param_groups}
    if kind == "lora+":
        assert {1e-3, 16e-3} <= lrs, "LoRA+ gives the B matrices a larger learning rate"
    else:
        frozen = [n for n, p in model.named_parameters() if "lora_A" in n and not p.requires_grad]
        assert frozen, "LoRA-FA freezes the A matrices"


@pytest.mark.parametrize("peft_type", ["PROMPT_TUNING", "PREFIX_TUNING", "LORA"])
def test_greedy_generate_matches_a_manual_greedy_loop(peft_type):
    """Batched, left-padded, cached generation gives the tokens a plain argmax loop gives.

    Guards against library mismatches: transformers 5.24 renamed generate's cache argument and
    PEFT 0.21.2's prompt tuning then re-injected its virtual tokens at every step."""
    from peft import get_peft_model
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    from peftbench.tasks.math.evaluate import greedy_generate

    kwargs = {"task_type": "CAUSAL_LM"}
    if peft_type == "LORA":
        kwargs.update(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    else:
        kwargs.update(num_virtual_tokens=4)
    model = get_peft_model(random_llama(), PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](**kwargs))
    model.eval()

    class Tok:  # characters 'a'.. map to ids 3..; no EOS is ever generated on purpose
        pad_token_id, eos_token_id, bos_token_id = 0, 39, 1

        def __call__(self, text):
            return {"input_ids": [1] + [3 + ord(c) - 97 for c in text]}

        def batch_decode(self, rows, skip_special_tokens=True):
            return [" ".join(str(int(t)) for t in row) for row in rows]

    prompts = ["abcde", "fg", "hijklmn"]
    got = greedy_generate(
        model, Tok(), prompts, batch_size=3, max_new_tokens=6, device=torch.device("cpu")
    )
    for prompt, text in zip(prompts, got, strict=True):
        ids = torch.tensor([Tok()(prompt)["input_ids"]])
        with torch.no_grad():
            for _ in range(6):
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
        expected = " ".join(str(int(t)) for t in ids[0, len(Tok()(prompt)["input_ids"]) :])
        assert text == expected, (peft_type, prompt)


def test_every_result_has_the_shared_metrics_the_schema_requires():
    from peftbench.analysis.aggregate import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["properties"]["metrics"]["required"]) == set(SHARED_METRICS)
