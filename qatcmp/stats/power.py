"""How many questions a clear answer needs, and the smallest difference a run can detect.

Paired design: Connor (1987), from the accuracy difference delta and the discordance rate psi
(the share of questions on which the two models disagree). Independent design, for comparison
only: Cohen's h with statsmodels' NormalIndPower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.optimize import brentq
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize


def _check_levels(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if not 0 < power < 1:
        raise ValueError("power must be between 0 and 1")


def paired_n_exact(delta: float, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Connor's n as a real number: [z_{a/2}·sqrt(psi) + z_b·sqrt(psi - delta²)]² / delta²."""
    _check_levels(alpha, power)
    delta = abs(delta)
    if delta == 0:
        raise ValueError("the difference to detect must not be 0")
    if not delta <= discordance <= 1:
        # |a_only - b_only| <= a_only + b_only: a difference larger than the discordance is
        # impossible.
        raise ValueError(
            f"a difference of {delta:g} needs a discordance of at least {delta:g} "
            f"(got {discordance:g})"
        )
    z_alpha = norm.ppf(1 - alpha / 2)
    z_beta = norm.ppf(power)
    root = z_alpha * math.sqrt(discordance) + z_beta * math.sqrt(discordance - delta**2)
    return root**2 / delta**2


def paired_sample_size(delta: float, discordance: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Questions needed for the paired design (both models answer all of them)."""
    return math.ceil(paired_n_exact(delta, discordance, alpha, power) - 1e-9)


def paired_mde(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest difference detectable with n questions at this discordance, or None when not
    even a difference equal to the discordance (every flip in one direction) is."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 < discordance <= 1:
        return None
    if paired_n_exact(discordance, discordance, alpha, power) > n:
        return None
    low = discordance * 1e-9
    return float(
        brentq(lambda d: paired_n_exact(d, discordance, alpha, power) - n, low, discordance, xtol=1e-12)
    )


def _other_proportion(p: float, delta: float) -> float:
    lower = p - abs(delta)
    return lower if lower >= 0 else p + abs(delta)


def independent_sample_size(p: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Questions needed per model if each model answered its own questions: accuracy p
    against p - delta, Cohen's h."""
    _check_levels(alpha, power)
    if not 0 <= p <= 1:
        raise ValueError("p must be between 0 and 1")
    if delta == 0:
        raise ValueError("the difference to detect must not be 0")
    other = _other_proportion(p, delta)
    if not 0 <= other <= 1:
        raise ValueError(f"p={p:g} and delta={delta:g} do not give two proportions")
    effect = proportion_effectsize(p, other)
    n = NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power, ratio=1.0)
    return math.ceil(float(n) - 1e-9)


def independent_mde(n: int, p: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest difference below p detectable with n questions per model (independent design)."""
    _check_levels(alpha, power)
    if n <= 0:
        raise ValueError("n must be positive")
    effect = NormalIndPower().solve_power(nobs1=n, alpha=alpha, power=power, ratio=1.0)
    # Cohen's h = 2·asin(sqrt(p)) - 2·asin(sqrt(q)): solve for q below p.
    angle = 2 * math.asin(math.sqrt(p)) - float(effect)
    if angle < 0:
        return None
    return p - math.sin(angle / 2) ** 2


@dataclass(frozen=True)
class VarianceComponents:
    """The variance of the per-question difference in pass rate between two models, split
    into what is fixed per question (`between`) and the sampling noise of one answer from
    each model (`within`). With K answers per question, Var = between + within / K: more
    samples shrink only the second part."""

    between: float
    within: float
    questions: int
    samples: int

    def variance(self, samples: int) -> float:
        return self.between + self.within / samples


def variance_components(
    rates_a: Sequence[float], rates_b: Sequence[float], samples: int
) -> VarianceComponents:
    """Estimate the components from a pilot with `samples` (>= 2) answers per question, given
    each question's pass rate for both models (method of moments)."""
    if samples < 2:
        raise ValueError("separating the noise within a question needs at least 2 samples")
    if len(rates_a) != len(rates_b) or len(rates_a) < 2:
        raise ValueError("need the pass rates of both models on the same questions (at least 2)")
    # Unbiased per-question Bernoulli variance: p(1 - p)·K/(K - 1).
    correction = samples / (samples - 1)
    within = sum(
        correction * (a * (1 - a) + b * (1 - b)) for a, b in zip(rates_a, rates_b)
    ) / len(rates_a)
    differences = [a - b for a, b in zip(rates_a, rates_b)]
    mean = sum(differences) / len(differences)
    observed = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    between = max(0.0, observed - within / samples)
    return VarianceComponents(
        between=float(between), within=float(within), questions=len(differences), samples=samples
    )


def clustered_sample_size(
    delta: float,
    components: VarianceComponents,
    samples: int,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int | None:
    """Questions needed to detect delta with `samples` answers per question, the question as
    the unit (normal approximation); None when the pilot showed no variance at all."""
    _check_levels(alpha, power)
    if delta == 0:
        raise ValueError("the difference to detect must not be 0")
    variance = components.variance(samples)
    if variance <= 0:
        return None
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return math.ceil(z**2 * variance / delta**2 - 1e-9)
