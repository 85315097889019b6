"""The report of a run folder: reads the manifest, the scores (made first if missing or stale,
in the mode the user chose last) and the other extraction mode's MMLU-Pro scores, then builds
the model. Writes nothing except what scoring writes; write.py writes the report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qatcmp.adaptive_state import ADAPTIVE_FILE, read_adaptive
from qatcmp.records import RunManifest, ScoreRecord
from qatcmp.report.build import RunFacts, build_report_from_scores
from qatcmp.report.model import ExcludedItem, Report
from qatcmp.report.setup import build_setup, excluded_items
from qatcmp.rundir import RunDir


def _scores_for(run: RunDir) -> list[ScoreRecord]:
    """Scores, computed first if scores.jsonl is missing or stale."""
    from qatcmp.scoring import ensure_scores  # the score stage pulls in the sandbox: load late

    return ensure_scores(run, mode=None)  # keep the extraction mode the user scored with


def _expected_answers(manifest: RunManifest, excluded: Sequence[ExcludedItem]) -> dict[str, int]:
    """Answers each model should have per benchmark: its questions (less the excluded ones)
    times the samples per question."""
    expected = {}
    for selection in manifest.spec.benchmarks:
        left_out = {e.item_id for e in excluded if e.benchmark == selection.name}
        questions = len([q for q in selection.item_ids if q not in left_out])
        expected[selection.name] = questions * max(1, manifest.spec.samples)
    return expected


def _has_mmlu_transcripts(run: RunDir) -> bool:
    return any(path.name.endswith(".mmlu_pro.jsonl") for path in run.transcript_files())


def run_facts(run: RunDir, manifest: RunManifest, *, check_modes: bool = True) -> RunFacts:
    from qatcmp.scoring import (
        chosen_extract_mode,
        other_extract_mode,
        read_scores_meta,
        score_mmlu_in_mode,
    )

    meta = read_scores_meta(run) or {}
    mode = chosen_extract_mode(run)
    excluded = excluded_items(manifest)
    other = other_extract_mode(mode) if check_modes and _has_mmlu_transcripts(run) else None
    return RunFacts(
        setup=build_setup(manifest, meta, mode, mode_chosen=meta.get("mode_chosen_by_user") is True),
        # An adaptive run stops asking a variant by design: its unasked questions are not
        # missing answers (the adaptive section says whether the run finished).
        expected_answers={} if (run.path / ADAPTIVE_FILE).is_file() else _expected_answers(manifest, excluded),
        excluded=excluded,
        other_mode=other,
        other_mode_scores=score_mmlu_in_mode(run, other) if other else None,
        resume_hint=None if str(manifest.source).startswith("import") else f"qatcmp run --out {run.path}",
    )


def report_for_run(
    run_dir: str | Path,
    *,
    scores: Sequence[ScoreRecord] | None = None,
    reference: str | None = None,
    alpha: float = 0.05,
    margin: float | None = None,
    delta: float | None = None,
    models: Sequence[str] | None = None,
    check_modes: bool = True,
) -> Report:
    """The report of a run folder (scored first if needed), without writing the report.
    `models` (--models) limits the comparison to those variants."""
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    scored = list(scores) if scores is not None else _scores_for(run)
    report = build_report_from_scores(
        scored,
        models=list(manifest.spec.models),
        benchmarks=[b.name for b in manifest.spec.benchmarks],
        source=str(run.path),
        reference=reference,
        alpha=alpha,
        margin=margin,
        delta=delta,
        select=models,
        facts=run_facts(run, manifest, check_modes=check_modes),
    )
    _add_design(report, run, manifest, scored)
    return report


def _default_mode_scores(run: RunDir, scored: Sequence[ScoreRecord]) -> list[ScoreRecord]:
    """The scores an adaptive run decided with: MMLU-Pro in the default extraction (whatever
    the user chose for the report since), HumanEval as scored (the mode does not touch it)."""
    from qatcmp.scoring import chosen_extract_mode, score_mmlu_in_mode

    if chosen_extract_mode(run) == "default" or not _has_mmlu_transcripts(run):
        return list(scored)
    return [s for s in scored if s.benchmark != "mmlu_pro"] + score_mmlu_in_mode(run, "default")


def _add_design(report: Report, run: RunDir, manifest: RunManifest, scored: Sequence[ScoreRecord]) -> None:
    """An adaptive run's decisions, or a fixed run's extensions: a design that looked at the
    data, which the report states first. The decisions are recomputed from the scores, not
    taken from adaptive.json (`qatcmp.adaptive_check`)."""
    stored = read_adaptive(run.path)
    if stored is not None:
        from qatcmp.adaptive_check import disagreements, mismatch_warning, recompute

        report.adaptive = recompute(stored, manifest, _default_mode_scores(run, scored))
        found = disagreements(stored, report.adaptive)
        if found:
            report.warnings.append(mismatch_warning(found))
    extensions = getattr(manifest, "extensions", None)
    if isinstance(extensions, list):
        report.extensions = [e for e in extensions if isinstance(e, dict)]


def build_report(
    run_dir: str | Path,
    *,
    reference: str | None = None,
    alpha: float = 0.05,
    margin: float | None = None,
    delta: float | None = None,
    models: Sequence[str] | None = None,
) -> Report:
    """Score the run if needed, then write report.json, report.md and the plots into it."""
    from qatcmp.report.write import write_report

    report = report_for_run(run_dir, reference=reference, alpha=alpha, margin=margin, delta=delta, models=models)
    write_report(report, Path(run_dir))
    return report
