"""Three or more models: the omnibus test, and the multiplicity adjustment for the pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from statsmodels.stats.contingency_tables import cochrans_q as _cochrans_q
from statsmodels.stats.multitest import multipletests


@dataclass(frozen=True)
class CochranQ:
    statistic: float
    p: float
    df: int


def cochran_q(outcomes: Sequence[Sequence[bool]]) -> CochranQ:
    """Cochran's Q on an N questions x k models 0/1 matrix: is any model different?"""
    matrix = np.asarray(outcomes, dtype=int)
    if matrix.ndim != 2 or matrix.shape[1] < 3 or matrix.shape[0] == 0:
        raise ValueError("Cochran's Q needs an N x k matrix with k >= 3 models")
    df = matrix.shape[1] - 1
    # No question separates the models (every row all-right or all-wrong): Q is 0/0.
    row_sums = matrix.sum(axis=1)
    if np.all((row_sums == 0) | (row_sums == matrix.shape[1])):
        return CochranQ(statistic=0.0, p=1.0, df=df)
    result = _cochrans_q(matrix)
    return CochranQ(statistic=float(result.statistic), p=float(result.pvalue), df=int(result.df))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (named explicitly: multipletests' default is not
    Holm)."""
    if len(p_values) == 0:
        return []
    if len(p_values) == 1:
        # One test: nothing to adjust. (Skipping multipletests also skips the gc.collect()
        # it runs on every call, a quarter of a second in a large process.)
        return [min(1.0, float(p_values[0]))]
    adjusted = multipletests(list(p_values), method="holm")[1]
    return [float(p) for p in adjusted]
