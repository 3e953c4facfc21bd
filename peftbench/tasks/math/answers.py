"""Final-answer extraction and exact-match scoring for GSM8K-style math problems."""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "ANSWER_DELIMITERS",
    "answers_match",
    "parse_answer",
    "published_correct",
    "published_match",
    "published_parse",
    "published_score",
    "score",
    "to_number",
]

# Priority order matters: the colon variants come first so that "The answer is: 5" yields "5"
# rather than ": 5". "####" is GSM8K's own reference format and the last resort.
ANSWER_DELIMITERS: tuple[str, ...] = (
    "The answer is:",
    "The answer is",
    "The final answer is:",
    "The final answer is",
    "####",
)


def parse_answer(text: str) -> str | None:
    """Return the final answer in ``text``, or None if no known delimiter occurs.

    The first delimiter of :data:`ANSWER_DELIMITERS` that occurs wins; the answer is the text
    after its last occurrence (models often restate intermediate "answers"), cut at the first
    newline and stripped. Delimiters match in any letter case ("the answer is: 5").
    """
    folded = text.casefold()
    for delimiter in ANSWER_DELIMITERS:
        at = folded.rfind(delimiter.casefold())
        if at >= 0:
            # casefold() keeps the length of ASCII text; a non-ASCII letter that changes length
            # before the delimiter would shift the index, so fall back to a case-exact split.
            if len(folded) != len(text):
                if delimiter not in text:
                    continue
                at = text.rfind(delimiter)
            tail = text[at + len(delimiter) :]
            return tail.split("\n", 1)[0].strip()
    return None


# A signed number: grouped thousands ("1,234,567.5", or with a space, no-break space or narrow
# no-break space: "1 000", as many locales write them), a plain integer/decimal ("12", "2.50"), or a
# bare decimal (".5"), with an optional exponent. The look-behind stops us starting mid-number;
# the look-ahead rejects tokens that continue with ",digit" or ".digit", so that "1,5" or
# "1,0000" (not thousands groups) are not silently read as 1 or 15.
_NUM = (
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:\.\d+)?"
    r"|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
)
_NUMBER_RE = re.compile(
    rf"(?<![\d.,])(?P<sign>[-+]?)(?P<num>{_NUM})"
    rf"(?:\s*/\s*(?P<den>{_NUM}))?"
    r"(?![\d]|[.,]\d)"
)
# \frac{a}{b}, \dfrac{a}{b}, \tfrac{a}{b} with numeric a, b (optionally signed), and the
# shorthand \frac12 for single digits.
_LATEX_FRAC_RE = re.compile(
    r"\\[dt]?frac\s*\{\s*([-+]?[\d.,]+)\s*\}\s*\{\s*([-+]?[\d.,]+)\s*\}|\\[dt]?frac(\d)(\d)"
)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_UNICODE_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-"})


def _unbox(s: str) -> str:
    """Replace the first ``\\boxed{...}`` with its (brace-balanced) contents."""
    match = _BOXED_RE.search(s)
    if match is None:
        return s
    depth = 1
    for i in range(match.end(), len(s)):
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            depth -= 1
            if depth == 0:
                # Keep only the boxed content: it is the answer, whatever surrounds it.
                return s[match.end() : i]
    return s[match.end() :]  # unbalanced: take everything after "\boxed{"


def _fraction_from_latex(match: re.Match[str]) -> str:
    num, den = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
    return f"{num}/{den}"


def _to_fraction(token: str) -> Fraction:
    return Fraction(re.sub(r"[, \u00a0\u202f]", "", token))


def to_number(s: str) -> Fraction | None:
    """Convert an answer string to an exact :class:`~fractions.Fraction`, or None.

    Handles currency signs, percent signs, thousands separators (only in groups of three),
    trailing units or words ("18 dollars"), plain and LaTeX fractions (``\\frac``, ``\\dfrac``,
    ``\\boxed``), negative numbers and decimals. The first number in the string is used.
    """
    if s is None:
        return None
    text = s.strip().translate(_UNICODE_MINUS)
    text = _unbox(text)
    # LaTeX spacing/grouping inside numbers ("1{,}000", "1\,000", "\$5", "50\%").
    text = text.replace("{,}", ",").replace("\\!", "").replace("\\$", "$").replace("\\%", "%")
    text = re.sub(r"(?<=\d)\\,(?=\d{3}\b)", "", text)
    text = _LATEX_FRAC_RE.sub(_fraction_from_latex, text)
    if re.search(r"\\[dt]?frac", text):
        # A symbolic fraction such as \frac{\pi}{2}: picking out its "2" would be wrong.
        return None
    # Currency symbols are dropped entirely so that "-$5" and "$ 5" reduce to plain numbers.
    text = re.sub(r"[$€£]\s*", "", text)
    match = _NUMBER_RE.search(text)
    if match is None:
        return None
    try:
        value = _to_fraction(match["num"])
        if match["den"] is not None:
            denominator = _to_fraction(match["den"])
            if denominator == 0:
                return None
            value /= denominator
    except (ValueError, ZeroDivisionError):
        return None
    return -value if match["sign"] == "-" else value


