"""The embedded math problem generator."""

import re

import pytest

from peftbench.tasks.math import mathgen
from peftbench.tasks.math.answers import parse_answer


def check_solution(record: dict) -> int:
    """Re-evaluate every equation of a response; return the number of steps."""
    lines = record["response"].split("\n")
    value = None
    for line in lines[:-1]:
        a, op, b, c = re.fullmatch(r"(\d+) ([+-]) (\d+) = (\d+)", line).groups()
        a, b, c = int(a), int(b), int(c)
        assert c == (a + b if op == "+" else a - b), line
        assert 0 <= c <= mathgen.MAX_VALUE
        if value is not None:
            assert a == value, "each step starts from the previous result"
        value = c
    assert lines[-1] == f"The answer is: {value}"
    assert parse_answer(record["response"]) == record["answer"] == str(value)
    return len(lines) - 1


@pytest.mark.parametrize("distribution", ["pretrain", "finetune"])
def test_solutions_are_correct(distribution):
    for record in mathgen.sample(distribution, 500, seed=3):
        check_solution(record)


def test_distributions_differ():
    pre = mathgen.sample("pretrain", 400, seed=1)
    fine = mathgen.sample("finetune", 400, seed=1)
    word_steps = {check_solution(r) for r in pre if not r["query"].startswith("What is")}
    assert word_steps == {1}, "pretraining word problems are one step"
    assert {check_solution(r) for r in fine} == {2, 3}
    connectives = ("Then", "After that", "Later", "Next")
    assert not any(c in r["query"] for r in pre for c in connectives)
    assert all(any(c in r["query"] for c in connectives) for r in fine)
    assert not any(r["query"].endswith("have now?") for r in fine)


def test_seeded_and_distinct():
    a = mathgen.sample("finetune", 200, seed=7)
    assert a == mathgen.sample("finetune", 200, seed=7)
    assert a != mathgen.sample("finetune", 200, seed=8)
    assert len({r["query"] for r in a}) == 200


def test_exclude_keeps_splits_disjoint():
    test = mathgen.sample("finetune", 300, seed=1)
    train = mathgen.sample("finetune", 1000, seed=2, exclude={r["query"] for r in test})
    assert not {r["query"] for r in test} & {r["query"] for r in train}


def test_unknown_distribution():
    with pytest.raises(ValueError, match="unknown distribution"):
        next(mathgen.problems("nope", 0))
