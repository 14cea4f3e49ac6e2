"""Run a validated Experiment: expand the suite, execute each TaskRun, record everything."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine import __version__
from engine.config.errors import ConfigError
from engine.config.schema import Experiment, ModelConfig, check_harness_fits
from engine.config.suites import TaskRun, expand_experiment
from engine.harness.agent_report import agent_fields, uses_tools
from engine.models import build_provider
from engine.record import sidecar
from engine.record.claim import claim_output_dir, holder
from engine.record.lifecycle import owner_tags
from engine.record.mlflow_writer import close_mlflow_run, start_mlflow_run
from engine.record.publish import RecordNotTracked, record_and_log, started_run_id
from engine.runner.cache import ResultCache
from engine.runner.core import RunnerCore
from engine.runner.sandbox_check import check_sandboxes
from engine.runner.stop import run_main
from engine.runner.task_run import TaskInterrupted, TaskResult, execute, run_dir_for
from engine.scoring.judge import judge_config
from engine.scoring.metrics import aggregate_scores
from engine.types import Provider, RunRecord, ScoreSummary, stable_hash

# Fields that change how a run executes, not what it measures.
OPERATIONAL = {"output_dir", "progress", "inspect", "cache", "tracking", "imports"}
OPERATIONAL_NESTED = {
    "harness": {"concurrency", "max_retries", "retry_backoff_s", "request_timeout_s"},
    "model": {"batch_size", "timeout_s", "client"},
}


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


def _run_record(exp: Experiment, run: TaskRun, result: TaskResult, provider: Provider, mlflow_run_id: str | None) -> RunRecord:
    config = exp.model_dump(mode="json", by_alias=True)
    config["task"] = run.task.model_dump(mode="json", by_alias=True)
    if result.extra:
        config["external_run"] = result.extra
    scores: dict[str, ScoreSummary] = {}
    if result.scores is not None:
        scores = result.scores
    elif result.status != "failed":
        scores = aggregate_scores(result.instances, run.task.scoring.aggregation, pass_at_k=run.task.scoring.pass_at_k)
    return RunRecord(
        run_id=uuid.uuid4().hex[:16],
        experiment_id=experiment_id(exp),
        experiment_name=experiment_name(exp, run),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        engine_version=__version__,
        git_revision=git_revision(),
        config=config,
        model=provider.identity,
        task_spec=run.spec,
        task_name=run.task.name,
        task_hash=result.task_hash,
        harness=exp.harness.name,
        suite=exp.suite.name if exp.suite else None,
        seeds={"seed": exp.seed, "fewshot_seed": run.task.prompt.fewshot.seed},
        status=result.status,  # type: ignore[arg-type]
        duration_s=round(result.duration_s, 3),
        counts=result.counts,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        primary_metric=run.task.scoring.primary_metric,
        scores=scores,
        run_dir=str(run_dir_for(exp, run.spec).resolve()),
        mlflow_run_id=mlflow_run_id,
        # A tool loop: what the agent did and what it was told (docs/architecture.md, "Agents that use tools").
        **(agent_fields(exp.harness, provider, result.instances)
           if uses_tools(exp.harness, run.task.formulation) and run.task.external is None else {}),
    )


def record_run(exp: Experiment, run: TaskRun, result: TaskResult, provider: Provider,
               started: sidecar.PendingCall | None = None) -> RunRecord:
    """Run folder always (atomic); MLflow when enabled. A record that misses the store raises
    RecordNotTracked, after its folder is written (`python -m engine.sync` pushes it later)."""
    record = _run_record(exp, run, result, provider, None)
    return record_and_log(exp.tracking, record, result.instances, run_dir_for(exp, run.spec), started)


def record_interrupted(exp: Experiment, run: TaskRun, result: TaskResult, provider: Provider,
                       started: sidecar.PendingCall | None) -> RunRecord:
    """The record of an interrupted task run (folder always; the store may miss it: sync later)."""
    try:
        return record_run(exp, run, result, provider, started)
    except RecordNotTracked as err:
        return err.record


def check_capabilities(exp: Experiment, runs: list[TaskRun]) -> None:
    """Refuse before any compute what the provider cannot serve exactly."""
    for r in runs:  # a suite's tasks: a tool harness on a likelihood task (a single task fails validation)
        try:
            check_harness_fits(exp.harness, r.task)
        except ValueError as err:
            raise ConfigError(str(err) + ".") from None
    if exp.model.provider == "litellm" and not exp.model.supports_prompt_logprobs:
        needs = [r.spec for r in runs if r.task.formulation != "generate" and r.task.external is None]
        if needs:
            raise ConfigError(
                f"Task(s) {', '.join(needs)} score by loglikelihood, which model '{exp.model.name}' through "
                "litellm cannot compute: the server is not declared to return prompt logprobs (and "
                "approximating from generated tokens would be wrong). Fix: run a generation task, use a "
                "server that echoes prompt logprobs (e.g. vLLM) with `model.supports_prompt_logprobs=true`, "
                "or evaluate the checkpoint in-process with `model=smollm2 model.path=...`."
            )


def judge_provider(exp: Experiment, evaluated: Provider, runs: list[TaskRun]) -> Provider | None:
    """The judge's own provider when a judged task names a judge model other than the evaluated one."""
    if not any("judge" in r.task.scoring.scorers for r in runs):
        return None
    model = judge_config(exp.harness.auxiliary).model
    if model is None:
        return None
    cfg = ModelConfig.model_validate(model)
    return None if cfg == exp.model else build_provider(cfg)


