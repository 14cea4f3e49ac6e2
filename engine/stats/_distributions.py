"""Student-t probabilities and quantiles without scipy (docs/architecture.md, "Statistics").

`import scipy.special` costs seconds on a loaded machine (about 2.4 s measured here, scipy.stats
more), paid before the first request of every run, so the few t values the intervals need are
computed here: the regularized incomplete beta function by its continued fraction (modified
Lentz's method, Press et al., "Numerical Recipes", 3rd ed., §6.4), the t tail from it
(Abramowitz & Stegun 26.7.1), and quantiles by bisection on that tail. Accurate to ~1e-12;
tests/test_stats_small_sample.py checks them against scipy.
"""

from __future__ import annotations

import math
from statistics import NormalDist

_EPS = 1e-15
_TINY = 1e-300
_MAX_TERMS = 500

# The standard library's normal quantiles (scipy's agree to 1e-15): importing scipy.stats costs
# about a second before the first request of every run.
Z_95 = NormalDist().inv_cdf(0.975)  # 1.959964
Z_POWER_80 = NormalDist().inv_cdf(0.80)  # 0.841621


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes `betacf`), valid for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (the Beta(a, b) CDF at x)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (df = inf: the normal)."""
    if math.isnan(t):
        return math.nan
    if math.isinf(df):
        return 1.0 - NormalDist().cdf(t)
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value of a t statistic: P(|T| ≥ |t|)."""
    return min(1.0, 2.0 * t_sf(abs(t), df))


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (df = inf: the normal quantile)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    target = 1.0 - p  # the upper tail the quantile leaves
    x = NormalDist().inv_cdf(p)  # start at the normal quantile; Newton steps on the tail
    lo, hi = 0.0, math.inf  # a bracket kept so that a wild step falls back to bisection
    for _ in range(100):
        excess = t_sf(x, df) - target
        if excess > 0:
            lo = x
        else:
            hi = x
        step = excess / t_pdf(x, df)
        new = x + step
        if not lo < new < hi:
            new = 0.5 * (lo + hi) if math.isfinite(hi) else 2.0 * x + 1.0
        if abs(new - x) <= 1e-13 * max(1.0, abs(new)):
            return new
        x = new
    return x


def t_pdf(t: float, df: float) -> float:
    """Density of Student's t."""
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))
