"""HumanEval: code extraction from chat answers, sandboxed scoring, pass@k."""

from __future__ import annotations

from datetime import datetime, timezone
from math import comb

import pytest

from qatcmp.benchmarks import humaneval
from qatcmp.benchmarks.humaneval import extract_code, pass_at_k, score_many
from qatcmp.records import HumanEvalItem, TranscriptRecord
from qatcmp.sandbox import Limits, Sandbox

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)
ITEMS = {item.item_id: item for item in humaneval.load("builtin")[0]}
HAS_CLOSE = ITEMS["HumanEval/0"]
FIND_ZERO = ITEMS["HumanEval/32"]  # the test uses the prompt's helper `poly`


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(Limits(wall_s=10.0))


def transcript(item: HumanEvalItem, content: str | None, finish_reason: str | None = "stop", sample: int = 0, **extra) -> TranscriptRecord:
    return TranscriptRecord(model="q4", benchmark="humaneval", item_id=item.item_id, sample=sample,
                            messages=[], request={}, content=content, finish_reason=finish_reason,
                            started_at=NOW, finished_at=NOW, **extra)


def scored(sandbox: Sandbox, item: HumanEvalItem, content: str | None, **kwargs):
    return score_many([(transcript(item, content, **kwargs), item)], sandbox=sandbox)[0]


def test_all_canonical_solutions_pass_as_chat_answers(sandbox: Sandbox) -> None:
    pairs = [
        (transcript(item, f"Here is my solution:\n\n```python\n{item.prompt}{item.canonical_solution}```\n\n"
                          "It runs in O(n) time."), item)
        for item in ITEMS.values()
    ]
    scores = score_many(pairs, sandbox=sandbox, workers=2)
    failures = [(s.item_id, s.detail) for s in scores if s.status != "passed"]
    assert len(scores) == 164 and failures == []
    assert {s.extraction_rule for s in scores} == {"fenced_function"}


def test_wrong_solutions_fail(sandbox: Sandbox) -> None:
    items = list(ITEMS.values())[:20]
    pairs = [(transcript(item, "```python\n    return None\n```"), item) for item in items]
    scores = score_many(pairs, sandbox=sandbox, workers=2)
    assert [s.status for s in scores] == ["failed"] * 20 and not any(s.correct for s in scores)


