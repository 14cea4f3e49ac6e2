"""Mean, standard error, clustered standard error, 95% CI and minimum detectable effect."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from statistics import NormalDist

import numpy as np

from engine.types import ScoreSummary

# The standard library's normal quantiles (scipy's agree to 1e-15): importing scipy.stats costs
# about a second before the first request of every run.
Z_95 = NormalDist().inv_cdf(0.975)  # 1.959964
Z_POWER_80 = NormalDist().inv_cdf(0.80)  # 0.841621
# MDE against an equally noisy independent run: (z_0.975 + z_0.80) * sqrt(2) * SE ≈ 3.96 SE.
MDE_FACTOR = (Z_95 + Z_POWER_80) * math.sqrt(2.0)


def _interval(mean: float, n: int, stderr: float, clustered: float | None = None,
              n_clusters: int | None = None) -> ScoreSummary:
    """The CI and MDE use the clustered SE when there is one."""
    se = clustered if clustered is not None else stderr
    return ScoreSummary(value=mean, n=n, stderr=stderr, ci_low=mean - Z_95 * se, ci_high=mean + Z_95 * se,
                        mde=MDE_FACTOR * se, clustered_stderr=clustered, n_clusters=n_clusters)


def _clustered_se(values: np.ndarray, clusters: Sequence[Hashable]) -> tuple[float, int]:
    # SE_c^2 = (1/n^2) * sum_c ( sum_{i in c} (s_i - mean) )^2
    n = len(values)
    resid = values - values.mean()
    sums: dict[Hashable, float] = {}
    for r, c in zip(resid, clusters, strict=True):
        sums[c] = sums.get(c, 0.0) + float(r)
    total = sum(s * s for s in sums.values())
    return math.sqrt(total) / n, len(sums)


def summarize(
    scores: Sequence[float] | np.ndarray, clusters: Sequence[Hashable] | None = None
) -> ScoreSummary:
    """Summarize per-question scores (each already averaged over its samples)."""
    values = np.asarray(scores, dtype=float)
    n = int(values.size)
    if n == 0:
        nan = float("nan")
        return ScoreSummary(value=nan, n=0, stderr=nan, ci_low=nan, ci_high=nan, mde=nan)
    mean = float(values.mean())
    # SE = sqrt( sum (s_i - mean)^2 / (n (n - 1)) )
    stderr = float(math.sqrt(((values - mean) ** 2).sum() / (n * (n - 1)))) if n > 1 else float("nan")
    clustered, n_clusters = (None, None)
    if clusters is not None:
        clustered, n_clusters = _clustered_se(values, clusters)
    return _interval(mean, n, stderr, clustered, n_clusters)


def summarize_macro(scores: Sequence[float] | np.ndarray, clusters: Sequence[Hashable]) -> ScoreSummary:
    """Macro average: the mean of cluster means (MMLU over its 57 subjects).

    It is a weighted mean m = Σ w_i s_i with w_i = 1/(k·n_c(i)). SE (sandwich estimator, exact
    for equal weights): sqrt( n/(n−1) · Σ w_i² (s_i − m)² ), defined even for singleton clusters.
    Clustered SE: sqrt( Σ_c (Σ_{i∈c} w_i (s_i − m))² ), the §7 formula with these weights.
    """
    values = np.asarray(scores, dtype=float)
    n = int(values.size)
    if n == 0:
        return summarize([])
    sizes: dict[Hashable, int] = {}
    for c in clusters:
        sizes[c] = sizes.get(c, 0) + 1
    k = len(sizes)
    w = np.array([1.0 / (k * sizes[c]) for c in clusters])
    mean = float((w * values).sum())
    resid = w * (values - mean)
    stderr = float(math.sqrt(n / (n - 1) * (resid**2).sum())) if n > 1 else float("nan")
    sums: dict[Hashable, float] = {}
    for r, c in zip(resid, clusters, strict=True):
        sums[c] = sums.get(c, 0.0) + float(r)
    clustered = math.sqrt(sum(v * v for v in sums.values()))
    return _interval(mean, n, stderr, clustered if k > 1 else None, k)


def summarize_means(parts: Sequence[ScoreSummary]) -> ScoreSummary:
    """Unweighted mean of independent task scores (suite aggregate, macro average).

    SE of a mean of k independent estimates: sqrt(sum SE_j^2) / k.
    """
    if not parts:
        return summarize([])
    k = len(parts)
    mean = sum(p.value for p in parts) / k
    se = math.sqrt(sum(p.reported_stderr**2 for p in parts)) / k
    return _interval(mean, sum(p.n for p in parts), se)
