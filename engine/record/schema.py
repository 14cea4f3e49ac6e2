"""The normalized record of a run (ARCHITECTURE §6)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.stats import ScoreSummary as MetricScore  # a reported score is a ScoreSummary


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class ModelIdentity(_Record):
    """What was evaluated: enough to tell two checkpoints apart."""

    name: str
    provider: str
    path: str | None = None
    revision: str | None = None
    checkpoint_step: int | None = None
    content_hash: str | None = None

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
    trajectory: list[TrajectoryStep] = []


class RunCounts(_Record):
    n: int
    scored: int
    errored: int


class RunRecord(_Record):
    run_id: str
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
    status: Literal["finished", "failed", "partial"]
    duration_s: float
    counts: RunCounts
    prompt_tokens: int = 0
    completion_tokens: int = 0
    primary_metric: str
    scores: dict[str, MetricScore]
    run_dir: str
    mlflow_run_id: str | None = None
