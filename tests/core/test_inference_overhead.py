"""Tests of the inference timing (peftbench.core.inference) on a tiny random Llama, and of the
math task's timing workload (forced length, batched like the evaluation)."""

from __future__ import annotations

import copy

import pytest
import torch
from factories import make_base_result, make_result
from peft import LoraConfig, PromptTuningConfig, get_peft_model
from tiny import random_llama
from transformers import GenerationConfig

from peftbench.analysis.aggregate import INFERENCE_COLUMNS, summarize, validate_result
from peftbench.analysis.glossary import lookup
from peftbench.core import inference
from peftbench.tasks.math import INFER_NEW_TOKENS, INFER_PROMPTS
from peftbench.tasks.math.run import inference_workload

PROMPTS = torch.tensor([[1, 5, 9, 12, 7], [1, 3, 4, 20, 33]])
NEW = 6
CONFIG = GenerationConfig(
    do_sample=False,
    num_beams=1,
    max_new_tokens=NEW,
    min_new_tokens=NEW,
    pad_token_id=0,
    eos_token_id=2,
    bos_token_id=1,
)


def generate(model) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(
            input_ids=PROMPTS, attention_mask=torch.ones_like(PROMPTS), generation_config=CONFIG
        )
    return out[:, PROMPTS.shape[1] :]


