"""Frozen values that leave engine.compare: the comparison report, question rows, series points."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from engine.stats import PairedComparison
from engine.stats import verdict_of as _verdict_of


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


Verdict = Literal["improved", "regressed", "within noise", "not enough data"]
QuestionStatus = Literal["improved", "regressed", "both_right", "both_wrong", "unchanged", "unpaired"]


def verdict_of(delta: float, mde: float, p_value: float, n: int) -> Verdict:
    """Plain verdict (engine.stats.verdict_of): significant and at least the paired MDE."""
    return _verdict_of(delta, mde, p_value, n)  # type: ignore[return-value]


def verdict_text(verdict: Verdict, p_value: float | None = None) -> str:
    if verdict != "within noise":
        return verdict
    if p_value is not None and not math.isnan(p_value) and p_value < 0.05:
        return "within noise: |Δ| below the MDE (p < 0.05: too few questions to call it)"
    return "within noise: |Δ| below the MDE"


class RunInfo(Frozen):
    """One run (task spec × model × harness) as the comparison names it."""

    run_id: str
    run_dir: str
    mlflow_run_id: str | None
    model_label: str
    checkpoint_step: int | None
    task_spec: str
    task_name: str
    task_hash: str
    harness: str
    suite: str | None
    experiment_name: str
    primary_metric: str
    created: str


class Alignment(Frozen):
    """How the questions of one task line up between A and B. Nothing is dropped silently."""

    n_a: int  # distinct questions in A
    n_b: int
    n_paired: int  # scored on both sides: the n of the statistics
    only_in_a: int
    only_in_b: int
    errored_a: int  # questions present on both sides but errored (no score) in A
    errored_b: int
    missing_metric_a: int = 0  # scored but without the compared metric
    missing_metric_b: int = 0
    example_only_in_a: list[str] = []
    example_only_in_b: list[str] = []

    @property
    def unpaired(self) -> int:
        return self.n_a + self.n_b - 2 * self.n_paired


class TaskComparison(Frozen):
    task_spec: str
    task_hash: str
    metric: str
    run_a: RunInfo
    run_b: RunInfo
    alignment: Alignment
    # How the task's score aggregates questions (RunRecord.config.task.aggregation): "macro" is the
    # mean of cluster means (MMLU over subjects); then Δ, the means and the SE are macro ones.
    aggregation: Literal["mean", "macro"] = "mean"
    # Effective statistics: when every paired question carries a cluster field, the SE (and so the
    # CI, z, p and MDE) is the clustered paired SE; `plain_stderr` is the unclustered one.
    # Wins/losses/ties and McNemar always count questions.
    stats: PairedComparison
    plain_stderr: float
    clustered: bool = False
    n_clusters: int | None = None
    verdict: Verdict


class SuiteComparison(Frozen):
    """A − B over the suite.

    `macro` (used for the verdict) is the unweighted mean of the task Δs, the same aggregate as the
    suite score, with SE = sqrt(Σ SE_j²)/k since tasks are independent. `pooled` is the mean over all
    paired questions with a clustered SE (cluster = task), reported alongside.
    """

    name: str
    k: int
    # The suite scores of A and B exactly as the runs report them (None: not one suite's runs,
    # then Δ is the mean of task Δs); `paired` False when the sides chose different best-of
    # formulations, so the SE is the unpaired sqrt(SE_A² + SE_B²).
    mean_a: float | None = None
    mean_b: float | None = None
    paired: bool = True
    explanation: str = ""  # what A, B and Δ of the suite row are (engine/compare/suite.py `explanation`)
    delta: float
    stderr: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    mde: float
    wins: int
    losses: int
    ties: int
    verdict: Verdict
    pooled_n: int
    pooled_delta: float
    pooled_stderr: float
    pooled_p_value: float
    pooled_mde: float
    pooled_verdict: Verdict


class UnmatchedTask(Frozen):
    side: Literal["A", "B", "both"]
    task_spec: str
    task_hash: str
    reason: str


class ComparisonReport(Frozen):
    label_a: str
    label_b: str
    metric: str | None
    tasks: list[TaskComparison]
    suite: SuiteComparison | None
    unmatched: list[UnmatchedTask]
    warnings: list[str] = []
    timings_s: dict[str, float] = {}


class QuestionRow(Frozen):
    row: int  # position in the comparison's question table (the detail endpoint's address)
    key: str  # "<task_hash>/<instance_id>"
    task_spec: str
    instance_id: str
    score_a: float | None
    score_b: float | None
    delta: float | None
    status: QuestionStatus
    note: str = ""  # why a row is unpaired
    prompt: str = ""  # a snippet


class QuestionPage(Frozen):
    total: int
    page: int
    per_page: int
    pages: int
    rows: list[QuestionRow]


class SeriesPoint(Frozen):
    step: int
    model_label: str
    run_dir: str
    value: float
    n: int
    stderr: float
    ci_low: float
    ci_high: float
    mde: float  # single-run MDE, 3.96·SE
    # Paired against the series' first point on shared questions (None for the first point).
    delta_vs_base: float | None = None
    paired_mde_vs_base: float | None = None
    p_value_vs_base: float | None = None
    verdict_vs_base: Verdict | None = None
    ci_low_vs_base: float | None = None  # 95% CI of the paired Δ (the forest plot's whiskers)
    ci_high_vs_base: float | None = None


class SeriesTask(Frozen):
    task_spec: str
    task_hash: str
    metric: str
    points: list[SeriesPoint]


class SeriesReport(Frozen):
    tasks: list[SeriesTask]
    warnings: list[str] = []