class ExternalHooks(BaseModel):
    """How the runner reaches external evals. engine/external sits above the runner (it drives a
    RunnerCore through its model gateway), so the app layer hands these in (docs/architecture.md,
    "External evals"): no call back up a layer."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    check: Callable[[TaskRun, Experiment], None]
    run: Callable[[TaskRun, Experiment, RunnerCore], Awaitable[TaskResult]]


async def run_experiment_async(exp: Experiment, runs: list[TaskRun], records: list[RunRecord] | None = None,
                               untracked: list[RecordNotTracked] | None = None,
                               external: ExternalHooks | None = None) -> list[RunRecord]:
    """Runs and records each TaskRun. `records` (when given) holds the finished ones even if
    interrupted; `untracked` collects the records whose folder is written but missed the store."""
    check_capabilities(exp, runs)
    for run in runs:
        if run.task.external is not None:  # unknown wrapper or tool not installed: exit 2 before any compute
            if external is None:
                raise ConfigError(f"Task {run.spec} is an external eval, and this caller gave the runner no "
                                  "external-eval hooks. Fix: run it with `python -m engine` (engine/cli.py passes them).")
            external.check(run, exp)
    await check_sandboxes(exp, runs)  # a docker daemon down or a broken bwrap: exit 2 before the model loads
    provider = build_provider(exp.model)
    judge = judge_provider(exp, provider, runs)
    # A network provider checks that its server is reachable when its first request must be sent
    # (its `warm`), not here: a fully cached re-run needs no server (docs/architecture.md, "The response cache").
    cache = ResultCache(exp.cache.path if exp.cache.enabled else None)
    core = RunnerCore(provider, exp.harness, cache, progress=exp.progress)
    judge_core = RunnerCore(judge, exp.harness, cache, progress=exp.progress) if judge is not None else None
    records = [] if records is None else records
    try:
        for run in runs:
            started = start_tracking(exp, run, provider)  # a killed run is visible in MLflow
            recorded = False
            try:
                try:
                    if run.task.external is not None and external is not None:
                        result = await external.run(run, exp, core)
                    else:
                        result = await execute(run, exp, core, judge_core)
                except TaskInterrupted as stop:  # Ctrl-C: record what finished, then stop scheduling
                    interrupted = stop.result
                    if interrupted.counts.n:
                        records.append(record_interrupted(exp, run, interrupted, provider, started))
                        recorded = True
                    raise asyncio.CancelledError from None
                try:
                    records.append(record_run(exp, run, result, provider, started))
                except RecordNotTracked as err:
                    records.append(err.record)
                    if untracked is not None:
                        untracked.append(err)
                recorded = True
            except BaseException as stop:
                if not recorded:  # bad input, a full disk, a Ctrl-C before any answer: no RUNNING run left
                    close_tracking(exp, started, stop)
                raise
    finally:
        cache.close()
        await provider.aclose()
        if judge is not None:
            await judge.aclose()
    return records


def start_tracking(exp: Experiment, run: TaskRun, provider: Provider) -> sidecar.PendingCall | None:
    """The MLflow run, created RUNNING before any compute by the tracking helper while the task runs
    (engine/record/sidecar.py); None when tracking is off. A store that does not take it is said once,
    as soon as known (the record tries again at the end, or `engine.sync` does later)."""
    if not exp.tracking.mlflow:
        return None
    pending = sidecar.submit(start_mlflow_run, exp.tracking, experiment_name(exp, run),
                             f"{provider.identity.label} {run.spec}", {}, owner_tags())
    pending.future.add_done_callback(partial(_warn_unreachable, exp.tracking.tracking_uri))
    return pending


def _warn_unreachable(tracking_uri: str, done: Future[Any]) -> None:
    err = done.exception()
    if err is None or isinstance(err, sidecar.HelperGone) or tracking_uri in _warned_stores:
        return
    _warned_stores.add(tracking_uri)  # said once; the exit code (4) says it again
    print(f"[evalbench] warning: the tracking store {tracking_uri} did not answer ({sidecar.describe(err)}); "
          "the run goes on and writes its run folders.", file=sys.stderr)


_warned_stores: set[str] = set()


def close_tracking(exp: Experiment, started: sidecar.PendingCall | None, stop: BaseException) -> None:
    """End the MLflow run of a task run that stopped before its record: `interrupted` (KILLED) on a
    Ctrl-C or SIGTERM, else `failed` (docs/architecture.md, "MLflow mirrors the run folder")."""
    mlflow_run_id = started_run_id(started)
    if mlflow_run_id is None:
        return
    status = "interrupted" if isinstance(stop, (asyncio.CancelledError, KeyboardInterrupt)) else "failed"
    try:
        sidecar.call(close_mlflow_run, exp.tracking, mlflow_run_id, status)
    except Exception:  # noqa: BLE001 - a store that is down: the reaper closes it once this process is gone
        pass


def claim_output(exp: Experiment) -> Experiment:
    """The experiment with the output folder this process holds (engine/record/claim.py): its own,
    unless another live run is writing there."""
    asked = Path(exp.output_dir)
    got = claim_output_dir(asked)
    if got == asked.absolute():
        return exp
    print(f"[evalbench] {asked} is being written by another evalbench run (pid {holder(asked.absolute())}); "
          f"this run's records go to {got}.", file=sys.stderr)
    return exp.model_copy(update={"output_dir": str(got)})


def run_experiment(exp: Experiment, records: list[RunRecord] | None = None,
                   untracked: list[RecordNotTracked] | None = None, external: ExternalHooks | None = None) -> list[RunRecord]:
    exp = claim_output(exp)
    with sidecar.session(exp.tracking):  # MLflow loads in the tracking helper while the run starts
        # Not asyncio.run: a SIGTERM must cancel the run even when SIGINT is ignored (engine/runner/stop.py).
        return run_main(run_experiment_async(exp, expand_experiment(exp), records, untracked, external))
