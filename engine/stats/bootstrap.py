"""Bootstrap standard error of a metric that is not a mean of per-question values (corpus F1).

The analytic SE of docs/architecture.md "Statistics" holds for means; a non-decomposable metric
gets the standard deviation of the metric over resampled question sets instead (percentile
intervals would not give the MDE, so the CI is value ± 1.96·SE, as for means). Deterministic:
a fixed seed, so a run's reported SE is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from engine.stats._summary import MDE_FACTOR, Z_95
from engine.types import ScoreSummary

REPLICATES = 1000


def _spread(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")


def bootstrap_summary(statistic: Callable[[Sequence[int]], float], n: int, clusters: Sequence[Hashable] | None = None,
                      replicates: int = REPLICATES, seed: int = 0) -> ScoreSummary:
    """`statistic(indices)` is the metric over those rows (indices may repeat). The SE resamples the
    n rows with replacement; with `clusters` (one per row), a clustered SE resamples whole clusters."""
    nan = float("nan")
    if n == 0:
        return ScoreSummary(value=nan, n=0, stderr=nan, ci_low=nan, ci_high=nan, mde=nan, stderr_method="bootstrap")
    value = float(statistic(list(range(n))))
    rng = np.random.default_rng(seed)
    stderr = _spread([float(statistic(rng.integers(0, n, n).tolist())) for _ in range(replicates)]) if n > 1 else nan
    clustered, n_clusters = None, None
    if clusters is not None:
        groups: dict[Hashable, list[int]] = {}
        for i, c in enumerate(clusters):
            groups.setdefault(c, []).append(i)
        members = list(groups.values())
        n_clusters = len(members)
        if n_clusters > 1:
            draws = (rng.integers(0, n_clusters, n_clusters) for _ in range(replicates))
            clustered = _spread([float(statistic([i for k in d for i in members[k]])) for d in draws])
    se = clustered if clustered is not None else stderr
    return ScoreSummary(value=value, n=n, stderr=stderr, ci_low=value - Z_95 * se, ci_high=value + Z_95 * se,
                        mde=MDE_FACTOR * se, clustered_stderr=clustered, n_clusters=n_clusters,
                        stderr_method="bootstrap")
