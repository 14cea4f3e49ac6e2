"""A run's reported score: value, SE, 95% CI and MDE (docs/architecture.md, "Statistics").

Every score a run reports (experiment.json, metrics.json, MLflow, the results table) is
`summarize`: the interval of `score_interval` (Wilson for 0/1 scores; CR1 clustered SE with t on
G−1 degrees of freedom when the task declares at least MIN_CLUSTERS clusters, the plain SE with a
note below that), and the MDE from the same SE and quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from engine.stats._distributions import Z_95, Z_POWER_80
from engine.stats.intervals import ScoreInterval, score_interval, usable_clusters
from engine.types import ScoreSummary

# MDE against an equally noisy independent run, on the normal: (z_0.975 + z_0.80)·√2·SE ≈ 3.96 SE.
MDE_FACTOR = (Z_95 + Z_POWER_80) * math.sqrt(2.0)


def summary_of(interval: ScoreInterval) -> ScoreSummary:
    """The record's ScoreSummary of a score interval: `stderr` is the plain SE, `clustered_stderr`
    the CR1 SE when the interval used it (None when it fell back to the plain SE, `note` says why)."""
    return ScoreSummary(
        value=interval.value, n=interval.n, stderr=interval.plain_stderr, ci_low=interval.ci_low,
        ci_high=interval.ci_high, mde=interval.mde, clustered_stderr=interval.stderr if interval.clustered else None,
        n_clusters=interval.n_clusters, df=interval.df if math.isfinite(interval.df) else None,
        ci_method=interval.method, note=interval.note)


def summarize(scores: Sequence[float] | np.ndarray, clusters: Sequence[Hashable | None] | None = None, *,
              macro: bool = False) -> ScoreSummary:
    """Summarize per-question scores (each already averaged over its samples); `clusters` one per
    score as the task declares them, `macro` for the mean of cluster means (MMLU over its subjects)."""
    groups = usable_clusters(clusters)
    return summary_of(score_interval(np.asarray(scores, dtype=float), groups, macro=macro and groups is not None))


def summarize_means(parts: Sequence[ScoreSummary]) -> ScoreSummary:
    """Unweighted mean of independent task scores (suite aggregate, macro average).

    SE of a mean of k independent estimates: sqrt(Σ SE_j²)/k; 95% CI mean ± 1.96·SE and MDE
    (z_0.975 + z_0.80)·√2·SE on the normal (the parts' own intervals are exact; their mean is not a
    proportion with a known n, and each part's SE already carries its own small-sample correction).
    """
    if not parts:
        return summarize([])
    k = len(parts)
    mean = sum(p.value for p in parts) / k
    se = math.sqrt(sum(p.reported_stderr**2 for p in parts)) / k
    return ScoreSummary(value=mean, n=sum(p.n for p in parts), stderr=se, ci_low=mean - Z_95 * se,
                        ci_high=mean + Z_95 * se, mde=MDE_FACTOR * se)
