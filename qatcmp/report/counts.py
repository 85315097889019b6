"""`qatcmp stats --counts`: a report from totals only (as in a published table), where the
pairing is unknown and only the independent-sample tests and the range the paired test could
take are shown."""

from __future__ import annotations

import re

from qatcmp.errors import ConfigError
from qatcmp.records import utcnow
from qatcmp.report.build import check_levels
from qatcmp.report.pairs import comparison_pairs
from qatcmp.report.model import BENCHMARK_LABELS, BenchmarkReport, ModelResult, PairResult, Report
from qatcmp.report.wording import format_p, p_is, points
from qatcmp.stats import independent_tests, mcnemar_midp_p, wilson_interval

_COUNT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._+-]*)\s*=\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_counts(spec: str) -> dict[str, list[tuple[str, int, int]]]:
    """'humaneval:6bit=98/100,qat8=90/100;mmlu_pro:6bit=29/50,...' -> per benchmark, the
    (model, correct, total) triples in the order given."""
    parsed: dict[str, list[tuple[str, int, int]]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, sep, rest = part.partition(":")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ConfigError(f"--counts: '{part}' should look like 'humaneval:6bit=98/100,qat8=90/100'")
        entries = []
        for entry in filter(None, (e.strip() for e in rest.split(","))):
            match = _COUNT.match(entry)
            if not match:
                raise ConfigError(f"--counts: '{entry}' should look like 'MODEL=CORRECT/TOTAL'")
            model, correct, total = match.group(1), int(match.group(2)), int(match.group(3))
            if total == 0 or correct > total:
                raise ConfigError(f"--counts: {entry}: correct must be between 0 and a total above 0")
            if any(m == model for m, _, _ in entries):
                raise ConfigError(f"--counts: {name}: model {model} is given twice")
            entries.append((model, correct, total))
        if len(entries) < 1:
            raise ConfigError(f"--counts: {name}: no MODEL=CORRECT/TOTAL entries")
        if name in parsed:
            raise ConfigError(f"--counts: benchmark {name} is given twice")
        parsed[name] = entries
    if not parsed:
        raise ConfigError("--counts: nothing to compare")
    return parsed


def paired_range_text(correct_a: int, correct_b: int, n: int) -> str | None:
    """What the pairing could show for two totals on the same n questions: the McNemar mid-p
    depends on how many questions the models disagree on, which totals do not tell."""
    gap = correct_a - correct_b
    if gap == 0:
        return None
    lo_b = abs(gap)
    # a_only - b_only = gap; a_only <= min(correct_a, n - correct_b) etc.
    most_b_only = min(correct_b, n - correct_a) if gap > 0 else min(correct_a, n - correct_b)
    fewest = (lo_b, 0)
    most = (lo_b + most_b_only, most_b_only)
    p_fewest = mcnemar_midp_p(*fewest)
    p_most = mcnemar_midp_p(*most)
    return (
        f"with per-question data the paired McNemar mid-p would be between {format_p(p_fewest)} "
        f"and {format_p(p_most)}, depending on how many questions the models disagreed on "
        f"({fewest[0]} to {most[0] + most[1]})"
    )


def build_counts_report(
    spec: str, *, reference: str | None = None, alpha: float = 0.05, margin: float | None = None
) -> Report:
    margin_source = "default" if margin is None else "--margin"
    margin = 0.05 if margin is None else margin
    check_levels(alpha, margin)
    parsed = parse_counts(spec)
    models = list(dict.fromkeys(m for entries in parsed.values() for m, _, _ in entries))
    if reference is not None and reference not in models:
        raise ConfigError(f"--reference {reference}: not in --counts (models: {', '.join(models)})")
    benchmarks = []
    notes = [
        "Totals only: each model's Wilson interval and the independent-sample tests. With "
        "per-question outcomes (which questions each model got right) qatcmp would use the "
        "pairing — McNemar on the questions where the models disagree, an interval for the "
        "paired difference, and an equivalence verdict — which is usually far more sensitive, "
        "because questions both models get right (or both wrong) cancel out."
    ]
    for name, entries in parsed.items():
        label = BENCHMARK_LABELS.get(name, name)
        results = [
            ModelResult(model=m, n=t, correct=c, accuracy=c / t, ci95=wilson_interval(c, t))
            for m, c, t in entries
        ]
        pairs = []
        by_name = {r.model: r for r in results}
        names = [r.model for r in results]
        for a, b in comparison_pairs(names, reference if reference in names else None):
            ra, rb = by_name[a], by_name[b]
            tests = independent_tests(ra.correct, ra.n, rb.correct, rb.n)
            diff = ra.correct / ra.n - rb.correct / rb.n
            sentence = (
                f"{a} vs {b}, {label}: {points(diff)} points ({ra.correct}/{ra.n} vs "
                f"{rb.correct}/{rb.n}), z-test p {p_is(tests.z_test_p)}, Fisher "
                f"p {p_is(tests.fisher_p)} — ignoring that both answered the same questions"
            )
            if ra.n == rb.n:
                paired = paired_range_text(ra.correct, rb.correct, ra.n)
                if paired:
                    sentence += f"; {paired}"
            pairs.append(
                PairResult(
                    a=a,
                    b=b,
                    n=None,
                    diff=diff,
                    equivalence_margin=margin,
                    verdict="unpaired",
                    sentence=sentence,
                    z_test_p=tests.z_test_p,
                    chi2_p=tests.chi2_p,
                    chi2_yates_p=tests.chi2_yates_p,
                    fisher_p=tests.fisher_p,
                )
            )
        benchmarks.append(BenchmarkReport(benchmark=name, label=label, models=results, pairs=pairs))
    return Report(
        kind="counts",
        source=spec,
        created_at=utcnow(),
        alpha=alpha,
        margin=margin,
        margin_source=margin_source,
        reference=reference,
        models=models,
        benchmarks=benchmarks,
        notes=notes,
    )
