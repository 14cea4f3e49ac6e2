"""Score intervals for a proportion and for the difference of two paired proportions.

Pure formulas of counts (real-valued: effective counts are allowed), each inside the parameter
space at every n: Wilson for p ∈ [0, 1]; Tango's score interval for a paired Δ ∈ [−1, 1]
(docs/architecture.md, "Statistics").
"""

from __future__ import annotations

import math


def wilson_interval(p: float, n: float, quantile: float) -> tuple[float, float]:
    """Wilson (1927) score interval for a proportion p observed on n (possibly effective) trials:
    (p + q²/2n ± q·sqrt(p(1−p)/n + q²/4n²)) / (1 + q²/n). Always inside [0, 1]."""
    q2n = quantile * quantile / n
    centre = (p + q2n / 2) / (1 + q2n)
    half = quantile * math.sqrt(max(p * (1 - p) / n + q2n / (4 * n), 0.0)) / (1 + q2n)
    # the interval holds p (rounding could leave 1 − 1e-16 above an observed 100%)
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))


def _tango_score(wins: float, losses: float, n: float, delta0: float) -> float:
    """Tango's score statistic for H0: Δ = δ0, Δ = p10 − p01 (wins = count of A right & B wrong).

    Z = (b − c − nδ0) / sqrt(n(2·p̃01 + δ0(1 − δ0))), where p̃01 is the maximum-likelihood p01 under
    H0, the positive root of 2n·x² + W·x − c·δ0(1 − δ0) = 0 with W = −(b + c) + (2n − b + c)·δ0.
    At δ0 = 0 it is McNemar's (b − c)/sqrt(b + c).
    """
    b, c = wins, losses
    w = -(b + c) + (2 * n - b + c) * delta0
    p01 = (math.sqrt(max(w * w + 8 * n * c * delta0 * (1 - delta0), 0.0)) - w) / (4 * n)
    numerator = b - c - n * delta0
    variance = n * (2 * p01 + delta0 * (1 - delta0))
    if variance <= 0:
        return 0.0 if abs(numerator) < 1e-12 * max(n, 1.0) else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def tango_paired_interval(wins: float, losses: float, n: float, quantile: float) -> tuple[float, float]:
    """Tango (1998, "Equivalence test and confidence interval for the difference in proportions for the
    paired-sample design", Statistics in Medicine 17:891): {δ0 ∈ [−1, 1] : |Z(δ0)| ≤ q}, found by
    bisection (Z falls as δ0 rises). Counts may be effective (scaled) counts. Consistent with McNemar's
    asymptotic test: 0 lies inside exactly when |b − c|/sqrt(b + c) ≤ q."""
    estimate = (wins - losses) / n

    def solve(target: float, lo: float, hi: float) -> float:
        # Z(lo) − target and Z(hi) − target have opposite signs (or the bound itself is the answer)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if _tango_score(wins, losses, n, mid) > target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-13:
                break
        return 0.5 * (lo + hi)

    low = -1.0 if _tango_score(wins, losses, n, -1.0) <= quantile else solve(quantile, -1.0, estimate)
    high = 1.0 if _tango_score(wins, losses, n, 1.0) >= -quantile else solve(-quantile, estimate, 1.0)
    return low, high


def exact_mcnemar(wins: int, discordant: int) -> float:
    """Two-sided exact binomial test of `wins` of `discordant` at p = 0.5 (scipy's `binomtest`
    p-value; symmetric, so twice the smaller tail, capped at 1). Integers: exact for any n."""
    k = min(wins, discordant - wins)
    tail = sum(math.comb(discordant, i) for i in range(k + 1))
    return min(1.0, float(2 * tail / 2**discordant))


def mcnemar_asymptotic_statistic(wins: float, losses: float) -> float:
    """(b − c)/sqrt(b + c), without continuity correction (Fagerland et al. 2013, BMC Medical Research
    Methodology 13:91: closer to the nominal level than the exact conditional test); 0 when b + c = 0."""
    return (wins - losses) / math.sqrt(wins + losses) if wins + losses > 0 else 0.0
