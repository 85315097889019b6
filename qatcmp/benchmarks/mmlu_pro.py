"""MMLU-Pro (TIGER-Lab): 12,032 multiple-choice questions with up to ten options (A-J).

Load, sample (stratified by category), prompt (the official 0-shot instruction).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qatcmp.benchmarks.datasource import HubDataset, LoadedRows, load_rows
from qatcmp.benchmarks.sampling import stratified_order
from qatcmp.errors import DataError
from qatcmp.records import MmluProItem, ScoreRecord, TranscriptRecord

NAME = "mmlu_pro"
HUB = HubDataset(
    id="TIGER-Lab/MMLU-Pro",
    revision="b189ec765aa7ed75c8acfea42df31fdae71f97be",
    split="test",
    option="--mmlu-pro-data",
)
BUILTIN_FILE = "mmlu_pro_test_sample.jsonl.gz"
LETTERS = "ABCDEFGHIJ"

# TIGER-Lab's evaluate_from_api.py instruction and question format, 0-shot (thinking models
# are run without the five worked examples).
PROMPT_TEMPLATE = (
    "The following are multiple choice questions (with answers) about {category}. "
    'Think step by step and then output the answer in the format of "The answer is (X)" '
    "at the end.\n\n"
    "Question: {question}\n"
    "Options: {options}"
    "Answer: Let's think step by step."
)


def load(source: str | None) -> tuple[list[MmluProItem], LoadedRows]:
    loaded = load_rows(source, HUB, BUILTIN_FILE)
    items = [_item_from_row(row, number) for number, row in enumerate(loaded.rows, start=1)]
    if not items:
        raise DataError(f"{HUB.option}: the dataset has no questions")
    return items, loaded


def _item_from_row(row: dict[str, Any], number: int) -> MmluProItem:
    try:
        options = [str(o) for o in row["options"]]
        answer = row.get("answer")
        if not answer and row.get("answer_index") is not None:
            answer = LETTERS[int(row["answer_index"])]
        return MmluProItem(
            item_id=str(row["question_id"]),
            category=str(row["category"]),
            question=str(row["question"]),
            options=options,
            answer=str(answer),
            src=row.get("src"),
        )
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise DataError(
            f"{HUB.option}: row {number} is not an MMLU-Pro question (missing or bad {exc})"
        ) from None


def sample(items: list[MmluProItem], n: int, seed: int) -> list[MmluProItem]:
    """The first n of a seeded, category-stratified order (all of them if n is larger)."""
    ordered = stratified_order(items, seed, key=lambda i: i.item_id.zfill(12), stratum=lambda i: i.category)
    return ordered[:n]


def format_options(options: list[str]) -> str:
    return "".join(f"{LETTERS[i]}. {text}\n" for i, text in enumerate(options))


def build_messages(item: MmluProItem) -> list[dict[str, str]]:
    text = PROMPT_TEMPLATE.format(
        category=item.category, question=item.question, options=format_options(item.options)
    )
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------- scoring
#
# Only the final answer (`content`) is scored, never the reasoning: a model that weighs
# "(B)" and "(C)" while thinking has not answered either.



EXTRACT_MODES = ("default", "official")

# TIGER-Lab's cascade (compute_accuracy.py / evaluate_from_api.py), verbatim patterns.
_OFFICIAL_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
_OFFICIAL_ANSWER_COLON_PUBLISHED = re.compile(r".*[aA]nswer:\s*([A-J])")
# Rule 2 as published backtracks over every start position: quadratic on long lines. Its
# result is the first line holding an "answer: X" and, on it, the last one (greedy `.*`,
# which stops at a newline); every occurrence is found, overlapping ones too.
_ANSWER_COLON_ANYWHERE = re.compile(r"(?=[aA]nswer:\s*([A-J]))")
# Rule 3 as published is `\b[A-J]\b(?!.*\b[A-J]\b)` with DOTALL: the leftmost standalone
# letter with none after it, i.e. the last one. Taking the last match of `\b[A-J]\b` gives the
# same letter in linear time (the published form is quadratic on long answers); a test checks
# the two agree.
_OFFICIAL_LAST_LETTER_PUBLISHED = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL)
_STANDALONE_LETTER = re.compile(r"\b[A-J]\b")

# Default mode. A letter counts only when it stands alone: "(C)", "C", "C.", "C:" - never
# the first letter of a word ("Actually", "Both"). A bare "A"/"I" followed by a lowercase word
# is the article or the pronoun ("the answer is I think...").
_LETTER = (
    r"(?!(?:A|I)\s+(?!is\b|was\b|because\b|since\b|as\b|and\b|seems\b|appears\b)[a-z])"
    r"\(?\[?([A-J])\]?\)?(?![A-Za-z0-9])"
)
_DEFAULT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("boxed", re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*\(?([A-J])\)?\s*\}")),
    (
        "answer_is",
        re.compile(
            r"answer\s+(?:is|would\s+be|should\s+be|must\s+be)\s*"
            r"(?:therefore\s+|thus\s+|clearly\s+|likely\s+|probably\s+|definitely\s+)?"
            r":?\s*(?:option\s+|choice\s+)?"
            + _LETTER,
            re.IGNORECASE,
        ),
    ),
    (
        "answer_colon",
        re.compile(r"\banswer\s*(?:\(?[A-J]-[A-J]\)?)?\s*[:：]\s*(?:option\s+|choice\s+)?" + _LETTER, re.IGNORECASE),
    ),
    (
        "option_is",
        re.compile(r"\b(?:correct|right|best)\s+(?:option|choice)\s+is\s*:?\s*" + _LETTER, re.IGNORECASE),
    ),
    (
        "option_is_correct",
        re.compile(
            r"\b(?:option|choice)\s+\(?([A-J])\)?\s+(?:is|would\s+be)\s+(?:the\s+)?(?:correct|right|best)",
            re.IGNORECASE,
        ),
    ),
)
# Each pattern needs one of these words: texts without them are not scanned for it.
_KEYWORDS = {
    "boxed": ("\\boxed",),
    "answer_is": ("answer",),
    "answer_colon": ("answer",),
    "option_is": ("option", "choice"),
    "option_is_correct": ("option", "choice"),
}
# A last line that is only a letter: "(C)", "**C**", "C." - not "C. 42 m/s", which is as
# likely the end of a list of options copied out as an answer.
_FINAL_LINE_LETTER = re.compile(r"^\s*(?:[-*>#]+\s*)?\(?([A-J])\)?[.:]?\s*$")


@dataclass(frozen=True)
class Extraction:
    letter: str | None
    rule: str  # which rule matched, "none" if nothing did
    detail: str = ""


def extract_official(text: str) -> Extraction:
    """TIGER-Lab's cascade exactly: rule 1 first match, then rule 2, then the last standalone
    capital A-J. No random guess when nothing matches."""
    text = text.replace("**", "")
    match = _OFFICIAL_ANSWER_IS.search(text)
    if match:
        return Extraction(match.group(1), "answer_is")
    letter = _official_answer_colon(text)
    if letter:
        return Extraction(letter, "answer_colon")
    last = None
    for last in _STANDALONE_LETTER.finditer(text):
        pass
    if last:
        return Extraction(last.group(0), "last_letter")
    return Extraction(None, "none", "no letter found")


def _official_answer_colon(text: str) -> str | None:
    first_line = None
    letter = None
    for match in _ANSWER_COLON_ANYWHERE.finditer(text):
        line = text.count("\n", 0, match.start())
        if first_line is None:
            first_line = line
        elif line != first_line:
            break
        letter = match.group(1)
    return letter


def extract_official_published(text: str) -> Extraction:
    """The cascade with the published regular expressions verbatim (slow on long answers):
    the reference the fast version is tested against."""
    text = text.replace("**", "")
    for rule, pattern in (("answer_is", _OFFICIAL_ANSWER_IS), ("answer_colon", _OFFICIAL_ANSWER_COLON_PUBLISHED)):
        match = pattern.search(text)
        if match:
            return Extraction(match.group(1), rule)
    match = _OFFICIAL_LAST_LETTER_PUBLISHED.search(text)
    if match:
        return Extraction(match.group(0), "last_letter")
    return Extraction(None, "none", "no letter found")


def extract_default(text: str, n_options: int = 10) -> Extraction:
    """The letter a human reader would take as the answer: the last explicit answer statement
    ("The answer is (X)", "Answer: X", a boxed letter), else a last line that is just a letter.
    Letters beyond the question's options are not answers."""
    valid = LETTERS[:n_options]
    text = _plain(text)
    candidates: list[tuple[int, str, str]] = []  # (position, letter, rule)
    lowered = text.lower()
    for rule, pattern in _DEFAULT_PATTERNS:
        if any(word in lowered for word in _KEYWORDS[rule]):  # a scan of the text costs
            candidates.extend((m.start(), m.group(1), rule) for m in pattern.finditer(text))
    candidates = _before_a_new_question(text, candidates)
    if not candidates:
        letter = _final_line_letter(text)
        if letter:
            candidates.append((len(text), letter, "final_line_letter"))
    if not candidates:
        return Extraction(None, "none", "no answer statement found")
    in_range = [c for c in candidates if c[1] in valid]
    if not in_range:
        letters = ", ".join(sorted({c[1] for c in candidates}))
        return Extraction(None, "none", f"letter {letters} beyond the {n_options} options")
    _, letter, rule = max(in_range, key=lambda c: c[0])
    return Extraction(letter, rule)


