"""Anytime-valid comparison of two variants on a growing stream of the same questions.

A fixed-sample test (McNemar) is valid once, at a sample size chosen in advance. A run that
looks after every block of questions and stops when the answer is clear needs tests that stay
valid at every look. Both tools here are built on Ville's inequality (Ville 1939): for a
nonnegative supermartingale E_t with E_0 = 1 under the null, P(sup_t E_t >= 1/a) <= a. So a
decision taken the first time a threshold is crossed, at any data-dependent time, keeps its
error rate.

- **"different"**: an e-process against "equal accuracy".
  With one answer per question (K = 1) only discordant questions carry information and, under
  equal accuracy, each favours A with probability 1/2 (the sequential form of McNemar; Wald
  1947 §6.4.2). The Beta(1,1) mixture of likelihood ratios (Robbins 1970) is
      E_n = 2^n · B(1 + b, 1 + c) / B(1, 1) = 2^n · b! c! / (n + 1)!
  with b, c the discordant counts, n = b + c. With K > 1 answers per question the
  per-question mean differences d_i in [-1, 1] are not 0/±1 any more, and the e-process is
  the hedged betting capital at mean 0 (Waudby-Smith & Ramdas 2024, JRSS-B 86(1),
  "Estimating means of bounded random variables by betting", §4 and eq. (27)).
- **"equivalent within ±margin"**: the hedged-capital betting confidence sequence for the mean
  paired difference (Waudby-Smith & Ramdas 2024, Theorem 3): for x_i = (d_i + 1)/2 in [0, 1]
      K_t(m) = max(θ·Π(1 + λ⁺_i(m)(x_i − m)), (1 − θ)·Π(1 − λ⁻_i(m)(x_i − m))),
  λ±_i(m) = min(λ_i, c/m or c/(1 − m)), λ_i the predictable plug-in
  sqrt(2 ln(2/α) / (σ̂²_{i−1} · i · ln(1 + i))); the set {m : K_t(m) < 1/α}, intersected over
  time, covers the true mean at every t with probability >= 1 − α, non-asymptotically.

- **"different", with a planned gap G** (`qatcmp run --until-decided --plan-gap G`, the same
  gap `qatcmp plan --delta` sizes a fixed design for): a bet tuned to G instead of the
  uniform prior, testing by betting (Shafer 2021, JRSS-A 184(2), "Testing by betting";
  Waudby-Smith & Ramdas 2024 §5). Under equal accuracy E[d_i | past] = 0, so for any
  predictable λ_i in [0, 1) the wealth W⁺_t = Π_{i<=t}(1 + λ_i d_i) and W⁻_t = Π(1 − λ_i d_i)
  are nonnegative martingales with W_0 = 1. The bet is the growth-rate-optimal fraction for a
  mean G, λ_i = min(G / m̂₂_{i−1}, 0.9), with m̂₂ the running second moment of d
  (m̂₂_{i−1} = (Σ_{s<i} d_s² + 1)/(i + 1); for 0/±1 data the share of discordant questions):
  the approximate-GRAPA fraction μ/(σ² + μ²) = μ/E[d²] of Waudby-Smith & Ramdas 2024 (§4 and
  Supplement B; the Kelly fraction to second order) with the planned μ = G in place of its
  running estimate. Two-sided and hedged against a wrong plan:
      E_t = w · M_t + (1 − w) · (W⁺_t + W⁻_t)/2,   w = PLAN_HEDGE = 1/4,
  M_t the uniform-prior e-process above (the Beta(1,1) mixture, or the betting e-value with
  K > 1). A convex combination of test martingales on the same data is a test martingale
  (linearity of the conditional expectation; averaging e-values, Vovk & Wang 2021, Ann.
  Statist. 49(3), "E-values: calibration, combination and applications"), so Ville's
  inequality applies to E_t unchanged. At the planned gap this
  reaches 1/α sooner than the uniform mixture (which pays ~½ ln n for not knowing p); when the
  true gap is far from G the hedge w keeps at least w·M_t (threshold effectively 1/(wα)).

- **"below-plan"**, a futility stop (`--futility β`, with `--plan-gap G`): the pair stops when a
  gap of G or more, in either direction, is itself rejected at level β. For the null
  "E[d] >= G" the capital F⁺_t = Π(1 − κ_i (d_i − G)) is a nonnegative supermartingale for any
  predictable κ_i in [0, 1/(1 − G)) (each factor has conditional mean 1 − κ_i(E[d_i] − G) <= 1
  and stays above 0 for d_i in [−1, 1]); likewise F⁻_t = Π(1 + κ_i (d_i + G)) for "E[d] <= −G"
  (testing by betting, Shafer 2021; Waudby-Smith & Ramdas 2024 §4). By Ville's inequality a
  true gap of G or more (either sign) makes F⁺ or F⁻ ever reach 1/β with probability <= β, so
  stopping the first time both have reached it costs at most β power at the planned gap and
  the claim "|gap| < G" is wrong with probability <= β, at any data-dependent time. The bet is
  the approximate-GRAPA fraction for the alternative "no difference", κ_i = G/(m̂₂_{i−1} + G²)
  (the mean of G − d is G and its second moment E[d²] + G² there), capped at 0.9/(1 − G) so a
  question against the bet keeps a tenth of the capital. This is the betting form of Wald's
  two-boundary SPRT (Wald 1947): its lower boundary β/(1 − α) is the same idea, and like it
  this stop saves most questions when the true gap is near 0 and some at the planned gap.

The uniform-prior e-process, the confidence sequence and the running intersection come from
the `ville` package (BernoulliTest, BettingTest, BettingCS), which implements exactly these
formulas; `mixture_log_evalue` is the closed form above, kept for the reference values and for
the question-count estimate; the planned bet is computed here (`planned_log_evalue_path`).

Several pairs: each pair's e-value is compared with m/α and each interval is built at level
α/m (Bonferroni over the m pairs of the family; e-values need no independence for this).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.special import betaln
from ville import BernoulliTest, BettingCS, BettingTest

Decision = Literal["different", "equivalent", "below-plan", "undecided"]

# The interval is kept on a grid of candidate differences and widened to the neighbouring
# grid points (conservative); 4,000 points over [-1, 1] resolve 0.05 percentage points.
CS_GRID = 4001
# Past this many times the questions already asked, an estimate is not worth giving.
ESTIMATE_CAP_FACTOR = 50
# The planned bet: the weight kept on the uniform-prior e-process (the hedge against a wrong
# plan) and the largest fraction of the wealth bet on one question (a 0.9 bet on the wrong side
# of a discordant question keeps a tenth of the wealth, never zero).
PLAN_HEDGE = 0.25
MAX_BET = 0.9


def mixture_log_evalue(a_only: float, b_only: float) -> float:
    """ln E_n of the Beta(1,1) mixture on the discordant questions (Robbins 1970):
    E_n = 2^n · B(1 + b, 1 + c) / B(1, 1), n = b + c, computed in log space (no overflow for
    thousands of questions). Real-valued counts are allowed (used for projections)."""
    if a_only < 0 or b_only < 0:
        raise ValueError("counts cannot be negative")
    n = a_only + b_only
    return n * math.log(2.0) + float(betaln(1.0 + a_only, 1.0 + b_only))


def mixture_evalue(a_only: int, b_only: int) -> float:
    return math.exp(mixture_log_evalue(a_only, b_only))


def _is_binary_difference(d: np.ndarray) -> bool:
    return bool(np.all((d == -1) | (d == 0) | (d == 1)))


def _check_differences(d: Sequence[float]) -> np.ndarray:
    arr = np.asarray(d, dtype=float).ravel()
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > 1)):
        raise ValueError("per-question differences must lie in [-1, 1]")
    return arr


def _check_plan(plan_gap: float | None) -> None:
    if plan_gap is not None and not 0 < plan_gap < 1:
        raise ValueError("the planned gap must be between 0 and 1 (a proportion: 0.04 = 4 points)")


def _uniform_log_evalue_path(arr: np.ndarray, alpha: float) -> np.ndarray:
    if _is_binary_difference(arr):
        discordant = arr != 0
        path = np.zeros(arr.size)
        if discordant.any():
            test = BernoulliTest(p0=0.5, alpha=alpha).fit((arr[discordant] > 0).astype(float))
            # Forward-fill: a concordant question leaves the e-value where it was.
            index = np.cumsum(discordant) - 1
            values = test.log_e_values_
            path = np.where(index >= 0, values[np.maximum(index, 0)], 0.0)
        return path
    return BettingTest(m0=0.0, bounds=(-1.0, 1.0), alpha=alpha).fit(arr).log_e_values_


def _prior_second_moments(arr: np.ndarray) -> np.ndarray:
    """m̂₂_{i−1} = (Σ_{s<i} d_s² + 1)/(i + 1) for i = 1..n: what a bet on question i may use."""
    before = np.concatenate([[0.0], np.cumsum(arr**2)[:-1]]) if arr.size else np.zeros(0)
    return (before + 1.0) / (np.arange(1, arr.size + 1) + 1.0)


def planned_bets(d: Sequence[float], plan_gap: float) -> np.ndarray:
    """λ_i for each question i = 1..n, from questions 1..i−1 only (predictable):
    min(G / m̂₂_{i−1}, MAX_BET), m̂₂_{i−1} = (Σ_{s<i} d_s² + 1)/(i + 1)."""
    arr = _check_differences(d)
    _check_plan(plan_gap)
    return np.minimum(plan_gap / _prior_second_moments(arr), MAX_BET)


def planned_log_evalue_path(d: Sequence[float], plan_gap: float, alpha: float) -> np.ndarray:
    """ln E_t of the planned bet, hedged with the uniform-prior e-process (module docstring):
    E_t = w·M_t + (1 − w)·(W⁺_t + W⁻_t)/2."""
    arr = _check_differences(d)
    if arr.size == 0:
        return np.zeros(0)
    bets = planned_bets(arr, plan_gap)
    log_up = np.cumsum(np.log1p(bets * arr))
    log_down = np.cumsum(np.log1p(-bets * arr))
    planned = np.logaddexp(log_up, log_down) - math.log(2.0)
    uniform = _uniform_log_evalue_path(arr, alpha)
    return np.logaddexp(math.log(PLAN_HEDGE) + uniform, math.log(1.0 - PLAN_HEDGE) + planned)


def log_evalue_path(d: Sequence[float], alpha: float, plan_gap: float | None = None) -> np.ndarray:
    """ln E_t after each question t = 1..n, for the null "equal accuracy".

    Without a plan: 0/±1 differences (one answer per question) give the Beta(1,1) mixture on
    the discordant questions, constant across concordant ones; otherwise (per-question means
    of K answers) the two-sided hedged betting e-process at 0. With ``plan_gap``: the planned
    bet hedged with that e-process. ``alpha`` only tunes the bets of the betting e-process
    (its validity does not depend on it)."""
    arr = _check_differences(d)
    _check_plan(plan_gap)
    if arr.size == 0:
        return np.zeros(0)
    if plan_gap is not None:
        return planned_log_evalue_path(arr, plan_gap, alpha)
    return _uniform_log_evalue_path(arr, alpha)


def _check_futility(futility: float | None, plan_gap: float | None) -> None:
    if futility is None:
        return
    if plan_gap is None:
        raise ValueError("a futility stop needs a planned gap: it rejects gaps of the plan or more")
    if not 0 < futility < 1:
        raise ValueError("the futility level must be between 0 and 1")


def futility_bets(d: Sequence[float], plan_gap: float) -> np.ndarray:
    """κ_i for each question i = 1..n, from questions 1..i−1 only (predictable):
    min(G / (m̂₂_{i−1} + G²), 0.9/(1 − G)), m̂₂ as in `planned_bets`."""
    arr = _check_differences(d)
    _check_plan(plan_gap)
    return np.minimum(plan_gap / (_prior_second_moments(arr) + plan_gap**2), MAX_BET / (1.0 - plan_gap))


def futility_log_capital_paths(d: Sequence[float], plan_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """ln F⁺_t and ln F⁻_t after each question (module docstring): the capital against
    "the gap is G or more" and against "the gap is −G or less"."""
    arr = _check_differences(d)
    if arr.size == 0:
        return np.zeros(0), np.zeros(0)
    bets = futility_bets(arr, plan_gap)
    return np.cumsum(np.log1p(-bets * (arr - plan_gap))), np.cumsum(np.log1p(bets * (arr + plan_gap)))


def futility_log_level_path(d: Sequence[float], plan_gap: float) -> np.ndarray:
    """After each question, ln of the smaller of the two running maxima max_s F⁺_s and
    max_s F⁻_s: the pair stops "below-plan" at level β once this reaches ln(1/β)."""
    up, down = futility_log_capital_paths(d, plan_gap)
    if up.size == 0:
        return up
    return np.minimum(np.maximum.accumulate(up), np.maximum.accumulate(down))


def planned_log_evalue_at_counts(a_only: float, b_only: float, plan_gap: float, discordance: float) -> float:
    """ln E of the hedged planned bet after a_only + b_only discordant questions if the bet had
    been min(G/ψ, MAX_BET) throughout (ψ the discordance): for projections only, never to
    decide (the real bet starts from a prior guess of ψ and follows the data)."""
    bet = min(plan_gap / discordance, MAX_BET) if discordance > 0 else MAX_BET
    up = a_only * math.log1p(bet) + b_only * math.log1p(-bet)
    down = b_only * math.log1p(bet) + a_only * math.log1p(-bet)
    planned = float(np.logaddexp(up, down)) - math.log(2.0)
    return float(np.logaddexp(math.log(PLAN_HEDGE) + mixture_log_evalue(a_only, b_only),
                              math.log(1.0 - PLAN_HEDGE) + planned))


def confidence_sequence_path(d: Sequence[float], alpha: float, grid: int = CS_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends, after each question, of the betting confidence sequence for the
    mean paired difference (running intersection: the interval never widens)."""
    arr = _check_differences(d)
    if arr.size == 0:
        return np.zeros(0), np.zeros(0)
    cs = BettingCS(bounds=(-1.0, 1.0), alpha=alpha, grid=grid, intersect=True).fit(arr)
    return cs.lower_, cs.upper_


