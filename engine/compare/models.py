"""Frozen values that leave engine.compare: the comparison report, question rows, series points."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from engine.stats import CheckpointNoise, FlipRates, PairedComparison, PairedDelta, SignalToNoise
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


class CompanionComparison(PairedDelta):
    """A continuous per-question metric compared next to accuracy (docs/architecture.md, "Statistics")."""

    metric: str  # "logprob_margin": ℓ_gold − max_{j≠gold} ℓ_j under the task's normalization
    normalization: str
    p_value: float
    mde: float
    df: float
    method: str
    verdict: Verdict  # on its own p (not in the accuracy family)


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
    # engine.stats.paired_interval: "tango" (0/1 scores; p is McNemar's asymptotic test, which the
    # interval inverts; stats.mcnemar_p keeps the exact one), "t", "*-clustered" (CR1, t on df).
    method: str = ""
    test: str = ""
    df: float | None = None  # of the quantile; None (JSON null) for the normal
    note: str | None = None  # e.g. too few clusters: the plain SE is used
    # stats.p_value adjusted over the k tasks of this comparison (ComparisonReport.adjust); the
    # verdict uses it. Equal to the raw p for a single task or adjust "none".
    p_adjusted: float | None = None
    verdict_metric: str = ""  # the metric the verdict is on (the compared one, never the companion)
    companion: CompanionComparison | None = None
    companion_note: str | None = None  # why a likelihood task has no companion


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
    pooled_method: str = ""  # "t-clustered" (CR1, t on k−1 df) or the plain SE with pooled_note
    pooled_note: str | None = None
    # The suite row is one test of its own, outside the per-task family that `adjust` corrects.
    family: str = ""


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
    adjust: Literal["holm", "bh", "none"] = "holm"  # multiple-comparison adjustment over the tasks
    family_size: int = 0  # tasks with a p-value, adjusted together


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
    mde: float  # single-run MDE, as the run reports it (engine.stats.summarize)
    # Paired against the series' first point on shared questions (None for the first point).
    delta_vs_base: float | None = None
    paired_mde_vs_base: float | None = None
    p_value_vs_base: float | None = None
    verdict_vs_base: Verdict | None = None
    ci_low_vs_base: float | None = None  # 95% CI of the paired Δ (the forest plot's whiskers)
    ci_high_vs_base: float | None = None
    # True when checkpoint noise (σ over the task's last checkpoints) is at least |Δ vs first|:
    # neighbouring checkpoints alone move the score that much (CheckpointNoise.exceeds).
    noise_exceeds_delta: bool | None = None
    mlflow_run_id: str | None = None  # the point's run in MLflow (None: not tracked)


class SeriesTask(Frozen):
    task_spec: str
    task_hash: str
    metric: str
    points: list[SeriesPoint]
    # Heineman et al. 2025 (docs/architecture.md, "Statistics"): noise over the last checkpoints,
    # signal over ≥ 2 models' final scores (this series' last point and each --signal-runs model),
    # SNR; flip rates between consecutive checkpoints on questions scored at both.
    noise: CheckpointNoise | None = None
    signal: SignalToNoise | None = None
    signal_models: list[str] = []
    flips: FlipRates | None = None
    notes: list[str] = []


class SeriesReport(Frozen):
    tasks: list[SeriesTask]
    warnings: list[str] = []
    noise_checkpoints: int = 0  # n: noise over the last n checkpoints (all when fewer)


class SequentialTask(Frozen):
    """An anytime-valid paired comparison of one task, questions in a seeded random order."""

    task_spec: str
    metric: str
    n_full: int  # paired questions available
    stopped_at: int | None  # questions read when the decision was taken; None: never decisive
    decision: str  # "A better", "B better", "|Δ| < threshold", "undecided"
    mean: float  # Δ over the questions read
    cs_low: float  # confidence sequence at the stop
    cs_high: float
    full_delta: float  # Δ over all paired questions (what a fixed-size run measures)
    note: str | None = None


class SequentialReport(Frozen):
    label_a: str
    label_b: str
    alpha: float
    threshold: float
    seed: int
    tasks: list[SequentialTask]
