"""Run folders for the report tests, made of real parts: real MMLU-Pro questions (the builtin
sample shipped in qatcmp/data), a manifest as `qatcmp run` writes it (config, servers, request
bodies), and transcripts whose answers are scored by the real score stage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qatcmp import __version__
from qatcmp.benchmarks import mmlu_pro
from qatcmp.benchmarks.datasource import builtin_path, file_sha256
from qatcmp.records import BenchmarkSelection, MmluProItem, RunManifest, RunSpec, ServerInfo, TranscriptRecord, utcnow
from qatcmp.rundir import RunDir, write_jsonl_atomic

_ITEMS: list[MmluProItem] | None = None


def real_mmlu_items(n: int) -> list[MmluProItem]:
    global _ITEMS
    if _ITEMS is None:
        _ITEMS, _ = mmlu_pro.load("builtin")
    return _ITEMS[:n]


def wrong_letter(item: MmluProItem) -> str:
    return "A" if item.answer != "A" else "B"


def body(model_id: str, max_tokens: int = 2048, thinking: bool = False) -> dict[str, Any]:
    return {
        "model": model_id, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0,
        "max_tokens": max_tokens, "chat_template_kwargs": {"enable_thinking": thinking},
        "stream": True, "stream_options": {"include_usage": True}, "seed": 7,
    }


def make_mmlu_run(
    folder: Path,
    answers: dict[str, Callable[[MmluProItem], str | None]],
    *,
    n: int = 60,
    max_tokens: dict[str, int] | None = None,
    finish_reason: Callable[[str, MmluProItem], str | None] = lambda model, item: "stop",
    asked: int | None = None,
    warnings: list[str] | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> Path:
    """A run of the models in `answers` on the first n builtin MMLU-Pro questions. answers[m]
    gives the content of m's answer to an item (None: an error record, no answer). `asked`:
    only the first `asked` questions have transcripts (an interrupted run)."""
    items = real_mmlu_items(n)
    path = builtin_path(mmlu_pro.BUILTIN_FILE)
    selection = BenchmarkSelection(
        name="mmlu_pro", dataset=f"builtin:{mmlu_pro.BUILTIN_FILE}", revision=file_sha256(path),
        split="test", total_available=len(real_mmlu_items(10_000)), item_ids=[i.item_id for i in items],
        prompt_template=mmlu_pro.PROMPT_TEMPLATE,
    )
    budgets = max_tokens or {}
    models = list(answers)
    now = utcnow()
    manifest = RunManifest(
        qatcmp_version=__version__,
        created_at=now,
        updated_at=now,
        command=["qatcmp", "run", "--out", str(folder), "--mmlu-pro", str(n)],
        config={
            "servers": [{"name": "local", "base_url": "http://127.0.0.1:8080/v1"}],
            "models": [{"name": m, "server": "local", "model": f"org/{m}-model", "thinking": False} for m in models],
        },
        spec=RunSpec(
            benchmarks=[selection], seed=7, samples=1,
            models={m: {"server": "local", "body": body(f"org/{m}-model", budgets.get(m, 2048))} for m in models},
        ),
        servers={"local": ServerInfo(base_url="http://127.0.0.1:8080/v1", version="0.9.3")},
        warnings=warnings or [],
        **(extra_manifest or {}),
    )
    run = RunDir(folder)
    run.write_manifest(manifest)
    run.write_items(items)
    for model in models:
        records = []
        for item in items[: asked if asked is not None else n]:
            content = answers[model](item)
            records.append(TranscriptRecord(
                model=model, benchmark="mmlu_pro", item_id=item.item_id, server="local", messages=[],
                request={}, content=content, finish_reason=None if content is None else finish_reason(model, item),
                error=None if content is not None else "HTTP 503", error_kind=None if content is not None else "http_503",
                started_at=now, finished_at=now,
            ))
        write_jsonl_atomic(run.transcript_file(model, "mmlu_pro"), records)
    return folder


def right(item: MmluProItem) -> str:
    return f"Let me think. The answer is ({item.answer})."


def wrong(item: MmluProItem) -> str:
    return f"Let me think. The answer is ({wrong_letter(item)})."


def changes_its_mind(item: MmluProItem) -> str:
    """Official mode takes the first "answer is" (TIGER-Lab's re.search); default the last."""
    return f"The answer is ({wrong_letter(item)}). On reflection, the answer is ({item.answer})."