_NEW_QUESTION = re.compile(r"\n\s*Question:")


def _before_a_new_question(text: str, candidates: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """A model that goes on to write a "Question:" of its own after answering (base models
    copying the few-shot format do) has finished its answer there: statements after it
    answer the invented question."""
    for match in _NEW_QUESTION.finditer(text):
        before = [c for c in candidates if c[0] < match.start()]
        if before:
            return before
    return candidates


def _plain(text: str) -> str:
    """Markdown and LaTeX dressing removed: **(C)**, __C__, $\\textbf{C}$, `C`."""
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = re.sub(r"\\text(?:bf|rm)?\{([^{}]*)\}", r"\1", text)
    return text.replace("$", "")


def _final_line_letter(text: str) -> str | None:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    match = _FINAL_LINE_LETTER.match(lines[-1])
    return match.group(1) if match else None


def extract(text: str, *, mode: str, n_options: int = 10) -> Extraction:
    if mode == "official":
        return extract_official(text)
    if mode == "default":
        return extract_default(text, n_options)
    raise ValueError(f"unknown extraction mode {mode!r} (use one of {', '.join(EXTRACT_MODES)})")


def score(record: TranscriptRecord, item: MmluProItem, *, mode: str = "default") -> ScoreRecord:
    """The score of one transcript record (an error record is scored as `server_error`)."""
    base = _score_base(record, item)
    if not record.ok:
        return ScoreRecord(**base, correct=False, status="server_error",
                           detail=f"no answer from the server: {record.error_kind or record.error}")
    content = record.content or ""
    if not content.strip():
        if record.truncated:
            return ScoreRecord(**base, correct=False, status="truncated",
                               detail="hit the token budget before giving an answer")
        return ScoreRecord(**base, correct=False, status="no_answer", detail="empty answer")
    found = extract(content, mode=mode, n_options=len(item.options))
    if found.letter is None:
        status = "truncated" if record.truncated else "no_answer"
        detail = found.detail + ("; hit the token budget" if record.truncated else "")
        return ScoreRecord(**base, correct=False, status=status, detail=detail)
    correct = found.letter == item.answer
    return ScoreRecord(
        **base, correct=correct, status="answered", extracted=found.letter,
        extraction_rule=found.rule,
        detail=f"{found.letter} {'=' if correct else '!='} {item.answer}",
    )


def _score_base(record: TranscriptRecord, item: MmluProItem) -> dict[str, Any]:
    return {**ScoreRecord.fields_from(record), "category": item.category}
