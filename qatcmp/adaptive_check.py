"""An adaptive run's decisions, checked when a report is made: adaptive.json is what the run
wrote, but a run folder may come from someone else, so the report recomputes every pair's
decision from the transcripts' scores (the same walk over the blocks the run took, under the
settings adaptive.json states) and shows the recomputed decisions. Where the file disagrees
the report says so: a verdict is never taken from a file that the transcripts do not support."""

from __future__ import annotations

import math
from collections.abc import Iterable

from qatcmp.adaptive import Key, build_state, family_pairs, walk_benchmark
from qatcmp.adaptive_state import AdaptiveState, PairDecision
from qatcmp.errors import ConfigError, DataError
from qatcmp.records import RunManifest, ScoreRecord

MAX_LISTED = 3  # disagreements named in the report's warning; the rest are counted


def correctness(scores: Iterable[ScoreRecord]) -> tuple[dict[Key, bool], set[Key]]:
    """What the adaptive walk needs from scores: the correctness of every answer that came
    back, and the requests whose record is a server error (left out of the pairs)."""
    correct: dict[Key, bool] = {}
    failed: set[Key] = set()
    for score in scores:
        if score.status == "server_error":
            failed.add(score.key)
        else:
            correct[score.key] = score.correct
    return correct, failed


def _check_settings(stored: AdaptiveState, manifest: RunManifest) -> None:
    s = stored.settings
    problems = []
    if s.block < 1:
        problems.append(f"block {s.block}")
    if not 0 < s.alpha < 1:
        problems.append(f"alpha {s.alpha}")
    if not 0 <= s.margin < 1:
        problems.append(f"margin {s.margin}")
    if s.plan_gap is not None and not 0 < s.plan_gap < 1:
        problems.append(f"plan_gap {s.plan_gap}")
    if s.futility is not None and (s.plan_gap is None or not 0 < s.futility < 0.5):
        problems.append(f"futility {s.futility}")
    unknown = [m for m in stored.models if m not in manifest.spec.models]
    if unknown:
        problems.append(f"unknown variants {', '.join(repr(m) for m in unknown[:3])}")
    if len(set(stored.models)) < 2:
        problems.append("fewer than two variants")
    elif len(set(stored.models)) != len(stored.models):
        problems.append("a variant named twice")
    if stored.samples != manifest.spec.samples:
        problems.append(f"{stored.samples} samples (the run has {manifest.spec.samples})")
    if problems:
        raise DataError(f"adaptive.json: settings that no adaptive run can have ({'; '.join(problems)})")
    try:
        family_pairs(stored.models, s.reference)
    except ConfigError as exc:
        raise DataError(f"adaptive.json: {exc}") from None


def recompute(stored: AdaptiveState, manifest: RunManifest, scores: Iterable[ScoreRecord]) -> AdaptiveState:
    """The decisions the transcripts give under adaptive.json's settings, over as many blocks
    as adaptive.json says the run had taken (MMLU-Pro scores in the default extraction, the
    one the run decided with)."""
    _check_settings(stored, manifest)
    correct, failed = correctness(scores)
    walks = []
    for selection in manifest.spec.benchmarks:
        taken = stored.benchmarks.get(selection.name)
        walks.append(walk_benchmark(
            selection.name, selection.item_ids, correct, models=stored.models, samples=stored.samples,
            settings=stored.settings, given_up=failed, max_blocks=None if taken is None else taken.blocks_done,
        ))
    state = build_state(walks, settings=stored.settings, models=stored.models, samples=stored.samples)
    state.updated_at = stored.updated_at
    return state


def _same(a: PairDecision, b: PairDecision) -> bool:
    def close(x: float, y: float) -> bool:
        return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)

    return (a.decision == b.decision and a.questions_used == b.questions_used and close(a.diff, b.diff)
            and close(a.e_value, b.e_value) and all(close(x, y) for x, y in zip(a.interval, b.interval)))


def disagreements(stored: AdaptiveState, recomputed: AdaptiveState) -> list[str]:
    """Each pair where adaptive.json says something the transcripts do not give."""
    def key(p: PairDecision) -> tuple[str, str, str]:
        return (p.benchmark, p.a, p.b)

    theirs = {key(p): p for p in stored.pairs}
    ours = {key(p): p for p in recomputed.pairs}
    found = []
    for k in sorted(set(theirs) | set(ours)):
        said, given = theirs.get(k), ours.get(k)
        name = f"{k[1]} vs {k[2]} ({k[0]})"
        if said is None:
            found.append(f"{name}: missing from adaptive.json")
        elif given is None:
            found.append(f"{name}: in adaptive.json, but not a pair the transcripts give")
        elif not _same(said, given):
            found.append(f"{name}: adaptive.json says {said.decision} at {said.questions_used} questions "
                         f"(e-value {said.e_value:.3g}), the transcripts give {given.decision} at "
                         f"{given.questions_used} (e-value {given.e_value:.3g})")
    return found


def mismatch_warning(found: list[str]) -> str:
    listed = "; ".join(found[:MAX_LISTED]) + (f"; and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else "")
    return (f"adaptive.json disagrees with this run's transcripts ({listed}); the decisions shown are "
            "recomputed from the transcripts")
