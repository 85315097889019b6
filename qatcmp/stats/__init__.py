"""Statistics over per-question outcomes: pure functions, no IO.

- proportions: one model's accuracy (Wilson; clustered by question with K samples)
- paired: two models on the same questions (McNemar exact and mid-p, Tango interval, TOST)
- independent: the tests that ignore the pairing (z, chi-squared, Yates, Fisher)
- multi: Cochran's Q and Holm
- compatible: intervals that agree with Holm-adjusted decisions; TOST p-values
- power: sample size and minimum detectable difference (Connor paired, Cohen's h independent)
"""

from qatcmp.stats.compatible import Tost, compatible_level, confidence_percent, tost_interval, tost_p
from qatcmp.stats.independent import IndependentTests, independent_tests, mean_rates_z_test_p
from qatcmp.stats.multi import CochranQ, cochran_q, holm
from qatcmp.stats.paired import (
    ClusteredDifference,
    Equivalence,
    PairedTable,
    clustered_paired_difference,
    equivalence_tost,
    mcnemar_exact_p,
    mcnemar_midp_p,
    paired_table,
    phi_correlation,
    tango_interval,
)
from qatcmp.stats.power import (
    VarianceComponents,
    clustered_sample_size,
    independent_mde,
    independent_sample_size,
    paired_mde,
    paired_sample_size,
    variance_components,
)
from qatcmp.stats.proportions import ClusteredAccuracy, clustered_accuracy, wilson_interval

__all__ = [
    "ClusteredAccuracy",
    "ClusteredDifference",
    "CochranQ",
    "Equivalence",
    "IndependentTests",
    "Tost",
    "compatible_level",
    "confidence_percent",
    "mean_rates_z_test_p",
    "tost_interval",
    "tost_p",
    "PairedTable",
    "clustered_accuracy",
    "clustered_paired_difference",
    "cochran_q",
    "equivalence_tost",
    "holm",
    "independent_mde",
    "independent_sample_size",
    "independent_tests",
    "mcnemar_exact_p",
    "mcnemar_midp_p",
    "paired_mde",
    "VarianceComponents",
    "clustered_sample_size",
    "variance_components",
    "paired_sample_size",
    "paired_table",
    "phi_correlation",
    "tango_interval",
    "wilson_interval",
]
