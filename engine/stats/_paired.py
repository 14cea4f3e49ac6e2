"""Paired comparison of two runs on the same questions: the report's `stats` block and its verdict."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from engine.stats._distributions import Z_95, Z_POWER_80
from engine.stats.intervals import PairedDelta, PairedInterval, paired_interval

PAIRED_MDE_FACTOR = Z_95 + Z_POWER_80  # ≈ 2.80: the paired MDE on the normal


def verdict_of(delta: float, mde: float, p_value: float, n: int) -> str:
    """Plain verdict: a change counts only when it is significant and at least the paired MDE."""
    if n < 2 or math.isnan(p_value) or math.isnan(mde):
        return "not enough data"
    if abs(delta) < mde or p_value >= 0.05:
        return "within noise"
    return "improved" if delta > 0 else "regressed"


class PairedComparison(PairedDelta):
    """A − B on aligned questions."""

    z: float  # Δ/SE
    p_value: float  # the interval's own test (McNemar asymptotic for 0/1 scores, t otherwise)
    mde: float
    wins: int
    losses: int
    ties: int
    mcnemar_p: float | None = None  # exact McNemar, 0/1 scores without clusters

    @property
    def verdict(self) -> str:
        return verdict_of(self.delta, self.mde, self.p_value, self.n)


def wald_z(delta: float, stderr: float) -> float:
    """Δ/SE; an SE of 0 means no noise at all (0 at Δ = 0, else ±inf); NaN when either is unknown."""
    if math.isnan(delta) or math.isnan(stderr):
        return math.nan
    if stderr > 0:
        return delta / stderr
    return 0.0 if delta == 0 else math.copysign(math.inf, delta)


def comparison_of(interval: PairedInterval) -> PairedComparison:
    """The `stats` block of a paired interval (its SE, CI, test, MDE and counts; z = Δ/SE)."""
    return PairedComparison(
        n=interval.n, mean_a=interval.mean_a, mean_b=interval.mean_b, delta=interval.delta, stderr=interval.stderr,
        ci_low=interval.ci_low, ci_high=interval.ci_high, z=wald_z(interval.delta, interval.stderr),
        p_value=interval.p_value, mde=interval.mde, wins=interval.wins, losses=interval.losses, ties=interval.ties,
        mcnemar_p=interval.mcnemar_exact_p)


def paired_compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                   clusters: Sequence[Hashable] | None = None, *, macro: bool = False) -> PairedComparison:
    """Paired statistics of run A against run B (`paired_interval`; docs/architecture.md, "Statistics")."""
    return comparison_of(paired_interval(a, b, clusters, macro=macro))
