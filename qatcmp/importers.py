"""Published model outputs turned into qatcmp run folders, so that they can be scored and
compared with the same tools as our own runs.

TIGER-Lab publishes, per model, one JSON list over the whole MMLU-Pro test split (as a
``.zip`` holding that ``.json``): each object has the question's fields plus
``generated_text`` (the model's answer) and ``pred`` (their extracted letter, ``null`` where
their first rule did not match in that run). ``pred`` is kept on each transcript record as an
extra field, so the import can be checked against it.

Each imported file is one model of a run folder; importing more files into the same folder
compares any number of models (see `import_outputs` for how their questions are matched).
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qatcmp import __version__
from qatcmp.benchmarks import mmlu_pro
from qatcmp.benchmarks.datasource import file_sha256
from qatcmp.errors import DataError
from qatcmp.records import (
    BenchmarkSelection,
    ExcludedItem,
    MmluProItem,
    RunManifest,
    RunSpec,
    ScoreRecord,
    TranscriptRecord,
    utcnow,
)
from qatcmp.rundir import SAFE_NAME, RunDir, item_hashes, write_jsonl_atomic

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
    if not data:
        raise DataError(f"{path}: the file holds no answers")
    for number, row in enumerate(data, start=1):
        if "generated_text" not in row or "question_id" not in row:
            raise DataError(f"{path}: object {number} has no question_id/generated_text")
        if not isinstance(row["generated_text"], (str, type(None))) or not isinstance(row["question_id"], (int, str)):
            raise DataError(f"{path}: object {number}: question_id must be a number and generated_text a string")
        if isinstance(row.get("pred"), (dict, list)):
            raise DataError(f"{path}: object {number}: pred must be a letter or null")
    return data


@dataclass
class ImportResult:
    """What an import did, for the command's summary."""

    run_dir: RunDir
    model: str
    imported: int  # answers written
    models: list[str]  # the run's models afterwards
    merged: bool  # added to a run that was already there
    replaced: bool = False  # --force replaced this model's earlier transcripts
    only_in_file: int = 0  # questions of the file the run had not (added, or skipped: see below)
    skipped: int = 0  # questions of the file left out because the run's question set is fixed
    only_in_run: int = 0  # questions of the run the file does not answer
    excluded: list[ExcludedItem] = field(default_factory=list)  # differ between the sources
    warnings: list[str] = field(default_factory=list)


def import_tiger_lab_mmlu_pro(path: Path, *, model: str, out: Path, force: bool = False) -> RunDir:
    """Import a published file as one model of the run folder `out` (see `import_outputs`)."""
    return import_outputs(path, model=model, out=out, force=force).run_dir


def import_outputs(path: Path, *, model: str, out: Path, force: bool = False) -> ImportResult:
    """Write a new run folder from a published file, or add the file's model to the run that
    is already in `out` (one made by another import, or by `qatcmp run`).

    Questions are matched by question_id and compared by content (question text, options,
    answer): where they differ, the file and the run asked different questions - published
    outputs made from different dataset revisions - and the question is left out of every
    comparison (`RunManifest.excluded_items`; no transcript is written for it). A question
    only one source has stays in the run: a pair compares only the questions both answered.
    `force` replaces this model's MMLU-Pro transcripts, nothing else."""
    if not SAFE_NAME.match(model):
        raise DataError(f"--model {model!r}: use letters, digits, '.', '_', '+', '-'")
    rd = RunDir(out)
    if not rd.manifest.exists() and rd.path.exists() and any(rd.path.iterdir()):
        raise DataError(f"{out} exists and is not a qatcmp run folder; choose another --out")
    rows = _unique_questions(read_tiger_lab_outputs(path), path)
    items = [_item(row, number) for number, row in enumerate(rows, start=1)]
    now = utcnow()
    transcripts = {item.item_id: _transcript(row, item, model, path, now) for row, item in zip(rows, items)}
    provenance = _provenance(path, items)
    if not rd.manifest.exists():
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_items(items)
        write_jsonl_atomic(rd.transcript_file(model, "mmlu_pro"), transcripts.values())
        rd.write_manifest(_manifest(path, model, items, now, provenance))
        return ImportResult(rd, model, len(items), [model], merged=False)
    return _merge(rd, path, model, items, transcripts, provenance, force, now)


