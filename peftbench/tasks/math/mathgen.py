"""Seeded generator of GSM8K-style word problems for the embedded (offline) math task.

Two distributions share one arithmetic core:

* ``pretrain``: bare arithmetic chains ("What is 7 + 8 - 3?", solved one step per line) and
  one-step word problems. The embedded base model is pretrained on these, so it can add, subtract
  and chain steps, and knows the verbs.
* ``finetune``: two- and three-step problems in templates the base never saw (a chain of events,
  new closing questions). The base model answers them with a one-step solution, which is wrong, so
  it scores near zero zero-shot; fine-tuning has to teach it to read a story as a chain of the steps it already knows.

Every solution is written step by step, one equation per line, and ends with
``The answer is: N``, the format of MetaMathQA responses. All numbers stay small (results within
``MAX_VALUE``) because a model of about a million parameters cannot learn large arithmetic within
the CPU budget; the difficulty lies in reading the problem, not in the sums.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

MAX_VALUE = 20
NAMES = ["Sam", "Ana", "Tom", "Lia", "Ben", "Mia", "Leo", "Eva", "Max", "Ida", "Noah", "Zoe"]
ITEMS = ["apples", "pens", "coins", "books", "cards", "shells", "eggs", "stamps", "balls", "cups"]

# Verbs known from pretraining. Each is (sign, phrase) where phrase takes the amount.
GAIN = [
    "buys {n} more {item}",
    "finds {n} more {item}",
    "gets {n} more {item}",
    "receives {n} {item}",
]
LOSS = ["gives away {n} {item}", "loses {n} {item}", "sells {n} {item}", "uses {n} {item}"]

# Fine-tuning only: the connective wording and the closing questions are new.
CHAIN_JOIN = [". Then {name} ", ". After that, {name} ", ". Later {name} ", ". Next, {name} "]
FT_QUESTION = [
    "How many {item} does {name} have at the end?",
    "How many {item} are left with {name} in the end?",
    "What is the final number of {item} that {name} owns?",
]


def _step(rng: random.Random, value: int) -> tuple[str, int, str]:
    """Pick a gain or loss that keeps the running value within [0, MAX_VALUE]."""
    can_gain = value + 1 <= MAX_VALUE
    can_lose = value >= 2
    if can_gain and (not can_lose or rng.random() < 0.5):
        n = rng.randint(1, min(9, MAX_VALUE - value))
        return rng.choice(GAIN), n, "+"
    n = rng.randint(1, min(9, value - 1))
    return rng.choice(LOSS), n, "-"


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    """A bare chain of one to three additions/subtractions, solved one equation per line."""
    value = rng.randint(0, MAX_VALUE)
    expression, lines = str(value), []
    for _ in range(rng.choice([1, 1, 2, 3])):
        if value + 1 <= MAX_VALUE and (value < 1 or rng.random() < 0.5):
            n, op = rng.randint(1, min(9, MAX_VALUE - value)), "+"
        else:
            n, op = rng.randint(1, min(9, value)), "-"
        new = value + n if op == "+" else value - n
        lines.append(f"{value} {op} {n} = {new}")
        expression += f" {op} {n}"
        value = new
    lines.append(f"The answer is: {value}")
    return f"What is {expression}?", "\n".join(lines)


def _word_problem(rng: random.Random, steps: int, finetune: bool) -> tuple[str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, MAX_VALUE)
    text = f"{name} has {value} {item}"
    lines = []
    for i in range(steps):
        phrase, n, op = _step(rng, value)
        join = ". {name} " if i == 0 else rng.choice(CHAIN_JOIN)
        text += join.format(name=name) + phrase.format(n=n, item=item)
        new = value + n if op == "+" else value - n
        lines.append(f"{value} {op} {n} = {new}")
        value = new
    if finetune:
        question = rng.choice(FT_QUESTION).format(item=item, name=name)
    else:
        question = f"How many {item} does {name} have now?"
    lines.append(f"The answer is: {value}")
    return f"{text}. {question}", "\n".join(lines)


def problems(distribution: str, seed: int) -> Iterator[dict[str, str]]:
    """Yield an endless, seeded stream of ``{"query", "response", "answer"}`` records."""
    if distribution not in ("pretrain", "finetune"):
        raise ValueError(f"unknown distribution {distribution!r}: use 'pretrain' or 'finetune'")
    rng = random.Random(f"{distribution}-{seed}")
    while True:
        if distribution == "pretrain":
            if rng.random() < 0.4:
                query, response = _arithmetic(rng)
            else:
                query, response = _word_problem(rng, 1, finetune=False)
        else:
            query, response = _word_problem(rng, rng.choice([2, 2, 3]), finetune=True)
        answer = response.rsplit("The answer is: ", 1)[1]
        yield {"query": query, "response": response, "answer": answer}


def sample(distribution: str, n: int, seed: int, exclude: set[str] | None = None) -> list[dict]:
    """``n`` distinct problems; queries in ``exclude`` are skipped (keeps splits disjoint)."""
    seen = set(exclude or ())
    out: list[dict] = []
    for record in problems(distribution, seed):
        if record["query"] in seen:
            continue
        seen.add(record["query"])
        out.append(record)
        if len(out) == n:
            return out
    raise AssertionError("unreachable: the stream is endless")
