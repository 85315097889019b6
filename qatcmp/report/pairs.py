"""Two variants on the same questions: the paired numbers of one pair, and the verdicts of a
benchmark's pairs after the Holm adjustment (difference and equivalence alike)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from qatcmp.errors import ConfigError
from qatcmp.records import ScoreRecord
from qatcmp.report.model import (
    INDEPENDENT_NOTE_SAMPLES,
    TARGET_POWER,
    ModelResult,
    PairPower,
    PairResult,
)
from qatcmp.report.wording import pair_sentence
from qatcmp.stats import (
    PairedTable,
    clustered_paired_difference,
    compatible_level,
    equivalence_tost,
    holm,
    independent_tests,
    mcnemar_exact_p,
    mcnemar_midp_p,
    mean_rates_z_test_p,
    paired_mde,
    paired_sample_size,
    paired_table,
    phi_correlation,
    tango_interval,
    tost_interval,
    tost_p,
)

SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class Levels:
    """What the user chose: significance level, equivalence margin, the difference to size
    studies for."""

    alpha: float = 0.05
    margin: float = 0.05
    delta: float | None = None  # None: the margin

    @property
    def sizing_delta(self) -> float:
        return self.delta if self.delta is not None else self.margin


def comparison_pairs(models: Sequence[str], reference: str | None) -> list[tuple[str, str]]:
    """Every pair in model order, or each other variant against the reference (diff is then
    variant - reference)."""
    if reference is None:
        return list(combinations(models, 2))
    if reference not in models:
        raise ConfigError(
            f"--reference {reference}: not a model of this run (models: {', '.join(models)})"
        )
    return [(model, reference) for model in models if model != reference]


def by_question(records: Iterable[ScoreRecord]) -> dict[str, list[ScoreRecord]]:
    grouped: dict[str, list[ScoreRecord]] = defaultdict(list)
    for record in records:
        grouped[record.item_id].append(record)
    return grouped


def first_sample_outcomes(records: Sequence[ScoreRecord]) -> dict[str, bool]:
    """Per question, the outcome of its first answered sample. With K > 1 the paired tests
    use one answer per question, which keeps McNemar's independence across questions."""
    chosen: dict[str, ScoreRecord] = {}
    for record in records:
        if record.status == SERVER_ERROR:
            continue
        current = chosen.get(record.item_id)
        if current is None or record.sample < current.sample:
            chosen[record.item_id] = record
    return {item: record.correct for item, record in chosen.items()}


def pass_rates(records: Sequence[ScoreRecord]) -> dict[str, float]:
    """Per question, the share of its answered samples that were right."""
    grouped = by_question(r for r in records if r.status != SERVER_ERROR)
    return {item: sum(r.correct for r in rs) / len(rs) for item, rs in grouped.items()}


def _independent_fields(
    result_a: ModelResult, result_b: ModelResult, records_a: Sequence[ScoreRecord], records_b: Sequence[ScoreRecord]
) -> dict:
    """The tests that ignore the pairing. With K > 1 answers per question the N×K answers
    are not independent trials: compare per-question means instead, and leave out the tests
    that need one 0/1 outcome per unit."""
    if max(result_a.samples, result_b.samples) > 1:
        rates_a, rates_b = list(pass_rates(records_a).values()), list(pass_rates(records_b).values())
        return {
            "z_test_p": mean_rates_z_test_p(rates_a, rates_b) if rates_a and rates_b else None,
            "chi2_p": None, "chi2_yates_p": None, "fisher_p": None,
            "independent_basis": "question_means",
            "independent_tests_note": INDEPENDENT_NOTE_SAMPLES,
        }
    tests = independent_tests(result_a.correct, result_a.n, result_b.correct, result_b.n)
    return {"z_test_p": tests.z_test_p, "chi2_p": tests.chi2_p, "chi2_yates_p": tests.chi2_yates_p,
            "fisher_p": tests.fisher_p}