def _merge(rd: RunDir, path: Path, model: str, items: list[MmluProItem], transcripts: dict[str, TranscriptRecord],
           provenance: dict[str, Any], force: bool, now: Any) -> ImportResult:
    manifest = rd.read_manifest()
    replaced = _check_model_slot(rd, manifest, model, force)
    selection = next((b for b in manifest.spec.benchmarks if b.name == "mmlu_pro"), None)
    if selection is None:
        raise DataError(f"{rd.path} has no MMLU-Pro questions to add {model}'s answers to; choose another --out")
    run_items = rd.read_items()
    known = {i.item_id: i for i in run_items if isinstance(i, MmluProItem)}
    fixed_questions = not manifest.source.startswith("import:")  # `qatcmp run` chose them: keep them
    # Earlier findings about this model go: it is imported afresh.
    manifest.excluded_items = [e for e in (_without(e, model) for e in manifest.excluded_items) if e.models]
    manifest.warnings = [w for w in manifest.warnings if not w.startswith(_warning_prefix(model))]

    excluded: list[ExcludedItem] = []
    new_items: list[MmluProItem] = []
    kept: list[TranscriptRecord] = []
    for item in items:
        ours = known.get(item.item_id)
        if ours is None:
            if not fixed_questions:
                new_items.append(item)
                kept.append(transcripts[item.item_id])
            continue
        difference = _content_difference(ours, item, model)
        if difference:
            excluded.append(ExcludedItem(benchmark="mmlu_pro", item_id=item.item_id, reason=difference, models=[model]))
        else:
            kept.append(transcripts[item.item_id])
    in_file = {item.item_id for item in items}
    result = ImportResult(
        rd, model, len(kept), [], merged=True, replaced=replaced,
        only_in_file=sum(1 for i in items if i.item_id not in known),
        skipped=len(items) - len(kept) - len(excluded),
        only_in_run=sum(1 for item_id in selection.item_ids if item_id not in in_file),
        excluded=excluded,
    )
    result.warnings = _merge_warnings(model, path, result, fixed_questions)

    manifest.excluded_items = _merged_exclusions(manifest.excluded_items, excluded)
    manifest.warnings += result.warnings
    if new_items:
        selection.item_ids += [i.item_id for i in new_items]
        selection.total_available = max(selection.total_available, len(selection.item_ids))
        rd.write_items([*run_items, *new_items])
    manifest.spec.models[model] = provenance
    manifest.updated_at = now
    # Transcripts before the manifest: a crash in between leaves a file the next import
    # (with --force) replaces, never a manifest naming answers that are not there.
    write_jsonl_atomic(rd.transcript_file(model, "mmlu_pro"), kept)
    rd.write_manifest(manifest)
    result.models = list(manifest.spec.models)
    return result


def _check_model_slot(rd: RunDir, manifest: RunManifest, model: str, force: bool) -> bool:
    """Whether `model` is already in the run (then only --force may replace its answers)."""
    template = manifest.spec.models.get(model)
    present = template is not None or rd.transcript_file(model, "mmlu_pro").exists()
    if not present:
        return False
    if template is not None and not str(template.get("source", "")).startswith("import:"):
        raise DataError(
            f"{rd.path}: {model} is a variant that `qatcmp run` asked; import under another --model name"
        )
    if not force:
        raise DataError(
            f"{rd.path} already holds a run with {model} in it; give another --model, "
            "or --force to replace that model's answers"
        )
    return True


def _without(excluded: ExcludedItem, model: str) -> ExcludedItem:
    return excluded.model_copy(update={"models": [m for m in excluded.models if m != model]})


