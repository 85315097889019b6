"""The per-question view model of report.html: one row per question, one cell per variant.

Built from the run folder's own files (items.jsonl, transcripts, scores.jsonl) — text and the
score records' fields only, no statistic. Every string here came from a model or a dataset:
it is untrusted, and the renderer embeds it as escaped JSON, never as markup.

Long texts are trimmed (head and tail kept, the middle left out with its length), so a
1,000-question run with long reasoning still makes a file small enough to send; the full text
stays in the transcripts, and the page says where.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from qatcmp.records import HumanEvalItem, Item, MmluProItem, ScoreRecord, TranscriptRecord
from qatcmp.rundir import RunDir

# Characters kept of each text (head, tail). The end of a reasoning or of an answer is where
# the decision is stated, so more of the tail is kept. Sized so that 3 variants x 1,000
# questions with thinking-length reasoning stay a few MB (bench/bench_html.py measures it).
REASONING_KEEP = (400, 1100)
CONTENT_KEEP = (1000, 1500)
CODE_KEEP = (4000, 2000)
DETAIL_KEEP = (1000, 1000)
QUESTION_KEEP = (6000, 2000)

# The cell a variant gets in the question table.
Cell = Literal["right", "wrong", "truncated", "no_answer", "error", "missing"]
SERVER_ERROR = "server_error"
NO_ANSWER = {"no_answer", "no_code"}


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Text(View):
    """A possibly trimmed text: `omitted` characters were left out at position `at`."""

    text: str
    chars: int
    omitted: int = 0
    at: int = 0


class Answer(View):
    sample: int
    status: str  # the score status, or "unscored" when scores.jsonl has no record for it
    correct: bool
    truncated: bool
    extracted: Text | None = None  # the letter, or (HumanEval) the code after the prompt
    rule: str = "none"  # the extraction rule of the score record
    detail: Text | None = None  # why it failed: the failing assertion, the error, ...
    run_s: float | None = None  # HumanEval: time in the sandbox
    finish_reason: str | None = None
    tokens: int | None = None
    latency_s: float | None = None
    content: Text | None = None
    reasoning: Text | None = None
    reasoning_source: str | None = None
    error: str | None = None  # the server never answered


class Question(View):
    id: str
    category: str | None = None
    text: Text  # the MMLU-Pro question, or the HumanEval prompt
    options: list[str] = []
    gold: str | None = None  # the correct letter (MMLU-Pro)
    entry_point: str | None = None
    cells: dict[str, Cell]  # per variant, the outcome of the answer the paired tests use
    paired: dict[str, bool | None]  # per variant: that answer right (None: nothing answered)
    answers: dict[str, list[Answer]]  # per variant, every sample


class BenchmarkQuestions(View):
    benchmark: str
    transcripts: dict[str, str]  # per variant, the transcript file (relative to the run)
    questions: list[Question]


class QuestionRows(View):
    models: list[str]
    benchmarks: list[BenchmarkQuestions]


# --------------------------------------------------------------------------- texts


def trimmed(text: str | None, keep: tuple[int, int]) -> Text | None:
    if text is None:
        return None
    head, tail = keep
    if len(text) <= head + tail:
        return Text(text=text, chars=len(text))
    return Text(
        text=text[:head] + text[len(text) - tail:],
        chars=len(text),
        omitted=len(text) - head - tail,
        at=head,
    )


# --------------------------------------------------------------------------- cells


def paired_record(records: list[ScoreRecord]) -> ScoreRecord | None:
    """The answer the report's paired tests use for a question: its first answered sample
    (server errors left out), as docs/report-schema.md states. Chosen here only to show it;
    every count comes from report.json."""
    answered = [r for r in records if r.status != SERVER_ERROR]
    return min(answered, key=lambda r: r.sample) if answered else None


def cell_of(records: list[ScoreRecord]) -> Cell:
    if not records:
        return "missing"
    chosen = paired_record(records)
    if chosen is None:
        return "error"
    if chosen.correct:
        return "right"
    if chosen.status in NO_ANSWER:
        return "no_answer"
    if chosen.truncated or chosen.status == "truncated":
        return "truncated"
    return "wrong"


# --------------------------------------------------------------------------- answers


def answer_view(score: ScoreRecord | None, transcript: TranscriptRecord | None, item: Item) -> Answer:
    source = score or transcript
    assert source is not None
    extracted = score.extracted if score else None
    if extracted is not None and isinstance(item, HumanEvalItem):
        extracted = _after_prompt(extracted, item.prompt)
    run_s = getattr(score, "run_s", None) if score else None
    return Answer(
        sample=source.sample,
        status=score.status if score else "unscored",
        correct=bool(score and score.correct),
        truncated=score.truncated if score else bool(transcript and transcript.truncated),
        extracted=trimmed(extracted, CODE_KEEP),
        rule=score.extraction_rule if score else "none",
        detail=trimmed(score.detail, DETAIL_KEEP) if score and score.detail else None,
        run_s=run_s if isinstance(run_s, (int, float)) and not isinstance(run_s, bool) else None,
        finish_reason=transcript.finish_reason if transcript else score.finish_reason if score else None,
        tokens=_tokens(score, transcript),
        latency_s=transcript.latency_s if transcript else score.latency_s if score else None,
        content=trimmed(transcript.content, CONTENT_KEEP) if transcript else None,
        reasoning=trimmed(transcript.reasoning, REASONING_KEEP) if transcript else None,
        reasoning_source=transcript.reasoning_source if transcript else None,
        error=transcript.error if transcript else None,
    )


def _after_prompt(program: str, prompt: str) -> str:
    """The program that ran is the prompt followed by the model's completion: show the part
    the model wrote (the prompt is shown once, above the answers)."""
    for head in (prompt, prompt + "\n"):
        if program.startswith(head):
            return program[len(head):]
    return program


def _tokens(score: ScoreRecord | None, transcript: TranscriptRecord | None) -> int | None:
    if transcript and transcript.usage and transcript.usage.completion_tokens is not None:
        return transcript.usage.completion_tokens
    return score.completion_tokens if score else None


# --------------------------------------------------------------------------- questions


def question_view(item: Item, models: list[str], scores: dict, transcripts: dict) -> Question:
    cells: dict[str, Cell] = {}
    paired: dict[str, bool | None] = {}
    answers: dict[str, list[Answer]] = {}
    for model in models:
        records = sorted(scores.get((model, item.item_id), []), key=lambda r: r.sample)
        sent = transcripts.get((model, item.item_id), {})
        samples = sorted({r.sample for r in records} | set(sent))
        by_sample = {r.sample: r for r in records}
        answers[model] = [answer_view(by_sample.get(s), sent.get(s), item) for s in samples]
        cells[model] = cell_of(records)
        chosen = paired_record(records)
        paired[model] = None if chosen is None else chosen.correct
    if isinstance(item, MmluProItem):
        return Question(
            id=item.item_id, category=item.category, text=trimmed(item.question, QUESTION_KEEP),
            options=[o[:QUESTION_KEEP[0]] for o in item.options], gold=item.answer,
            cells=cells, paired=paired, answers=answers,
        )
    return Question(
        id=item.item_id, text=trimmed(item.prompt, QUESTION_KEEP), entry_point=item.entry_point,
        cells=cells, paired=paired, answers=answers,
    )


def build_question_rows(
    run_dir: str | Path,
    *,
    scores: list[ScoreRecord] | None = None,
) -> QuestionRows:
    """The view model of a run folder (its scores read from scores.jsonl unless given)."""
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    models = list(manifest.spec.models)
    items = run.read_items()
    score_list = run.read_scores() if scores is None else scores
    by_score: dict[str, dict[tuple[str, str], list[ScoreRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in score_list:
        by_score[record.benchmark][(record.model, record.item_id)].append(record)
    by_transcript: dict[str, dict[tuple[str, str], dict[int, TranscriptRecord]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for record in run.read_transcripts():
        by_transcript[record.benchmark][(record.model, record.item_id)][record.sample] = record
    benchmarks = []
    for name in [b.name for b in manifest.spec.benchmarks]:
        mine = [item for item in items if item.benchmark == name]
        if not mine:
            continue
        benchmarks.append(
            BenchmarkQuestions(
                benchmark=name,
                transcripts={
                    m: run.transcript_file(m, name).relative_to(run.path).as_posix() for m in models
                },
                questions=[question_view(i, models, by_score[name], by_transcript[name]) for i in mine],
            )
        )
    return QuestionRows(models=models, benchmarks=benchmarks)
