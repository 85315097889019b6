"""Typed records: the contract between the stages (run → score → stats → report).

Every file a stage writes is made of these models, one JSON object per line (JSONL) or one
JSON document (the manifest). A later stage reads only these files, never another stage's
in-memory state, so any stage can be re-run from what is on disk.

Run folder layout (``runs/NAME/``)::

    manifest.json                      RunManifest: config (no secrets), datasets, seed, prompts
    items.jsonl                        Item: the sampled questions, everything scoring needs
    transcripts/<model>.<benchmark>.jsonl   TranscriptRecord, appended one by one
    scores.jsonl                       ScoreRecord, written by `qatcmp score`
    report.json / report.md / *.png    written by `qatcmp stats`
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

BenchmarkName = Literal["mmlu_pro", "humaneval"]
BENCHMARKS: tuple[str, ...] = ("mmlu_pro", "humaneval")

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Record(BaseModel):
    # Unknown fields are kept, so a file written by a newer qatcmp still loads.
    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------- items


class MmluProItem(Record):
    benchmark: Literal["mmlu_pro"] = "mmlu_pro"
    item_id: str  # the dataset's question_id, as a string
    category: str
    question: str
    options: list[str]
    answer: str  # the correct letter, A-J
    src: str | None = None


class HumanEvalItem(Record):
    benchmark: Literal["humaneval"] = "humaneval"
    item_id: str  # task_id, e.g. "HumanEval/0"
    prompt: str
    test: str
    entry_point: str
    canonical_solution: str | None = None


Item = Annotated[Union[MmluProItem, HumanEvalItem], Field(discriminator="benchmark")]


# --------------------------------------------------------------------------- transcripts


class Usage(Record):
    """Token usage as the server reported it. Servers add their own fields (oMLX:
    time_to_first_token, generation_tokens_per_second, model_load_duration, ...); those are
    kept verbatim as extra fields."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None  # from prompt_tokens_details.cached_tokens


# unclosed_in_content: the budget ran out while thinking and the server returned the
# unfinished reasoning as content (oMLX, non-streaming); it is recorded as reasoning.
ReasoningSource = Literal["reasoning_content", "reasoning", "think_tags", "unclosed_in_content"]


class TranscriptRecord(Record):
    """One request: a model's answer to one question (one sample)."""

    schema_version: int = SCHEMA_VERSION
    model: str  # the variant's short name from servers.yaml
    benchmark: BenchmarkName
    item_id: str
    sample: int = 0  # 0..K-1 with --samples K
    server: str | None = None
    messages: list[dict[str, Any]]
    request: dict[str, Any]  # the JSON body sent (messages left out: see `messages`)
    content: str | None = None  # the final answer, reasoning removed
    reasoning: str | None = None
    reasoning_source: ReasoningSource | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_s: float | None = None
    ttft_s: float | None = None  # time to the first content or reasoning token
    attempts: int = 1
    error: str | None = None  # set when no answer could be had; content is then None
    error_kind: str | None = None  # short class: "http_503", "timeout", "stream_error", ...
    started_at: datetime
    finished_at: datetime

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.benchmark, self.item_id, self.sample)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


# --------------------------------------------------------------------------- scores

ScoreStatus = Literal[
    # MMLU-Pro
    "answered",  # a letter was extracted (correct or not)
    "no_answer",  # content present, no letter found
    # HumanEval
    "passed",
    "failed",
    "timeout",
    "error",  # the sandbox could not run the sample
    "no_code",
    # both
    "truncated",  # hit the token budget (finish_reason == "length") with no usable answer
    "server_error",  # the transcript holds an error record: the server never answered
]


