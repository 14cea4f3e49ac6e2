"""Metrics: per-instance scores → aggregate with n, SE, CI, MDE (mean, or macro over clusters)."""

from __future__ import annotations

from collections import defaultdict

from engine.record.schema import InstanceRecord, MetricScore
from engine.stats import ScoreSummary, summarize, summarize_means


def _per_question(records: list[InstanceRecord], metric: str) -> tuple[list[float], list[str | None]]:
    # Mean over K samples per question (Miller 2024 §3: resampling reduces within-question variance).
    by_id: dict[str, list[float]] = defaultdict(list)
    cluster: dict[str, str | None] = {}
    for r in records:
        if r.error is None and metric in r.scores:
            by_id[r.instance_id].append(r.scores[metric])
            cluster[r.instance_id] = r.cluster
    ids = sorted(by_id)
    return [sum(by_id[i]) / len(by_id[i]) for i in ids], [cluster[i] for i in ids]


def _to_metric(s: ScoreSummary) -> MetricScore:
    return MetricScore(**s.model_dump())


def _macro(groups: list[list[float]]) -> ScoreSummary:
    """Mean of cluster means; SE = sqrt(sum SE_c^2)/k over clusters with n > 1 (a singleton has none)."""
    parts = [summarize(g) for g in groups]
    spread = summarize_means([p for p in parts if p.n > 1])
    value = sum(p.value for p in parts) / len(parts)
    shift = value - spread.value
    return spread.model_copy(
        update={"value": value, "ci_low": spread.ci_low + shift, "ci_high": spread.ci_high + shift,
                "n": sum(p.n for p in parts), "n_clusters": len(parts)}
    )


def aggregate_scores(records: list[InstanceRecord], aggregation: str = "mean") -> dict[str, MetricScore]:
    metrics = sorted({m for r in records if r.error is None for m in r.scores})
    out: dict[str, MetricScore] = {}
    for metric in metrics:
        values, clusters = _per_question(records, metric)
        has_clusters = all(c is not None for c in clusters) and len(set(clusters)) > 1
        if aggregation == "macro" and has_clusters:
            groups: dict[str | None, list[float]] = defaultdict(list)
            for v, c in zip(values, clusters, strict=True):
                groups[c].append(v)
            out[metric] = _to_metric(_macro(list(groups.values())))
        else:
            out[metric] = _to_metric(summarize(values, clusters if has_clusters else None))
    return out
