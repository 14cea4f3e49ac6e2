"""A task's score across training checkpoints: value, 95% CI, MDE, and the paired change vs the first."""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.compare.loading import CompareError, RunData
from engine.compare.models import SeriesPoint, SeriesReport, SeriesTask
from engine.compare.paired import compare_runs, task_aggregation
from engine.stats import summarize, summarize_macro


def _scores(run: RunData, metric: str) -> dict[str, float]:
    return {
        iid: q.scores[metric] for iid, q in run.questions.items() if not q.errored and metric in q.scores
    }


def build_series(runs: Sequence[RunData], metric: str | None = None, task: str | None = None) -> SeriesReport:
    """Group runs by task; order each task's runs by checkpoint step (a run without one is step 0)."""
    warnings: list[str] = []
    by_task: dict[str, dict[int, RunData]] = {}
    # created has one-second resolution: the run id breaks ties, so run folders and MLflow (which
    # list the same runs in different orders) pick the same run at a step.
    for r in sorted(runs, key=lambda r: (r.info.created, r.info.run_id)):
        if task and task not in (r.info.task_spec, r.info.task_name, r.info.task_hash):
            continue
        step = r.info.checkpoint_step or 0
        steps = by_task.setdefault(r.info.task_hash, {})
        if step in steps:
            warnings.append(
                f"task {r.info.task_spec} has several runs at step {step}; using the latest "
                f"({r.info.run_dir}, {r.info.model_label})."
            )
        steps[step] = r
    if not by_task:
        raise CompareError(
            f"No run to chart{f' for task {task!r}' if task else ''}: the series needs run folders or an "
            "MLflow experiment whose runs carry checkpoint steps."
        )
    tasks: list[SeriesTask] = []
    for h, steps in by_task.items():
        ordered = [steps[s] for s in sorted(steps)]
        m = metric or ordered[0].info.primary_metric
        base = _scores(ordered[0], m)
        points: list[SeriesPoint] = []
        for i, r in enumerate(ordered):
            sc = _scores(r, m)
            ids = list(sc)
            clusters = [r.questions[k].cluster for k in ids]
            has_clusters = bool(ids) and all(c is not None for c in clusters) and len(set(clusters)) > 1
            values = [sc[k] for k in ids]
            if has_clusters and task_aggregation(r) == "macro":  # as the run reports its score
                s = summarize_macro(values, clusters)
            else:
                s = summarize(values, clusters if has_clusters and len(set(clusters)) < len(ids) else None)
            extra: dict[str, object] = {}
            if i > 0 and base:
                try:
                    tc = compare_runs([r], [ordered[0]], metric=m).report.tasks[0]
                except CompareError:  # no shared question with the first checkpoint
                    tc = None
                if tc is not None:
                    extra = dict(delta_vs_base=tc.stats.delta, paired_mde_vs_base=tc.stats.mde,
                                 p_value_vs_base=tc.stats.p_value, verdict_vs_base=tc.verdict,
                                 ci_low_vs_base=tc.stats.ci_low, ci_high_vs_base=tc.stats.ci_high)
            se = s.reported_stderr
            points.append(
                SeriesPoint(
                    step=r.info.checkpoint_step or 0,
                    model_label=r.info.model_label,
                    run_dir=r.info.run_dir,
                    value=s.value,
                    n=s.n,
                    stderr=se if not math.isnan(se) else 0.0,
                    ci_low=s.ci_low,
                    ci_high=s.ci_high,
                    mde=s.mde,
                    **extra,  # type: ignore[arg-type]
                )
            )
        tasks.append(SeriesTask(task_spec=ordered[0].info.task_spec, task_hash=h, metric=m, points=points))
    tasks.sort(key=lambda t: t.task_spec)
    return SeriesReport(tasks=tasks, warnings=warnings)
