"""Metrics: per-instance scores → aggregate with n, SE, CI, MDE (mean, or macro over clusters).

Every reported score carries n, SE, 95% CI and MDE from `engine.stats.summarize`
(docs/architecture.md, "Statistics": Wilson for 0/1 scores; the CR1 clustered SE with t on G−1 df
when the task declares at least 5 clusters, the plain SE with a note below that; the MDE from the
same SE and quantiles). A user's corpus-level `@metric` (not a mean of per-question values: corpus
F1) is computed over all questions at once from the inputs the records hold, with a bootstrap SE
over questions (engine/stats/bootstrap.py), marked `stderr_method: bootstrap`; a per-instance
`@metric` is a mean like any score (docs/architecture.md, "Extensions")."""

from __future__ import annotations

from collections import defaultdict

from engine.scoring.code_exec import pass_at_k
from engine.scoring.registry import METRICS, Metric
from engine.stats import summarize
from engine.stats.bootstrap import bootstrap_summary
from engine.types import InstanceRecord, ScoreSummary


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


def _pass_at_k(records: list[InstanceRecord], ks: list[int]) -> dict[str, ScoreSummary]:
    """Unbiased pass@k per question from its n samples (c passing), then mean with error bars."""
    counts: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.error is None and "pass" in r.scores:
            counts[r.instance_id].append(r.scores["pass"])
    out = {}
    for k in ks:
        if counts and all(len(v) >= k for v in counts.values()):
            values = [pass_at_k(len(v), int(sum(v)), k) for v in counts.values()]
            out[f"pass@{k}"] = summarize(values)
    return out


def _corpus(records: list[InstanceRecord], m: Metric) -> ScoreSummary:
    """The metric over every question at once (each question's inputs averaged over its samples), with a
    bootstrap SE (clustered when the task declares clusters)."""
    by_id: dict[str, list[dict[str, float]]] = defaultdict(list)
    cluster: dict[str, str | None] = {}
    for r in records:
        row = m.row(r.scores) if r.error is None else None  # every scored question, whatever its own value
        if row is not None:
            by_id[r.instance_id].append(row)
            cluster[r.instance_id] = r.cluster
    ids = sorted(by_id)
    rows = [{k: sum(s[k] for s in by_id[i]) / len(by_id[i]) for k in by_id[i][0]} for i in ids]
    return bootstrap_summary(lambda idx: m.of_rows([rows[i] for i in idx]), len(rows), [cluster[i] for i in ids])


def aggregate_scores(
    records: list[InstanceRecord], aggregation: str = "mean", pass_at_k: list[int] | None = None
) -> dict[str, ScoreSummary]:
    metrics = sorted({m for r in records if r.error is None for m in r.scores})
    out: dict[str, ScoreSummary] = _pass_at_k(records, pass_at_k) if pass_at_k else {}
    for metric in metrics:
        if metric in METRICS and not METRICS.get(metric).per_instance:
            out[metric] = _corpus(records, METRICS.get(metric))
            continue
        values, clusters = _per_question(records, metric)
        # Wilson CI for 0/1 metrics; CR1 clustered SE and t_{G−1} when the task declares ≥ 5 clusters.
        out[metric] = summarize(values, clusters, macro=aggregation == "macro")
    return out
