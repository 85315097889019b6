"""The score stage: transcripts in, scores.jsonl out. No server, and the transcripts are
only read, so scoring again with other options is always safe.

Every transcript record gets one score record, error records included (status
`server_error`); how to count those is the report's decision, not ours.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qatcmp import __version__
from qatcmp.benchmarks import humaneval, mmlu_pro
from qatcmp.benchmarks.datasource import file_sha256
from qatcmp.errors import ConfigError, DataError
from qatcmp.records import HumanEvalItem, MmluProItem, ScoreRecord, TranscriptRecord, utcnow
from qatcmp.rundir import RunDir, write_json_atomic, write_jsonl_atomic
from qatcmp.sandbox import Limits, Sandbox

EXTRACT_MODES = mmlu_pro.EXTRACT_MODES
SCORES_META = "scores.meta.json"


def score_run(
    run_dir: Path | RunDir,
    *,
    mode: str = "default",
    jobs: int | None = None,
    sandbox: Sandbox | None = None,
    chosen_by_user: bool = False,
    unsafe_no_isolation: bool = False,
) -> list[ScoreRecord]:
    """Score every transcript record of a run; write scores.jsonl and scores.meta.json.
    ``chosen_by_user``: the mode was chosen with `qatcmp score --extract` (the report says so,
    and later re-scoring keeps it). HumanEval code runs only in an isolating sandbox, unless
    ``unsafe_no_isolation``."""
    if mode not in EXTRACT_MODES:
        raise ConfigError(f"unknown extraction mode {mode!r} (use {' or '.join(EXTRACT_MODES)})")
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    items, order, transcripts = _load(rd)

    mmlu = [(r, _item_for(r, items)) for r in transcripts if r.benchmark == "mmlu_pro"]
    code = [(r, _item_for(r, items)) for r in transcripts if r.benchmark == "humaneval"]
    scores = [mmlu_pro.score(r, item, mode=mode) for r, item in mmlu]  # type: ignore[arg-type]
    protections = limits = isolation = None
    if code:
        sandbox = sandbox or Sandbox(Limits(), allow_unsafe=unsafe_no_isolation)
        sandbox.require_isolation()  # before anything is scored or written
        protections = sandbox.protections.names()
        limits = asdict(sandbox.limits)
        isolation = sandbox.protections.isolation
        scores += humaneval.score_many(code, sandbox=sandbox, workers=jobs)  # type: ignore[arg-type]
    scores.sort(key=lambda s: _sort_key(s, order))

    write_jsonl_atomic(rd.scores, scores)
    sandbox_meta = {"sandbox_protections": protections, "sandbox_limits": limits, "sandbox_isolation": isolation,
                    "unsafe_no_isolation": bool(code) and isolation == "none"}
    meta = _meta(scores, mode, sandbox_meta)
    meta["scores_sha256"] = file_sha256(rd.scores)  # scores.jsonl as written: any damage shows
    meta["mode_chosen_by_user"] = chosen_by_user
    write_json_atomic(rd.path / SCORES_META, meta)
    return scores


def score_mmlu_in_mode(run_dir: Path | RunDir, mode: str) -> list[ScoreRecord]:
    """MMLU-Pro scores of a run in one extraction mode, in memory (nothing written). The
    report scores the other mode this way to check that its verdicts hold across modes;
    HumanEval does not depend on the mode, so no code runs here."""
    if mode not in EXTRACT_MODES:
        raise ConfigError(f"unknown extraction mode {mode!r} (use {' or '.join(EXTRACT_MODES)})")
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    items, order, transcripts = _load(rd)
    scores = [mmlu_pro.score(r, _item_for(r, items), mode=mode) for r in transcripts if r.benchmark == "mmlu_pro"]  # type: ignore[arg-type]
    return sorted(scores, key=lambda s: _sort_key(s, order))


def other_extract_mode(mode: str) -> str | None:
    """The mode to check a report's verdicts against: the first other one."""
    return next((m for m in EXTRACT_MODES if m != mode), None)


def chosen_extract_mode(rd: RunDir) -> str:
    """The mode the user chose last (`qatcmp score --extract`, recorded in scores.meta.json),
    else "default"."""
    meta = read_scores_meta(rd) or {}
    return meta["mode"] if meta.get("mode") in EXTRACT_MODES else "default"


