"""Published model outputs turned into qatcmp run folders, so that they can be scored and
compared with the same tools as our own runs.

TIGER-Lab publishes, per model, one JSON list over the whole MMLU-Pro test split (as a
``.zip`` holding that ``.json``): each object has the question's fields plus
``generated_text`` (the model's answer) and ``pred`` (their extracted letter, ``null`` where
their first rule did not match in that run). ``pred`` is kept on each transcript record as an
extra field, so the import can be checked against it.
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from qatcmp import __version__
from qatcmp.benchmarks import mmlu_pro
from qatcmp.benchmarks.datasource import file_sha256
from qatcmp.errors import DataError
from qatcmp.records import (
    BenchmarkSelection,
    MmluProItem,
    RunManifest,
    RunSpec,
    ScoreRecord,
    TranscriptRecord,
    utcnow,
)
from qatcmp.rundir import SAFE_NAME, RunDir, write_jsonl_atomic

TIGER_LAB_SOURCE = "import:tiger-lab-mmlu-pro"
TIGER_LAB_PROMPT = (
    "TIGER-Lab evaluate_from_*.py, 5-shot chain of thought (the prompt is not part of the "
    "published outputs)"
)


def read_tiger_lab_outputs(path: Path) -> list[dict[str, Any]]:
    """The list of per-question objects in a published ``.zip`` or its ``.json``."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith(".json")]
                if len(names) != 1:
                    raise DataError(f"{path}: expected one .json inside the zip, found {len(names)}")
                data = json.loads(archive.read(names[0]))
        else:
            data = json.loads(path.read_bytes())
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a TIGER-Lab output file ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise DataError(f"{path}: expected a JSON list of objects")
    for number, row in enumerate(data, start=1):
        if "generated_text" not in row or "question_id" not in row:
            raise DataError(f"{path}: object {number} has no question_id/generated_text")
    return data


def import_tiger_lab_mmlu_pro(path: Path, *, model: str, out: Path, force: bool = False) -> RunDir:
    """Write a complete run folder: manifest, items, and one transcript per question."""
    if not SAFE_NAME.match(model):
        raise DataError(f"--model {model!r}: use letters, digits, '.', '_', '+', '-'")
    rd = RunDir(out)
    if rd.manifest.exists() and not force:
        raise DataError(f"{out} already holds a run; choose another --out (or --force to replace it)")
    rows = read_tiger_lab_outputs(path)
    rows = _unique_questions(rows, path)
    items = [_item(row, number) for number, row in enumerate(rows, start=1)]
    now = utcnow()
    transcripts = [_transcript(row, item, model, path, now) for row, item in zip(rows, items)]

    rd.path.mkdir(parents=True, exist_ok=True)
    rd.write_manifest(_manifest(path, model, items, now))
    rd.write_items(items)
    write_jsonl_atomic(rd.transcript_file(model, "mmlu_pro"), transcripts)
    return rd


def _unique_questions(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = str(row["question_id"])
        if key in seen:
            raise DataError(f"{path}: question {key} appears twice")
        seen[key] = row
    return sorted(seen.values(), key=lambda r: int(r["question_id"]))


def _item(row: dict[str, Any], number: int) -> MmluProItem:
    return mmlu_pro._item_from_row(row, number)


def _transcript(row: dict[str, Any], item: MmluProItem, model: str, path: Path, now: Any) -> TranscriptRecord:
    return TranscriptRecord(
        model=model,
        benchmark="mmlu_pro",
        item_id=item.item_id,
        sample=0,
        server=None,
        messages=[],
        request={"imported_from": path.name},
        content=row.get("generated_text") or "",
        finish_reason=row.get("finish_reason"),  # not published: None
        started_at=now,
        finished_at=now,
        pred=row.get("pred"),
    )


def _manifest(path: Path, model: str, items: list[MmluProItem], now: Any) -> RunManifest:
    selection = BenchmarkSelection(
        name="mmlu_pro",
        dataset=f"import:{path.name}",
        revision=file_sha256(path),
        split="test",
        total_available=len(items),
        item_ids=[item.item_id for item in items],
        prompt_template=TIGER_LAB_PROMPT,
    )
    return RunManifest(
        qatcmp_version=__version__,
        created_at=now,
        updated_at=now,
        command=list(sys.argv),
        config={},
        spec=RunSpec(
            benchmarks=[selection], seed=0, samples=1,
            models={model: {"imported_from": path.name, "source": TIGER_LAB_SOURCE}},
        ),
        source=TIGER_LAB_SOURCE,
    )


def agreement_with_published_pred(rd: RunDir, scores: list[ScoreRecord]) -> dict[str, Any]:
    """How the letters of an official-mode scoring compare with the published `pred`, rule by
    rule. The acceptance check is zero disagreements wherever a rule decided and `pred` is
    set: rule 1 decides in every published run; rules 2 and 3 only in runs whose script had
    them (older runs left `pred` null there); where no rule matches, `pred` is their random
    guess (or null), so it is not compared."""
    preds = {(t.model, t.item_id): getattr(t, "pred", None) for t in rd.read_transcripts()}
    answers = {i.item_id: i.answer for i in rd.read_items() if isinstance(i, MmluProItem)}
    by_rule = Counter(s.extraction_rule for s in scores)
    per_rule: dict[str, dict[str, int]] = {}
    different: list[ScoreRecord] = []
    for s in scores:
        if s.extraction_rule == "none":
            continue
        pred = preds.get((s.model, s.item_id))
        if pred is None:  # every published run set pred where rule 1 matched
            outcome = "disagree" if s.extraction_rule == "answer_is" else "pred_null"
        else:
            outcome = "agree" if pred == s.extracted else "disagree"
        per_rule.setdefault(s.extraction_rule, {"agree": 0, "disagree": 0, "pred_null": 0})[outcome] += 1
        if outcome == "disagree":
            different.append(s)
    rule1 = per_rule.get("answer_is", {"agree": 0, "disagree": 0, "pred_null": 0})
    return {
        "records": len(scores),
        "decided_by_rule": dict(sorted(by_rule.items())),
        "per_rule": dict(sorted(per_rule.items())),
        "rule1_agree": rule1["agree"],
        "rule1_disagree": rule1["disagree"],
        "disagree": len(different),
        "disagreements": [
            f"{s.item_id} ({s.extraction_rule}): qatcmp {s.extracted}, published {preds.get((s.model, s.item_id))}"
            for s in different[:5]
        ],
        "qatcmp_correct": sum(1 for s in scores if s.correct),
        "published_correct": sum(1 for s in scores if preds.get((s.model, s.item_id)) == answers.get(s.item_id)),
    }
