"""The replay of an adaptive run with K > 1 answers per question: per-question mean
differences, the betting e-value, and a decided pair's variant left out of later blocks."""

from __future__ import annotations

import numpy as np
import pytest

from qatcmp.adaptive import AdaptiveSettings, walk_benchmark
from qatcmp.stats.sequential import analyse_pair


def test_samples_use_per_question_means_and_decide_with_the_betting_evalue():
    rng = np.random.default_rng(12)
    k, budget, block = 3, 240, 30
    ids = [f"q{i}" for i in range(budget)]
    rate = {"good": rng.uniform(0.6, 1.0, budget), "bad": None}
    rate["bad"] = np.clip(rate["good"] - 0.45, 0, 1)
    correct = {(m, "humaneval", q, s): bool(rng.random() < rate[m][i])
               for m in rate for i, q in enumerate(ids) for s in range(k)}
    settings = AdaptiveSettings(block=block, margin=0.0)
    walk = walk_benchmark("humaneval", ids, correct, models=["good", "bad"], samples=k, settings=settings)
    pair = walk.pairs[("good", "bad")]
    assert pair.decision == "different" and walk.finished and walk.active == []
    n = pair.questions_used
    d = np.array([sum(correct[("good", "humaneval", q, s)] for s in range(k)) / k
                  - sum(correct[("bad", "humaneval", q, s)] for s in range(k)) / k for q in ids[:n]])
    assert pair.diff == pytest.approx(d.mean())
    assert not set(np.unique(d)) <= {-1.0, 0.0, 1.0}  # really fractional differences
    again = analyse_pair(d, list(range(block, n + 1, block)), alpha=0.05, family_size=1, margin=None)
    assert again.decided_at == n and pair.e_value == pytest.approx(again.looks[-1].max_e_value)
    # Once decided, later blocks are not needed: a missing answer after n does not matter.
    del correct[("bad", "humaneval", ids[-1], 0)]
    assert walk_benchmark("humaneval", ids, correct, models=["good", "bad"], samples=k, settings=settings).pairs == walk.pairs
