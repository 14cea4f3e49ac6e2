"""Two small helpers the rest of the engine calls instead of re-deriving formulas
(docs/architecture.md, "Statistics"):
- `summarize_scores`: a run's recorded ScoreSummary (Miller 2024's SE, clustered SE and MDE as
  before) whose 95% CI, for 0/1 scores, is the Wilson interval of `score_interval`, so it never
  leaves [0, 1] (a 2-question run printed [-0.19, 1.19] with mean ± 1.96·SE);
- `combined_stderr`: the SE of a weighted sum of independent estimates (a suite's Δ);
- `normal_test`: z, two-sided p, 95% CI and paired MDE of an estimate with a known SE (a suite Δ
  from independent task Δs), on the normal distribution.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel, ConfigDict

from engine.stats._paired import PAIRED_MDE_FACTOR
from engine.stats._summary import Z_95, summarize, summarize_macro
from engine.stats.intervals import score_interval
from engine.types import ScoreSummary


def summarize_scores(scores: Sequence[float] | np.ndarray, clusters: Sequence[Hashable] | None = None, *,
                     macro: bool = False) -> ScoreSummary:
    """`summarize` (or `summarize_macro`) with the Wilson interval in place of mean ± 1.96·SE for 0/1 scores."""
    values = np.asarray(scores, dtype=float)
    summary = summarize_macro(values, clusters) if macro and clusters is not None else summarize(values, clusters)
    if values.size < 2 or not bool(np.isin(values, (0.0, 1.0)).all()):
        return summary
    interval = score_interval(values, clusters, macro=macro and clusters is not None)
    return summary.model_copy(update={"ci_low": interval.ci_low, "ci_high": interval.ci_high})


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
    if stderr > 0:
        z = delta / stderr
        p = 2 * NormalDist().cdf(-abs(z))
    else:
        z = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        p = 1.0 if delta == 0 else 0.0
    return NormalTest(z=z, p_value=p, ci_low=delta - Z_95 * stderr, ci_high=delta + Z_95 * stderr,
                      mde=PAIRED_MDE_FACTOR * stderr)
