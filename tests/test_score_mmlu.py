"""MMLU-Pro answer extraction and scoring, both modes."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatcmp.benchmarks.mmlu_pro import (
    EXTRACT_MODES,
    MAIN_MODES,
    Extraction,
    extract,
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


# Conclusions chat models write instead of "The answer is (X)" (all seen in TIGER-Lab's
# published Qwen1.5-7B-Chat or Llama-3.1-8B outputs; see scripts/compare_extraction.py).
@pytest.mark.parametrize(
    ("text", "letter", "rule"),
    [
        ("Total = $518.00. The closest option is (A).", "A", "closest_option"),
        ("The closest option is (E) with a slight rounding error.", "E", "closest_option"),
        ("so 2.4 eV. The nearest option is B.", "B", "closest_option"),
        ("The closest match is option F.", "F", "closest_option"),
        ("The closest option to this value is (E) 7.5 m.", "E", "closest_option"),
        ("0.045 * 6.022e23 = 2.7e22. This is closest to option B, 1.67 x 10^21.", "B", "closest_option"),
        ("...which is 3.2 V. This corresponds to option (C).", "C", "corresponds_to_option"),
        ("the MPS is -75%, which corresponds to option (E).", "E", "corresponds_to_option"),
        ("The closest option is -0.75, which is (G).", "G", "corresponds_to_option"),
        ("The expression that shows this is option (D).", "D", "corresponds_to_option"),
        ("Therefore, the correct statement is (B).", "B", "conclusion_is"),
        ("Therefore, the most likely diagnosis is (B).", "B", "conclusion_is"),
        ("The answer that best fits this description is (D).", "D", "conclusion_is"),
        ("The option that best fits the situation is (G).", "G", "conclusion_is"),
        ("The only option that satisfies this is (C).", "C", "corresponds_to_option"),  # "this is (C)"
        ("The only option that satisfies both conditions is (C).", "C", "conclusion_is"),
        ("So, the strongest argument would be (E).", "E", "conclusion_is"),
        ("The most likely diagnosis is (G) Viral meningitis.", "G", "conclusion_is"),
        ("Therefore, (G) is the correct answer.", "G", "letter_is_correct"),
        ("Magnets act on moving charges, so (F) is the correct answer", "F", "letter_is_correct"),
    ],
)
def test_default_reads_conclusions(text: str, letter: str, rule: str) -> None:
    assert extract_default(text, 10) == Extraction(letter, rule)


@pytest.mark.parametrize(
    "text",
    [
        "The closest option is not listed.",
        "(D) means H is true, and J is\n(H) means H is false",  # "is" then a letter on the next line
        "The correct statement is A bit more subtle than that.",  # the article
        "The most likely cause is I think a virus.",  # the pronoun
        "The amino acid sequence is not determined by genes, so (C) is incorrect.",
        "The test is (A) is a true statement.".replace("The test is ", ""),  # an option weighed
    ],
)
def test_default_conclusions_need_a_letter_stated_as_the_answer(text: str) -> None:
    assert extract_default(text, 10).letter is None


def test_an_answer_statement_wins_over_any_conclusion() -> None:
    text = "The answer is (B).\n\nNote: 3.1 m/s corresponds to option (C), and the closest option is (D)."
    assert extract_default(text, 10) == Extraction("B", "answer_is")
    # A conclusion after which the model invents a new question: the part before counts.
    text = "The closest option is (E).\n\nQuestion:\nWhat is 2+2?\nThe correct statement is (A)."
    assert extract_default(text, 10) == Extraction("E", "closest_option")
    # Out of range conclusions are no answers.
    assert extract_default("The closest option is (H).", 4).letter is None


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
        # Nothing removed first: "**" hides rule 1 here, as in the scripts that produced the
        # published outputs; the last standalone letter decides.
        ("the answer is **(B)**", "B", "last_letter"),
        ("The answer is **C**. Or E", "E", "last_letter"),
        ("Answer:\nD and later Answer: E", "D", "answer_colon"),  # `\s*` crosses the newline
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


@settings(max_examples=600, deadline=None)
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_fast_official_rules_equal_the_published_regexes(text: str) -> None:
    assert extract_official(text) == extract_official_published(text)
    assert extract_official(text, strip_bold=True) == extract_official_published(text, strip_bold=True)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="aAnswerJ:( )\n\t.*I", max_size=40))
def test_fast_official_rules_equal_the_published_regexes_on_any_short_text(text: str) -> None:
    assert extract_official(text) == extract_official_published(text)


def test_official_rules_against_the_verbatim_regexes() -> None:
    """The rules as TIGER-Lab's scripts spell them, applied one by one with `re`."""
    texts = ["x answer: B y Answer:  C\nanswer: D", "so the answer is (F)", "answer is G and answer is (H)",
             "(A) or B? I'd say J.", "Answer:\n\n  E", "nothing here", "**answer is (B)**"]
    for text in texts:
        rule1 = re.search(r"answer is \(?([A-J])\)?", text)
        rule2 = re.search(r".*[aA]nswer:\s*([A-J])", text)
        rule3 = re.search(r"\b[A-J]\b(?!.*\b[A-J]\b)", text, re.DOTALL)
        expected = (rule1.group(1) if rule1 else rule2.group(1) if rule2 else rule3.group(0) if rule3 else None)
        assert extract_official(text).letter == expected, text


def test_official_is_linear_on_long_answers() -> None:
    # The published rule 2 backtracks over every start position of a line: on this 200,000-
    # character line it would run for minutes. The result is the last "answer: X" of the line.
    text = "answer: " * 25_000 + "answer: B"
    assert extract_official(text) == Extraction("B", "answer_colon")
    assert extract_official("x " * 100_000 + "C").letter == "C"


def test_official_strip_mode_removes_bold_first() -> None:
    text = "the answer is **(B)**. Later, maybe C"
    assert extract(text, mode="official") == Extraction("C", "last_letter")
    assert extract(text, mode="official-strip") == Extraction("B", "answer_is")
    assert set(MAIN_MODES) == {"default", "official"} and set(MAIN_MODES) <= set(EXTRACT_MODES)


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
