"""Align two sets of runs by (task_hash, instance_id) and compute paired statistics per task and suite."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.compare.companion import compare_margin
from engine.compare.loading import CompareError, Question, RunData
from engine.compare.models import (
    Alignment,
    ComparisonReport,
    SuiteComparison,
    TaskComparison,
    UnmatchedTask,
    verdict_of,
)
from engine.compare.suite import explanation, leaves, run_suite_score, suite_delta_se
from engine.scoring.suites import AggregateScore
from engine.stats import (
    adjust_pvalues,
    combined_stderr,
    comparison_of,
    normal_test,
    paired_interval,
    usable_clusters,
)

AdjustChoice = Literal["holm", "bh", "none"]

# Question status codes of QuestionTable.status (order = QuestionStatus literal).
STATUSES = ("improved", "regressed", "both_right", "both_wrong", "unchanged", "unpaired")
IMPROVED, REGRESSED, BOTH_RIGHT, BOTH_WRONG, UNCHANGED, UNPAIRED = range(6)


@dataclass
class QuestionTable:
    """Every question of every matched task, paired or not, in columns for fast filtering."""

    task_specs: list[str] = field(default_factory=list)
    task_hashes: list[str] = field(default_factory=list)
    task_idx: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    qa: list[Question | None] = field(default_factory=list)
    qb: list[Question | None] = field(default_factory=list)
    score_a: list[float] = field(default_factory=list)  # nan when absent
    score_b: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def freeze(self) -> FrozenTable:
        a = np.asarray(self.score_a, dtype=float)
        b = np.asarray(self.score_b, dtype=float)
        return FrozenTable(
            task_specs=self.task_specs,
            task_hashes=self.task_hashes,
            task_idx=np.asarray(self.task_idx, dtype=np.int32),
            ids=self.ids,
            qa=self.qa,
            qb=self.qb,
            score_a=a,
            score_b=b,
            delta=a - b,
            status=np.asarray(self.status, dtype=np.int8),
            notes=self.notes,
        )


@dataclass(frozen=True)
class FrozenTable:
    task_specs: list[str]
    task_hashes: list[str]
    task_idx: np.ndarray
    ids: list[str]
    qa: list[Question | None]
    qb: list[Question | None]
    score_a: np.ndarray
    score_b: np.ndarray
    delta: np.ndarray
    status: np.ndarray
    notes: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Comparison:
    report: ComparisonReport
    table: FrozenTable
    runs_a: dict[str, RunData]
    runs_b: dict[str, RunData]


def index_by_task(runs: Sequence[RunData], side: str, warnings: list[str]) -> dict[str, RunData]:
    """One run per task hash; a repeated task keeps the latest run and says so."""
    out: dict[str, RunData] = {}
    for r in sorted(runs, key=lambda r: r.info.created):
        prev = out.get(r.info.task_hash)
        if prev is not None:
            warnings.append(
                f"{side}: task {r.info.task_spec} appears in several runs; using the latest "
                f"({r.info.run_dir}), ignoring {prev.info.run_dir}."
            )
        out[r.info.task_hash] = r
    return out


def _status(sa: float, sb: float) -> int:
    if sa > sb:
        return IMPROVED
    if sa < sb:
        return REGRESSED
    if sa >= 1.0:
        return BOTH_RIGHT
    if sa <= 0.0:
        return BOTH_WRONG
    return UNCHANGED


def task_aggregation(run: RunData) -> str:
    """How the engine aggregates this task's questions: "mean", or "macro" (mean of cluster means)."""
    task = run.record.config.get("task")
    agg = task.get("aggregation", "mean") if isinstance(task, dict) else "mean"
    return "macro" if agg == "macro" else "mean"


