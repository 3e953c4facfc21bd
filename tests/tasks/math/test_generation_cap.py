"""The published suite's total-length cap on generation (``generation_max_length``)."""

import pytest
import torch
from tiny import random_llama

from peftbench.tasks.math import memory_probe
from peftbench.tasks.math import run as math_run
from peftbench.tasks.math.evaluate import greedy_generate

CPU = torch.device("cpu")
PROMPTS = ["abcde", "fg", "hijklmn"]  # 6, 3 and 8 tokens with the BOS


class Tok:
    """Characters 'a'.. map to ids 3..; decoding lists the ids, so a row's word count is the
    number of tokens generated for it."""

    pad_token_id, eos_token_id, bos_token_id = 0, 39, 1

    def __call__(self, text):
        return {"input_ids": [1] + [3 + ord(c) - 97 for c in text]}

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(str(int(t)) for t in row) for row in rows]


@pytest.fixture(scope="module")
def model():
    return random_llama(hidden=16, layers=1).eval()


def lengths(outputs: list[str]) -> list[int]:
    return [len(o.split()) for o in outputs]


def test_no_cap_by_default(model):
    assert lengths(greedy_generate(model, Tok(), PROMPTS, 3, 6, CPU)) == [6, 6, 6]


def test_cap_counts_the_padded_prompt_of_the_batch(model):
    # One batch, padded to the longest prompt (8): 10 - 8 = 2 new tokens for every row.
    uncapped = greedy_generate(model, Tok(), PROMPTS, 3, 6, CPU)
    capped = greedy_generate(model, Tok(), PROMPTS, 3, 6, CPU, max_length=10)
    assert lengths(capped) == [2, 2, 2]
    assert [c.split() for c in capped] == [u.split()[:2] for u in uncapped]
    # One prompt per batch: each its own budget, never more than max_new_tokens.
    alone = greedy_generate(model, Tok(), PROMPTS, 1, 6, CPU, max_length=10)
    assert lengths(alone) == [4, 6, 2]


def test_prompt_at_the_cap_still_gets_one_token(model):
    assert lengths(greedy_generate(model, Tok(), PROMPTS, 3, 6, CPU, max_length=5)) == [1, 1, 1]


def test_the_run_passes_the_cap_from_the_params(monkeypatch):
    seen = {}

    def fake_generate(model, tokenizer, prompts, batch_size, max_new_tokens, device, **kw):
        seen.update(kw, max_new_tokens=max_new_tokens)
        return ["The answer is: 1"] * len(prompts)

    monkeypatch.setattr(math_run, "greedy_generate", fake_generate)
    rows = [{"query": "q", "answer": "1"}]
    params = {"query_template": "{query}", "batch_size_eval": 2, "max_new_tokens": 300}
    math_run.accuracy(None, None, rows, {**params, "generation_max_length": 800}, CPU)
    assert seen == {"max_new_tokens": 300, "max_length": 800}
    math_run.accuracy(None, None, rows, params, CPU)  # the embedded default: no key, no cap
    assert seen["max_length"] is None


def test_memory_probe_caps_generation_like_the_run(model):
    """The probe's evaluation phase grows the KV cache to the capped length by default."""
    calls = []
    params = {"batch_size_eval": 2, "max_seq_length": 8, "max_new_tokens": 30}

    class Cache:
        def __init__(self, length):
            self.layers = [type("L", (), {})()]
            self.layers[0].keys = torch.zeros(2, 1, length, 4)
            self.layers[0].values = torch.zeros(2, 1, length, 4)

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, use_cache, logits_to_keep, past_key_values=None):
            if past_key_values is None:
                self.cache = Cache(input_ids.shape[1])
                return type("Out", (), {"past_key_values": self.cache})()
            calls.append(past_key_values.layers[0].keys.shape[2])
            return None

    for extra, final in (({}, 8 + 30 - 1), ({"generation_max_length": 20}, 20 - 1)):
        calls.clear()
        probe = Probe()
        memory_probe.evaluation(probe, {}, {}, {**params, **extra})()
        assert calls == [final], extra
