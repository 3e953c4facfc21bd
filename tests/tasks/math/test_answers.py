"""Tests for answer extraction, numeric normalisation, scoring and the Wilson interval."""

from fractions import Fraction

import pytest

from peftbench.core.stats import wilson_interval
from peftbench.tasks.math.answers import (
    answers_match,
    parse_answer,
    published_correct,
    published_match,
    published_parse,
    published_score,
    score,
    to_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so 3 + 4 = 7.\nThe answer is: 7", "7"),
        ("The answer is 18 dollars.", "18 dollars."),
        ("Work...\nThe final answer is: 42\nExtra text", "42"),
        ("The final answer is 5", "5"),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("  The answer is:   12  \n", "12"),
        ("no delimiter here, just 42", None),
        ("", None),
        # Last occurrence of the chosen delimiter wins.
        ("The answer is: 3\nWait, recheck.\nThe answer is: 4", "4"),
        # Priority order beats position: "The answer is:" wins over an earlier/later "####".
        ("#### 12\nThe answer is: 13", "13"),
        ("The answer is: 13\n#### 12", "13"),
        # "The answer is:" outranks "The final answer is".
        ("The answer is: 1. The final answer is 2", "1. The final answer is 2"),
        ("The final answer is: 9 and #### 8", "9 and #### 8"),
        # Only the first line after the delimiter is kept.
        ("The answer is: 5\n\nQuestion: next one? The", "5"),
        # Delimiters match in any letter case (the published parser does not: see below).
        ("the answer is: 5", "5"),
        ("THE ANSWER IS 7", "7"),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_parse_answer_empty_after_delimiter():
    # The answer must be on the delimiter's line; a newline right after it gives "".
    assert parse_answer("The answer is:\n18") == ""


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("18", Fraction(18)),
        (" 18 ", Fraction(18)),
        ("1,000", Fraction(1000)),
        ("1,234,567", Fraction(1234567)),
        ("1,234.50", Fraction("1234.5")),
        ("1 000", Fraction(1000)),
        ("1\u00a0000", Fraction(1000)),
        ("1\u202f000\u202f000", Fraction(1000000)),
        ("12 345.5", Fraction("12345.5")),
        ("5 10", Fraction(5)),  # not a thousands group: the first number
        ("$18", Fraction(18)),
        ("$ 18.00", Fraction(18)),
        ("€5", Fraction(5)),
        ("£1,250", Fraction(1250)),
        ("\\$5", Fraction(5)),
        ("-$5", Fraction(-5)),
        ("50%", Fraction(50)),
        ("50\\%", Fraction(50)),
        ("18.", Fraction(18)),
        ("18!", Fraction(18)),
        ("18?", Fraction(18)),
        ("18 dollars", Fraction(18)),
        ("5 apples.", Fraction(5)),
        ("about 7 hours", Fraction(7)),
        ("3/4", Fraction(3, 4)),
        ("3 / 4", Fraction(3, 4)),
        ("-1/2", Fraction(-1, 2)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("\\dfrac{1}{3}", Fraction(1, 3)),
        ("\\tfrac{2}{6}", Fraction(1, 3)),
        ("-\\frac{1}{2}", Fraction(-1, 2)),
        ("\\frac{-3}{4}", Fraction(-3, 4)),
        ("\\frac12", Fraction(1, 2)),
        ("\\boxed{42}", Fraction(42)),
        ("\\boxed{\\frac{3}{4}}", Fraction(3, 4)),
        ("$\\boxed{1,000}$", Fraction(1000)),
        ("1{,}000", Fraction(1000)),
        ("-7", Fraction(-7)),
        ("\u22127", Fraction(-7)),
        ("+7", Fraction(7)),
        ("2.50", Fraction(5, 2)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("-0.25", Fraction(-1, 4)),
        ("1e3", Fraction(1000)),
        ("x = 12", Fraction(12)),
    ],
)
def test_to_number(s, expected):
    assert to_number(s) == expected


@pytest.mark.parametrize(
    "s",
    [
        "",
        "   ",
        "no number",
        "$",
        "1,5",  # not a thousands group: neither 15 nor 1
        "1,0000",
        "3/0",
        "\\frac{\\pi}{2}",  # symbolic: its "2" is not the answer
    ],
)
def test_to_number_none(s):
    assert to_number(s) is None


def test_to_number_is_exact():
    assert to_number("0.1") == Fraction(1, 10)
    assert isinstance(to_number("3"), Fraction)


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ("18", "18", True),
        ("18.00", "18", True),
        ("$1,000", "1000", True),
        ("18 dollars", "18", True),
        ("0.75", "\\frac{3}{4}", True),
        ("3/4", "0.75", True),
        ("2.5", "5/2", True),
        ("-3", "3", False),
        ("17", "18", False),
        ("0.333", "1/3", False),  # exact comparison, no tolerance
        ("Yes", "yes", True),  # non-numeric: casefolded string comparison
        ("  Monday. ", "monday", True),
        ("Tuesday", "Monday", False),
        ("18", "eighteen", False),
        (None, "18", False),
        ("18", None, False),
        (None, None, False),
        ("", "", False),
    ],
)
def test_answers_match(pred, ref, expected):
    assert answers_match(pred, ref) is expected