def _compare_task(
    ra: RunData, rb: RunData, metric: str | None, table: QuestionTable
) -> tuple[TaskComparison, np.ndarray, np.ndarray]:
    m = metric or ra.info.primary_metric
    tix = len(table.task_specs)
    table.task_specs.append(ra.info.task_spec)
    table.task_hashes.append(ra.info.task_hash)
    qas, qbs = ra.questions, rb.questions
    sa_list: list[float] = []
    sb_list: list[float] = []
    clusters: list[str | None] = []
    paired_ids: list[str] = []
    only_a: list[str] = []
    err_a = err_b = miss_a = miss_b = 0
    nan = math.nan
    add = table.ids.append
    for iid, qa in qas.items():
        qb = qbs.get(iid)
        sa = nan if qa.errored else qa.scores.get(m, nan)
        sb = nan if qb is None or qb.errored else qb.scores.get(m, nan)
        note = ""
        if qb is None:
            only_a.append(iid)
            note = "only in A"
        else:
            if qa.errored:
                err_a += 1
                note = "errored in A: " + qa.error_message()
            elif math.isnan(sa):
                miss_a += 1
                note = f"A has no {m} score"
            if qb.errored:
                err_b += 1
                note = (note + "; " if note else "") + "errored in B: " + qb.error_message()
            elif math.isnan(sb):
                miss_b += 1
                note = (note + "; " if note else "") + f"B has no {m} score"
        paired = not note
        if paired:
            sa_list.append(sa)
            sb_list.append(sb)
            clusters.append(qa.cluster)
            paired_ids.append(iid)
        add(iid)
        table.task_idx.append(tix)
        table.qa.append(qa)
        table.qb.append(qb)
        table.score_a.append(sa)
        table.score_b.append(sb)
        table.status.append(_status(sa, sb) if paired else UNPAIRED)
        table.notes.append(note)
    only_b = [iid for iid in qbs if iid not in qas]
    for iid in only_b:
        qb = qbs[iid]
        add(iid)
        table.task_idx.append(tix)
        table.qa.append(None)
        table.qb.append(qb)
        table.score_a.append(nan)
        table.score_b.append(nan if qb.errored else qb.scores.get(m, nan))
        table.status.append(UNPAIRED)
        table.notes.append("only in B")
    a = np.asarray(sa_list, dtype=float)
    b = np.asarray(sb_list, dtype=float)
    groups = usable_clusters(clusters)  # as the run's own score: the task's clusters when some repeat
    macro = task_aggregation(ra) == "macro" and groups is not None
    pi = paired_interval(a, b, groups, macro=macro)
    companion, companion_note = compare_margin(ra, rb, paired_ids) if m.startswith("acc") else (None, None)
    alignment = Alignment(
        n_a=len(qas),
        n_b=len(qbs),
        n_paired=len(a),
        only_in_a=len(only_a),
        only_in_b=len(only_b),
        errored_a=err_a,
        errored_b=err_b,
        missing_metric_a=miss_a,
        missing_metric_b=miss_b,
        example_only_in_a=only_a[:5],
        example_only_in_b=only_b[:5],
    )
    tc = TaskComparison(
        task_spec=ra.info.task_spec,
        task_hash=ra.info.task_hash,
        metric=m,
        run_a=ra.info,
        run_b=rb.info,
        alignment=alignment,
        aggregation="macro" if macro else "mean",
        stats=comparison_of(pi),
        plain_stderr=pi.plain_stderr,
        clustered=pi.clustered,
        n_clusters=pi.n_clusters,
        verdict=verdict_of(pi.delta, pi.mde, pi.p_value, pi.n),
        method=pi.method,
        test=pi.test,
        df=pi.df if math.isfinite(pi.df) else None,
        note=pi.note,
        p_adjusted=pi.p_value,
        verdict_metric=m,
        companion=companion,
        companion_note=companion_note,
    )
    return tc, a, b


def suite_comparison(name: str, tasks: Sequence[TaskComparison], diffs: Sequence[np.ndarray],
                     suites: tuple[AggregateScore, AggregateScore] | None = None) -> SuiteComparison:
    """The suite Δ as the runs aggregate their suite (engine/compare/suite.py) when both sides are
    one suite's runs, else the mean of task Δs (SE = sqrt(Σ SE²)/k); and the pooled, task-clustered mean.
    One test of its own (normal, as the suite's SE combines independent task SEs), outside the
    per-task family."""
    k = len(tasks)
    mean_a = mean_b = None
    paired = True
    if suites is not None:
        mean_a, mean_b = suites[0].value, suites[1].value
        delta = mean_a - mean_b
        se, paired = suite_delta_se(suites[0], suites[1], tasks)
        k = len(leaves(suites[0]))
    else:
        delta = sum(t.stats.delta for t in tasks) / k
        se = combined_stderr([t.stats.stderr for t in tasks])
    test = normal_test(delta, se)
    d = np.concatenate(list(diffs)) if diffs else np.zeros(0)
    cl = np.concatenate([np.full(len(x), i) for i, x in enumerate(diffs)]) if diffs else np.zeros(0)
    # Δ_i against 0, clustered by task (CR1, t on k−1 df; the plain SE below 5 tasks, with a note).
    pooled = paired_interval(d, np.zeros(d.size), cl.tolist())
    n = sum(t.stats.n for t in tasks)
    return SuiteComparison(
        name=name,
        k=k,
        mean_a=mean_a,
        mean_b=mean_b,
        paired=paired,
        explanation=explanation(suites, paired),
        delta=delta,
        stderr=se,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        z=test.z,
        p_value=test.p_value,
        mde=test.mde,
        wins=sum(t.stats.wins for t in tasks),
        losses=sum(t.stats.losses for t in tasks),
        ties=sum(t.stats.ties for t in tasks),
        verdict=verdict_of(delta, test.mde, test.p_value, n if k > 0 else 0),
        pooled_n=int(d.size),
        pooled_delta=pooled.delta,
        pooled_stderr=pooled.stderr,
        pooled_p_value=pooled.p_value,
        pooled_mde=pooled.mde,
        pooled_verdict=verdict_of(pooled.delta, pooled.mde, pooled.p_value, int(d.size)),
        pooled_method=pooled.method,
        pooled_note=pooled.note,
        family=(f"suite row: one normal test of its own (unadjusted), outside the family of {len(tasks)} task tests"),
    )