class ScoreRecord(Record):
    """The score of one transcript record. Written by `qatcmp score` to scores.jsonl."""

    model: str
    benchmark: BenchmarkName
    item_id: str
    sample: int = 0
    category: str | None = None  # MMLU-Pro category, for per-category stats
    correct: bool
    status: ScoreStatus
    extracted: str | None = None  # the letter, or the code that ran
    extraction_rule: str = "none"
    truncated: bool = False
    detail: str = ""
    # Copied from the transcript so that stats need only scores.jsonl.
    finish_reason: str | None = None
    completion_tokens: int | None = None
    content_chars: int = 0
    reasoning_chars: int = 0
    latency_s: float | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.benchmark, self.item_id, self.sample)

    @staticmethod
    def fields_from(record: TranscriptRecord) -> dict[str, Any]:
        """What a score copies from its transcript record (so stats need only scores)."""
        return {
            "model": record.model,
            "benchmark": record.benchmark,
            "item_id": record.item_id,
            "sample": record.sample,
            "truncated": record.truncated,
            "finish_reason": record.finish_reason,
            "completion_tokens": record.usage.completion_tokens if record.usage else None,
            "content_chars": len(record.content or ""),
            "reasoning_chars": len(record.reasoning or ""),
            "latency_s": record.latency_s,
        }


# --------------------------------------------------------------------------- manifest


class BenchmarkSelection(Record):
    """Which questions of one benchmark a run asks, and where they came from."""

    name: BenchmarkName
    dataset: str  # hub id, or "builtin:<file>", or a local path
    revision: str | None = None  # hub revision, or sha256 of the local file
    split: str | None = None
    total_available: int
    item_ids: list[str]
    prompt_template: str


class ServerInfo(Record):
    """What a server told about itself when the run started (best effort)."""

    base_url: str
    models: list[str] | None = None  # ids listed by GET /models
    model_status: dict[str, Any] | None = None  # oMLX GET /v1/models/status entries
    version: str | None = None  # oMLX GET /api/status version
    status: dict[str, Any] | None = None  # oMLX GET /api/status, as returned (cache, loaded models)
    error: str | None = None  # why the introspection failed, if it did


class RunSpec(Record):
    """Everything that decides which requests a run sends. Resuming a run with a different
    spec is refused, because the transcripts would mix two experiments."""

    benchmarks: list[BenchmarkSelection]
    seed: int
    samples: int
    models: dict[str, dict[str, Any]]  # model name -> the request template (server, body)


class Session(Record):
    """One `qatcmp run` on the folder: the first that made it, and each resume."""

    command: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)  # as validated, secrets removed
    qatcmp_version: str | None = None
    started_at: datetime
    finished_at: datetime | None = None  # None: still running, or killed
    outcome: str | None = None  # "complete", "errors", "interrupted", "failed: <why>"
    sent: int = 0  # records written by this session
    errors: int = 0  # of which error records
    servers: dict[str, ServerInfo] = Field(default_factory=dict)  # what they said this time


class ExcludedItem(Record):
    """A question left out of every comparison: its sources disagree on what was asked (text,
    options or answer differ - published outputs made from different dataset revisions)."""

    benchmark: BenchmarkName
    item_id: str
    reason: str  # what differs, e.g. "answer: D in items.jsonl, B in llama31's file"
    models: list[str] = Field(default_factory=list)  # the models whose question differs


class RunManifest(Record):
    schema_version: int = SCHEMA_VERSION
    qatcmp_version: str
    created_at: datetime
    updated_at: datetime
    command: list[str] = Field(default_factory=list)  # the latest session's (all: `sessions`)
    config: dict[str, Any]  # the latest session's servers.yaml as validated, secrets removed
    spec: RunSpec
    servers: dict[str, ServerInfo] = Field(default_factory=dict)  # the latest session's servers
    model_switches: int = 0
    warnings: list[str] = Field(default_factory=list)
    source: str = "run"  # "run", or "import:<what>" for imported outputs
    # benchmark -> item id -> sha256 of the item in items.jsonl: the stages refuse an edited
    # item. Empty in manifests written before it existed (then nothing is checked).
    item_hashes: dict[str, dict[str, str]] = Field(default_factory=dict)
    sessions: list[Session] = Field(default_factory=list)  # oldest first
    # Questions no pair may use (see ExcludedItem); statistics leave them out for every model.
    excluded_items: list[ExcludedItem] = Field(default_factory=list)
