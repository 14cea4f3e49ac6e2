"""Run a validated Experiment: expand the suite, execute each TaskRun, record everything."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import uuid
from pathlib import Path

from engine.api import RunRecord, ScoreSummary, stable_hash
from engine.config.schema import Experiment
from engine.models import build_provider
from engine.record.publish import record_and_log
from engine.runner.cache import ResponseCache
from engine.runner.schedule import Runner
from engine.runner.task_run import TaskResult, TaskRun, execute, run_dir_for, scores_of

ENGINE_VERSION = "0.1.0"
# Fields that change how a run executes, not what it measures.
OPERATIONAL = {"output_dir", "progress", "inspect", "cache", "tracking"}
OPERATIONAL_NESTED = {
    "harness": {"concurrency", "max_retries", "retry_backoff_s", "request_timeout_s"},
    "model": {"batch_size", "timeout_s"},
}


def expand(exp: Experiment) -> list[TaskRun]:
    """Suite (nested, de-duplicated) or single task; best-of tasks (olmes) become one run per format."""
    from engine.suites import expand_experiment

    return expand_experiment(exp)


def experiment_id(exp: Experiment) -> str:
    data = exp.model_dump(mode="json", by_alias=True, exclude=OPERATIONAL)
    for key, fields in OPERATIONAL_NESTED.items():
        for f in fields:
            data.get(key, {}).pop(f, None)
    return stable_hash(data)[:16]


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def experiment_name(exp: Experiment, run: TaskRun) -> str:
    if exp.tracking.experiment_name:
        return exp.tracking.experiment_name
    return exp.suite.name if exp.suite is not None else run.task.name


def _run_record(exp: Experiment, run: TaskRun, result: TaskResult, provider, mlflow_run_id: str | None) -> RunRecord:
    config = exp.model_dump(mode="json", by_alias=True)
    config["task"] = run.task.model_dump(mode="json", by_alias=True)
    scores: dict[str, ScoreSummary] = scores_of(result, run.task) if result.status != "failed" else {}
    return RunRecord(
        run_id=uuid.uuid4().hex[:16],
        experiment_id=experiment_id(exp),
        experiment_name=experiment_name(exp, run),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        engine_version=ENGINE_VERSION,
        git_revision=git_revision(),
        config=config,
        model=provider.identity,
        task_spec=run.spec,
        task_name=run.task.name,
        task_hash=result.task_hash,
        harness=exp.harness.name,
        suite=exp.suite.name if exp.suite else None,
        seeds={"seed": exp.seed, "fewshot_seed": run.task.fewshot.seed},
        status=result.status,  # type: ignore[arg-type]
        duration_s=round(result.duration_s, 3),
        counts=result.counts,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        primary_metric=run.task.primary_metric,
        scores=scores,
        run_dir=str(run_dir_for(exp, run.spec).resolve()),
        mlflow_run_id=mlflow_run_id,
    )


def record_run(exp: Experiment, run: TaskRun, result: TaskResult, provider, mlflow_run_id: str | None = None) -> RunRecord:
    """Run folder always (atomic); MLflow when enabled. A record that misses the store raises
    RecordNotTracked, after its folder is written (`python -m engine.sync` pushes it later)."""
    record = _run_record(exp, run, result, provider, None)
    return record_and_log(exp.tracking, record, result.instances, run_dir_for(exp, run.spec), mlflow_run_id)


def check_capabilities(exp: Experiment, runs: list[TaskRun]) -> None:
    """Refuse before any compute what the provider cannot serve exactly."""
    from engine.config.errors import ConfigError

    if exp.model.provider == "litellm" and not exp.model.supports_prompt_logprobs:
        needs = [r.spec for r in runs if r.task.formulation != "generate"]
        if needs:
            raise ConfigError(
                f"Task(s) {', '.join(needs)} score by loglikelihood, which model '{exp.model.name}' through "
                "litellm cannot compute: the server is not declared to return prompt logprobs (and "
                "approximating from generated tokens would be wrong). Fix: run a generation task, use a "
                "server that echoes prompt logprobs (e.g. vLLM) with `model.supports_prompt_logprobs=true`, "
                "or evaluate the checkpoint in-process with `model=smollm2 model.path=...`."
            )


async def run_experiment_async(exp: Experiment, runs: list[TaskRun]) -> list[RunRecord]:
    check_capabilities(exp, runs)
    provider = build_provider(exp.model)
    cache = ResponseCache(exp.cache.path if exp.cache.enabled else None)
    runner = Runner(provider, exp.harness, cache, progress=exp.progress)
    records = []
    try:
        for run in runs:
            result = await execute(run, exp, provider, runner)
            records.append(record_run(exp, run, result, provider))
    finally:
        cache.close()
        await provider.aclose()
    return records


def run_experiment(exp: Experiment) -> list[RunRecord]:
    runs = expand(exp)
    return asyncio.run(run_experiment_async(exp, runs))
