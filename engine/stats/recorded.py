"""Tests of estimates with a known SE (docs/architecture.md, "Statistics"), which the rest of the
engine calls instead of re-deriving formulas:
- `combined_stderr`: the SE of a weighted sum of independent estimates (a suite's Δ);
- `normal_test`: z, two-sided p, 95% CI and paired MDE of an estimate with a known SE (a suite Δ
  from independent task Δs), on the normal distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from pydantic import BaseModel, ConfigDict

from engine.stats._distributions import Z_95
from engine.stats._paired import PAIRED_MDE_FACTOR, wald_z


def combined_stderr(stderrs: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """SE of Σ w_j·x_j over independent estimates x_j: sqrt(Σ (w_j·SE_j)²); w_j = 1/k by default
    (a mean of k task Δs). Weights (1, 1) give the SE of a difference of two independent scores."""
    w = [1.0 / len(stderrs)] * len(stderrs) if weights is None else list(weights)
    return math.sqrt(sum((wj * se) ** 2 for wj, se in zip(w, stderrs, strict=True)))


class NormalTest(BaseModel):
    model_config = ConfigDict(frozen=True)

    z: float
    p_value: float
    ci_low: float
    ci_high: float
    mde: float  # (z_0.975 + z_0.80)·SE: a paired (or already differenced) estimate


def normal_test(delta: float, stderr: float) -> NormalTest:
    """Wald test of delta = 0 with SE `stderr`; SE 0 means no noise (p 1 at delta 0, else 0)."""
    if math.isnan(stderr) or math.isnan(delta):
        nan = math.nan
        return NormalTest(z=nan, p_value=nan, ci_low=nan, ci_high=nan, mde=nan)
    z = wald_z(delta, stderr)
    p = 2 * NormalDist().cdf(-abs(z)) if stderr > 0 else (1.0 if delta == 0 else 0.0)
    return NormalTest(z=z, p_value=p, ci_low=delta - Z_95 * stderr, ci_high=delta + Z_95 * stderr,
                      mde=PAIRED_MDE_FACTOR * stderr)
