"""The report: from per-question scores to report.json, report.md and plots.

- model: the typed report (pydantic) and its schema version — the contract of report.json
- build: scores → model, calling the pure statistics in qatcmp.stats (pairs.py: one pair
  and the Holm-adjusted verdicts; categories.py; setup.py: the Set-up section)
- from_run: a run folder → model (manifest, scores in both extraction modes)
- wording: the sentences and number formats
- counts: `--counts`, a report from totals only
- render/: one pure renderer per format (markdown, json, png)
- write: the only part that writes files, atomically

The names below are what other modules and tests import; keep them.
"""

from qatcmp.report.build import (
    NO_ANSWER_STATUSES,
    RunFacts,
    benchmark_report,
    build_report_from_scores,
    model_result,
)
from qatcmp.report.categories import MIN_CATEGORY_QUESTIONS
from qatcmp.report.from_run import _scores_for, build_report, report_for_run
from qatcmp.report.pairs import SERVER_ERROR, Levels, comparison_pairs, paired_result, pass_rates
from qatcmp.report.counts import build_counts_report, paired_range_text, parse_counts
from qatcmp.report.model import (
    BENCHMARK_LABELS,
    INDEPENDENT_NOTE,
    REPORT_SCHEMA_VERSION,
    TARGET_POWER,
    BenchmarkReport,
    CategoryModel,
    CategoryPair,
    CategoryResult,
    CochranQResult,
    DatasetSetup,
    ExcludedItem,
    Interval,
    ModeCheck,
    ModelResult,
    PairPower,
    PairResult,
    Report,
    ReportModel,
    SandboxSetup,
    Setup,
    VariantSetup,
)
from qatcmp.report.render.json import load_report, render_json
from qatcmp.report.render.markdown import format_summary, render_markdown
from qatcmp.report.wording import (
    TRUNCATION_WARN_COUNT,
    TRUNCATION_WARN_SHARE,
    format_p,
    pair_sentence,
    points,
    truncation_warning,
)
from qatcmp.report.write import REPORT_HTML, write_html_report, write_report

__all__ = [
    "BENCHMARK_LABELS", "INDEPENDENT_NOTE", "MIN_CATEGORY_QUESTIONS", "NO_ANSWER_STATUSES",
    "REPORT_SCHEMA_VERSION", "SERVER_ERROR", "TARGET_POWER", "TRUNCATION_WARN_COUNT",
    "TRUNCATION_WARN_SHARE", "BenchmarkReport", "CategoryModel", "CategoryPair", "CategoryResult",
    "CochranQResult", "DatasetSetup", "ExcludedItem", "Interval", "Levels", "ModeCheck",
    "RunFacts", "SandboxSetup", "Setup", "VariantSetup", "ModelResult", "PairPower", "PairResult", "Report", "ReportModel",
    "_scores_for", "benchmark_report", "build_counts_report", "build_report",
    "build_report_from_scores", "comparison_pairs", "format_p", "format_summary", "load_report",
    "model_result", "pair_sentence", "paired_range_text", "paired_result", "parse_counts",
    "pass_rates", "points", "render_json", "render_markdown", "report_for_run",
    "truncation_warning", "write_report", "write_html_report", "REPORT_HTML",
]