def _load(rd: RunDir) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], int], list[TranscriptRecord]]:
    manifest = rd.read_manifest()  # a run folder, readable
    items = {(item.benchmark, item.item_id): item for item in rd.read_items(manifest)}  # unedited
    order = {key: index for index, key in enumerate(items)}
    transcripts = sorted(rd.read_transcripts(manifest), key=lambda r: _sort_key(r, order))
    return items, order, transcripts


def ensure_scores(run_dir: Path | RunDir, *, mode: str | None = "default",
                  unsafe_no_isolation: bool = False) -> list[ScoreRecord]:
    """The run's scores: those on disk if they are up to date and made with this mode,
    else freshly made. ``mode=None``: keep the mode the scores on disk were made with (a
    user's `qatcmp score --extract official` stands), "default" if there are none."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    chosen = False
    if mode is None:
        mode = chosen_extract_mode(rd)
        chosen = (read_scores_meta(rd) or {}).get("mode_chosen_by_user") is True
    if rd.items.exists():
        rd.read_items()  # refuse edited questions even when the scores look current
    if scores_are_current(rd, mode):
        with contextlib.suppress(DataError):
            # Damaged (a cut or edited line): made again below, never half-read.
            return rd.read_scores(strict=True)
    return score_run(rd, mode=mode, chosen_by_user=chosen, unsafe_no_isolation=unsafe_no_isolation)


def scores_are_current(rd: RunDir, mode: str) -> bool:
    meta = read_scores_meta(rd)
    if not rd.scores.is_file() or meta is None or meta.get("mode") != mode:
        return False
    if meta.get("qatcmp_version", __version__) != __version__:
        return False  # scored by another version, whose extraction may differ
    if "scores_sha256" in meta and meta["scores_sha256"] != file_sha256(rd.scores):
        return False  # not the file this meta describes: damaged or edited
    scored = rd.scores.stat().st_mtime_ns
    inputs = [*rd.transcript_files(), rd.items]
    return all(path.stat().st_mtime_ns < scored for path in inputs if path.exists())


def read_scores_meta(rd: RunDir) -> dict[str, Any] | None:
    path = rd.path / SCORES_META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def rule_counts(scores: list[ScoreRecord]) -> dict[str, dict[str, int]]:
    """How many answers each extraction rule decided, per model and benchmark."""
    counts: dict[str, Counter[str]] = {}
    for s in scores:
        counts.setdefault(f"{s.model}/{s.benchmark}", Counter())[s.extraction_rule] += 1
    return {key: dict(sorted(c.items())) for key, c in sorted(counts.items())}


def status_counts(scores: list[ScoreRecord]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for s in scores:
        counts.setdefault(f"{s.model}/{s.benchmark}", Counter())[s.status] += 1
    return {key: dict(sorted(c.items())) for key, c in sorted(counts.items())}


def _meta(scores: list[ScoreRecord], mode: str, sandbox: dict[str, Any]) -> dict[str, Any]:
    """sandbox: sandbox_protections, sandbox_limits, sandbox_isolation ("bubblewrap",
    "sandbox-exec", "none"; null when no code ran), unsafe_no_isolation (code ran without
    isolation because the user asked for it)."""
    return {
        "mode": mode,
        "scored_at": utcnow().isoformat(),
        "qatcmp_version": __version__,
        "records": len(scores),
        **sandbox,
        "extraction_rules": rule_counts(scores),
        "statuses": status_counts(scores),
    }


def _item_for(record: TranscriptRecord, items: dict[tuple[str, str], Any]) -> MmluProItem | HumanEvalItem:
    item = items.get((record.benchmark, record.item_id))
    if item is None:
        raise DataError(
            f"transcript of {record.model} answers {record.benchmark} item {record.item_id}, "
            "which is not in items.jsonl"
        )
    return item


def _sort_key(record: TranscriptRecord | ScoreRecord, order: dict[tuple[str, str], int]) -> tuple:
    return (record.model, record.benchmark, order.get((record.benchmark, record.item_id), 0), record.sample)
