"""Small-sample intervals (engine/stats/intervals.py), each figure recomputed another way:
statsmodels (Wilson, cluster-robust OLS/WLS, McNemar), scipy (t distribution, paired t-test), or a
numerical inversion of the score test with a numerically maximized likelihood (Tango)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from engine.stats import summarize
from engine.stats._distributions import t_quantile, t_two_sided_p
from engine.stats.intervals import MIN_CLUSTERS, cr1_clustered_se, paired_interval, score_interval
from engine.stats.proportions import tango_paired_interval, wilson_interval
from engine.types import ScoreSummary

Z = float(sps.norm.ppf(0.975))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 120, 1000, math.inf])
def test_t_quantiles_and_p_values_match_scipy(df: float) -> None:
    for p in (0.6, 0.8, 0.9, 0.975, 0.995, 0.9999):
        assert t_quantile(p, df) == pytest.approx(float(sps.t.ppf(p, df)), rel=1e-9)
        assert t_quantile(1 - p, df) == pytest.approx(float(sps.t.ppf(1 - p, df)), rel=1e-9)
    for t in (0.0, 0.3, 1.0, 2.5, 7.0, 40.0):
        assert t_two_sided_p(t, df) == pytest.approx(float(2 * sps.t.sf(t, df)), rel=1e-8, abs=1e-14)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37])
def test_wilson_matches_statsmodels_and_stays_in_unit_interval(n: int) -> None:
    for k in range(n + 1):
        ref = proportion_confint(k, n, alpha=0.05, method="wilson")
        low, high = wilson_interval(k / n, n, Z)
        assert (low, high) == pytest.approx(ref, abs=1e-12)
        assert 0.0 <= low <= k / n <= high <= 1.0
        if n > 1:
            s = score_interval([1.0] * k + [0.0] * (n - k))
            assert s.method == "wilson" and (s.ci_low, s.ci_high) == pytest.approx(ref, abs=1e-12)


def test_binary_score_mde_uses_the_plain_se_and_z() -> None:
    s = score_interval([1, 0, 1, 1])
    assert s.stderr == pytest.approx(0.25) and s.df == math.inf
    assert s.mde == pytest.approx((Z + sps.norm.ppf(0.8)) * math.sqrt(2) * 0.25)
    assert s.mde == pytest.approx(summarize([1, 0, 1, 1]).mde)  # same as the existing figure


def _statsmodels_cluster(y: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None):
    model = sm.OLS(y, np.ones(len(y))) if weights is None else sm.WLS(y, np.ones(len(y)), weights=weights)
    return model.fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)


def test_cr1_matches_statsmodels_cluster_robust_ols() -> None:
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(12), rng.integers(1, 9, 12))
    y = rng.normal(size=len(groups)) + rng.normal(size=12)[groups]
    ref = _statsmodels_cluster(y, groups)
    c = cr1_clustered_se(y, list(groups))
    assert c.stderr == pytest.approx(float(ref.bse[0]), rel=1e-10)
    assert c.df == ref.df_resid_inference == 11
    s = score_interval(y, list(groups))  # continuous, outside [0, 1]: mean ± t_{G−1}·SE, unclipped
    assert s.method == "t-clustered" and s.clustered
    assert (s.ci_low, s.ci_high) == pytest.approx(tuple(ref.conf_int()[0]), rel=1e-9)
    q, q_power = sps.t.ppf(0.975, 11), sps.t.ppf(0.8, 11)
    assert s.mde == pytest.approx((q + q_power) * math.sqrt(2) * ref.bse[0], rel=1e-9)
    # CR1 = Miller's clustered SE (CR0) times sqrt(G/(G−1))
    assert c.stderr == pytest.approx(c.uncorrected_stderr * math.sqrt(12 / 11))
    # a run's recorded score carries the same CR1 SE (and the CR0 one is what Miller 2024 writes)
    assert summarize(y, clusters=list(groups)).clustered_stderr == pytest.approx(float(ref.bse[0]), rel=1e-10)


def test_macro_cr1_matches_statsmodels_weighted_least_squares() -> None:
    rng = np.random.default_rng(8)
    groups = np.repeat(np.arange(9), rng.integers(2, 12, 9))
    y = rng.normal(size=len(groups)) + 3
    sizes = np.bincount(groups)
    ref = _statsmodels_cluster(y, groups, weights=1.0 / sizes[groups])
    s = score_interval(y, list(groups), macro=True)
    assert s.value == pytest.approx(np.mean([y[groups == g].mean() for g in range(9)]))
    assert s.value == pytest.approx(float(ref.params[0]))
    assert s.stderr == pytest.approx(float(ref.bse[0]), rel=1e-10)
    assert (s.ci_low, s.ci_high) == pytest.approx(tuple(ref.conf_int()[0]), rel=1e-9)


def test_singleton_clusters_give_the_plain_se() -> None:
    y = np.random.default_rng(3).normal(size=40)
    c = cr1_clustered_se(y, list(range(40)))
    assert c.stderr == pytest.approx(float(sps.sem(y)), rel=1e-12)


def test_too_few_clusters_fall_back_to_the_plain_se_with_a_note() -> None:
    y = np.random.default_rng(4).normal(size=40)
    groups = [i % (MIN_CLUSTERS - 1) for i in range(40)]
    s = score_interval(y, groups)
    assert not s.clustered and s.n_clusters == MIN_CLUSTERS - 1 and s.note and "plain SE" in s.note
    assert s.stderr == pytest.approx(float(sps.sem(y)))
    assert (s.ci_low, s.ci_high) == pytest.approx(tuple(sps.t.interval(0.95, 39, y.mean(), sps.sem(y))))
    assert score_interval(y, [i % MIN_CLUSTERS for i in range(40)]).clustered


def _wilson_by_root_finding(p: float, n: float, q: float) -> tuple[float, float]:
    """{p0 : |p − p0| ≤ q·sqrt(p0(1 − p0)/n)} by bisection on each side: the score test inverted."""
    def excess(p0: float) -> float:
        return abs(p - p0) - q * math.sqrt(p0 * (1 - p0) / n)
    low = 0.0 if p == 0 else optimize.brentq(excess, 1e-300, p)
    high = 1.0 if p == 1 else optimize.brentq(excess, p, 1 - 1e-16)
    return low, high


def test_clustered_binary_score_is_wilson_on_the_effective_sample_size() -> None:
    rng = np.random.default_rng(9)
    groups = np.repeat(np.arange(15), 6)
    y = (rng.random(90) < (0.2 + 0.6 * rng.random(15))[groups]).astype(float)
    s = score_interval(y, list(groups))
    ref = _statsmodels_cluster(y, groups)
    p = y.mean()
    n_eff = min(90.0, p * (1 - p) / float(ref.bse[0]) ** 2)  # n / deff, deff = SE_CR1² / (p(1−p)/n)
    assert s.method == "wilson-clustered" and s.df == 14
    assert (s.ci_low, s.ci_high) == pytest.approx(_wilson_by_root_finding(p, n_eff, sps.t.ppf(0.975, 14)), abs=1e-9)
    for y_edge in (np.zeros(90), np.ones(90)):  # no spread at all: still a real interval inside [0, 1]
        e = score_interval(y_edge, list(groups))
        assert 0.0 <= e.ci_low <= e.value <= e.ci_high <= 1.0 and e.ci_high - e.ci_low > 0.02


def _tango_by_numerical_likelihood(b: float, c: float, n: float, q: float) -> tuple[float, float]:
    """Tango's interval from scratch: restricted MLE of p01 by numerical maximization, score Z(δ0),
    then the set {δ0 : |Z| ≤ q} by root finding. Real (effective) counts are fine."""
    def z(delta0: float) -> float:
        lo, hi = max(0.0, -delta0) + 1e-12, (1 - delta0) / 2 - 1e-12
        def nll(x: float) -> float:
            return -(b * math.log(max(x + delta0, 1e-300)) + c * math.log(max(x, 1e-300))
                     + (n - b - c) * math.log(max(1 - 2 * x - delta0, 1e-300)))
        x = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x
        return (b - c - n * delta0) / math.sqrt(n * (2 * x + delta0 * (1 - delta0)))
    est = (b - c) / n
    low = -1.0 if z(-1 + 1e-9) <= q else optimize.brentq(lambda d: z(d) - q, -1 + 1e-9, est)
    high = 1.0 if z(1 - 1e-9) >= -q else optimize.brentq(lambda d: z(d) + q, est, 1 - 1e-9)
    return low, high


@pytest.mark.parametrize(("b", "c", "n"), [(4, 0, 10), (1, 7, 21), (3, 5, 40), (12, 4, 50), (0, 3, 6)])
def test_tango_matches_a_numerical_inversion_of_the_score_test(b: int, c: int, n: int) -> None:
    assert tango_paired_interval(b, c, n, Z) == pytest.approx(_tango_by_numerical_likelihood(b, c, n, Z), abs=2e-6)


def test_tango_with_no_discordant_pairs() -> None:
    # Z(δ0) = −sqrt(n·δ0/(1 − δ0)) for δ0 > 0, so the limits are ±z²/(n + z²)
    for n in (1, 5, 30):
        assert tango_paired_interval(0, 0, n, Z) == pytest.approx((-Z * Z / (n + Z * Z), Z * Z / (n + Z * Z)))


def test_paired_binary_interval_is_inside_and_agrees_with_mcnemar_for_every_small_table() -> None:
    for n in range(2, 13):
        for b in range(n + 1):
            for c in range(n - b + 1):
                ties_right = (n - b - c) // 2
                a = [1.0] * b + [0.0] * c + [1.0] * ties_right + [0.0] * (n - b - c - ties_right)
                bb = [0.0] * b + [1.0] * c + [1.0] * ties_right + [0.0] * (n - b - c - ties_right)
                r = paired_interval(a, bb)
                assert r.method == "tango" and r.test == "mcnemar"
                assert -1.0 <= r.ci_low <= r.delta <= r.ci_high <= 1.0
                if b + c:
                    ref = mcnemar([[ties_right, b], [c, n - b - c - ties_right]], exact=False, correction=False)
                    assert r.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
                    assert r.mcnemar_exact_p == pytest.approx(float(sps.binomtest(b, b + c).pvalue))
                # the interval is the inverted test: it excludes 0 exactly when p < 0.05
                excludes_zero = r.ci_low > 1e-9 or r.ci_high < -1e-9
                assert excludes_zero == (r.p_value < 0.05 - 1e-9) or abs(r.p_value - 0.05) < 1e-6


def test_paired_continuous_matches_scipy_t_test() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(25), rng.random(25) * 0.8
    r = paired_interval(a, b)
    ref = sps.ttest_rel(a, b)
    se = float(sps.sem(a - b))
    assert r.method == "t" and r.df == 24 and r.stderr == pytest.approx(se)
    assert r.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    assert r.mde == pytest.approx((sps.t.ppf(0.975, 24) + sps.t.ppf(0.8, 24)) * se)


def test_paired_clustered_matches_statsmodels() -> None:
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(10), 4)
    a = np.clip(rng.random(40) + 0.3 * rng.random(10)[groups], 0, 1)
    b = rng.random(40)
    r = paired_interval(a, b, list(groups))
    ref = _statsmodels_cluster(a - b, groups)
    assert r.method == "t-clustered" and r.n_clusters == 10 and r.df == 9
    assert r.stderr == pytest.approx(float(ref.bse[0]), rel=1e-10)
    assert r.p_value == pytest.approx(float(ref.pvalues[0]), rel=1e-8)
    assert (r.ci_low, r.ci_high) == pytest.approx(tuple(ref.conf_int()[0]), rel=1e-9)


@pytest.mark.parametrize("macro", [False, True])
def test_paired_clustered_binary_is_tango_on_effective_counts(macro: bool) -> None:
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(20), rng.integers(2, 9, 20))
    n, k = len(groups), 20
    a = (rng.random(n) < 0.6).astype(float)
    b = np.where(rng.random(k)[groups] < 0.5, a, (rng.random(n) < 0.5).astype(float))
    r = paired_interval(a, b, list(groups), macro=macro)
    w = 1.0 / (k * np.bincount(groups)[groups]) if macro else np.full(n, 1.0 / n)
    se = float(_statsmodels_cluster(a - b, groups, weights=w if macro else None).bse[0])
    p10, p01 = float((w * ((a == 1) & (b == 0))).sum()), float((w * ((a == 0) & (b == 1))).sum())
    n_eff = min(float(n), (p10 + p01 - (p10 - p01) ** 2) / se**2)
    q = float(sps.t.ppf(0.975, k - 1))
    assert r.method == "tango-clustered" and r.test == "mcnemar-clustered" and r.stderr == pytest.approx(se)
    assert r.delta == pytest.approx(p10 - p01) and r.mcnemar_exact_p is None
    assert (r.ci_low, r.ci_high) == pytest.approx(
        _tango_by_numerical_likelihood(n_eff * p10, n_eff * p01, n_eff, q), abs=2e-6)
    z0 = (p10 - p01) * n_eff / math.sqrt((p10 + p01) * n_eff)
    assert r.p_value == pytest.approx(float(2 * sps.t.sf(abs(z0), k - 1)), rel=1e-8)


def test_clustered_intervals_stay_in_range_on_random_data() -> None:
    rng = np.random.default_rng(12)
    for _ in range(300):
        k = int(rng.integers(5, 12))
        groups = list(np.repeat(np.arange(k), rng.integers(1, 6, k)))
        p = rng.random(k)[groups] * rng.random()
        a, b = (rng.random(len(groups)) < p).astype(float), (rng.random(len(groups)) < p).astype(float)
        s = score_interval(a, groups)
        assert 0.0 <= s.ci_low <= s.value <= s.ci_high <= 1.0
        r = paired_interval(a, b, groups, macro=bool(rng.integers(0, 2)))
        assert -1.0 <= r.ci_low <= r.delta + 1e-12 and r.delta - 1e-12 <= r.ci_high <= 1.0


def test_degenerate_inputs_give_no_interval_not_a_number_that_looks_real() -> None:
    for r in (score_interval([]), score_interval([1.0])):
        assert r.method == "none" and math.isnan(r.ci_low) and r.note
    p = paired_interval([1.0], [0.0])
    assert p.method == "none" and math.isnan(p.p_value) and p.wins == 1
    with pytest.raises(ValueError, match="align"):
        paired_interval([1, 0], [1])


def test_a_score_of_all_ones_reads_exactly_one() -> None:
    """Σ (1/n)·1 rounds (ten 1s: 1.0000000000000002); the score is the mean, exact for 0/1 scores."""
    assert score_interval([1.0] * 10).value == 1.0
    assert score_interval([1.0] * 7, clusters=list("aabbccd"), macro=True).value == 1.0
    assert score_interval([0.0, 1.0, 1.0]).value == 2 / 3


def test_equal_scores_never_claim_an_mde_of_zero() -> None:
    """Every score the same: the sample SE is 0, and an MDE of 0 would say any effect is detectable.
    0/1 scores use the Wilson centre's variance, recomputed here from its closed form; others have none."""
    z, z_power = float(sps.norm.ppf(0.975)), float(sps.norm.ppf(0.80))
    for x, n in ((0, 2), (10, 10), (0, 40)):
        r = score_interval([1.0] * x + [0.0] * (n - x))
        centre = (x + z * z / 2) / (n + z * z)
        assert r.stderr == 0.0 and r.note and "Wilson centre" in r.note
        assert math.isclose(r.mde, (z + z_power) * math.sqrt(2 * centre * (1 - centre) / n), rel_tol=1e-9)
    constant = score_interval([0.5, 0.5, 0.5])
    assert math.isnan(constant.mde) and "no MDE" in (constant.note or "")