def _merged_exclusions(old: list[ExcludedItem], new: list[ExcludedItem]) -> list[ExcludedItem]:
    by_key = {(e.benchmark, e.item_id): e for e in old}
    for e in new:
        earlier = by_key.get((e.benchmark, e.item_id))
        if earlier is None:
            by_key[(e.benchmark, e.item_id)] = e
        else:
            by_key[(e.benchmark, e.item_id)] = earlier.model_copy(
                update={"models": [*earlier.models, *e.models], "reason": f"{earlier.reason}; {e.reason}"}
            )
    return sorted(by_key.values(), key=lambda e: (e.benchmark, _id_order(e.item_id)))


def _content_difference(ours: MmluProItem, theirs: MmluProItem, model: str) -> str | None:
    """What differs between the run's copy of a question and the file's, or None."""
    parts = []
    if ours.question != theirs.question:
        parts.append("question text differs")
    if ours.options != theirs.options:
        parts.append(f"options differ ({len(ours.options)} in the run, {len(theirs.options)} in {model}'s file)"
                     if len(ours.options) != len(theirs.options) else "options differ")
    if ours.answer != theirs.answer:
        parts.append(f"answer differs ({ours.answer} in the run, {theirs.answer} in {model}'s file)")
    return ", ".join(parts) if parts else None


def questions_text(n: int) -> str:
    return f"{n} question" + ("" if n == 1 else "s")


def _warning_prefix(model: str) -> str:
    return f"import {model}: "


def _merge_warnings(model: str, path: Path, result: ImportResult, fixed_questions: bool) -> list[str]:
    prefix = _warning_prefix(model)
    warnings = []
    if result.excluded:
        ids = ", ".join(e.item_id for e in result.excluded[:20]) + (" …" if len(result.excluded) > 20 else "")
        warnings.append(
            f"{prefix}{path.name} and the run differ in the text, options or answer of "
            f"{questions_text(len(result.excluded))} ({ids}): they were made from different revisions of the "
            "dataset. Those questions are left out of every comparison (excluded_items)."
        )
    if result.only_in_file or result.only_in_run:
        what = (f"{result.skipped} of its questions are not in the run and were not imported"
                if fixed_questions else f"{result.only_in_file} of its questions are new to the run")
        warnings.append(
            f"{prefix}{path.name}: {what}; {result.only_in_run} of the run's questions are not in it. "
            "A pair compares only the questions both models answered; accuracies of models with "
            "different questions are not comparable (complete published files with different "
            "question sets come from different dataset revisions)."
        )
    return warnings


def _provenance(path: Path, items: list[MmluProItem]) -> dict[str, Any]:
    """Where an imported model's answers came from, and a fingerprint of the questions it
    answered (equal fingerprints: the same questions, options and answers)."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: _id_order(i.item_id)):
        digest.update(json.dumps([item.item_id, item.question, item.options, item.answer]).encode())
        digest.update(b"\n")
    return {
        "imported_from": path.name,
        "source": TIGER_LAB_SOURCE,
        "file_sha256": file_sha256(path),
        "questions": len(items),
        "questions_sha256": "sha256:" + digest.hexdigest(),
        "prompt": TIGER_LAB_PROMPT,
    }


def _id_order(item_id: str) -> tuple[int, int, str]:
    return (0, int(item_id), "") if item_id.isdigit() else (1, 0, item_id)


def _unique_questions(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = str(row["question_id"])
        if key in seen:
            raise DataError(f"{path}: question {key} appears twice")
        seen[key] = row
    return [seen[key] for key in sorted(seen, key=_id_order)]


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
        finish_reason=None,  # not published
        started_at=now,
        finished_at=now,
        pred=row.get("pred"),
    )


def _manifest(path: Path, model: str, items: list[MmluProItem], now: Any, provenance: dict[str, Any]) -> RunManifest:
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
        spec=RunSpec(benchmarks=[selection], seed=0, samples=1, models={model: provenance}),
        source=TIGER_LAB_SOURCE,
        item_hashes=item_hashes(items),
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
