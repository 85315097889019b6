"""One model's accuracy: Wilson interval, and the clustered view when each question was asked
K times (the K answers to one question are not independent, so the question is the unit)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for a confidence level (1.96 for 0.95)."""
    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for correct/n. Unlike the Wald interval it stays inside [0, 1]
    and keeps its coverage near 0% and 100%, where quantized models often sit on HumanEval."""
    if n <= 0:
        raise ValueError("a proportion needs at least one observation")
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} is outside 0..{n}")
    low, high = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
    # At 0/n and n/n rounding can leave the bound a hair past the estimate (5e-17 for 0/3).
    estimate = correct / n
    return max(0.0, min(float(low), estimate)), min(1.0, max(float(high), estimate))


@dataclass(frozen=True)
class ClusteredAccuracy:
    """Accuracy over N questions with K samples each, the question being the unit."""

    questions: int
    mean: float
    se: float
    ci: tuple[float, float]


def clustered_accuracy(
    per_question_rates: Sequence[float], confidence: float = 0.95
) -> ClusteredAccuracy:
    """Mean of the per-question pass rates p_i = c_i/K, with standard error sd(p_i)/sqrt(N).

    Treating the N*K answers as independent would understate the error: two answers to the
    same question share its difficulty."""
    rates = [float(r) for r in per_question_rates]
    count = len(rates)
    if count == 0:
        raise ValueError("no questions")
    mean = sum(rates) / count
    if count == 1:
        se = math.nan
    else:
        variance = sum((r - mean) ** 2 for r in rates) / (count - 1)
        se = math.sqrt(variance / count)
    half = z_value(confidence) * se if not math.isnan(se) else math.nan
    ci = (max(0.0, mean - half), min(1.0, mean + half))
    return ClusteredAccuracy(questions=count, mean=mean, se=se, ci=ci)
