"""Training order (``train_order``): the default shuffled stream is untouched, ``stored`` walks
the data front to back as the published suite does."""

import itertools

import pytest
import torch

from peftbench.core.train import batch_stream
from peftbench.tasks.math.batches import stored_batches, training_step

CPU = torch.device("cpu")


class Recorder(torch.nn.Module):
    """Stands in for a language model: remembers the rows of every batch (each example's first
    token is its row index) and returns a loss that depends on nothing but a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.batches: list[list[int]] = []

    def forward(self, input_ids, attention_mask, labels):
        self.batches.append(input_ids[:, 0].tolist())
        return type("Out", (), {"loss": self.weight * 0 + 1.0})()


def examples_of(lengths: list[int]) -> list[dict]:
    return [{"input_ids": [i] + [1] * (n - 1), "labels": [1] * n} for i, n in enumerate(lengths)]


def params_of(**extra) -> dict:
    return {"batch_size": 4, "bucket_factor": 3, **extra}


def test_stored_batches_walk_the_data_front_to_back():
    # Distinct lengths, so that the order inside a bucket is fully determined.
    lengths = [(7 * i) % 50 + 1 for i in range(50)]
    stream = stored_batches(lengths, batch_size=4, bucket_factor=3)
    bucket = 12
    first_pass = list(itertools.islice(stream, 13))  # 4 full buckets of 3 batches, then 2 rows
    for k in range(4):
        rows = [i for b in first_pass[3 * k : 3 * k + 3] for i in b]
        expected = sorted(range(k * bucket, (k + 1) * bucket), key=lambda i: -lengths[i])
        assert rows == expected, "each bucket: its own rows, longest first, nothing shuffled"
        assert [len(b) for b in first_pass[3 * k : 3 * k + 3]] == [4, 4, 4]
    assert first_pass[12] == sorted([48, 49], key=lambda i: -lengths[i])
    # A pass ends with the partial bucket, once; the next pass is the same walk again.
    again = list(itertools.islice(stored_batches(lengths, 4, 3), 27))
    assert again[13:26] == again[:13]
    assert sorted(i for b in again[:13] for i in b) == list(range(50))


def test_stored_batches_with_ties_keep_the_length_order():
    lengths = [3, 5, 5, 1, 5, 3, 2, 2, 9, 1]
    rows = [i for b in itertools.islice(stored_batches(lengths, 1, 5), 10) for i in b]
    assert sorted(rows) == list(range(10))
    assert [lengths[i] for i in rows[:5]] == [5, 5, 5, 3, 1]
    assert [lengths[i] for i in rows[5:]] == [9, 3, 2, 2, 1]


def test_stored_batches_reject_empty_data():
    with pytest.raises(ValueError, match="no training rows"):
        next(stored_batches([], 4, 2))


def test_default_order_is_the_shuffled_stream():
    """A missing key and 'shuffled' both draw core.train's stream, batch for batch."""
    lengths = [(5 * i) % 23 + 2 for i in range(40)]
    expected = list(itertools.islice(batch_stream(lengths, 4, 3, seed=7), 25))
    for extra in ({}, {"train_order": "shuffled"}):
        model = Recorder()
        step = training_step(model, examples_of(lengths), params_of(**extra), 7, 0, CPU)
        for _ in range(25):
            step.loss()
        assert model.batches == expected


def test_stored_order_step_draws_the_stored_batches():
    lengths = [(5 * i) % 23 + 2 for i in range(40)]
    model = Recorder()
    step = training_step(model, examples_of(lengths), params_of(train_order="stored"), 7, 0, CPU)
    for _ in range(25):
        step.loss()
    assert model.batches == list(itertools.islice(stored_batches(lengths, 4, 3), 25))
    assert model.batches[:3] != list(itertools.islice(batch_stream(lengths, 4, 3, seed=7), 3))


def test_stored_order_step_skips_and_costs_like_its_stream():
    lengths = [(5 * i) % 23 + 2 for i in range(40)]
    batches = list(itertools.islice(stored_batches(lengths, 4, 3), 30))
    model = Recorder()
    step = training_step(model, examples_of(lengths), params_of(train_order="stored"), 0, 0, CPU)
    # The padded size of any batch ahead (which step's tensors get accounted) ...
    assert [step.batch_cost(n) for n in range(30)] == [
        len(b) * max(lengths[i] for i in b) for b in batches
    ]
    # ... and a resumed run continues where the interrupted one stopped.
    step.skip(12)
    step.loss()
    assert model.batches == [batches[12]]


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="train_order"):
        training_step(Recorder(), examples_of([3, 4]), params_of(train_order="random"), 0, 0, CPU)
