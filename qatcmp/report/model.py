"""The report model: the typed classes behind report.json, and its schema version.

Every renderer (markdown, json, png, html) reads only these objects, so report.json alone is
enough to render every format again later. The keys are documented in docs/report-schema.md;
a change to them needs a new schema version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qatcmp import __version__
from qatcmp.adaptive_state import AdaptiveState, BlockLook, PairDecision  # noqa: F401  (the renderers' names)

# Schema history: 1 — first version. 2 — set-up section, both extraction modes, Holm-
# adjusted equivalence and Holm-compatible intervals, --delta sizing, --models, excluded
# items, unknown truncation, independent tests on per-question means with K > 1.
REPORT_SCHEMA_VERSION = 2
TARGET_POWER = 0.8
BENCHMARK_LABELS = {"mmlu_pro": "MMLU-Pro", "humaneval": "HumanEval"}
INDEPENDENT_NOTE = (
    "z_test_p, chi2_p, chi2_yates_p and fisher_p treat the two models as independent samples "
    "and ignore the pairing; they are shown only to compare with tables published that way."
)
INDEPENDENT_NOTE_SAMPLES = (
    "With several answers per question the independent-sample tests use one value per "
    "question: z_test_p compares the two models' per-question mean pass rates (N questions "
    "each, not N×K independent answers); chi2_p, chi2_yates_p and fisher_p need one 0/1 "
    "outcome per unit and are left out. They still ignore the pairing."
)

Interval = tuple[float, float]


class ReportModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelResult(ReportModel):
    model: str
    n: int  # scored answers (server errors left out)
    correct: int
    accuracy: float | None
    ci95: Interval | None
    ci95_method: Literal["wilson", "clustered"] | None = "wilson"
    truncated: int | None = None  # None: not recorded (imported outputs without finish_reason)
    truncation_unknown: int = 0  # answers whose finish_reason is not recorded
    no_answer: int | None = None
    errors: int | None = None  # server_error: the server never answered
    n_excluding_truncated: int | None = None
    accuracy_excluding_truncated: float | None = None
    mean_completion_tokens: float | None = None
    mean_reasoning_chars: float | None = None
    mean_content_chars: float | None = None
    mean_latency_s: float | None = None
    questions: int | None = None  # distinct questions with at least one scored answer
    samples: int = 1  # answers per question (K)
    clustered_se: float | None = None  # K > 1: sd of per-question pass rates / sqrt(N)
    pass_at_k: dict[str, float] | None = None  # K > 1: {"1": ..., "K": ...}


class PairPower(ReportModel):
    """Design figures at the observed disagreement rate, for a difference the user names
    (never the observed one: that would be post-hoc power)."""

    discordance: float  # observed share of questions the two models disagree on
    alpha: float  # per-pair level: alpha_family / pairs (Holm's first step, conservative)
    alpha_family: float | None = None
    pairs: int = 1
    power: float
    mde: float | None  # minimum detectable difference at this n and discordance
    delta: float  # the difference the sample size below is for (--delta, else the margin)
    delta_source: Literal["--delta", "margin"] = "margin"
    n_needed: int | None  # questions needed to detect `delta` (paired design)


class ModeCheck(ReportModel):
    """The same pair scored with the other MMLU-Pro extraction mode."""

    mode: str
    diff: float
    diff_ci_holm: Interval | None = None
    p_holm: float | None = None
    equivalent: bool | None = None
    verdict: str


class PairResult(ReportModel):
    a: str
    b: str
    n: int | None  # questions both answered (paired); None in counts-only reports
    both_correct: int | None = None
    a_only: int | None = None
    b_only: int | None = None
    neither_correct: int | None = None
    accuracy_a: float | None = None  # over the paired questions
    accuracy_b: float | None = None
    diff: float  # accuracy(a) - accuracy(b)
    diff_ci95: Interval | None = None
    diff_ci_method: str | None = None
    # The interval the sentence prints: Tango at the level the Holm-adjusted verdict was in
    # effect judged at (alpha·p/p_holm); 95% with one pair.
    diff_ci_holm: Interval | None = None
    diff_ci_holm_confidence: float | None = None
    # Tango's interval and the mid-p test disagree about 0 (a narrow band near the boundary).
    interval_test_disagree: bool = False
    mcnemar_exact_p: float | None = None
    mcnemar_midp_p: float | None = None
    p_holm: float | None = None  # Holm over this benchmark's pairs, on the mid-p values
    p_holm_exact: float | None = None  # Holm on the exact p-values
    flips: float | None = None
    agreement: float | None = None
    correlation: float | None = None
    equivalence_margin: float
    equivalence_ci90: Interval | None = None  # unadjusted (TOST at alpha for this pair alone)
    equivalence_p: float | None = None  # TOST: the larger of the two one-sided Tango p-values
    equivalence_p_holm: float | None = None  # Holm over this benchmark's pairs
    equivalence_ci_holm: Interval | None = None  # the interval the equivalence verdict uses
    equivalence_ci_holm_confidence: float | None = None
    equivalent: bool | None = None  # equivalence_p_holm < alpha
    verdict: Literal["difference", "small_difference", "equivalent", "inconclusive", "unpaired"]
    sentence: str
    power: PairPower | None = None
    # K > 1 samples: the mean per-question pass-rate difference over all samples, with a
    # normal interval from the spread of per-question differences (question = cluster).
    samples: int = 1  # answers per question; the paired tests use the first one
    diff_all_samples: float | None = None
    diff_all_samples_ci95: Interval | None = None
    # Extraction modes: the pair scored with the other MMLU-Pro mode, and whether the
    # verdict changes with it.
    other_mode: ModeCheck | None = None
    verdict_differs_by_mode: bool = False
    z_test_p: float | None
    chi2_p: float | None
    chi2_yates_p: float | None
    fisher_p: float | None
    independent_basis: Literal["answers", "question_means"] = "answers"
    independent_tests_note: str = INDEPENDENT_NOTE


class CochranQResult(ReportModel):
    statistic: float
    p: float
    df: int
    n: int  # questions every model answered


class CategoryModel(ReportModel):
    model: str
    n: int
    correct: int
    accuracy: float
    ci95: Interval


class CategoryPair(ReportModel):
    a: str
    b: str
    n: int
    diff: float
    diff_ci95: Interval
    mcnemar_midp_p: float


class CategoryResult(ReportModel):
    category: str
    n: int
    models: list[CategoryModel]
    pairs: list[CategoryPair]


class BenchmarkReport(ReportModel):
    benchmark: str
    label: str
    samples: int = 1
    models: list[ModelResult]
    pairs: list[PairResult]
    cochran_q: CochranQResult | None = None
    categories: list[CategoryResult] = Field(default_factory=list)
    categories_note: str | None = None
    truncation_warning: str | None = None
    notes: list[str] = Field(default_factory=list)
    extraction_mode: str | None = None  # MMLU-Pro: the mode of these numbers
    other_mode: str | None = None  # the mode also scored, to check the verdicts
    verdicts_differing_by_mode: int = 0
    excluded_items: int = 0  # questions left out of every pair (differ between merged sources)
    missing_answers: int = 0  # expected answers without one (server errors, not yet asked)


class ExcludedItem(ReportModel):
    benchmark: str
    item_id: str
    reason: str = ""


class VariantSetup(ReportModel):
    model: str
    server: str | None = None
    server_url: str | None = None
    server_version: str | None = None
    model_id: str | None = None  # the id sent in each request
    thinking: bool | None = None
    max_tokens: int | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)  # temperature, top_p, ..., seed as sent
    imported_from: str | None = None


class DatasetSetup(ReportModel):
    benchmark: str
    label: str
    dataset: str  # as recorded: hub id, "builtin:<file>", a local path, "import:<file>"
    kind: Literal["hub", "builtin", "local", "import"]
    description: str
    revision: str | None = None  # hub revision, or the file's sha256
    split: str | None = None
    questions: int
    total_available: int | None = None


class SandboxSetup(ReportModel):
    isolation: str | None = None  # "bubblewrap" | "sandbox-exec" | "none"; None: not recorded
    unsafe_no_isolation: bool = False
    protections: list[str] | None = None
    limits: dict[str, Any] | None = None


class Setup(ReportModel):
    """How the numbers were made: what a reader needs to check or repeat them."""

    run_source: str = "run"  # "run", or what was imported
    run_qatcmp_version: str | None = None
    command: list[str] = Field(default_factory=list)
    seed: int | None = None
    samples: int = 1
    variants: list[VariantSetup] = Field(default_factory=list)
    datasets: list[DatasetSetup] = Field(default_factory=list)
    extraction_mode: str | None = None
    extraction_mode_source: str | None = None  # how the mode was chosen
    sandbox: SandboxSetup | None = None
    manifest_warnings: list[str] = Field(default_factory=list)


class Report(ReportModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    kind: Literal["run", "counts"]
    source: str
    created_at: datetime
    qatcmp_version: str = __version__
    alpha: float
    margin: float
    margin_source: Literal["default", "--margin"] = "default"
    delta: float | None = None  # the difference sample sizes are given for
    delta_source: Literal["--delta", "margin"] = "margin"
    target_power: float = TARGET_POWER
    reference: str | None = None
    models: list[str]
    run_models: list[str] | None = None  # every model of the run, when --models chose fewer
    extraction_mode: str | None = None
    setup: Setup | None = None
    excluded_items: list[ExcludedItem] = Field(default_factory=list)
    benchmarks: list[BenchmarkReport]
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)
    # An adaptive run's decisions (adaptive.json as written by the run; see qatcmp/adaptive.py),
    # and a fixed run's extensions (the manifest's `extensions`): either makes the
    # fixed-sample p-values not valid, and the report leads with that.
    adaptive: AdaptiveState | None = None
    extensions: list[dict[str, Any]] = Field(default_factory=list)
