"""The report model: the typed classes behind report.json, and its schema version.

Every renderer (markdown, json, png, html) reads only these objects, so report.json alone is
enough to render every format again later. The keys are documented in docs/report-schema.md;
a change to them needs a new schema version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qatcmp import __version__

REPORT_SCHEMA_VERSION = 1
TARGET_POWER = 0.8
BENCHMARK_LABELS = {"mmlu_pro": "MMLU-Pro", "humaneval": "HumanEval"}
INDEPENDENT_NOTE = (
    "z_test_p, chi2_p, chi2_yates_p and fisher_p treat the two models as independent samples "
    "and ignore the pairing; they are shown only to compare with tables published that way."
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
    truncated: int | None = None
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
    discordance: float  # observed share of questions the two models disagree on
    alpha: float
    power: float
    mde: float | None  # minimum detectable difference at this n and discordance
    delta: float  # the difference the sample size below is for
    n_needed: int | None  # questions needed to detect `delta` (paired design)


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
    mcnemar_exact_p: float | None = None
    mcnemar_midp_p: float | None = None
    p_holm: float | None = None  # Holm over this benchmark's pairs, on the mid-p values
    p_holm_exact: float | None = None  # Holm on the exact p-values
    flips: float | None = None
    agreement: float | None = None
    correlation: float | None = None
    equivalence_margin: float
    equivalence_ci90: Interval | None = None
    equivalent: bool | None = None
    verdict: Literal["difference", "small_difference", "equivalent", "inconclusive", "unpaired"]
    sentence: str
    power: PairPower | None = None
    # K > 1 samples: the mean per-question pass-rate difference over all samples, with a
    # normal interval from the spread of per-question differences (question = cluster).
    samples: int = 1  # answers per question; the paired tests use the first one
    diff_all_samples: float | None = None
    diff_all_samples_ci95: Interval | None = None
    z_test_p: float
    chi2_p: float
    chi2_yates_p: float
    fisher_p: float
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


class Report(ReportModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    kind: Literal["run", "counts"]
    source: str
    created_at: datetime
    qatcmp_version: str = __version__
    alpha: float
    margin: float
    target_power: float = TARGET_POWER
    reference: str | None = None
    models: list[str]
    benchmarks: list[BenchmarkReport]
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)
