"""Scores and records: what a run writes to its folder and to MLflow (docs/architecture.md,
"The normalized record"), the run kinds, and the provider contract.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from engine.types.work import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
)


class ScoreSummary(BaseModel):
    """One reported score with its error bars."""

    model_config = ConfigDict(frozen=True)

    value: float
    n: int
    stderr: float
    ci_low: float
    ci_high: float
    mde: float
    clustered_stderr: float | None = None
    n_clusters: int | None = None
    # None: the analytic SE of a mean (Miller 2024). "bootstrap": a non-decomposable metric (a user's
    # corpus-level `@metric`), whose SE is the spread of the metric over resampled questions.
    stderr_method: Literal["bootstrap"] | None = None
    # How the CI and MDE were made (docs/architecture.md, "Statistics"): `df` of the t quantiles
    # (None: the normal), `ci_method` (wilson, t, bootstrap; -clustered with the CR1 SE; none), and
    # `note` when the SE is not the one the task asks for (too few clusters for a clustered SE).
    df: float | None = None
    ci_method: str | None = None
    note: str | None = None

    @field_validator("value", "stderr", "ci_low", "ci_high", "mde", mode="before")
    @classmethod
    def _missing_is_nan(cls, v: Any) -> Any:
        # JSON has no NaN: a number that does not exist (no MDE when every score is the same, no SE
        # at n = 1) is written as null, and read back as NaN, what the statistics computed.
        return math.nan if v is None else v

    @property
    def reported_stderr(self) -> float:
        """The SE the CI and MDE use: the CR1 clustered SE when the task declares enough clusters."""
        return self.clustered_stderr if self.clustered_stderr is not None else self.stderr


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class ModelIdentity(_Record):
    """What was evaluated: enough to tell two checkpoints apart."""

    name: str
    provider: str
    path: str | None = None
    revision: str | None = None
    checkpoint_step: int | None = None
    content_hash: str | None = None  # the model folder: every file but a documented few (models/identity.py)
    api_base: str | None = None  # where the model is served (litellm)
    tokenizer_hash: str | None = None  # tokenizer files and chat template
    options_hash: str | None = None  # serving options that change outputs (dtype, max_length)

    @property
    def label(self) -> str:
        step = f"@step{self.checkpoint_step}" if self.checkpoint_step is not None else ""
        return f"{self.name}{step}"


class InstanceError(_Record):
    kind: str
    message: str
    attempts: int


class TrajectoryStep(_Record):
    """One model call, tool call, tool result or sandbox execution."""

    type: Literal["model", "tool_call", "tool_result", "sandbox", "judge", "limit", "user"]
    content: dict[str, Any]
    started: float | None = None
    duration_s: float | None = None
    tokens: int | None = None


class InstanceRecord(_Record):
    task_hash: str
    task_spec: str
    instance_id: str
    sample_index: int = 0
    request_hash: str | None = None
    request: dict[str, Any] | None = None
    prompt_text: str | None = None
    gold: Any = None
    choices: list[str] | None = None
    cluster: str | None = None
    output_text: str | None = None
    logprobs: list[float] | None = None
    extracted_answer: Any = None
    scores: dict[str, float] = {}
    error: InstanceError | None = None
    latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 1  # provider calls it took (retries included); 0 when it came from the cache
    trajectory: list[TrajectoryStep] = []


class RunCounts(_Record):
    n: int
    scored: int
    errored: int


class AgentSummary(_Record):
    """What a tool-using harness's model actually did over a run (engine/harness/agent_report.py)."""

    questions: int
    tool_calls_per_question: float
    questions_without_tool_call: int
    turns_per_question: float
    # answered (a reply or a submit), max_turns, max_tokens, max_time, error
    end_reasons: dict[str, int] = {}
    calls_by_tool: dict[str, int] = {}
    questions_by_tool: dict[str, int] = {}  # questions with at least one call of the tool

    def metrics(self) -> dict[str, float]:
        out = {"agent.tool_calls_per_question": self.tool_calls_per_question,
               "agent.questions_without_tool_call": float(self.questions_without_tool_call),
               "agent.turns_per_question": self.turns_per_question}
        out.update({f"agent.end_reason.{k}": float(v) for k, v in self.end_reasons.items()})
        out.update({f"agent.questions_calling.{k}": float(v) for k, v in self.questions_by_tool.items()})
        return out


