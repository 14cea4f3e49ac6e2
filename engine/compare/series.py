"""A task's score across training checkpoints: value, 95% CI, MDE, the paired change vs the first,
and the series' checkpoint noise, signal-to-noise and flip rates (docs/architecture.md, "Statistics")."""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.compare.loading import CompareError, RunData
from engine.compare.models import SeriesPoint, SeriesReport, SeriesTask
from engine.compare.paired import compare_runs, task_aggregation
from engine.stats import NOISE_CHECKPOINTS, checkpoint_noise, flip_rates, signal_to_noise, summarize
from engine.types import ScoreSummary


def _scores(run: RunData, metric: str) -> dict[str, float]:
    return {
        iid: q.scores[metric] for iid, q in run.questions.items() if not q.errored and metric in q.scores
    }


def _signal_scores(signal_runs: Sequence[RunData], task_hash: str, metric: str) -> dict[str, float]:
    """Model label → its (latest) run's score on this task: the other models of the signal."""
    out: dict[str, float] = {}
    for r in sorted(signal_runs, key=lambda r: (r.info.created, r.info.run_id)):
        if r.info.task_hash == task_hash:
            sc = _scores(r, metric)
            if sc:
                out[r.info.model_label] = _summary(r, sc).value
    return out


def _summary(run: RunData, sc: dict[str, float]) -> ScoreSummary:
    """The score as the run reports it (engine/scoring/metrics.py: the same `summarize`)."""
    ids = list(sc)
    return summarize([sc[k] for k in ids], [run.questions[k].cluster for k in ids],
                     macro=task_aggregation(run) == "macro")


def _series_statistics(ordered: list[RunData], points: list[SeriesPoint], metric: str, last: int,
                       others: dict[str, float]) -> dict[str, object]:
    """Noise over the last checkpoints, signal over ≥ 2 models' final scores, SNR, flip rates."""
    values = [p.value for p in points]
    noise = checkpoint_noise(values, last)
    out: dict[str, object] = {"noise": noise, "notes": []}
    notes: list[str] = out["notes"]  # type: ignore[assignment]
    if len(points) < 3:
        notes.append(f"noise from {len(points)} checkpoints: a series needs at least 3 for a useful noise figure")
    finals = {points[-1].model_label: values[-1], **others}
    if len(finals) >= 2:
        out["signal"] = signal_to_noise(list(finals.values()), values, last)
        out["signal_models"] = list(finals)
    else:
        notes.append("no signal/SNR: signal needs the final scores of ≥ 2 models (pass --signal-runs)")
    per_run = [_scores(r, metric) for r in ordered]
    ids = sorted({i for sc in per_run for i in sc})
    table = [[sc.get(i, float("nan")) for i in ids] for sc in per_run]
    binary = all(v in (0.0, 1.0) for sc in per_run for v in sc.values())
    if len(ordered) >= 2 and binary:
        out["flips"] = flip_rates(table)
    elif len(ordered) >= 2:
        notes.append(f"no flip rate: {metric} is not a 0/1 score")
    return out


def build_series(runs: Sequence[RunData], metric: str | None = None, task: str | None = None,
                 noise_checkpoints: int = NOISE_CHECKPOINTS, signal_runs: Sequence[RunData] = ()) -> SeriesReport:
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
            s = _summary(r, sc)
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
                    mlflow_run_id=r.info.mlflow_run_id,
                    value=s.value,
                    n=s.n,
                    stderr=se if not math.isnan(se) else 0.0,
                    ci_low=s.ci_low,
                    ci_high=s.ci_high,
                    mde=s.mde,
                    **extra,  # type: ignore[arg-type]
                )
            )
        extra_task = _series_statistics(ordered, points, m, noise_checkpoints, _signal_scores(signal_runs, h, m))
        noise = extra_task["noise"]
        points = [p.model_copy(update={"noise_exceeds_delta": noise.exceeds(p.delta_vs_base)})  # type: ignore[attr-defined]
                  if p.delta_vs_base else p for p in points]  # Δ = 0 claims no effect
        tasks.append(SeriesTask(task_spec=ordered[0].info.task_spec, task_hash=h, metric=m, points=points,
                                **extra_task))  # type: ignore[arg-type]
    tasks.sort(key=lambda t: t.task_spec)
    return SeriesReport(tasks=tasks, warnings=warnings, noise_checkpoints=noise_checkpoints)
