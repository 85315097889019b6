"""Per-category results (MMLU-Pro): only for categories with enough questions to say
anything; descriptive (no adjustment across categories)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from qatcmp.records import ScoreRecord
from qatcmp.report.model import BenchmarkReport, CategoryModel, CategoryPair, CategoryResult
from qatcmp.report.pairs import comparison_pairs
from qatcmp.stats import mcnemar_midp_p, paired_table, tango_interval, wilson_interval

# Per-category results need hundreds of questions per category to say anything; below this
# they are left out with a note rather than shown as noise.
MIN_CATEGORY_QUESTIONS = 100


def add_categories(
    report: BenchmarkReport,
    models: Sequence[str],
    by_model: dict[str, list[ScoreRecord]],
    outcomes: dict[str, dict[str, bool]],
    reference: str | None,
) -> None:
    category_of: dict[str, str] = {}
    for model in models:
        for record in by_model[model]:
            if record.category:
                category_of[record.item_id] = record.category
    if not category_of or not models:
        return
    shared = set.intersection(*(set(outcomes[m]) for m in models))
    sizes: dict[str, list[str]] = defaultdict(list)
    for item in sorted(shared):
        if item in category_of:
            sizes[category_of[item]].append(item)
    large = {c: items for c, items in sizes.items() if len(items) >= MIN_CATEGORY_QUESTIONS}
    for category in sorted(large):
        report.categories.append(_category_result(category, large[category], models, outcomes, reference))
    biggest = max((len(v) for v in sizes.values()), default=0)
    if not large:
        report.categories_note = (
            f"Per-category results are left out: {len(sizes)} categories, the largest with "
            f"{biggest} questions; at least {MIN_CATEGORY_QUESTIONS} per category are needed to "
            "say anything about a category."
        )
    elif len(large) < len(sizes):
        report.categories_note = (
            f"Only categories with at least {MIN_CATEGORY_QUESTIONS} questions are shown "
            f"({len(large)} of {len(sizes)})."
        )


def _category_result(
    category: str,
    items: list[str],
    models: Sequence[str],
    outcomes: dict[str, dict[str, bool]],
    reference: str | None,
) -> CategoryResult:
    n = len(items)
    per_model = []
    for model in models:
        correct = sum(outcomes[model][q] for q in items)
        per_model.append(
            CategoryModel(model=model, n=n, correct=correct, accuracy=correct / n, ci95=wilson_interval(correct, n))
        )
    pairs = []
    for a, b in comparison_pairs(models, reference if reference in models else None):
        table = paired_table([outcomes[a][q] for q in items], [outcomes[b][q] for q in items])
        pairs.append(
            CategoryPair(
                a=a,
                b=b,
                n=n,
                diff=table.diff,
                diff_ci95=tango_interval(table),
                mcnemar_midp_p=mcnemar_midp_p(table.a_only, table.b_only),
            )
        )
    return CategoryResult(category=category, n=n, models=per_model, pairs=pairs)
