"""Statistics against hand-computed values (docs/architecture.md, "Statistics")."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from engine.stats import paired_compare, summarize, summarize_means


def test_mean_se_ci_mde_by_hand():
    s = summarize([1, 0, 1, 1])
    # mean 0.75; sum of squared deviations = 3*0.0625 + 0.5625 = 0.75; SE = sqrt(0.75 / (4*3)) = 0.25
    assert s.value == pytest.approx(0.75)
    assert s.stderr == pytest.approx(0.25)
    assert s.ci_low == pytest.approx(0.75 - 1.959964 * 0.25, abs=1e-6)
    assert s.ci_high == pytest.approx(0.75 + 1.959964 * 0.25, abs=1e-6)
    assert s.mde == pytest.approx((1.959964 + 0.841621) * math.sqrt(2) * 0.25, abs=1e-6)
    assert s.mde / s.stderr == pytest.approx(3.96, abs=0.01)
    assert s.n == 4 and s.clustered_stderr is None


def test_clustered_se_by_hand():
    # clusters a: [1, 1], b: [0, 0]; mean 0.5; cluster residual sums: +1, -1 → SE_c = sqrt(2)/4
    s = summarize([1, 1, 0, 0], clusters=["a", "a", "b", "b"])
    assert s.clustered_stderr == pytest.approx(math.sqrt(2) / 4)
    assert s.n_clusters == 2
    # the CI uses the clustered SE when clusters are given
    assert s.ci_high - s.value == pytest.approx(1.959964 * math.sqrt(2) / 4, abs=1e-6)
    # and singleton clusters reduce to the ordinary formula with n instead of n-1
    t = summarize([1, 0, 1], clusters=["a", "b", "c"])
    resid = np.array([1, 0, 1]) - 2 / 3
    assert t.clustered_stderr == pytest.approx(math.sqrt((resid**2).sum()) / 3)


def test_se_matches_scipy_sem():
    rng = np.random.default_rng(0)
    x = rng.random(50)
    assert summarize(x).stderr == pytest.approx(float(sps.sem(x)))


def test_suite_mean_of_means():
    a, b = summarize([1, 0, 1, 1]), summarize([0, 0, 1, 0])
    agg = summarize_means([a, b])
    assert agg.value == pytest.approx((0.75 + 0.25) / 2)
    assert agg.stderr == pytest.approx(math.sqrt(a.stderr**2 + b.stderr**2) / 2)


def test_paired_matches_scipy_and_mcnemar():
    a = [1, 1, 0, 1, 0, 1, 1, 0, 1, 1]
    b = [0, 1, 0, 0, 0, 1, 0, 0, 1, 0]
    p = paired_compare(a, b)
    d = np.array(a) - np.array(b)
    assert p.delta == pytest.approx(d.mean())
    assert p.stderr == pytest.approx(float(sps.sem(d)))
    cov = np.cov(a, b, ddof=1)[0, 1]
    via_cov = math.sqrt(summarize(a).stderr ** 2 + summarize(b).stderr ** 2 - 2 * cov / len(a))
    assert p.stderr == pytest.approx(via_cov)
    assert p.p_value == pytest.approx(2 * sps.norm.sf(abs(p.delta / p.stderr)))
    assert (p.wins, p.losses, p.ties) == (4, 0, 6)
    assert p.mcnemar_p == pytest.approx(sps.binomtest(4, 4, 0.5).pvalue)
    assert p.mde == pytest.approx(2.80 * p.stderr, rel=1e-3)


def test_verdicts():
    assert paired_compare([1] * 50 + [0] * 50, [0] * 100).verdict == "improved"
    assert paired_compare([0] * 100, [1] * 50 + [0] * 50).verdict == "regressed"
    assert paired_compare([1, 0, 1, 0], [0, 1, 1, 0]).verdict == "within noise"


def test_macro_average_is_mean_of_cluster_means_with_weighted_se():
    from engine.stats import summarize_macro

    scores = [1, 1, 1, 0, 0, 1]
    clusters = ["a", "a", "a", "b", "b", "c"]
    s = summarize_macro(scores, clusters)
    assert s.value == pytest.approx((1 + 0 + 1) / 3)
    w = np.array([1 / 9] * 3 + [1 / 6] * 2 + [1 / 3])
    m = (w * scores).sum()
    assert s.stderr == pytest.approx(math.sqrt(6 / 5 * ((w * (np.array(scores) - m)) ** 2).sum()))
    # cluster sums of weighted residuals are (mean_c - m)/k
    assert s.clustered_stderr == pytest.approx(math.sqrt(((1 - m) ** 2 + (0 - m) ** 2 + (1 - m) ** 2)) / 3)
    # equal cluster sizes and one item each: reduces to the plain SE
    plain = summarize_macro([1, 0, 1, 1], ["a", "b", "c", "d"])
    assert plain.value == pytest.approx(0.75) and plain.stderr == pytest.approx(summarize([1, 0, 1, 1]).stderr)
