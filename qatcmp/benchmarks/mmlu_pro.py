"""MMLU-Pro (TIGER-Lab): 12,032 multiple-choice questions with up to ten options (A-J).

Load, sample (stratified by category), prompt (the official 0-shot instruction).
"""

from __future__ import annotations

from typing import Any

from qatcmp.benchmarks.datasource import HubDataset, LoadedRows, load_rows
from qatcmp.benchmarks.mmlu_pro_extract import (  # noqa: F401 - re-exported: the benchmark's API
    EXTRACT_MODES,
    LETTERS,
    MAIN_MODES,
    Extraction,
    extract,
    extract_default,
    extract_official,
    extract_official_published,
)
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
# "(B)" and "(C)" while thinking has not answered either. The extraction rules live in
# mmlu_pro_extract.


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