def test_score_parses_predictions_not_references():
    predictions = [
        "3 + 4 = 7\nThe answer is: 7",
        "I think it is 10.\nThe answer is: 10 dollars",
        "No final answer here: 5",
        "The answer is: 1,234",
        "#### 3",
    ]
    # References are used as is: parse_answer("2 #### 3") would give "3" and match.
    references = ["7", "11", "5", "1234", "2 #### 3"]
    assert score(predictions, references) == (2, 5)


def test_score_empty_and_mismatched_lengths():
    assert score([], []) == (0, 0)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score(["a", "b"], ["a"])


def test_wilson_known_value():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=5e-4)
    assert hi == pytest.approx(0.5962, abs=5e-4)
    assert (lo + hi) / 2 == pytest.approx(0.5)


def test_wilson_empty():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("correct", "n"), [(0, 1), (1, 1), (0, 50), (50, 50), (3, 7), (1, 1319)])
def test_wilson_bounds(correct, n):
    lo, hi = wilson_interval(correct, n)
    assert 0.0 <= lo <= correct / n <= hi <= 1.0
    if correct == 0:
        assert lo == 0.0
    if correct == n:
        assert hi == 1.0


def test_wilson_narrows_with_n():
    widths = [hi - lo for lo, hi in (wilson_interval(n // 2, n) for n in (10, 100, 1000, 10000))]
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < 0.02


def test_wilson_z_controls_width():
    lo95, hi95 = wilson_interval(30, 100)
    lo99, hi99 = wilson_interval(30, 100, z=2.5758293035489)
    assert lo99 < lo95 and hi99 > hi95


@pytest.mark.parametrize(("correct", "n"), [(-1, 10), (11, 10), (0, -1)])
def test_wilson_rejects_invalid(correct, n):
    with pytest.raises(ValueError):
        wilson_interval(correct, n)


def test_the_answer_is_one_thousand_with_a_space_is_not_one():
    assert answers_match(parse_answer("The answer is: 1 000"), "1000")
    assert not answers_match(parse_answer("The answer is: 1 000"), "1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Question: q?\nAnswer: 3 + 4 = 7\nThe answer is: 7.", "7"),
        ("The answer is: $18!", "18"),
        ("The answer is 18 dollars", "18 dollars"),
        ("the answer is: 5", None),  # case-sensitive
        ("#### 12\nThe answer is: 13", "13"),  # priority beats position
        ("no delimiter 42", None),
    ],
)
def test_published_parse(text, expected):
    assert published_parse(text) == expected


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ("7", "7", True),
        ("7.0", "7", True),
        ("20/35", "0.5714285714285714", True),  # exact float equality
        ("1,000", "1000", False),  # no thousands separators
        ("18 dollars", "18", False),  # no units
        ("\\boxed{4}", "4", False),  # no LaTeX
        ("abc", "abc", True),  # raw strings
        (None, "7", False),
    ],
)
def test_published_match(pred, ref, expected):
    assert published_match(pred, ref) is expected


def test_published_score_searches_prompt_and_output_and_is_stricter_than_ours():
    prompts = ["Question: a?\nAnswer:", "Question: b?\nAnswer:", "Question: c?\nAnswer:"]
    outputs = [" 2 + 3 = 5\nThe answer is: 5", " The answer is: 1,000", " the answer is: 4"]
    references = ["5", "1000", "4"]
    assert published_score(prompts, outputs, references) == 1
    assert score(outputs, references) == (3, 3)


def test_published_correct_is_the_per_item_published_score():
    prompts = ["Q: a?\nThe answer is: 7\nQ: b?\n", "Q: c?\n", "Q: d?\n"]
    outputs = ["", " The answer is: 9 apples", " The answer is: 3"]
    references = ["7", "9", "3"]
    # The prompt is searched too (the suite decodes both); units are not tolerated.
    per_item = [published_correct(*item) for item in zip(prompts, outputs, references, strict=True)]
    assert per_item == [True, False, True]
    assert sum(per_item) == published_score(prompts, outputs, references)
