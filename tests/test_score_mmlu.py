"""MMLU-Pro answer extraction and scoring, both modes."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatcmp.benchmarks.mmlu_pro import (
    extract_default,
    extract_official,
    extract_official_published,
    score,
)
from qatcmp.records import MmluProItem, TranscriptRecord, Usage

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


def item(n_options: int = 10, answer: str = "C") -> MmluProItem:
    return MmluProItem(item_id="70", category="physics", question="q?",
                       options=[f"option {i}" for i in range(n_options)], answer=answer)


def transcript(content: str | None, finish_reason: str | None = "stop", **extra) -> TranscriptRecord:
    return TranscriptRecord(model="q4", benchmark="mmlu_pro", item_id="70", messages=[], request={},
                            content=content, finish_reason=finish_reason, started_at=NOW,
                            finished_at=NOW, **extra)


# ----------------------------------------------------------------- default mode

@pytest.mark.parametrize(
    ("text", "letter", "rule"),
    [
        ("Speed doubles, so the energy quadruples.\n\nThe answer is (C).", "C", "answer_is"),
        ("The answer is C", "C", "answer_is"),
        ("**The answer is (H)**", "H", "answer_is"),
        ("The correct answer is **(B)**.", "B", "answer_is"),
        ("the answer is therefore option D.", "D", "answer_is"),
        ("Answer: E", "E", "answer_colon"),
        ("**Answer:** (F)", "F", "answer_colon"),
        ("Final answer: G.", "G", "answer_colon"),
        ("So we get $\\boxed{A}$", "A", "boxed"),
        ("$$\\boxed{\\text{(J)}}$$", "J", "boxed"),
        ("Option I is correct.", "I", "option_is_correct"),
        ("Working through it...\n\n**(D)**", "D", "final_line_letter"),
        ("...the total is 42 N, option D.\n\nD.", "D", "final_line_letter"),
        ("Therefore, the correct option is **C**.", "C", "option_is"),
        # A base model that answers, then invents the next question and answers it too.
        ("The answer is (D).\n\nQuestion:\nWhat is 2+2?\nOptions:\nA. 4\nB. 5\nAnswer: Let's think. The answer is (A).",
         "D", "answer_is"),
        # Several letters: the last answer statement wins, not a letter mentioned in passing.
        ("A and B are wrong because of friction. C is tempting, but the answer is (D).", "D", "answer_is"),
        ("The answer is (B). Wait: I misread the units. The answer is (E).", "E", "answer_is"),
        ("The answer is (A) because B and C ignore drag.", "A", "answer_is"),
        ("Answer: A is the only option that conserves energy.", "A", "answer_colon"),
    ],
)
def test_default_extraction(text: str, letter: str, rule: str) -> None:
    found = extract_default(text, 10)
    assert (found.letter, found.rule) == (letter, rule)


@pytest.mark.parametrize(
    "text",
    [
        "I am not sure. It could be A or B.",  # letters mentioned, none stated as the answer
        "The answer is I think unclear.",  # the pronoun, not option I
        "The answer is Actually hard to say",  # a word starting with a letter
        "",
        "The answer is not given in the options.",
        "Options:\nA. 30\nB. 15\nJ. 50",  # a list of options is not an answer
        "(D) means H is true, and J is\n(H) means H is false",
    ],
)
def test_default_extraction_finds_nothing(text: str) -> None:
    assert extract_default(text, 10).letter is None


def test_default_rejects_letters_beyond_the_options() -> None:
    found = extract_default("The answer is (J).", 4)
    assert found.letter is None and "beyond the 4 options" in found.detail
    # A later in-range statement wins over an out-of-range one.
    assert extract_default("The answer is (H). No - there are only four: the answer is (B).", 4).letter == "B"


# ----------------------------------------------------------------- official mode

@pytest.mark.parametrize(
    ("text", "letter", "rule"),
    [
        ("The answer is (C). Later: the answer is (D).", "C", "answer_is"),  # first match
        ("the answer is **(B)**", "B", "answer_is"),  # ** removed first
        ("Answer: D\nAnswer: E", "D", "answer_colon"),  # first line that has one
        ("answer: F and then Answer: G", "G", "answer_colon"),  # ...and its last on that line
        ("I think it is B, not C.", "C", "last_letter"),
        ("I guess", "I", "last_letter"),  # the weak rule: "I" is a letter
        ("no capital letters", None, "none"),
    ],
)
def test_official_extraction(text: str, letter: str | None, rule: str) -> None:
    found = extract_official(text)
    assert (found.letter, found.rule) == (letter, rule)
    assert found == extract_official_published(text)


_TOKENS = st.sampled_from(
    ["answer", "Answer", "answer is", "answer:", "Answer: ", " ", "\n", "(", ")", "**", "A", "B", "J", "K",
     "I", "x", "is", ".", "The", "  ", ":", "\t"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_fast_official_rules_equal_the_published_regexes(text: str) -> None:
    assert extract_official(text) == extract_official_published(text)


def test_official_ignores_the_option_count_like_the_reference() -> None:
    assert extract_official("The answer is (J)").letter == "J"


# ----------------------------------------------------------------- scoring a record

def test_score_correct_and_wrong() -> None:
    right = score(transcript("The answer is (C)", usage=Usage(completion_tokens=900)), item(), mode="default")
    assert (right.correct, right.status, right.extracted, right.extraction_rule) == (True, "answered", "C", "answer_is")
    assert right.completion_tokens == 900 and right.category == "physics" and right.item_id == "70"
    wrong = score(transcript("The answer is (D)"), item(), mode="default")
    assert (wrong.correct, wrong.status, wrong.extracted) == (False, "answered", "D")


def test_only_the_content_is_scored_never_the_reasoning() -> None:
    record = transcript("", reasoning="...so the answer is (C).", finish_reason="stop")
    scored = score(record, item(), mode="default")
    assert scored.status == "no_answer" and not scored.correct and scored.reasoning_chars > 0


def test_truncated_answers_are_marked() -> None:
    cut = score(transcript(None, finish_reason="length", reasoning="long thinking"), item(), mode="default")
    assert (cut.status, cut.truncated, cut.correct) == ("truncated", True, False)
    cut_midway = score(transcript("Let me compute the", finish_reason="length"), item(), mode="official")
    assert cut_midway.truncated and cut_midway.status == "truncated"
    # An answer given before the budget ran out still counts, flagged as truncated.
    late = score(transcript("The answer is (C). Also", finish_reason="length"), item(), mode="default")
    assert (late.status, late.correct, late.truncated) == ("answered", True, True)


def test_error_records_are_scored_as_such() -> None:
    failed = transcript(None, finish_reason=None, error="HTTP 503", error_kind="http_503")
    scored = score(failed, item(), mode="default")
    assert (scored.status, scored.correct) == ("server_error", False)
    assert "http_503" in scored.detail


def test_out_of_range_letter_is_not_an_answer() -> None:
    scored = score(transcript("The answer is (J)"), item(n_options=4, answer="A"), mode="default")
    assert scored.status == "no_answer" and re.search("beyond", scored.detail)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        score(transcript("The answer is (C)"), item(), mode="lenient")
