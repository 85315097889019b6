"""Adaptive runs (`qatcmp run --until-decided`): ask in blocks, decide after each block with
anytime-valid statistics, stop asking a variant once all its pairs are decided.

The benchmark counts are the budget. Block k of a benchmark is questions k·B .. (k+1)·B − 1 of
the run's seeded nested sample, so an adaptive run asks a prefix of what the fixed run asks.
Every active variant answers block k before any starts block k + 1, so every look compares all
variants on the same questions.

Everything here is recomputed from the transcripts: `walk_benchmark` replays the blocks in
order, taking for each one the decisions the run took after it, and stops at the first block
some active variant has not fully answered. So a run killed at any point and started again
with the same command continues from where it was, with the same decisions, and never asks a
decided pair again. A request that failed with a server error is not a wrong answer: it
leaves its block open and is asked again (once per invocation; the same command retries), or,
with `--no-retry-errors`, its question is left out of that variant's pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from qatcmp.benchmarks import humaneval, mmlu_pro
from qatcmp.errors import ConfigError
from qatcmp.records import RunSpec, TranscriptRecord, utcnow
from qatcmp.rundir import RunDir, write_json_atomic
from qatcmp.sandbox import Limits, Sandbox
from qatcmp.scheduler import Step, WorkUnit
from qatcmp.stats.sequential import analyse_pair, more_questions_estimate

from qatcmp.adaptive_state import (  # noqa: F401  (re-exported: the run's names)
    ADAPTIVE_FILE, DEFAULT_ALPHA, DEFAULT_BLOCK, DEFAULT_MARGIN, AdaptiveSettings, AdaptiveState, BenchmarkState, BlockLook, PairDecision,
)

Key = tuple[str, str, str, int]  # (model, benchmark, item_id, sample)


def stopping_rule(settings: AdaptiveSettings, samples: int) -> str:
    evidence = ("the Beta(1,1)-mixture e-value on the questions where the two disagree" if samples == 1
                else "the betting e-value on the per-question mean differences")
    if settings.plan_gap is not None:
        evidence = (f"an e-value betting on a gap of {100 * settings.plan_gap:g} points (--plan-gap), hedged with "
                    f"{evidence} (weight 1/4)")
    futility = ""
    if settings.futility is not None and settings.plan_gap is not None:
        futility = (f", or 'below-plan' once gaps of ±{100 * settings.plan_gap:g} points or more are rejected at level "
                    f"{settings.futility:g} (--futility)")
    return (
        f"After every block of {settings.block} questions, a pair is 'different' once {evidence} reaches m/α "
        f"(α = {settings.alpha:g}, m = the pairs compared on that benchmark), or 'equivalent' once its anytime "
        f"{100 * (1 - settings.alpha):g}%/m interval lies inside ±{100 * settings.margin:g} points{futility}; a variant stops "
        "being asked when all its pairs are decided, and the run stops when every pair is decided or the budget is spent."
    )


def family_pairs(models: Sequence[str], reference: str | None) -> list[tuple[str, str]]:
    if reference is None:
        return list(combinations(models, 2))
    if reference not in models:
        raise ConfigError(f"--reference {reference!r} is not one of the run's variants ({', '.join(models)})")
    return [(reference, m) for m in models if m != reference]


# --------------------------------------------------------------------------- the replay


@dataclass
class BenchmarkWalk:
    benchmark: str
    budget: int
    blocks_done: int = 0
    active: list[str] = field(default_factory=list)
    finished: bool = False
    pairs: dict[tuple[str, str], PairDecision] = field(default_factory=dict)

    def open_block(self, block: int) -> range:
        return range(self.blocks_done * block, min((self.blocks_done + 1) * block, self.budget))


def walk_benchmark(
    benchmark: str,
    item_ids: Sequence[str],
    correct: Mapping[Key, bool],
    *,
    models: Sequence[str],
    samples: int,
    settings: AdaptiveSettings,
    given_up: Set[Key] = frozenset(),
    max_blocks: int | None = None,
) -> BenchmarkWalk:
    """Replay the blocks of one benchmark from the answers on hand.

    ``correct`` holds the correctness of every answer that came back; ``given_up`` the
    requests that failed and will not be asked again (`--no-retry-errors`): they complete
    their block, and their question is left out of the pairs of that variant (a server error
    is not a wrong answer). A failed request that will be retried leaves its block open.

    Each pair is analysed once on every block both its variants have answered (a decision is
    final, so later looks do not change it); the walk then takes the blocks in order while
    every variant still needed has answered them, and at most ``max_blocks`` of them (a report
    checking a run's record replays as many blocks as the run had taken)."""
    pairs = family_pairs(models, settings.reference)
    walk = BenchmarkWalk(benchmark, budget=len(item_ids))
    blocks = [range(start, min(start + settings.block, walk.budget)) for start in range(0, walk.budget, settings.block)]

    def present(model: str, block: range) -> bool:
        return all((model, benchmark, item_ids[i], s) in correct or (model, benchmark, item_ids[i], s) in given_up
                   for i in block for s in range(samples))

    complete = {model: 0 for model in models}  # leading blocks each variant has answered
    for model in models:
        while complete[model] < len(blocks) and present(model, blocks[complete[model]]):
            complete[model] += 1
    analyses = {pair: _analyse(benchmark, item_ids, correct, pair, min(complete[pair[0]], complete[pair[1]]),
                               blocks, samples, settings, len(pairs))
                for pair in pairs}
    undecided = list(pairs)
    while True:
        walk.active = [v for v in models if any(v in pair for pair in undecided)]
        if not undecided or walk.blocks_done >= len(blocks):
            walk.finished = True
            break
        if max_blocks is not None and walk.blocks_done >= max_blocks:
            break
        if any(complete[v] <= walk.blocks_done for v in walk.active):
            break
        walk.blocks_done += 1
        undecided = [pair for pair in undecided if analyses[pair].decided_block != walk.blocks_done]
    for pair in pairs:
        decision = analyses[pair].up_to(walk.blocks_done)
        if decision is not None:
            walk.pairs[pair] = decision
    return walk


@dataclass
class _PairAnalysis:
    """One pair's looks on the blocks both variants answered, kept block by block."""

    looks: list[tuple[int, BlockLook, PairDecision]]  # (block, look, the pair's state then)
    decided_block: int | None

    def up_to(self, blocks_done: int) -> PairDecision | None:
        seen = [(block, look, state) for block, look, state in self.looks if block <= blocks_done]
        if not seen:
            return None
        final = seen[-1][2].model_copy()
        final.history = [look for _, look, _ in seen]
        return final


def _analyse(benchmark: str, item_ids: Sequence[str], correct: Mapping[Key, bool], pair: tuple[str, str],
             n_blocks: int, blocks: Sequence[range], samples: int, settings: AdaptiveSettings, m: int) -> _PairAnalysis:
    d, ends = _differences(correct, benchmark, item_ids, pair, blocks[:n_blocks], samples)
    # One look per block end; a block whose questions all dropped out adds no look.
    looks = sorted(set(n for n in ends if n > 0))
    block_of = {n: ends.index(n) + 1 for n in looks}
    outcome = (analyse_pair(d, looks, alpha=settings.alpha, family_size=m, margin=settings.margin,
                            plan_gap=settings.plan_gap, futility=settings.futility) if looks else None)
    result = _PairAnalysis([], None)
    if outcome is None:
        return result
    for index, look in enumerate(outcome.looks):
        last = index == len(outcome.looks) - 1
        decision = outcome.decision if last else "undecided"
        block = block_of[look.questions]
        entry = BlockLook(block=block, questions=look.questions, diff=look.diff, interval=look.interval,
                          e_value=look.max_e_value, p_anytime=min(1.0, m * look.p_anytime), decision=decision,
                          futility_capital=look.futility_capital)
        more = None
        if decision == "undecided":
            more = more_questions_estimate(look, alpha=settings.alpha, family_size=m, margin=settings.margin,
                                           binary=samples == 1, plan_gap=settings.plan_gap)
        state = PairDecision(
            benchmark=benchmark, a=pair[0], b=pair[1], decision=decision, questions_used=look.questions,
            a_only=look.a_only, b_only=look.b_only, diff=look.diff, interval=look.interval,
            e_value=look.max_e_value, p_anytime=entry.p_anytime, more_questions=more,
            futility_capital=look.futility_capital,
        )
        result.looks.append((block, entry, state))
        if decision != "undecided":
            result.decided_block = block
    return result


def _differences(correct: Mapping[Key, bool], benchmark: str, item_ids: Sequence[str], pair: tuple[str, str],
                 blocks: Sequence[range], samples: int) -> tuple[np.ndarray, list[int]]:
    """Per-question differences (mean over samples, A minus B) in run order, over the
    questions both variants answered, and how many of them there are at each block end."""
    a, b = pair
    rows: list[float] = []
    ends: list[int] = []
    for block in blocks:
        for i in block:
            keys_a = [(a, benchmark, item_ids[i], s) for s in range(samples)]
            keys_b = [(b, benchmark, item_ids[i], s) for s in range(samples)]
            if all(k in correct for k in keys_a + keys_b):
                rows.append(sum(correct[k] for k in keys_a) / samples - sum(correct[k] for k in keys_b) / samples)
        ends.append(len(rows))
    return np.asarray(rows, dtype=float), ends


def build_state(walks: Iterable[BenchmarkWalk], *, settings: AdaptiveSettings, models: Sequence[str], samples: int) -> AdaptiveState:
    walks = list(walks)
    family = "all pairs" if settings.reference is None else f"each variant against {settings.reference}"
    m = len(family_pairs(models, settings.reference))
    return AdaptiveState(
        settings=settings,
        models=list(models),
        samples=samples,
        family=family,
        family_size={w.benchmark: m for w in walks},
        stopping_rule=stopping_rule(settings, samples),
        finished=all(w.finished for w in walks),
        benchmarks={
            w.benchmark: BenchmarkState(
                budget=w.budget, blocks_done=w.blocks_done,
                questions_asked=min(w.blocks_done * settings.block, w.budget),
                active=[] if w.finished else w.active, finished=w.finished,
            )
            for w in walks
        },
        pairs=[p for w in walks for p in w.pairs.values()],
        updated_at=utcnow().isoformat(),
    )


# --------------------------------------------------------------------------- scoring


class Scorer:
    """Correctness of each answer, scored once: MMLU-Pro by offline letter extraction,
    HumanEval by running the code in the sandbox (the same functions `qatcmp score` uses)."""

    def __init__(self, items: Mapping[tuple[str, str], object], sandbox_factory: Callable[[], Sandbox] | None = None):
        self.items = items
        self.correct: dict[Key, bool] = {}  # answers that came back
        self.failed: set[Key] = set()  # requests whose latest record is a server error
        self._sandbox_factory = sandbox_factory or (lambda: Sandbox(Limits()))
        self._sandbox: Sandbox | None = None

    def add(self, records: Iterable[TranscriptRecord]) -> None:
        code = []
        for record in records:
            item = self.items.get((record.benchmark, record.item_id))
            if item is None:
                continue  # not in this run's sample (a shrunk budget): not part of the decisions
            if not record.ok:
                self.failed.add(record.key)
                self.correct.pop(record.key, None)
                continue
            self.failed.discard(record.key)
            if record.benchmark == "mmlu_pro":
                self.correct[record.key] = mmlu_pro.score(record, item, mode="default").correct
            else:
                code.append((record, item))
        if code:
            if self._sandbox is None:
                self._sandbox = self._sandbox_factory()
            for score in humaneval.score_many(code, sandbox=self._sandbox):
                self.correct[score.key] = score.correct


# --------------------------------------------------------------------------- the run


class AdaptiveController:
    """Decides, block after block, what the BlockScheduler asks next, and keeps adaptive.json
    up to date. The step provider of `qatcmp.replicas.BlockScheduler` (a step's units name
    each variant's first server; every replica of the variant may answer them)."""

    def __init__(self, run: RunDir, spec: RunSpec, models: Sequence[str], settings: AdaptiveSettings,
                 *, retry_errors: bool = True, log: Callable[[str], None] | None = None,
                 on_state: Callable[[AdaptiveState], None] | None = None,
                 sandbox_factory: Callable[[], Sandbox] | None = None):
        self.run = run
        self.models = list(models)
        self.samples = spec.samples
        self.settings = settings
        self.retry_errors = retry_errors
        self.log = log or (lambda message: None)
        self.on_state = on_state or (lambda state: None)  # the live progress table
        self.selections = {s.name: s for s in spec.benchmarks}
        self.servers = {name: body["server"] for name, body in spec.models.items()}
        items = {(item.benchmark, item.item_id): item for item in run.read_items()}
        self.scorer = Scorer(items, sandbox_factory)
        self.scorer.add(r for r in run.read_transcripts() if r.model in self.models)
        # Requests that failed in this process are not asked again by it (the runner has
        # retried them already): the run ends with exit code 1 and the same command retries.
        self._failed_here: set[Key] = set()
        self.steps = 0
        self.state: AdaptiveState | None = None
        self._logged: set[tuple[str, int]] = set()

    def evaluate(self) -> list[BenchmarkWalk]:
        walks = [
            walk_benchmark(name, sel.item_ids, self.scorer.correct, models=self.models, samples=self.samples,
                           settings=self.settings, given_up=set() if self.retry_errors else self.scorer.failed)
            for name, sel in self.selections.items()
        ]
        self.state = build_state(walks, settings=self.settings, models=self.models, samples=self.samples)
        write_json_atomic(self.run.path / ADAPTIVE_FILE, self.state.model_dump(mode="json"))
        self._log_changes(walks)
        self.on_state(self.state)
        return walks

    def next_step(self, finished: list[TranscriptRecord]) -> Step | None:
        """The scheduler's hook: the records of the step just finished in, the next step out."""
        self.scorer.add(finished)
        self._failed_here.update(record.key for record in finished if not record.ok)
        walks = self.evaluate()
        units: list[WorkUnit] = []
        blocks = []
        for walk in walks:
            if walk.finished:
                continue
            item_ids = self.selections[walk.benchmark].item_ids
            block = walk.open_block(self.settings.block)
            blocks.append(walk.blocks_done)
            for model in walk.active:
                for i in block:
                    for s in range(self.samples):
                        key = (model, walk.benchmark, item_ids[i], s)
                        missing = key not in self.scorer.correct and (self.retry_errors or key not in self.scorer.failed)
                        if missing and key not in self._failed_here:
                            units.append(WorkUnit(model, self.servers[model], walk.benchmark, item_ids[i], s))
        if not units:
            return None
        # A B C, then C B A: a server holding one model at a time keeps the model it ends a
        # block with for the start of the next.
        order = self.models if max(blocks) % 2 == 0 else list(reversed(self.models))
        self.steps += 1
        return Step(units=units, model_order=order)

    def _log_changes(self, walks: list[BenchmarkWalk]) -> None:
        """One progress line per benchmark and block: every pair's state at that look."""
        for walk in walks:
            if (walk.benchmark, walk.blocks_done) in self._logged or not walk.pairs:
                continue
            self._logged.add((walk.benchmark, walk.blocks_done))
            states = "; ".join(_pair_state(pair) for pair in walk.pairs.values())
            asked = min(walk.blocks_done * self.settings.block, walk.budget)
            self.log(f"{walk.benchmark} block {walk.blocks_done} ({asked}/{walk.budget} questions): {states}")


def _pair_state(pair: PairDecision) -> str:
    lo, hi = pair.interval
    return (f"{pair.a} vs {pair.b} {pair.decision} at {pair.questions_used} "
            f"({100 * pair.diff:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}], e-value {pair.e_value:.3g}, "
            f"anytime p {pair.p_anytime:.3g})")


def check_settings(run: RunDir, settings: AdaptiveSettings) -> None:
    """Refuse to continue an adaptive run under another rule than the one it started with."""
    path = run.path / ADAPTIVE_FILE
    if not path.is_file():
        return
    old = stored_settings(run)
    if old is None:
        # The decisions can be recomputed from the transcripts, but not the rule they used.
        raise ConfigError(
            f"{path} is unreadable, so the rule this run started with is unknown; delete it and run the same "
            "command with the original --block, --alpha, --margin, --reference, --plan-gap and --futility"
        )
    if old != settings:
        raise ConfigError(
            f"{run.path} is an adaptive run with --block {old.block} --alpha {old.alpha:g} --margin {old.margin:g}"
            + (f" --reference {old.reference}" if old.reference else "")
            + (f" --plan-gap {old.plan_gap:g}" if old.plan_gap is not None else "")
            + (f" --futility {old.futility:g}" if old.futility is not None else "")
            + "; continue it with the same settings (changing the rule after looking at the data would void its guarantees)"
        )


def stored_settings(run: RunDir) -> AdaptiveSettings | None:
    path = run.path / ADAPTIVE_FILE
    try:
        return AdaptiveState.model_validate_json(path.read_text(encoding="utf-8")).settings
    except (OSError, ValueError):
        return None
