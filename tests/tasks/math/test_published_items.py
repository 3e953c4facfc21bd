"""Per-item published-compatible correctness in a real tiny run's item file."""

import json

import pytest
from tiny import PARAMS, run

from peftbench.analysis.summary import item_scores
from peftbench.tasks.math import PUBLISHED_CORRECT, SPEC
from peftbench.tasks.math import run as math_run
from peftbench.tasks.math.answers import published_correct


def items(folder) -> list[dict]:
    lines = (folder / SPEC.item_file).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_every_item_records_its_published_correctness(tiny):
    result = run(tiny, "base/no-finetuning", "published_items")
    assert result["status"] == "success", result["error"]
    lines = items(tiny / "published_items")
    assert len(lines) == result["metrics"]["test_n"]
    assert all(isinstance(line[PUBLISHED_CORRECT], bool) for line in lines)
    # The published rule on the prompt the run used plus the stored output.
    template = PARAMS["query_template"]
    for line in lines:
        prompt = template.format(query=line["query"])
        assert line[PUBLISHED_CORRECT] is published_correct(prompt, line["output"], line["answer"])
    share = sum(line[PUBLISHED_CORRECT] for line in lines) / len(lines)
    assert result["metrics"]["test_accuracy_published"] == share
    # The analysis reads them back as the comparable item scores, in the same order.
    comparable = item_scores(tiny / "published_items", "math", comparable=True)
    assert comparable.tolist() == [float(line[PUBLISHED_CORRECT]) for line in lines]


def test_published_items_differ_from_ours_where_the_rules_do(tiny, monkeypatch):
    """Generations both rules accept, and ones only ours accepts (a unit after the number):
    each item file line and both scores say so; our own score is untouched."""
    prompts = {}

    def fake_generate(model, tokenizer, texts, batch_size, max_new_tokens, device, **kw):
        # Odd items end with a unit, which the published parser does not strip.
        return [
            f" The answer is: {prompts[t]}" + (" apples" if i % 2 else "")
            for i, t in enumerate(texts)
        ]

    test_rows = [json.loads(line) for line in (tiny / "data/test.jsonl").read_text().splitlines()]
    template = PARAMS["query_template"]
    prompts.update({template.format(query=r["query"]): r["answer"] for r in test_rows})
    monkeypatch.setattr(math_run, "greedy_generate", fake_generate)
    result = run(tiny, "base/no-finetuning", "published_items_units")
    assert result["status"] == "success", result["error"]
    lines = items(tiny / "published_items_units")
    assert [line[PUBLISHED_CORRECT] for line in lines] == [i % 2 == 0 for i in range(len(lines))]
    metrics = result["metrics"]
    assert metrics["test_accuracy"] == 1.0 and metrics["test_correct"] == len(lines)
    expected = sum(i % 2 == 0 for i in range(len(lines))) / len(lines)
    assert metrics["test_accuracy_published"] == pytest.approx(expected)
    assert item_scores(tiny / "published_items_units", "math").tolist() == [1.0] * len(lines)
