"""Suite aggregation: a suite's score from its runs' records.

- task: its primary metric (value, SE) from its RunRecord;
- best-of task: the better formulation's score (higher, or lower for bpb), SE of that run;
- suite: unweighted mean over its entries, where a nested suite counts as one entry (mean of
  means), SE = sqrt(Σ SE_j²)/k (independent estimates; Miller 2024).

`suite_score` is the one definition of a suite's aggregate: the run prints it, suite.json and the
MLflow parent run record it, `engine.compare` and its viewer recompute it from each side's records
(docs/architecture.md, "Run kinds").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config.schema import SuiteConfig
from engine.config.suites import load_suite
from engine.stats import number, summarize_means
from engine.types import RunRecord, ScoreSummary

LOWER_IS_BETTER = {"bpb"}


class AggregateScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kind: str  # task | best_of | suite
    metric: str
    value: float
    stderr: float
    ci_low: float
    ci_high: float
    mde: float
    n: int
    chosen: str | None = None  # best_of: the spec whose score is reported
    parts: list[AggregateScore] = []
    missing: list[str] = []  # specs with no score (failed or not run)


def _from_summary(name: str, kind: str, metric: str, s: ScoreSummary, **extra: Any) -> AggregateScore:
    return AggregateScore(name=name, kind=kind, metric=metric, value=s.value, stderr=s.reported_stderr,
                          ci_low=s.ci_low, ci_high=s.ci_high, mde=s.mde, n=s.n, **extra)


def _summary(a: AggregateScore) -> ScoreSummary:
    return ScoreSummary(value=a.value, n=a.n, stderr=a.stderr, ci_low=a.ci_low, ci_high=a.ci_high, mde=a.mde)


def _record_score(rec: RunRecord) -> AggregateScore | None:
    s = rec.scores.get(rec.primary_metric)
    if s is None or s.n == 0:
        return None
    summary = ScoreSummary(**s.model_dump())
    return _from_summary(rec.task_spec, "task", rec.primary_metric, summary)


def task_score(spec: str, by_spec: dict[str, RunRecord]) -> AggregateScore | None:
    """The reported score of a task spec: its record's primary metric, or the best of its runs."""
    if spec in by_spec:
        return _record_score(by_spec[spec])
    children = [s for s in by_spec if s.startswith(spec + ":") and s.count(":") == spec.count(":") + 1]
    scored = [a for a in (_record_score(by_spec[c]) for c in children) if a is not None]
    if not scored:
        return None
    lower = scored[0].metric in LOWER_IS_BETTER
    best = (min if lower else max)(scored, key=lambda a: a.value)
    return best.model_copy(update={"name": spec, "kind": "best_of", "chosen": best.name, "parts": scored})


def mean_of(name: str, parts: Sequence[AggregateScore], missing: Iterable[str] = ()) -> AggregateScore:
    metric = parts[0].metric if parts and len({p.metric for p in parts}) == 1 else "mean of primary metrics"
    if not parts:
        nan = math.nan
        return AggregateScore(name=name, kind="suite", metric=metric, value=nan, stderr=nan, ci_low=nan,
                              ci_high=nan, mde=nan, n=0, missing=list(missing))
    s = summarize_means([_summary(p) for p in parts])
    return _from_summary(name, "suite", metric, s, parts=list(parts), missing=list(missing))


def suite_score(suite: SuiteConfig, records: Sequence[RunRecord], _stack: tuple[str, ...] = ()) -> AggregateScore:
    """Mean of the suite's task scores and nested-suite aggregates, with SE."""
    by_spec = {r.task_spec: r for r in records}
    parts, missing = [], []
    for spec in suite.tasks:
        score = task_score(spec, by_spec)
        (parts.append(score) if score is not None else missing.append(spec))
    for name in suite.suites:
        if name in _stack:
            continue
        nested = suite_score(load_suite(name), records, (*_stack, suite.name))
        (parts.append(nested) if nested.n > 0 else missing.append(f"suite {name}"))
    return mean_of(suite.name, parts, missing)


def best_of_scores(records: Sequence[RunRecord]) -> list[AggregateScore]:
    """For a run without a suite: the best-of rows of every expanded (olmes) task."""
    by_spec = {r.task_spec: r for r in records}
    parents = sorted({s.rsplit(":", 1)[0] for s in by_spec if s.rsplit(":", 1)[-1] in ("mc", "rc")})
    out = []
    for parent in parents:
        runs = [s for s in by_spec if s.rsplit(":", 1)[0] == parent]
        if len(runs) > 1 and parent not in by_spec:
            score = task_score(parent, by_spec)
            if score is not None:
                out.append(score)
    return out


def aggregate_lines(agg: AggregateScore, depth: int = 0) -> list[str]:
    """An indented text tree of an aggregate (suite → nested suites / tasks)."""
    pad = "  " * depth
    what = {"suite": f"mean of {len(agg.parts)}", "best_of": f"best: {agg.chosen}", "task": ""}[agg.kind]
    line = (f"{pad}{agg.name:<{max(40 - len(pad), 1)}} {agg.metric:<10} {number(agg.value)}  SE {number(agg.stderr)}"
            f"  95% CI [{number(agg.ci_low)}, {number(agg.ci_high)}]  {what}")
    lines = [line.rstrip()]
    if agg.kind == "suite":
        for part in agg.parts:
            lines += aggregate_lines(part, depth + 1)
        if agg.missing:
            lines.append(f"{pad}  (no score: {', '.join(agg.missing)})")
    return lines


def score_notes(records: Sequence[RunRecord]) -> list[str]:
    """Each run's note on its primary score's SE (too few clusters for a clustered SE: the plain SE
    is used), so that the table's SE, CI and MDE are never read as what they are not."""
    notes = []
    for r in records:
        s = r.scores.get(r.primary_metric)
        if s is not None and s.note and not r.aggregate_only:
            notes.append(f"note: {r.task_spec} {r.primary_metric}: {s.note}")
    return notes


def aggregate_report(records: Sequence[RunRecord], suite: SuiteConfig | None) -> str:
    """The text the results table appends: the suite tree, or the best-of rows of olmes tasks; then
    the notes on how scores' SEs were made (`score_notes`)."""
    if suite is not None and suite.aggregate != "none":
        lines = aggregate_lines(suite_score(suite, records))
    else:
        lines = [line for r in best_of_scores(records) for line in aggregate_lines(r)]
    return "\n".join(lines + score_notes(records))