class Recorder:
    """A workload that records which model class each call ran and what it generated."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []

    def run(self, model) -> torch.Tensor:
        out = generate(model)
        self.calls.append((type(model).__name__, out))
        return out

    def workload(self) -> inference.Workload:
        return inference.Workload(self.run, units=PROMPTS.shape[0] * NEW, unit="tokens")


def lora_model(base):
    # init_lora_weights=False: a random adapter, so that it changes what the model generates.
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(copy.deepcopy(base), config).eval()


@pytest.fixture(autouse=True)
def one_thread():
    # As the embedded jobs run; several threads of a tiny model crawl on a loaded machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def base():
    return random_llama().eval()


def test_a_lora_model_gets_unmerged_merged_and_base_figures(base):
    values = inference.measure(lora_model(base), Recorder().workload())
    assert set(values) == set(inference.metric_keys("tokens"))
    for variant in ("", "merged_", "base_"):
        latency = values[f"infer_{variant}latency_s"]
        assert latency > 0
        assert values[f"infer_{variant}tokens_per_s"] == pytest.approx(
            PROMPTS.shape[0] * NEW / latency
        )
    assert values["infer_overhead"] == pytest.approx(
        values["infer_latency_s"] / values["infer_base_latency_s"]
    )
    assert values["infer_merged_overhead"] == pytest.approx(
        values["infer_merged_latency_s"] / values["infer_base_latency_s"]
    )
    assert values["infer_note"] is None
    assert all(inference.is_metric(key) for key in values)


def test_each_variant_is_what_it_says_and_warm_up_is_excluded(base):
    pristine = generate(base)
    model = lora_model(base)
    unmerged = generate(model)
    assert not torch.equal(unmerged, pristine)  # the adapter changes the output
    recorder = Recorder()
    inference.measure(model, recorder.workload(), warmup=1, repeats=3)
    # One warm-up round and three timed rounds of (unmerged, base), then merged: 1 + 3 calls.
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds == [type(model).__name__, "LlamaForCausalLM"] * 4 + ["LlamaForCausalLM"] * 4
    assert type(model).__name__.startswith("PeftModel")
    outputs = [out for _, out in recorder.calls]
    for out in outputs[0:8:2]:
        assert torch.equal(out, unmerged)
    for out in outputs[1:8:2]:
        assert torch.equal(out, pristine)  # base: the untouched model, no adapter left in
    for out in outputs[8:]:
        assert torch.equal(out, unmerged)  # merged generates what the adapter did


def test_the_base_view_puts_the_adapter_back(base):
    model = lora_model(base)
    unmerged = generate(model)
    with inference.base_model(model) as plain:
        assert not any(inference._from_peft(m) for m in plain.modules())
        assert torch.equal(generate(plain), generate(base))
    assert torch.equal(generate(model), unmerged)
    assert sum(type(m).__name__ == "Linear" and inference._from_peft(m) for m in model.modules())


def test_a_method_that_cannot_merge_has_null_merged_figures(base, monkeypatch):
    from peft.tuners.lora import layer

    def refuse(self, *args, **kwargs):
        raise NotImplementedError("no merging here")

    monkeypatch.setattr(layer.Linear, "merge", refuse)
    values = inference.measure(lora_model(base), Recorder().workload())
    assert values["infer_merged_latency_s"] is None
    assert values["infer_merged_tokens_per_s"] is None
    assert values["infer_merged_overhead"] is None
    assert values["infer_note"] == "not merged: NotImplementedError: no merging here"
    assert values["infer_latency_s"] > 0 and values["infer_base_latency_s"] > 0
    assert values["infer_overhead"] > 0


def test_prompt_learning_has_a_base_but_nothing_to_merge(base):
    model = get_peft_model(
        copy.deepcopy(base), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    ).eval()
    recorder = Recorder()
    values = inference.measure(model, recorder.workload())
    assert values["infer_merged_latency_s"] is None and values["infer_merged_overhead"] is None
    assert values["infer_note"].startswith("prompt learning: nothing to merge")
    assert values["infer_overhead"] > 0
    base_calls = [out for kind, out in recorder.calls if kind == "LlamaForCausalLM"]
    assert len(base_calls) == 4 and all(torch.equal(out, generate(base)) for out in base_calls)


def test_a_plain_model_is_timed_as_it_is(base):
    values = inference.measure(base, Recorder().workload(), plain_note=inference.BASE_MODEL_NOTE)
    assert values["infer_latency_s"] > 0 and values["infer_tokens_per_s"] > 0
    others = [k for k in values if k not in ("infer_latency_s", "infer_tokens_per_s", "infer_note")]
    assert all(values[k] is None for k in others)
    assert values["infer_note"] == inference.BASE_MODEL_NOTE


def test_a_failing_workload_never_raises(base):
    def broken(model):
        raise RuntimeError("out of memory")

    values = inference.measure(lora_model(base), inference.Workload(broken, 1, "tokens"))
    assert all(values[k] is None for k in values if k != "infer_note")
    assert values["infer_note"] == "timing failed: RuntimeError: out of memory"


class CharTokenizer:
    """Characters 'a'.. map to ids 3..; id 1 starts every prompt."""

    pad_token_id, bos_token_id = 0, 1

    def __init__(self, eos: int) -> None:
        self.eos_token_id = eos

    def __call__(self, text: str) -> dict:
        return {"input_ids": [1] + [3 + (ord(c) - 97) % 30 for c in text]}


def test_the_math_workload_forces_its_length_and_batches_like_the_evaluation(base):
    rows = [{"query": "abcdefghij"[: 2 + i % 7]} for i in range(INFER_PROMPTS + 3)]
    params = {"query_template": "q{query}", "batch_size_eval": 3}
    device = torch.device("cpu")
    # End of text becomes the token the model generates first for the first prompt: without
    # the forced length that row would stop at once.
    first = inference_workload(CharTokenizer(2), rows, params, device).run(base)[0][0, 0]
    tokenizer = CharTokenizer(int(first))
    workload = inference_workload(tokenizer, rows, params, device)
    assert workload.unit == "tokens" and workload.units == INFER_PROMPTS * INFER_NEW_TOKENS
    batches = workload.run(base)
    # The first INFER_PROMPTS rows only, in batches of batch_size_eval.
    assert [len(b) for b in batches] == [3, 3, 2]
    for batch in batches:
        assert batch.shape[1] == INFER_NEW_TOKENS
        assert not (batch == tokenizer.eos_token_id).any()
    assert all(torch.equal(a, b) for a, b in zip(batches, workload.run(base), strict=True))


def test_summary_columns_come_from_the_result_and_older_results_still_validate():
    measured = {
        "infer_latency_s": 0.5,
        "infer_merged_latency_s": None,
        "infer_base_latency_s": 0.4,
        "infer_overhead": 1.25,
        "infer_merged_overhead": None,
        "infer_note": "not merged: ValueError: no",
        "infer_tokens_per_s": 192.0,
        "infer_merged_tokens_per_s": None,
        "infer_base_tokens_per_s": 240.0,
    }
    assert set(measured) == set(inference.metric_keys("tokens"))
    new = make_result("lora", "r8")
    new["metrics"].update(measured)
    old = make_result("lora", "r16")  # written before the timing: no infer_* key at all
    assert not any(inference.is_metric(k) for k in old["metrics"])
    for result in (new, old):
        validate_result(result)
    wrong = make_result()
    wrong["metrics"]["infer_overhead"] = "fast"
    with pytest.raises(ValueError, match="metrics.infer_overhead"):
        validate_result(wrong)
    rows = {r["experiment"]: r for _, r in summarize([new, old, make_base_result()]).iterrows()}
    lora = rows["lora/r8"]
    assert lora["infer_overhead"] == 1.25 and lora["infer_base_latency_s"] == 0.4
    assert lora["infer_tokens_per_s"] == 192.0 and pd_missing(lora["infer_merged_latency_s"])
    assert lora["infer_note"] == "not merged: ValueError: no"
    assert all(pd_missing(rows["lora/r16"][c]) for c in INFERENCE_COLUMNS)
    for column in [*INFERENCE_COLUMNS, "infer_tokens_per_s", "infer_images_per_s"]:
        assert lookup(column) is not None and lookup(column).description, column


def pd_missing(value) -> bool:
    return value is None or value != value  # None or NaN