BODY = HAS_CLOSE.canonical_solution
FULL = (
    "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    "    return any(_close(a, b, threshold) for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
)
HELPER = "def _close(a, b, threshold):\n    return abs(a - b) < threshold\n"


@pytest.mark.parametrize(
    ("content", "rule", "status"),
    [
        # prose + fenced full redefinition with a helper defined outside the entry point
        (f"Sure! First a helper, then the function.\n\n```python\n{HELPER}\n\n{FULL}```\n\nDone.", "fenced_function", "passed"),
        # the answer forgot `from typing import List`: the prompt's imports are kept
        (f"```python\n{HELPER}{FULL}```", "fenced_function", "passed"),
        # body only, indented as in the prompt, in an untagged fence
        (f"Complete the body like this:\n```\n{BODY}```", "fenced_body", "passed"),
        # body only, not indented
        ("```python\nreturn any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```",
         "fenced_body", "passed"),
        # several blocks: helper and function apart, a usage block with prints and asserts, a shell block
        (f"Helper:\n```python\n{HELPER}```\nMain:\n```py\n{FULL}```\nUsage:\n```python\n"
         "print(has_close_elements([1.0, 2.0], 0.5))\nassert has_close_elements([1.0], 1.0) is True\n```\n"
         "Run it:\n```bash\npython solution.py\n```", "fenced_function", "passed"),
        # a wrong draft, then the corrected version: the later definition wins
        ("First try:\n```python\ndef has_close_elements(numbers, threshold):\n    return False\n```\n"
         f"Oops, fixed:\n```python\n{HELPER}{FULL}```", "fenced_function", "passed"),
        # a demo under `if __name__ == "__main__":` that would fail is not part of the solution
        (f"```python\n{HELPER}{FULL}\nif __name__ == '__main__':\n    raise SystemExit(1)\n```", "fenced_function", "passed"),
        # no fence at all: the function followed by prose
        (f"{HELPER}\n{FULL}\nThis compares every pair once.", "bare_function", "passed"),
        # a block indented inside a list item
        ("1. Define it:\n\n   ```python\n   " + f"{HELPER}{FULL}".replace("\n", "\n   ") + "```\n", "fenced_function", "passed"),
        # a wrong answer
        ("```python\ndef has_close_elements(numbers, threshold):\n    return True\n```", "fenced_function", "failed"),
        # code with a syntax error
        ("```python\ndef has_close_elements(numbers, threshold)\n    return True\n```", "none", "no_code"),
        # prose only
        ("You can compare every pair of numbers and check their distance.", "none", "no_code"),
    ],
)
def test_chat_answers_score_as_a_human_would(sandbox: Sandbox, content: str, rule: str, status: str) -> None:
    s = scored(sandbox, HAS_CLOSE, content)
    assert (s.extraction_rule, s.status) == (rule, status), s.detail
    assert s.correct == (status == "passed")
    if status in ("passed", "failed"):
        assert "def has_close_elements" in s.extracted  # the code that ran


def test_prompt_helpers_stay_available(sandbox: Sandbox) -> None:
    answer = "```python\ndef find_zero(xs: list):\n" + FIND_ZERO.canonical_solution + "```"
    assert scored(sandbox, FIND_ZERO, answer).status == "passed"


def test_code_in_the_reasoning_is_never_extracted(sandbox: Sandbox) -> None:
    s = scored(sandbox, HAS_CLOSE, "I'd use a double loop.", reasoning=f"```python\n{HAS_CLOSE.prompt}{BODY}```")
    assert s.status == "no_code" and not s.correct


def test_truncated_and_error_records(sandbox: Sandbox) -> None:
    cut = scored(sandbox, HAS_CLOSE, None, finish_reason="length", reasoning="thinking...")
    assert (cut.status, cut.truncated, cut.correct) == ("truncated", True, False)
    cut_in_code = scored(sandbox, HAS_CLOSE, "```python\ndef has_close_elements(numbers, threshold):\n    for", finish_reason="length")
    assert cut_in_code.status == "truncated" and cut_in_code.truncated
    # A finished block before the cut still runs; the record says it was cut.
    late = scored(sandbox, HAS_CLOSE, f"```python\n{HELPER}{FULL}```\nNow the complexity: it is", finish_reason="length")
    assert (late.status, late.truncated) == ("passed", True)
    error = scored(sandbox, HAS_CLOSE, None, finish_reason=None, error="connection reset", error_kind="stream_error")
    assert (error.status, error.correct) == ("server_error", False) and "stream_error" in error.detail


def test_extraction_prefers_fences_over_prose() -> None:
    found = extract_code(f"def has_close_elements(x):\n    pass\n\n```python\n{HELPER}{FULL}```", HAS_CLOSE)
    assert found.rule == "fenced_function" and "_close" in found.completion


@pytest.mark.parametrize(("n", "c", "k"), [(1, 1, 1), (1, 0, 1), (10, 3, 1), (10, 3, 5), (20, 0, 5), (20, 17, 5), (200, 37, 10)])
def test_pass_at_k_is_the_unbiased_estimator(n: int, c: int, k: int) -> None:
    expected = 1.0 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_single_record_call_matches_mmlu_pro_signature() -> None:
    s = humaneval.score(transcript(HAS_CLOSE, f"```python\n{HELPER}{FULL}```"), HAS_CLOSE, mode="official")
    assert (s.status, s.correct, s.item_id, s.benchmark) == ("passed", True, "HumanEval/0", "humaneval")


def test_long_answers_are_extracted_as_short_ones() -> None:
    """The shapes that used to cost quadratic time (a function, then a megabyte of prose; many
    fences) give the same extraction as their short forms; answers over the cap are refused."""
    prose = "This line is prose about the solution, not code at all.\n" * 17_000  # ~1 MB
    found = extract_code(f"{HELPER}\n{FULL}\n{prose}", HAS_CLOSE)
    assert found.rule == "bare_function" and "_close" in found.completion and "prose" not in found.completion
    fenced = extract_code("```\n```\n" * 60_000 + f"```python\n{HELPER}{FULL}```\n", HAS_CLOSE)
    assert fenced.rule == "fenced_function" and "_close" in fenced.completion
    unclosed = extract_code(f"```python\n{HELPER}{FULL}", HAS_CLOSE)  # cut off inside the block
    assert unclosed.rule == "fenced_function"
    huge = extract_code("x" * (humaneval.MAX_ANSWER_CHARS + 1), HAS_CLOSE)
    assert huge.completion is None and "longer than" in huge.detail
