"""Metrics: per-instance scores → aggregate with n, SE, CI, MDE (mean, or macro over clusters)."""

from __future__ import annotations

from collections import defaultdict

from engine.record.schema import InstanceRecord, MetricScore
from engine.stats import ScoreSummary, summarize, summarize_macro


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


def aggregate_scores(records: list[InstanceRecord], aggregation: str = "mean") -> dict[str, MetricScore]:
    metrics = sorted({m for r in records if r.error is None for m in r.scores})
    out: dict[str, MetricScore] = {}
    for metric in metrics:
        values, clusters = _per_question(records, metric)
        has_clusters = all(c is not None for c in clusters) and len(set(clusters)) > 1
        if aggregation == "macro" and has_clusters:
            out[metric] = _to_metric(summarize_macro(values, clusters))
        else:
            out[metric] = _to_metric(summarize(values, clusters if has_clusters else None))
    return out