@dataclass(frozen=True)
class Look:
    """One pair at one look (the end of a block)."""

    questions: int
    diff: float  # mean of d_i over the questions so far (accuracy A - accuracy B)
    a_only: int  # questions with d_i > 0 (A better on that question)
    b_only: int  # questions with d_i < 0
    e_value: float  # at this look
    max_e_value: float  # the largest so far (what the decision and the p-value use)
    interval: tuple[float, float]  # anytime interval at level alpha/m
    futility_capital: float | None = None  # with a futility stop: min of max F⁺, max F⁻ so far

    @property
    def p_anytime(self) -> float:
        """Anytime-valid p-value, unadjusted: min(1, 1 / max_{s<=t} E_s)."""
        return min(1.0, 1.0 / self.max_e_value) if self.max_e_value > 0 else 1.0

    @property
    def discordance(self) -> float:
        return (self.a_only + self.b_only) / self.questions if self.questions else 0.0


@dataclass
class PairOutcome:
    decision: Decision = "undecided"
    decided_at: int | None = None  # questions used when decided
    looks: list[Look] = field(default_factory=list)


def analyse_pair(
    d: Sequence[float],
    looks: Sequence[int],
    *,
    alpha: float,
    family_size: int,
    margin: float | None,
    plan_gap: float | None = None,
    futility: float | None = None,
) -> PairOutcome:
    """Decisions at each look for one pair, from its per-question differences in run order.

    Decided "different" at the first look where max_{t <= n} E_t >= m/α (m = family_size);
    else "equivalent" at the first look where the level-α/m interval lies inside
    (−margin, +margin); else, with ``futility`` β, "below-plan" at the first look where gaps of
    ±plan_gap or more are both rejected at level β (module docstring). A decision is final:
    later looks are not analysed. ``plan_gap``: the e-process is the planned bet (module
    docstring); the interval does not depend on it."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if family_size < 1:
        raise ValueError("the family needs at least one pair")
    _check_futility(futility, plan_gap)
    arr = _check_differences(d)
    futility_path = futility_log_level_path(arr, plan_gap) if futility is not None else None
    pair_alpha = alpha / family_size
    log_threshold = math.log(family_size / alpha)
    log_e = log_evalue_path(arr, pair_alpha, plan_gap)
    running_max = np.maximum.accumulate(log_e) if log_e.size else log_e
    # The interval is the costly part: build it only up to the first look that decides
    # "different" or "below-plan" (the e-value and the futility capital alone say where).
    crossing = [n for n in looks if 0 < n <= arr.size and (
        running_max[n - 1] >= log_threshold
        or (futility_path is not None and futility_path[n - 1] >= math.log(1.0 / futility)))]
    horizon = min(crossing) if crossing else arr.size
    lower, upper = confidence_sequence_path(arr[:horizon], pair_alpha)
    outcome = PairOutcome()
    for n in looks:
        if n <= 0 or n > arr.size:
            raise ValueError(f"look at {n} questions, but {arr.size} are available")
        if n > horizon:
            break  # unreachable: the look at `horizon` decided
        head = arr[:n]
        look = Look(
            questions=int(n),
            diff=float(head.mean()),
            a_only=int(np.sum(head > 0)),
            b_only=int(np.sum(head < 0)),
            e_value=float(math.exp(min(log_e[n - 1], 700.0))),
            max_e_value=float(math.exp(min(running_max[n - 1], 700.0))),
            interval=(float(lower[n - 1]), float(upper[n - 1])),
            futility_capital=(None if futility_path is None
                              else float(math.exp(min(futility_path[n - 1], 700.0)))),
        )
        outcome.looks.append(look)
        if running_max[n - 1] >= log_threshold:
            outcome.decision, outcome.decided_at = "different", int(n)
            break
        if margin is not None and margin > 0 and -margin < look.interval[0] and look.interval[1] < margin:
            outcome.decision, outcome.decided_at = "equivalent", int(n)
            break
        if futility_path is not None and futility_path[n - 1] >= math.log(1.0 / futility):
            outcome.decision, outcome.decided_at = "below-plan", int(n)
            break
    return outcome


def _halfwidth_scale(t: float, alpha: float) -> float:
    """How the width of an anytime interval shrinks with t: the shape of the asymptotic
    confidence sequence of Waudby-Smith et al. (2021, arXiv 2103.06476) with ρ = 1,
    sqrt((t + 1)/t² · ln(sqrt(t + 1)/α)). Used only to project, never to decide."""
    return math.sqrt((t + 1) / t**2 * math.log(math.sqrt(t + 1) / alpha))


def more_questions_estimate(
    look: Look, *, alpha: float, family_size: int, margin: float | None, binary: bool,
    plan_gap: float | None = None,
) -> int | None:
    """About how many more questions this pair would need if the observed difference and
    discordance held: the first of "different" (the e-value the run uses — the mixture, or
    with ``plan_gap`` the hedged planned bet — at the expected counts reaching m/α; for K > 1,
    the interval excluding 0) and "equivalent" (the interval, shrunk at the anytime rate,
    fitting inside ±margin). None when neither is in sight."""
    n = look.questions
    if n == 0:
        return None
    pair_alpha = alpha / family_size
    cap = ESTIMATE_CAP_FACTOR * n
    candidates: list[int] = []
    half = (look.interval[1] - look.interval[0]) / 2
    scale_now = _halfwidth_scale(n, pair_alpha)

    def half_at(total: float) -> float:
        return half * _halfwidth_scale(total, pair_alpha) / scale_now

    def first_total(ok) -> int | None:
        if not ok(cap):
            return None
        low, high = n, cap
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if ok(mid) else (mid, high)
        return high

    delta, psi = abs(look.diff), look.discordance
    if delta > 0:
        if binary and psi > 0:
            threshold = math.log(family_size / alpha)
            share = min(1.0, delta / psi)

            def log_e(a_only: float, b_only: float) -> float:
                if plan_gap is None:
                    return mixture_log_evalue(a_only, b_only)
                return planned_log_evalue_at_counts(a_only, b_only, plan_gap, psi)

            found = first_total(lambda total: log_e(total * psi * (1 + share) / 2,
                                                    total * psi * (1 - share) / 2) >= threshold)
        else:
            found = first_total(lambda total: half_at(total) < delta)
        if found is not None:
            candidates.append(found)
    if margin is not None and margin > delta:
        found = first_total(lambda total: delta + half_at(total) < margin)
        if found is not None:
            candidates.append(found)
    if not candidates:
        return None
    return max(0, min(candidates) - n)