# Run kinds (docs/architecture.md, "Run kinds"): what a run is, in its run folder's record and in
# its MLflow tag `evalbench.kind`. The names are defined here once; readers select by them.
TaskRunKind = Literal["task", "external"]  # the kinds with a run folder of per-question records
RunKind = Literal[TaskRunKind, "suite", "sweep", "series"]
TASK_RUN: Literal["task"] = "task"  # one task spec evaluated by the engine: experiment.json + instances.jsonl
EXTERNAL_RUN: Literal["external"] = "external"  # one task spec run by a benchmark's own loop: the same files
SUITE_RUN: Literal["suite"] = "suite"  # a suite's parent run: suite.json, the aggregate over its task runs
SWEEP_RUN: Literal["sweep"] = "sweep"  # a sweep's parent run: sweep.json; in MLflow one per experiment written to
# a checkpoint series' statistics (noise, SNR, flip rates), MLflow only: `engine.compare --series --log-mlflow`
SERIES_RUN: Literal["series"] = "series"
RUN_KINDS: tuple[RunKind, ...] = (TASK_RUN, EXTERNAL_RUN, SUITE_RUN, SWEEP_RUN, SERIES_RUN)
# Runs with per-question records (a run folder with instances.jsonl): what compare, the series,
# the viewer and sync read as task runs; suite and sweep parents hold aggregates only.
QUESTION_RUN_KINDS: frozenset[TaskRunKind] = frozenset({TASK_RUN, EXTERNAL_RUN})


def legacy_run_kind(config: dict[str, Any]) -> TaskRunKind:
    """The kind of a record written before records carried one: every such record is a task run,
    an external one when its task names an external eval."""
    task = config.get("task") if isinstance(config, dict) else None
    return EXTERNAL_RUN if isinstance(task, dict) and task.get("external") else TASK_RUN


class RunRecord(_Record):
    run_id: str
    # "task" or "external" (a run folder never holds a suite or sweep parent); absent in records
    # written before kinds existed, which are task runs (filled in by `_fill_kind`).
    kind: TaskRunKind = TASK_RUN
    experiment_id: str
    experiment_name: str
    created: str
    engine_version: str
    git_revision: str | None
    config: dict[str, Any]
    model: ModelIdentity
    task_spec: str
    task_name: str
    task_hash: str
    harness: str
    suite: str | None
    seeds: dict[str, int]
    status: Literal["finished", "failed", "partial", "interrupted"]  # interrupted: Ctrl-C, n = what finished
    duration_s: float
    counts: RunCounts
    prompt_tokens: int = 0
    completion_tokens: int = 0
    primary_metric: str
    scores: dict[str, ScoreSummary]
    run_dir: str
    mlflow_run_id: str | None = None
    # Tool-using harnesses only (absent in older records): what the agent did, and what it was told.
    agent: AgentSummary | None = None
    agent_protocol: str | None = None  # native or text
    agent_system_prompt: str | None = None  # as sent in the first request
    tool_schemas: list[dict[str, Any]] | None = None

    @property
    def aggregate_only(self) -> bool:
        """An external eval that reported its aggregate only: its scores have no per-question
        values, so no SE, CI or MDE exist (the stored zeros are placeholders, never shown)."""
        return bool((self.config.get("external_run") or {}).get("aggregate_only"))

    @model_validator(mode="before")
    @classmethod
    def _fill_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") is None:
            return {**data, "kind": legacy_run_kind(data.get("config") or {})}
        return data


class Provider(Protocol):
    """A model under evaluation: serves batches of the two request kinds."""

    identity: ModelIdentity
    max_batch: int

    async def generate(self, requests: list[GenerateRequest]) -> list[GenerateResponse]: ...

    async def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]: ...

    async def aclose(self) -> None: ...