def paired_result(
    a: str,
    b: str,
    records_a: Sequence[ScoreRecord],
    records_b: Sequence[ScoreRecord],
    result_a: ModelResult,
    result_b: ModelResult,
    levels: Levels,
) -> tuple[PairResult, PairedTable] | None:
    """The unadjusted numbers of one pair; verdicts wait for the whole family (judge_pairs)."""
    outcomes_a, outcomes_b = first_sample_outcomes(records_a), first_sample_outcomes(records_b)
    shared = sorted(set(outcomes_a) & set(outcomes_b))
    if not shared:
        return None
    table = paired_table([outcomes_a[q] for q in shared], [outcomes_b[q] for q in shared])
    equivalence = equivalence_tost(table, levels.margin, levels.alpha)
    pair = PairResult(
        a=a,
        b=b,
        n=table.n,
        both_correct=table.both,
        a_only=table.a_only,
        b_only=table.b_only,
        neither_correct=table.neither,
        accuracy_a=(table.both + table.a_only) / table.n,
        accuracy_b=(table.both + table.b_only) / table.n,
        diff=table.diff,
        diff_ci95=tango_interval(table, 0.95),
        diff_ci_method="tango",
        mcnemar_exact_p=mcnemar_exact_p(table.a_only, table.b_only),
        mcnemar_midp_p=mcnemar_midp_p(table.a_only, table.b_only),
        flips=table.flips,
        agreement=table.agreement,
        correlation=phi_correlation(table),
        equivalence_margin=levels.margin,
        equivalence_ci90=equivalence.interval,
        equivalence_p=tost_p(table, levels.margin).p,
        verdict="inconclusive",  # decided after the Holm adjustment
        sentence="",
        **_independent_fields(result_a, result_b, records_a, records_b),
    )
    if max(result_a.samples, result_b.samples) > 1:
        _add_all_samples_diff(pair, records_a, records_b)
    return pair, table


def _add_all_samples_diff(pair: PairResult, records_a: Sequence[ScoreRecord], records_b: Sequence[ScoreRecord]) -> None:
    rates_a, rates_b = pass_rates(records_a), pass_rates(records_b)
    shared = sorted(set(rates_a) & set(rates_b))
    if len(shared) < 2:
        return
    result = clustered_paired_difference([rates_a[q] for q in shared], [rates_b[q] for q in shared])
    pair.diff_all_samples = result.diff
    pair.diff_all_samples_ci95 = result.ci
    pair.samples = max(len(rs) for rs in by_question(records_a).values())


def _pair_power(table: PairedTable, levels: Levels, pairs: int) -> PairPower:
    """Sized for the difference the user names (--delta, else the margin), at the level of
    Holm's first step (alpha / pairs), so that a study of this size meets the rule the
    verdict uses."""
    discordance = table.flips
    alpha = levels.alpha / pairs
    delta = levels.sizing_delta
    return PairPower(
        discordance=discordance,
        alpha=alpha,
        alpha_family=levels.alpha,
        pairs=pairs,
        power=TARGET_POWER,
        mde=paired_mde(table.n, discordance, alpha, TARGET_POWER) if discordance > 0 else None,
        delta=delta,
        delta_source="--delta" if levels.delta is not None else "margin",
        n_needed=paired_sample_size(delta, discordance, alpha, TARGET_POWER) if discordance >= delta else None,
    )


def judge_pairs(judged: list[tuple[PairResult, PairedTable]], label: str, levels: Levels) -> list[PairResult]:
    """Holm over the family for both questions (is there a difference; is it within the
    margin), the intervals that match each decision, the verdicts and the sentences."""
    pairs = [pair for pair, _ in judged]
    alpha = levels.alpha
    p_diff = holm([p.mcnemar_midp_p for p in pairs])
    p_exact = holm([p.mcnemar_exact_p for p in pairs])
    p_equivalence = holm([p.equivalence_p for p in pairs])
    for (pair, table), adjusted, adjusted_exact, adjusted_equivalence in zip(judged, p_diff, p_exact, p_equivalence):
        pair.p_holm = adjusted
        pair.p_holm_exact = adjusted_exact
        pair.equivalence_p_holm = adjusted_equivalence
        pair.equivalent = adjusted_equivalence < alpha
        diff_level = compatible_level(alpha, pair.mcnemar_midp_p, adjusted)
        pair.diff_ci_holm = tango_interval(table, 1 - diff_level)
        pair.diff_ci_holm_confidence = 1 - diff_level
        significant = adjusted < alpha
        excludes_zero = not pair.diff_ci_holm[0] <= 0 <= pair.diff_ci_holm[1]
        pair.interval_test_disagree = table.discordant > 0 and excludes_zero != significant
        equivalence_level = compatible_level(alpha, pair.equivalence_p, adjusted_equivalence)
        pair.equivalence_ci_holm = tost_interval(table, equivalence_level)
        pair.equivalence_ci_holm_confidence = 1 - 2 * equivalence_level
        pair.power = _pair_power(table, levels, len(pairs))
        pair.verdict = verdict(significant, pair.equivalent)
        pair.sentence = pair_sentence(pair, label, pairs=len(pairs))
    return pairs


def verdict(significant: bool, equivalent: bool) -> str:
    if significant:
        return "small_difference" if equivalent else "difference"
    return "equivalent" if equivalent else "inconclusive"
