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
    # 0/1 scores: Wilson's interval, (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n), inside [0, 1]
    z, p, n = 1.959964, 0.75, 4
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    assert (s.ci_low, s.ci_high) == pytest.approx((centre - half, centre + half), abs=1e-6)
    assert s.ci_method == "wilson" and s.df is None and s.note is None
    assert s.mde == pytest.approx((1.959964 + 0.841621) * math.sqrt(2) * 0.25, abs=1e-6)
    assert s.mde / s.stderr == pytest.approx(3.96, abs=0.01)
    assert s.n == 4 and s.clustered_stderr is None


def test_clustered_se_by_hand():
    # 5 clusters of 2: a [1, 1], b [0, 0], c [1, 0], d [1, 1], e [0, 1]; mean 0.6
    # cluster residual sums: +0.8, −1.2, −0.2, +0.8, −0.2 → Σ² = 0.64 + 1.44 + 0.04 + 0.64 + 0.04 = 2.8
    # CR0 = sqrt(2.8)/10 (Miller 2024); CR1 = CR0·sqrt(G/(G−1)) = sqrt(2.8·5/4)/10
    s = summarize([1, 1, 0, 0, 1, 0, 1, 1, 0, 1], clusters=list("aabbccddee"))
    assert s.clustered_stderr == pytest.approx(math.sqrt(2.8 * 5 / 4) / 10)
    assert s.n_clusters == 5 and s.df == 4 and s.ci_method == "wilson-clustered" and s.note is None
    # the MDE uses the clustered SE and t quantiles on G − 1 = 4 df: t_{0.975,4} = 2.776445, t_{0.80,4} = 0.940965
    assert s.mde == pytest.approx((2.776445 + 0.940965) * math.sqrt(2) * s.clustered_stderr, abs=1e-5)
    assert s.reported_stderr == s.clustered_stderr
    # 2 clusters are too few for a clustered SE: the plain SE, with a note
    few = summarize([1, 1, 0, 0], clusters=["a", "a", "b", "b"])
    assert few.clustered_stderr is None and few.n_clusters == 2 and few.note and "only 2 clusters" in few.note
    assert few.reported_stderr == few.stderr == pytest.approx(math.sqrt(1 / 12))
    # singleton clusters are no clustering at all: the plain SE and its own interval
    t = summarize([1, 0, 1], clusters=["a", "b", "c"])
    assert t.clustered_stderr is None and t.n_clusters is None and t.stderr == pytest.approx(math.sqrt(1 / 9))


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
    assert p.z == pytest.approx(p.delta / p.stderr)
    # p: McNemar's asymptotic test, (b − c)/sqrt(b + c) = 4/2 on the normal
    assert p.p_value == pytest.approx(2 * sps.norm.sf(2.0))
    assert (p.wins, p.losses, p.ties) == (4, 0, 6)
    assert p.mcnemar_p == pytest.approx(sps.binomtest(4, 4, 0.5).pvalue)
    assert p.mde == pytest.approx(2.80 * p.stderr, rel=1e-3)


def test_verdicts():
    assert paired_compare([1] * 50 + [0] * 50, [0] * 100).verdict == "improved"
    assert paired_compare([0] * 100, [1] * 50 + [0] * 50).verdict == "regressed"
    assert paired_compare([1, 0, 1, 0], [0, 1, 1, 0]).verdict == "within noise"


def test_macro_average_is_mean_of_cluster_means_with_weighted_se():
    scores = [1, 1, 1, 0, 0, 1]
    clusters = ["a", "a", "a", "b", "b", "c"]
    s = summarize(scores, clusters, macro=True)
    assert s.value == pytest.approx((1 + 0 + 1) / 3)
    w = np.array([1 / 9] * 3 + [1 / 6] * 2 + [1 / 3])
    m = (w * scores).sum()
    assert s.stderr == pytest.approx(math.sqrt(6 / 5 * ((w * (np.array(scores) - m)) ** 2).sum()))
    assert s.clustered_stderr is None and s.note  # 3 subjects: too few clusters, the plain SE
    # 5 subjects: cluster sums of weighted residuals are (mean_c − m)/k; CR1 multiplies by G/(G−1)
    scores = [1, 1, 1, 0, 0, 1, 0, 1, 1, 1]
    clusters = ["a", "a", "a", "b", "b", "c", "d", "d", "e", "e"]
    s = summarize(scores, clusters, macro=True)
    means = np.array([1, 0, 1, 0.5, 1])
    m = means.mean()
    assert s.value == pytest.approx(m)
    assert s.clustered_stderr == pytest.approx(math.sqrt(((means - m) ** 2).sum() * 5 / 4) / 5)
    # one question per subject: reduces to the plain mean and SE
    plain = summarize([1, 0, 1, 1], ["a", "b", "c", "d"], macro=True)
    assert plain.value == pytest.approx(0.75) and plain.stderr == pytest.approx(summarize([1, 0, 1, 1]).stderr)
