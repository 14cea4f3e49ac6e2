"""Intervals correct at small n: Wilson and Tango for 0/1 scores, CR1 clustered SEs with t quantiles.

docs/architecture.md, "Statistics", gives every formula with its source. In short:
- the SE: plain (Miller 2024) or, when clusters are given and there are at least MIN_CLUSTERS,
  cluster-robust CR1 (the G/(G−1) small-cluster factor; (n−1)/(n−k) is 1 for a mean) with
  t quantiles on G−1 degrees of freedom; fewer clusters fall back to the plain SE with a note;
- 0/1 scores: the Wilson score interval; 0/1 paired differences: Tango's score interval, whose test
  at Δ = 0 is McNemar's asymptotic test (reported as the p-value, so the interval excludes 0 exactly
  when p < α); clustered, both use the effective sample size n/deff and the t_{G−1} quantile;
- other scores: mean ± q·SE (q from t_{n−1}, or t_{G−1} clustered), clipped to [0, 1] when every
  score lies there (the true mean does too, so clipping never lowers coverage);
- MDE = (q_{1−α/2} + q_{power})·SE (times √2 for a score against an independent run), from the
  same distribution as the interval.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from engine.stats._distributions import t_quantile, t_two_sided_p
from engine.stats.proportions import (
    exact_mcnemar,
    mcnemar_asymptotic_statistic,
    tango_paired_interval,
    wilson_interval,
)

# Below this many clusters the CR1 variance has too few degrees of freedom to be trusted
# (Cameron & Miller 2015, "A Practitioner's Guide to Cluster-Robust Inference", §VI: CR1 with
# t_{G−1} still over-rejects with few clusters); the plain SE is used and the result says so.
MIN_CLUSTERS = 5


def usable_clusters(clusters: Sequence[Hashable | None] | None) -> list[Hashable] | None:
    """The clusters a summary uses: None when the task declares none (None, or a question without a
    cluster) or when no cluster repeats (singletons: CR1 is then exactly the plain SE, and the plain
    SE keeps its own quantile)."""
    if clusters is None or any(c is None for c in clusters) or len(set(clusters)) == len(clusters):
        return None
    return list(clusters)


def few_clusters_note(n_clusters: int) -> str:
    """Why a clustered SE was not used."""
    return (f"only {n_clusters} cluster{'' if n_clusters == 1 else 's'} (fewer than {MIN_CLUSTERS}): the clustered SE "
            "is unreliable, so the "
            "plain SE is used; it ignores correlation within clusters and may be too small")


def quantiles(df: float, level: float = 0.95, power: float = 0.80) -> tuple[float, float]:
    """(q_{1−α/2}, q_{power}) of t_df (df = inf: the normal): the interval's and the MDE's quantiles."""
    return t_quantile(1 - (1 - level) / 2, df), t_quantile(power, df)


class ClusteredSE(BaseModel):
    """The cluster-robust SE of a (weighted) mean."""

    model_config = ConfigDict(frozen=True)

    stderr: float  # CR1: sqrt( G/(G−1) · Σ_g (Σ_{i∈g} w_i (s_i − m))² )
    uncorrected_stderr: float  # the same without G/(G−1) (Miller 2024's formula, CR0)
    n_clusters: int
    df: int  # G − 1, for the t quantiles


class _SE(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: float
    stderr: float  # the SE the interval uses
    plain_stderr: float
    df: float  # of the t quantile; inf for the normal
    n_clusters: int | None
    clustered: bool
    note: str | None


class ScoreInterval(BaseModel):
    """A score with a small-sample-correct interval and the MDE from the same SE and quantile."""

    model_config = ConfigDict(frozen=True)

    value: float
    n: int
    stderr: float  # the SE the interval and MDE use (CR1 when clustered)
    plain_stderr: float
    ci_low: float
    ci_high: float
    level: float
    method: Literal["wilson", "wilson-clustered", "t", "t-clustered", "none"]
    df: float  # degrees of freedom of the quantile; inf = normal
    quantile: float  # q_{1−α/2}
    mde: float  # (q_{1−α/2} + q_{power}) · √2 · SE: against an equally noisy independent run
    n_clusters: int | None = None
    clustered: bool = False
    note: str | None = None


class PairedDelta(BaseModel):
    """A − B on n aligned questions: the means, the difference, its SE and interval (the fields every
    paired figure shares: the interval, the report's `stats` block, a companion metric's line)."""

    model_config = ConfigDict(frozen=True)

    n: int
    mean_a: float
    mean_b: float
    delta: float
    stderr: float
    ci_low: float
    ci_high: float


class PairedInterval(PairedDelta):
    """A − B on aligned questions, with an interval inside [−1, 1] for 0/1 scores."""

    plain_stderr: float
    level: float
    method: Literal["tango", "tango-clustered", "t", "t-clustered", "none"]
    df: float
    quantile: float
    p_value: float  # the test the interval inverts: 0 ∉ [ci_low, ci_high] exactly when p_value < 1 − level
    test: Literal["mcnemar", "mcnemar-clustered", "t", "none"]
    mcnemar_exact_p: float | None = None  # exact conditional McNemar, 0/1 scores without clusters
    mde: float  # (q_{1−α/2} + q_{power}) · SE_Δ
    wins: int
    losses: int
    ties: int
    n_clusters: int | None = None
    clustered: bool = False
    note: str | None = None


def _weights(clusters: Sequence[Hashable] | None, n: int, macro: bool) -> np.ndarray:
    """w_i: 1/n, or for a macro average 1/(k·n_c(i)) (the mean of cluster means)."""
    if not macro:
        return np.full(n, 1.0 / n)
    if clusters is None:
        raise ValueError("a macro average needs clusters")
    sizes: dict[Hashable, int] = {}
    for c in clusters:
        sizes[c] = sizes.get(c, 0) + 1
    return np.array([1.0 / (len(sizes) * sizes[c]) for c in clusters])


def _mean(values: np.ndarray, clusters: Sequence[Hashable] | None, macro: bool) -> float:
    """The score as a plain mean (or the mean of cluster means), never Σ w_i s_i: with w_i = 1/n that sum
    rounds (ten 1s give 1.0000000000000002), and a score of all 1s must read 1.0."""
    if not macro:
        return float(values.mean())
    groups: dict[Hashable, list[float]] = {}
    for c, v in zip(clusters or (), values, strict=True):
        groups.setdefault(c, []).append(float(v))
    return float(np.mean([np.mean(g) for g in groups.values()]))


def cr1_clustered_se(values: Sequence[float] | np.ndarray, clusters: Sequence[Hashable],
                     weights: Sequence[float] | np.ndarray | None = None) -> ClusteredSE:
    """CR1 cluster-robust SE of the weighted mean Σ w_i s_i (weights sum to 1; default 1/n).

    statsmodels' OLS/WLS `cov_type="cluster"` on an intercept gives the same number: its
    (n−1)/(n−k) factor is 1 when k = 1, leaving G/(G−1).
    """
    s = np.asarray(values, dtype=float)
    if len(clusters) != s.size:
        raise ValueError(f"one cluster per score: {len(clusters)} clusters for {s.size} scores")
    w = np.full(s.size, 1.0 / s.size) if weights is None else np.asarray(weights, dtype=float)
    resid = w * (s - float((w * s).sum()))
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(c, len(index)) for c in clusters], dtype=np.int64)
    g = len(index)
    sums = np.bincount(codes, weights=resid, minlength=g)
    raw = float(math.sqrt((sums**2).sum()))
    factor = g / (g - 1) if g > 1 else math.nan
    return ClusteredSE(stderr=raw * math.sqrt(factor), uncorrected_stderr=raw, n_clusters=g, df=g - 1)


def _standard_error(values: np.ndarray, clusters: Sequence[Hashable] | None, macro: bool,
                    df_plain: float) -> _SE:
    n = values.size
    w = _weights(clusters, n, macro)
    value = _mean(values, clusters, macro)
    # plain (sandwich) SE of a weighted mean, sqrt(n/(n−1) Σ w_i² (s_i − m)²); = Miller's SE for w = 1/n
    plain = float(math.sqrt(n / (n - 1) * ((w * (values - value)) ** 2).sum())) if n > 1 else math.nan
    if clusters is None:
        return _SE(value=value, stderr=plain, plain_stderr=plain, df=df_plain, n_clusters=None, clustered=False,
                   note=None)
    c = cr1_clustered_se(values, clusters, w)
    if c.n_clusters < MIN_CLUSTERS:
        note = few_clusters_note(c.n_clusters)
        return _SE(value=value, stderr=plain, plain_stderr=plain, df=df_plain, n_clusters=c.n_clusters,
                   clustered=False, note=note)
    return _SE(value=value, stderr=c.stderr, plain_stderr=plain, df=float(c.df), n_clusters=c.n_clusters,
               clustered=True, note=None)


def _is_binary(*arrays: np.ndarray) -> bool:
    return all(bool(np.isin(a, (0.0, 1.0)).all()) for a in arrays)


def _effective_n(n: int, variance_per_item: float, se: _SE, macro: bool) -> float:
    """n / deff, deff = SE² / (σ²/n) (Kish's design effect), capped at n (deff < 1 is not credited)."""
    if not (se.clustered or macro) or variance_per_item <= 0 or not se.stderr > 0:
        return float(n)
    return min(float(n), variance_per_item / se.stderr**2)


def score_interval(scores: Sequence[float] | np.ndarray, clusters: Sequence[Hashable] | None = None, *,
                   macro: bool = False, level: float = 0.95, power: float = 0.80) -> ScoreInterval:
    """The score, its SE and a (1−α) interval that is right at small n (docs/architecture.md, "Statistics")."""
    values = np.asarray(scores, dtype=float)
    n = int(values.size)
    if n < 2:
        nan = math.nan
        value = float(values.mean()) if n else nan
        return ScoreInterval(value=value, n=n, stderr=nan, plain_stderr=nan, ci_low=nan, ci_high=nan, level=level,
                             method="none", df=nan, quantile=nan, mde=nan, note="fewer than 2 scores: no interval")
    binary = _is_binary(values)
    se = _standard_error(values, clusters, macro, df_plain=math.inf if binary else n - 1.0)
    q, q_power = quantiles(se.df, level, power)
    if binary:  # Wilson on the effective sample size: inside [0, 1] even at p = 0 or 1
        n_eff = _effective_n(n, se.value * (1 - se.value), se, macro)
        low, high = wilson_interval(se.value, n_eff, q)
        method: Literal["wilson", "wilson-clustered", "t", "t-clustered"] = (
            "wilson-clustered" if se.clustered else "wilson")
    else:
        low, high = se.value - q * se.stderr, se.value + q * se.stderr
        if values.min() >= 0 and values.max() <= 1:
            low, high = max(low, 0.0), min(high, 1.0)
        method = "t-clustered" if se.clustered else "t"
    mde_se, note = se.stderr, se.note
    if not se.stderr > 0:  # every score the same: a sample SE of 0 would claim any effect is detectable
        if binary:
            centre = (low + high) / 2.0  # the Wilson centre, (x + q²/2) / (n + q²)
            mde_se = math.sqrt(centre * (1.0 - centre) / _effective_n(n, 0.0, se, macro))
            note = _join(note, "every score is the same: the MDE uses the Wilson centre's variance (the sample SE is 0)")
        else:
            mde_se = math.nan
            note = _join(note, "every score is the same: no MDE can be estimated (the sample SE is 0)")
    return ScoreInterval(value=se.value, n=n, stderr=se.stderr, plain_stderr=se.plain_stderr, ci_low=low,
                         ci_high=high, level=level, method=method, df=se.df, quantile=q,
                         mde=(q + q_power) * math.sqrt(2.0) * mde_se, n_clusters=se.n_clusters,
                         clustered=se.clustered, note=note)


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second


def paired_interval(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                    clusters: Sequence[Hashable] | None = None, *, macro: bool = False, level: float = 0.95,
                    power: float = 0.80) -> PairedInterval:
    """Δ = mean(a − b) with an interval right at small n and a test (docs/architecture.md, "Statistics")."""
    sa, sb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if sa.shape != sb.shape:
        raise ValueError(f"paired scores must align: {sa.shape} vs {sb.shape}")
    n = int(sa.size)
    d = sa - sb
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    ties = n - wins - losses
    if n < 2:
        nan = math.nan
        return PairedInterval(n=n, mean_a=float(sa.mean()) if n else nan, mean_b=float(sb.mean()) if n else nan,
                              delta=float(d.mean()) if n else nan, stderr=nan, plain_stderr=nan, ci_low=nan,
                              ci_high=nan, level=level, method="none", df=nan, quantile=nan, p_value=nan, test="none",
                              mde=nan, wins=wins, losses=losses, ties=ties, note="fewer than 2 pairs: no interval")
    binary = _is_binary(sa, sb)
    se = _standard_error(d, clusters, macro, df_plain=math.inf if binary else n - 1.0)
    q, q_power = quantiles(se.df, level, power)
    w = _weights(clusters, n, macro)
    delta = se.value
    test: Literal["mcnemar", "mcnemar-clustered", "t"]
    exact_p = None
    if binary:  # effective counts b' = n'·p10, c' = n'·p01 (the weighted cells for a macro average)
        p10, p01 = float((w * (d > 0)).sum()), float((w * (d < 0)).sum())
        n_eff = _effective_n(n, p10 + p01 - delta**2, se, macro)
        low, high = tango_paired_interval(n_eff * p10, n_eff * p01, n_eff, q)
        method: Literal["tango", "tango-clustered", "t", "t-clustered"] = (
            "tango-clustered" if se.clustered else "tango")
        p_value = t_two_sided_p(mcnemar_asymptotic_statistic(n_eff * p10, n_eff * p01), se.df)
        test = "mcnemar-clustered" if se.clustered else "mcnemar"
        if not (se.clustered or macro):
            exact_p = exact_mcnemar(wins, wins + losses) if wins + losses else 1.0
    else:
        low, high = delta - q * se.stderr, delta + q * se.stderr
        if min(sa.min(), sb.min()) >= 0 and max(sa.max(), sb.max()) <= 1:  # differences of [0, 1] scores
            low, high = max(low, -1.0), min(high, 1.0)
        method = "t-clustered" if se.clustered else "t"
        p_value, test = _t_test(delta, se.stderr, se.df), "t"
    mde_se, note = se.stderr, se.note
    if not se.stderr > 0:  # every difference the same (all ties): an MDE of 0 would claim any effect is detectable
        if binary:
            mde_se = (high - low) / (2.0 * q)  # the SE the Tango interval implies (±q²/(n + q²) with no discordance)
            note = _join(note, "every difference is the same: the MDE uses the SE the interval implies (the sample SE is 0)")
        else:
            mde_se = math.nan
            note = _join(note, "every difference is the same: no MDE can be estimated (the sample SE is 0)")
    return PairedInterval(n=n, mean_a=_mean(sa, clusters, macro), mean_b=_mean(sb, clusters, macro), delta=delta,
                          stderr=se.stderr, plain_stderr=se.plain_stderr, ci_low=low, ci_high=high, level=level,
                          method=method, df=se.df, quantile=q, p_value=p_value, test=test, mcnemar_exact_p=exact_p,
                          mde=(q + q_power) * mde_se, wins=wins, losses=losses, ties=ties, n_clusters=se.n_clusters,
                          clustered=se.clustered, note=note)


def _t_test(delta: float, stderr: float, df: float) -> float:
    if stderr > 0:
        return t_two_sided_p(delta / stderr, df)
    return 1.0 if delta == 0 else 0.0  # identical differences everywhere: no noise at all
