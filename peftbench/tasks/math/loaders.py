"""MetaMathQA and GSM8K loaders (the published math preset's data) on top of
:mod:`peftbench.core.hub`.

Every loader returns common records ``{"query": str, "response": str, "answer": str}``.
"""

from __future__ import annotations

import re

import numpy as np

from peftbench.core.hub import columns, load_split
from peftbench.tasks.math.answers import parse_answer

__all__ = ["gsm8k_valid_subset", "load_gsm8k", "load_metamathqa"]

_THOUSANDS_COMMA_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def load_metamathqa(
    path: str,
    revision: str | None,
    split: str = "train",
    max_chars: int = 1300,
    max_rows: int | None = None,
) -> list[dict]:
    """Load MetaMathQA training records in the dataset's stored order.

    The order in which training draws them is the ``train_order`` training key's business
    (:mod:`peftbench.tasks.math.batches`): shuffled by default, stored for the published suite's
    order. Rows with ``len(query + " " + response) > max_chars`` are dropped, as in the published
    benchmark; ``max_rows`` caps the number of rows kept *after* that filter. ``answer`` is the
    text after "The answer is:" in the response; the few rows where no answer can be parsed are
    still kept, with ``answer == ""``, because training only needs query and response.
    """
    ds = load_split(path, revision, split)
    cols = columns(ds, path, ["query", "response", "type"])
    records: list[dict] = []
    for query, response in zip(cols["query"], cols["response"], strict=True):
        if len(query + " " + response) > max_chars:
            continue
        answer = parse_answer(response)
        records.append({"query": query, "response": response, "answer": answer or ""})
        if max_rows is not None and len(records) >= max_rows:
            break
    return records


def load_gsm8k(
    path: str,
    revision: str | None,
    config_name: str = "main",
    split: str | None = None,
) -> list[dict]:
    """Load GSM8K records: query = question, response = worked answer, answer = final number.

    ``split`` is required (e.g. "test"); it only has a default so that it can follow
    ``config_name`` positionally. The final answer is the text after "####", stripped, with
    thousands commas removed ("1,234" -> "1234").
    """
    if split is None:
        raise TypeError("load_gsm8k() missing required argument: 'split'")
    ds = load_split(path, revision, split, config_name)
    cols = columns(ds, path, ["question", "answer"])
    records: list[dict] = []
    for i, (question, solution) in enumerate(zip(cols["question"], cols["answer"], strict=True)):
        if "####" not in solution:
            raise ValueError(f"{path}: row {i} has no '####' final answer: {solution[-80:]!r}")
        final = solution.rsplit("####", 1)[1].strip()
        records.append(
            {
                "query": question,
                "response": solution,
                "answer": _THOUSANDS_COMMA_RE.sub("", final),
            }
        )
    return records


def gsm8k_valid_subset(rows: list[dict], n: int = 50, seed: int = 0) -> list[dict]:
    """The ``n`` validation rows the published suite draws (all rows, permuted, if fewer).

    The suite seeds NumPy's legacy global generator (``np.random.seed(seed)``), shuffles
    ``arange(len(rows))`` and keeps the first ``n`` indices, in that order. A private
    ``RandomState(seed)`` is the same Mersenne Twister stream, so the same rows come out without
    touching the global generator.
    """
    indices = np.arange(len(rows))
    np.random.RandomState(seed).shuffle(indices)
    return [rows[i] for i in indices[:n]]