def _normalize(s: str) -> str:
    return " ".join(s.casefold().split()).rstrip(".")


def answers_match(pred: str | None, ref: str | None) -> bool:
    """Whether a predicted answer equals the reference.

    Numbers compare exactly (so "2.50" == "5/2" is False but "2.50" == "2.5" is True); when
    either side is not numeric, casefolded whitespace-normalised strings are compared. None and
    empty answers never match anything.
    """
    if pred is None or ref is None:
        return False
    pred_num, ref_num = to_number(pred), to_number(ref)
    if pred_num is not None and ref_num is not None:
        return pred_num == ref_num
    pred_norm, ref_norm = _normalize(pred), _normalize(ref)
    return bool(pred_norm) and pred_norm == ref_norm


def score(predictions: list[str], references: list[str]) -> tuple[int, int]:
    """Return ``(correct, n)`` for generated continuations against reference answers.

    Each prediction is a full generation and goes through :func:`parse_answer`; each reference
    is already a final answer (e.g. "18") and is used as is.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"score() got {len(predictions)} predictions but {len(references)} references"
        )
    correct = sum(
        answers_match(parse_answer(pred), ref)
        for pred, ref in zip(predictions, references, strict=True)
    )
    return correct, len(references)


# The published suite's scorer (Hugging Face PEFT method comparison, MetaMathQA ``utils.py``),
# reimplemented from its description so that our rows can be scored exactly as the published rows
# they are drawn beside: no thousands separators, units, LaTeX or letter-case tolerance, the
# prompt included in the text searched, exact float or string equality.
_PUBLISHED_DELIMITERS = (
    "The answer is: ",
    "The answer is ",
    "The final answer is: ",
    "The final answer is ",
    "#### ",
)


def published_parse(text: str) -> str | None:
    """The published ``parse_answer``: strip, drop trailing ``.!?``, take the text after the last
    occurrence of the first delimiter present, its first line, stripped of `` .!?$%``."""
    text = text.strip().rstrip(".!?")
    for delimiter in _PUBLISHED_DELIMITERS:
        if delimiter in text:
            tail = text.rsplit(delimiter, 1)[1].strip()
            return tail.split("\n", 1)[0].strip(" .!?$%")
    return None


def _published_decimal(s: str) -> float | None:
    from decimal import Decimal, InvalidOperation

    try:
        if "/" in s:
            parts = s.split("/")
            if len(parts) != 2:
                return None
            num, den = Decimal(parts[0]), Decimal(parts[1])
            return None if den == 0 else float(num / den)
        return float(Decimal(s))
    except (InvalidOperation, ValueError):
        return None


def published_match(prediction: str | None, reference: str | None) -> bool:
    """The published ``get_accuracy`` rule for one item: both sides converted to floats where they
    parse as decimals (or a/b), else compared as raw strings; None never matches."""
    if prediction is None or reference is None:
        return False
    pred = _published_decimal(prediction)
    pred_value: float | str = prediction if pred is None else pred
    ref = _published_decimal(reference)
    ref_value: float | str = reference if ref is None else ref
    return pred_value == ref_value


def published_correct(prompt: str, output: str, reference: str) -> bool:
    """Whether one item is correct under the published rule: the suite decodes prompt and
    generation together and parses that text. ``reference`` is a final answer (ours) already,
    so it is not re-parsed."""
    return published_match(published_parse(prompt + output), reference)


def published_score(prompts: list[str], outputs: list[str], references: list[str]) -> int:
    """Items correct under the published rule (:func:`published_correct` of each item)."""
    if not len(prompts) == len(outputs) == len(references):
        raise ValueError("published_score() needs one prompt, output and reference per item")
    return sum(
        published_correct(prompt, output, reference)
        for prompt, output, reference in zip(prompts, outputs, references, strict=True)
    )
