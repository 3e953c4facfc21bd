"""Exact live-tensor accounting (peftbench.core.memtrack) in the shared training loop: the same
bytes on every CPU run, categories that add up to the peak, AdamW state of 8 bytes per trainable
fp32 parameter, and the costliest batch accounted."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from peftbench.core.allocator import CachingAllocatorModel
from peftbench.core.loop import Step, accounted_step, train
from peftbench.core.memcategories import CATEGORIES
from peftbench.core.memory import MemoryTracker
from peftbench.core.memtrack import TensorAccountant
from peftbench.core.train import lm_step

PARAMS = {
    "max_steps": 4,
    "batch_size": 4,
    "bucket_factor": 2,
    "log_steps": 2,
    "optimizer_type": "AdamW",
    "optimizer_kwargs": {"lr": 1e-3, "weight_decay": 0.01},
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "grad_norm_clip": 1.0,
}


def tiny_lm(lora: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    if lora:
        return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    return model


def examples(n: int = 24) -> list[dict]:
    """Sequences of different lengths, so batches differ in shape."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        ids = torch.randint(1, 300, (8 + (i * 7) % 40,), generator=generator).tolist()
        out.append({"input_ids": ids, "labels": list(ids)})
    return out


def train_once(lora: bool) -> tuple[torch.nn.Module, object]:
    model = tiny_lm(lora)
    step = lm_step(model, examples(), PARAMS, 0, 0, torch.device("cpu"))
    stats = train(model, step, PARAMS, MemoryTracker(torch.device("cpu")), progress=False)
    return model, stats


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple]:
    return {"lora": train_once(True), "full": train_once(False), "lora_again": train_once(True)}


def test_accounting_is_deterministic_across_cpu_runs(runs: dict) -> None:
    first, second = runs["lora"][1], runs["lora_again"][1]
    assert first.tensor_peak_bytes > 0
    assert first.tensor_peak_bytes == second.tensor_peak_bytes
    assert first.tensor_breakdown == second.tensor_breakdown
    assert first.tensor_step == second.tensor_step


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_categories_sum_to_the_peak(runs: dict, kind: str) -> None:
    stats = runs[kind][1]
    assert list(stats.tensor_breakdown) == list(CATEGORIES)
    assert sum(stats.tensor_breakdown.values()) == stats.tensor_peak_bytes
    assert stats.tensor_breakdown["activations"] > 0


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_adamw_state_is_8_bytes_per_trainable_fp32_parameter(runs: dict, kind: str) -> None:
    model, stats = runs[kind]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.float32}
    n = sum(p.numel() for p in trainable)
    # Two fp32 moments per parameter, plus AdamW's fp32 step counter per parameter tensor.
    assert stats.tensor_breakdown["optimizer_state"] == 8 * n + 4 * len(trainable)
    assert stats.tensor_breakdown["trainable_params"] == 4 * n


def test_full_finetuning_accounts_far_more_than_lora(runs: dict) -> None:
    lora, full = runs["lora"][1].tensor_breakdown, runs["full"][1].tensor_breakdown
    assert full["optimizer_state"] > 50 * lora["optimizer_state"]
    assert runs["full"][1].tensor_peak_bytes > runs["lora"][1].tensor_peak_bytes
    # LoRA's base weights are frozen; full fine-tuning's are all trainable.
    assert lora["frozen_params"] > 0 and full["trainable_params"] > lora["trainable_params"]


def test_the_costliest_batch_from_step_2_is_accounted() -> None:
    costs = [5, 9, 3, 9, 7, 2]
    step = Step(loss=lambda: (torch.zeros(()), 0), batch_cost=costs.__getitem__)
    assert accounted_step(step, max_steps=6) == 2  # step 2 (batch 1) ties step 4, first wins
    assert accounted_step(step, max_steps=3, accum=2) == 2  # batches 2-3 hold a 9
    assert accounted_step(Step(loss=step.loss), max_steps=5) == 2  # shapes repeat
    assert accounted_step(step, max_steps=1) == 1


def test_freed_temporaries_leave_the_account_and_the_peak_is_exact() -> None:
    model = torch.nn.Linear(10, 10, bias=False)  # 400 bytes of fp32 weights
    with TensorAccountant(model) as accountant:
        a = torch.ones(1000)  # 4000 bytes
        del a
        b = torch.ones(500)  # 2000 bytes: the peak stays at the first one's
        c = b.view(50, 10)  # a view: no new storage
        del b, c
    assert accountant.peak_bytes() == 400 + 4000
    assert accountant.breakdown() == {
        **dict.fromkeys(CATEGORIES, 0),
        "trainable_params": 400,
        "temporaries": 4000,
    }


def test_saved_tensors_are_activations_and_grads_are_gradients() -> None:
    model = torch.nn.Linear(100, 100, bias=False)  # 40,000 bytes
    x = torch.ones(8, 100)
    with TensorAccountant(model) as accountant:
        hidden = torch.tanh(model(x))  # tanh keeps its 3,200-byte output for backward
        hidden.sum().backward()
        del hidden
    breakdown = accountant.breakdown()
    assert breakdown["trainable_params"] == 40_000
    assert breakdown["activations"] >= 3_200
    assert sum(breakdown.values()) == accountant.peak_bytes()
    assert model.weight.grad is not None
    # After the step the gradient is live and classified; the account at exit sees it.
    assert accountant.peak_bytes() >= 40_000 + 3_200


