"""adaptive.json: the record an adaptive run leaves for the report (its settings and every
pair's decision, recomputed after each block), and its reader. Light on purpose (pydantic
only): the report's model and renderers use it without loading the run machinery."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from qatcmp.errors import DataError

ADAPTIVE_FILE = "adaptive.json"
# "below-plan": the futility stop (--futility) rejected gaps of ±plan_gap or more.
Decision = Literal["different", "equivalent", "below-plan", "undecided"]
# Smaller blocks stop closer to where the evidence was reached (less overshoot), but every
# block ends at a barrier that waits for its longest answer and costs (variants − 1) model
# switches on a one-model server: with thinking-length answers, blocks of 10 nearly double
# a run's wall time, blocks of 25 cost ~1.4x, 50 ~1.15x (bench/bench_schedule.py --blocks B;
# README, Adaptive runs, "Block size").
DEFAULT_BLOCK = 25
DEFAULT_ALPHA = 0.05
DEFAULT_MARGIN = 0.05



class AdaptiveSettings(BaseModel):
    """What the decisions depend on. Changing any of these in the middle of a run would choose
    the rule after seeing the data, so a resume with other settings is refused."""

    block: int = DEFAULT_BLOCK
    alpha: float = DEFAULT_ALPHA
    margin: float = DEFAULT_MARGIN
    reference: str | None = None
    plan_gap: float | None = None  # --plan-gap: the e-process bets on this accuracy difference
    futility: float | None = None  # --futility β: stop a pair once gaps of ±plan_gap are rejected at β


class BlockLook(BaseModel):
    block: int  # 1-based: the look after block `block`
    questions: int
    diff: float
    interval: tuple[float, float]
    e_value: float
    p_anytime: float  # family-adjusted (Bonferroni): min(1, m / max E)
    decision: Decision
    futility_capital: float | None = None  # with --futility: min(max F+, max F-) so far


class PairDecision(BaseModel):
    benchmark: str
    a: str
    b: str
    decision: Decision
    questions_used: int
    a_only: int
    b_only: int
    diff: float  # accuracy(a) - accuracy(b) on those questions (mean over samples)
    interval: tuple[float, float]  # anytime interval for diff at level alpha/m
    e_value: float  # largest so far
    p_anytime: float  # family-adjusted
    more_questions: int | None = None  # if undecided: rough estimate of what it would take
    futility_capital: float | None = None  # with --futility: min(max F+, max F-) so far (>= 1/β: below-plan)
    history: list[BlockLook] = Field(default_factory=list)


class BenchmarkState(BaseModel):
    budget: int
    blocks_done: int
    questions_asked: int  # by the variants still active longest
    active: list[str]  # variants still being asked
    finished: bool  # every pair decided, or the budget spent


class AdaptiveState(BaseModel):
    """adaptive.json: the decisions of an adaptive run, recomputed after every block."""

    schema_version: int = 1
    settings: AdaptiveSettings
    models: list[str]
    samples: int
    family: str  # "all pairs" or "each variant against <reference>"
    family_size: dict[str, int]  # per benchmark: m in the Bonferroni rule
    stopping_rule: str
    scoring: str = "MMLU-Pro: default letter extraction; HumanEval: unit tests in the sandbox"
    finished: bool
    benchmarks: dict[str, BenchmarkState]
    pairs: list[PairDecision]
    updated_at: str


def read_adaptive(run_path: Path) -> AdaptiveState | None:
    """adaptive.json of a run folder, or None if the run was not adaptive. A file that is
    there but unreadable (someone else's folder) is one clear error, not a traceback."""
    path = Path(run_path) / ADAPTIVE_FILE
    if not path.is_file():
        return None
    try:
        return AdaptiveState.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise DataError(f"{path}: not a valid adaptive.json ({first[:120]})") from None