def test_all_ties_never_claim_a_paired_mde_of_zero() -> None:
    """Two runs that agree on every question: SE_Δ = 0; the MDE comes from the Tango interval's implied
    SE, q/(n + q²) (its half-width q²/(n + q²) over q), recomputed here; the means are exact."""
    z, z_power = float(sps.norm.ppf(0.975)), float(sps.norm.ppf(0.80))
    for n in (2, 10, 50):
        scores = [1.0] * n
        r = paired_interval(scores, scores)
        assert r.mean_a == 1.0 and r.delta == 0.0 and r.stderr == 0.0
        assert math.isclose(r.mde, (z + z_power) * z / (n + z * z), rel_tol=1e-6) and "interval implies" in (r.note or "")
    constant = paired_interval([0.5, 0.7], [0.4, 0.6])
    assert math.isnan(constant.mde) and "no MDE" in (constant.note or "")


def test_a_missing_number_survives_the_record_round_trip() -> None:
    """A score with no MDE (every score the same, not 0/1) is written as null and read back as NaN: a run
    folder holding one must load (compare refused it as 'not a valid run record')."""
    summary = summarize([0.5, 0.5, 0.5])
    assert math.isnan(summary.mde)
    back = ScoreSummary.model_validate_json(summary.model_dump_json())
    assert math.isnan(back.mde) and back.value == 0.5 and back.note == summary.note