# ------------------------------------------------------------- what the account leaves out


def test_only_storages_on_the_models_device_count_and_resident_tensors_do() -> None:
    model = torch.nn.Linear(4, 4, bias=False).to("meta")  # 64 bytes of fp32 weights
    cache = torch.empty(100, device="meta")  # 400 bytes kept on the device by the run
    with TensorAccountant(model, resident=[cache]) as accountant:
        noise = torch.ones(10_000)  # drawn on the CPU: not device memory
        on_device = noise.to("meta")  # 40,000 bytes on the device
        del noise, on_device
    assert accountant.peak_bytes() == 64 + 400 + 40_000
    assert accountant.breakdown()["frozen_params"] == 400


def test_a_block_size_rounds_every_storage_up() -> None:
    model = torch.nn.Linear(3, 1, bias=False)  # 12 bytes
    with TensorAccountant(model, block=512) as accountant:
        x = torch.ones(129)  # 516 bytes: two blocks
        del x
    assert accountant.peak_bytes() == 512 + 1024


def test_sparse_tensors_count_their_indices_and_values() -> None:
    model = torch.nn.Linear(2, 2, bias=False)  # 16 bytes
    with TensorAccountant(model) as accountant:
        indices = torch.zeros(2, 10, dtype=torch.long)  # 160 bytes
        values = torch.ones(10)  # 40 bytes
        sparse = torch.sparse_coo_tensor(indices, values * 2, (4, 4), check_invariants=False)
        del sparse
    assert accountant.peak_bytes() >= 16 + 160 + 40 + 40


def test_phases_have_their_own_peaks() -> None:
    model = torch.nn.Linear(2, 2, bias=False)  # 16 bytes
    with TensorAccountant(model) as accountant:
        a = torch.ones(1000)  # 4000 bytes in the first phase
        del a
        accountant.mark("evaluation")
        b = torch.ones(100)  # 400 bytes in the second
        del b
    assert accountant.phases() == ["", "evaluation"]
    assert accountant.peak_bytes("") == 16 + 4000
    assert accountant.peak_bytes("evaluation") == 16 + 400
    assert accountant.breakdown("evaluation")["temporaries"] == 400
    assert accountant.peak_bytes() == 16 + 4000
    # Reserved memory never shrinks: the second phase starts with the first one's cache.
    assert accountant.reserved_peak_bytes("evaluation") == accountant.reserved_peak_bytes("")


# ------------------------------------------------------------------ the caching allocator

MIB = 1 << 20


def test_allocator_segment_sizes_follow_the_cuda_caching_allocator() -> None:
    allocator = CachingAllocatorModel()
    allocator.malloc(100)  # small pool: a 2 MiB segment, 512 bytes of it
    assert (allocator.reserved, allocator.allocated) == (2 * MIB, 512)
    allocator.malloc(3 * MIB)  # 1-10 MiB: a 20 MiB segment
    assert allocator.reserved == 22 * MIB
    allocator.malloc(18 * MIB + 1)  # 10 MiB and more, not cached: rounded up to 2 MiB
    assert allocator.reserved == 22 * MIB + 20 * MIB
    allocator.malloc(15 * MIB)  # fits in the 17 MiB rest of the first 20 MiB segment
    assert allocator.reserved == 42 * MIB


def test_allocator_reuses_merges_and_empties_its_cache() -> None:
    allocator = CachingAllocatorModel()
    a = allocator.malloc(40 * MIB)
    b = allocator.malloc(40 * MIB)
    allocator.free(a)
    c = allocator.malloc(30 * MIB)  # best fit: the freed block, split
    assert allocator.reserved == 80 * MIB and c == a
    allocator.free(c)  # merges with the 10 MiB rest: 40 MiB free again
    d = allocator.malloc(41 * MIB)  # nothing cached is large enough: a new segment
    assert allocator.reserved == 122 * MIB
    allocator.free(b)
    allocator.empty_cache()  # the two wholly free 40 MiB segments go back
    assert allocator.reserved == 42 * MIB
    allocator.free(d)
    assert allocator.peak_reserved == 122 * MIB


def test_allocator_with_a_capacity_returns_cached_segments_before_growing() -> None:
    allocator = CachingAllocatorModel(capacity=100 * MIB)
    allocator.free(allocator.malloc(60 * MIB))
    allocator.malloc(70 * MIB)  # 60 + 70 > 100: the free 60 MiB segment is returned first
    assert allocator.reserved == 70 * MIB


def test_reserved_peak_covers_the_live_peak_in_whole_segments() -> None:
    model = torch.nn.Linear(64, 64)
    with TensorAccountant(model, block=512) as accountant:
        model(torch.ones(32, 64)).sum().backward()
    reserved = accountant.reserved_peak_bytes()
    assert reserved >= accountant.peak_bytes()
    assert reserved % (2 * MIB) == 0
