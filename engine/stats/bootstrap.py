"""Bootstrap standard error of a metric that is not a mean of per-question values (corpus F1).

The analytic SE of docs/architecture.md "Statistics" holds for means; a non-decomposable metric
gets the standard deviation of the metric over resampled question sets instead (percentile
intervals would not give the MDE, so the CI is value ± q·SE, as for means). With clusters (at
least MIN_CLUSTERS), whole clusters are resampled and the SE carries CR1's G/(G−1) factor (the
ideal cluster bootstrap of a mean is the uncorrected CR0 SE), with t quantiles on G−1 degrees of
freedom; fewer clusters fall back to the question bootstrap with a note, as the analytic SE does.
Deterministic: a fixed seed, so a run's reported SE is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from engine.stats.intervals import MIN_CLUSTERS, few_clusters_note, quantiles, usable_clusters
from engine.types import ScoreSummary

REPLICATES = 1000


def _spread(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")


def bootstrap_summary(statistic: Callable[[Sequence[int]], float], n: int,
                      clusters: Sequence[Hashable | None] | None = None, replicates: int = REPLICATES,
                      seed: int = 0) -> ScoreSummary:
    """`statistic(indices)` is the metric over those rows (indices may repeat). The SE resamples the
    n rows with replacement; with `clusters` (one per row), a clustered SE resamples whole clusters."""
    nan = float("nan")
    if n == 0:
        return ScoreSummary(value=nan, n=0, stderr=nan, ci_low=nan, ci_high=nan, mde=nan, stderr_method="bootstrap",
                            ci_method="bootstrap")
    value = float(statistic(list(range(n))))
    rng = np.random.default_rng(seed)
    stderr = _spread([float(statistic(rng.integers(0, n, n).tolist())) for _ in range(replicates)]) if n > 1 else nan
    clustered, n_clusters, df, note = None, None, math.inf, None
    groups = usable_clusters(clusters)
    if groups is not None:
        members: dict[Hashable, list[int]] = {}
        for i, c in enumerate(groups):
            members.setdefault(c, []).append(i)
        rows = list(members.values())
        n_clusters = len(rows)
        if n_clusters >= MIN_CLUSTERS:
            draws = (rng.integers(0, n_clusters, n_clusters) for _ in range(replicates))
            raw = _spread([float(statistic([i for k in d for i in rows[k]])) for d in draws])
            clustered, df = raw * math.sqrt(n_clusters / (n_clusters - 1)), float(n_clusters - 1)
        else:
            note = few_clusters_note(n_clusters)
    se = clustered if clustered is not None else stderr
    q, q_power = quantiles(df)
    return ScoreSummary(value=value, n=n, stderr=stderr, ci_low=value - q * se, ci_high=value + q * se,
                        mde=(q + q_power) * math.sqrt(2.0) * se, clustered_stderr=clustered, n_clusters=n_clusters,
                        stderr_method="bootstrap", df=df if math.isfinite(df) else None,
                        ci_method="bootstrap-clustered" if clustered is not None else "bootstrap", note=note)
