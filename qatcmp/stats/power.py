"""How many questions a clear answer needs, and the smallest difference a run can detect.

Paired design: Connor (1987), from the accuracy difference delta and the discordance rate psi
(the share of questions on which the two models disagree). Independent design, for comparison
only: Cohen's h with statsmodels' NormalIndPower.
"""

from __future__ import annotations

import math

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