def adjust_family(tasks: list[TaskComparison], method: AdjustChoice) -> list[TaskComparison]:
    """Each task's p adjusted over the k tasks with a p-value (Holm by default) and its verdict
    on the adjusted p (docs/architecture.md, "Statistics", Multiple comparisons)."""
    raw = [t.stats.p_value for t in tasks]
    adjusted = list(raw) if method == "none" else list(adjust_pvalues(raw, method).adjusted)
    return [t.model_copy(update={"p_adjusted": p, "verdict": verdict_of(t.stats.delta, t.stats.mde, p, t.stats.n)})
            for t, p in zip(tasks, adjusted, strict=True)]


def side_label(runs: Sequence[RunData]) -> str:
    labels = sorted({r.info.model_label for r in runs})
    return ", ".join(labels) if labels else "?"


def _why_unpaired(ra: RunData, rb: RunData) -> str:
    sides = [side for side, r in (("A", ra), ("B", rb)) if r.record.aggregate_only]
    if sides:
        return (f"{' and '.join(sides)}'s run is aggregate-only (its external eval reported no per-question "
                "scores): there is nothing to pair")
    return "no question scored on both sides"


def compare_runs(
    runs_a: Sequence[RunData],
    runs_b: Sequence[RunData],
    metric: str | None = None,
    label_a: str | None = None,
    label_b: str | None = None,
    adjust: AdjustChoice = "holm",
) -> Comparison:
    """Compare A against B (Δ = A − B). Raises CompareError when no question can be paired."""
    t0 = time.perf_counter()
    warnings: list[str] = []
    by_a = index_by_task(runs_a, "A", warnings)
    by_b = index_by_task(runs_b, "B", warnings)
    table = QuestionTable()
    tasks: list[TaskComparison] = []
    diffs: list[np.ndarray] = []
    unmatched: list[UnmatchedTask] = []
    for h, ra in by_a.items():
        rb = by_b.get(h)
        if rb is None:
            unmatched.append(UnmatchedTask(side="A", task_spec=ra.info.task_spec, task_hash=h, reason="no run of this task in B"))
            continue
        tc, a, b = _compare_task(ra, rb, metric, table)
        d = a - b
        if tc.alignment.n_paired == 0:
            unmatched.append(UnmatchedTask(side="both", task_spec=tc.task_spec, task_hash=h, reason=_why_unpaired(ra, rb)))
        tasks.append(tc)
        diffs.append(d)
    for h, rb in by_b.items():
        if h not in by_a:
            unmatched.append(UnmatchedTask(side="B", task_spec=rb.info.task_spec, task_hash=h, reason="no run of this task in A"))
    la, lb = label_a or side_label(runs_a), label_b or side_label(runs_b)
    if la == lb:
        la, lb = f"A: {la}", f"B: {lb}"
    if not any(t.alignment.n_paired for t in tasks):
        specs_a = ", ".join(sorted(r.info.task_spec for r in by_a.values())) or "none"
        specs_b = ", ".join(sorted(r.info.task_spec for r in by_b.values())) or "none"
        agg = [u.reason for u in unmatched if "aggregate-only" in u.reason]
        if agg:
            raise CompareError(f"A ({la}) and B ({lb}) cannot be compared question by question: {agg[0]}. "
                               "Re-run the external eval with per-sample logging (for the inspect wrapper, `external.args.log_samples=true`).")
        raise CompareError(
            f"A ({la}) and B ({lb}) have no question in common: runs are aligned by task hash and "
            f"instance id, and no (task hash, instance id) pair is scored on both sides. A has tasks "
            f"[{specs_a}], B has tasks [{specs_b}]. Compare runs of the same task configuration "
            "(a different variant or data split changes the task hash)."
        )
    tasks = adjust_family(tasks, adjust)
    family_size = sum(1 for t in tasks if not math.isnan(t.stats.p_value))
    scored = [(t, d) for t, d in zip(tasks, diffs, strict=True) if t.alignment.n_paired]
    suite = None
    if len(scored) > 1:
        suites = {t.run_a.suite for t, _ in scored}
        name = suites.pop() if len(suites) == 1 and None not in suites else "all tasks"
        sa, sb = run_suite_score([r.record for r in runs_a]), run_suite_score([r.record for r in runs_b])
        both = (sa, sb) if sa is not None and sb is not None and sa.n > 0 and sb.n > 0 else None
        suite = suite_comparison(name or "all tasks", [t for t, _ in scored], [d for _, d in scored], both)
    metrics = {t.metric for t in tasks}
    report = ComparisonReport(
        label_a=la,
        label_b=lb,
        metric=metrics.pop() if len(metrics) == 1 else None,
        tasks=tasks,
        suite=suite,
        unmatched=unmatched,
        warnings=warnings,
        timings_s={"compare": time.perf_counter() - t0},
        adjust=adjust,
        family_size=family_size,
    )
    return Comparison(report=report, table=table.freeze(), runs_a=by_a, runs_b=by_b)
