"""The verdict protocol (medvlp_lib.stats): paired differences, t-intervals, and each verdict of the rule on
constructed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from medvlp_lib.stats import MIN_SEEDS, PairedEstimate, decide, paired_differences, paired_estimate


def est(diffs):
    return paired_estimate(diffs)


def test_paired_differences_pair_by_seed_and_average_folds():
    a = {"0": [0.8, 0.9], "1": [0.7, 0.7], 2: [0.6, 0.8]}
    b = {"1": [0.6, 0.6], "0": [0.7, 0.7], 2: [0.6, 0.6]}
    d = paired_differences(a, b)
    np.testing.assert_allclose(d, [0.15, 0.1, 0.1])          # seeds 0, 1, 2 in numeric order
    np.testing.assert_allclose(paired_differences(a, b, higher_is_better=False), -d)
    with pytest.raises(ValueError, match=r"seeds \['3'\]"):
        paired_differences({**a, "3": [0.1, 0.1]}, b)
    with pytest.raises(ValueError, match="folds must pair"):
        paired_differences({"0": [0.1, 0.2]}, {"0": [0.1]})
    with pytest.raises(ValueError, match="NaN"):
        paired_differences({"0": float("nan")}, {"0": 0.1})


def test_estimate_matches_a_paired_t_test():
    rng = np.random.default_rng(0)
    d = rng.normal(0.02, 0.03, 7)
    e = est(d)
    t = st.ttest_1samp(d, 0.0)
    ci = t.confidence_interval(0.95)
    assert e.n == 7 and e.mean == pytest.approx(d.mean())
    assert e.lo == pytest.approx(ci.low) and e.hi == pytest.approx(ci.high)
    assert e.lo_one == pytest.approx(d.mean() - st.t.ppf(0.95, 6) * d.std(ddof=1) / math.sqrt(7))
    assert e.mde == pytest.approx((st.t.ppf(0.975, 6) + st.t.ppf(0.8, 6)) * e.se)
    one = est([0.1])
    assert one.n == 1 and math.isnan(one.se) and math.isnan(one.lo)


def test_superiority_reproduced_contradicted_inconclusive():
    paper = 0.05
    assert decide("superiority", estimate=est([0.04, 0.05, 0.06, 0.05, 0.045]), paper_effect=paper)[0] == "reproduced"
    # opposite direction beyond noise
    assert decide("superiority", estimate=est([-0.04, -0.05, -0.06, -0.05, -0.045]),
                  paper_effect=paper)[0] == "contradicted"
    # holds 0 but excludes the paper's effect: the effect, if any, is far smaller than the paper's
    v, why = decide("superiority", estimate=est([0.001, -0.002, 0.003, 0.0, -0.001]), paper_effect=paper)
    assert v == "contradicted" and "excludes the paper's effect" in why
    # wide CI holding both 0 and the paper's effect
    v, why = decide("superiority", estimate=est([0.2, -0.15, 0.1, -0.05, 0.0]), paper_effect=paper)
    assert v == "inconclusive" and "minimal detectable effect" in why
    # no effect stated in this metric: only the opposite direction contradicts
    v, why = decide("superiority", estimate=est([0.001, -0.002, 0.003, 0.0, -0.001]), paper_effect=None)
    assert v == "inconclusive" and "no paper effect" in why
    with pytest.raises(ValueError, match="paper's effect"):
        decide("superiority", estimate=est([0.1] * 5), paper_effect=-0.1)


def test_non_inferiority_uses_the_one_sided_bound_and_the_margin():
    m = 0.02
    # slightly worse on average but tightly within the margin: reproduced
    assert decide("non-inferiority", estimate=est([-0.005, -0.004, -0.006, -0.005, -0.003]),
                  margin=m)[0] == "reproduced"
    # worse than the margin beyond noise: contradicted
    assert decide("non-inferiority", estimate=est([-0.10, -0.09, -0.11, -0.10, -0.095]),
                  margin=m)[0] == "contradicted"
    # "not worse beyond noise" is never reproduced: a wide CI around 0 is inconclusive
    v, _ = decide("non-inferiority", estimate=est([0.08, -0.1, 0.05, -0.07, 0.02]), margin=m)
    assert v == "inconclusive"
    # the margin decides: the same data pass a wider margin
    d = est([-0.015, -0.01, -0.02, -0.012, -0.018])
    assert decide("non-inferiority", estimate=d, margin=0.01)[0] != "reproduced"
    assert decide("non-inferiority", estimate=d, margin=0.05)[0] == "reproduced"
    with pytest.raises(ValueError, match="margin"):
        decide("non-inferiority", estimate=d)


def test_threshold_pending_and_bad_kinds():
    assert decide("threshold", value=0.92, threshold=0.9)[0] == "reproduced"
    assert decide("threshold", value=0.875, threshold=0.9)[0] == "contradicted"
    assert decide("threshold", value=1.1, threshold=1.25, higher_is_better=False)[0] == "reproduced"
    v, why = decide("superiority", estimate=est([0.1, 0.2, 0.15]), paper_effect=0.1)
    assert v == "pending" and f"at least {MIN_SEEDS}" in why
    with pytest.raises(ValueError, match="kind"):
        decide("equivalence", estimate=est([0.1] * 5))
    with pytest.raises(TypeError, match="estimate"):
        decide("superiority", estimate=[0.1] * 5, paper_effect=0.1)
    assert isinstance(est([0.1, 0.2]), PairedEstimate)
