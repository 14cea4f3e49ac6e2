"""MLflow: experiment per suite or task, run per (model, task spec, harness); one batched metrics call.

Every call goes through engine/record/store.py (SQLite schema made once under a lock, race-free
experiments, retries with backoff). The run is created RUNNING before the record is logged, tagged
with its owner process, so a run killed mid-way is visible and later marked KILLED
(engine/record/lifecycle.py). Re-logging a run (`python -m engine.sync`) is idempotent.
"""

from __future__ import annotations

import logging
import re
import time
from functools import partial
from pathlib import Path
from typing import Any

from engine.config.keys import dotted_leaves
from engine.config.schema import TrackingConfig
from engine.record import store
from engine.record.lifecycle import STATUS_TAG, owner_tags, reap_stale_runs
from engine.types import QUESTION_RUN_KINDS, RUN_KINDS, TASK_RUN, InstanceRecord, RunKind, RunRecord

MAX_PARAM_LEN = 500
TABLE_FILE = "instances_table.json"
TRACES_TAG = "evalbench.traces_logged"  # set once traces are logged: a re-push does not duplicate them
KIND_TAG = "evalbench.kind"  # the run kind (engine/types/records.py RUN_KINDS; docs/architecture.md, "Run kinds")
TASK_SPEC_TAG = "evalbench.task_spec"
log = logging.getLogger("evalbench")


def flatten(config: dict[str, Any]) -> dict[str, str]:
    """MLflow params: one per dotted leaf of the config, cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for name, value in dotted_leaves(config).items():
        text = str(value)
        out[name] = text if len(text) <= MAX_PARAM_LEN else text[: MAX_PARAM_LEN - 3] + "..."
    return out


def _mlflow(tracking: TrackingConfig) -> Any:
    store.client(tracking.tracking_uri)  # the store is ready before the fluent API touches it
    import mlflow  # heavy; only when tracking is on

    mlflow.set_tracking_uri(tracking.tracking_uri)
    return mlflow


def _client(tracking: TrackingConfig) -> Any:
    return store.client(tracking.tracking_uri)


def start_mlflow_run(tracking: TrackingConfig, experiment_name: str, run_name: str,
                     tags: dict[str, str] | None = None, owner: dict[str, str] | None = None) -> str:
    """Create the run (RUNNING, tagged with its owner: this process, or the run's process `owner` when
    the tracking helper creates it, engine/record/sidecar.py) after closing the experiment's runs whose
    process died; its id."""
    client = _client(tracking)
    exp_id = store.get_or_create_experiment(client, experiment_name)
    try:
        reap_stale_runs(client, exp_id)
    except Exception as err:  # noqa: BLE001 - housekeeping must not stop a run from being recorded
        log.warning("could not close stale MLflow runs of %s: %s", experiment_name, err)
    all_tags = {**(tags or {}), **(owner or owner_tags()), STATUS_TAG: "running"}
    run = store.retry(lambda: client.create_run(exp_id, run_name=run_name, tags=all_tags), f"create run {run_name}")
    return str(run.info.run_id)


def run_kind(tags: dict[str, str]) -> RunKind | None:
    """The kind of an MLflow run from its tags; None for a run that is none of evalbench's kinds (a
    training run, a run killed before its record was logged). Stores written before task runs were
    tagged: an untagged run with a task spec is a task run (docs/architecture.md, "Run kinds")."""
    kind = tags.get(KIND_TAG)
    if kind is None:
        return TASK_RUN if tags.get(TASK_SPEC_TAG) else None
    return next((k for k in RUN_KINDS if k == kind), None)


def is_task_run(tags: dict[str, str]) -> bool:
    """A run with per-question records (task or external run): what compare and the series read."""
    return run_kind(tags) in QUESTION_RUN_KINDS


def run_tags(record: RunRecord) -> dict[str, str]:
    step = record.model.checkpoint_step
    return {
        KIND_TAG: record.kind,
        "evalbench.run_id": record.run_id,
        "evalbench.experiment_id": record.experiment_id,
        "evalbench.model": record.model.label,
        "evalbench.model_name": record.model.name,
        "evalbench.model_path": record.model.path or "",
        "evalbench.checkpoint_step": "" if step is None else str(step),
        "evalbench.task": record.task_name,
        TASK_SPEC_TAG: record.task_spec,
        "evalbench.task_hash": record.task_hash,
        "evalbench.harness": record.harness,
        "evalbench.suite": record.suite or "",
        "evalbench.run_dir": record.run_dir,
        "evalbench.status": record.status,
    }


def run_metrics(record: RunRecord) -> dict[str, float]:
    """Counts, then per score `<name>` (value) and `<name>.<field>`: `stderr` (i.i.d. SE),
    `clustered_stderr` (CR1, with ≥ 5 clusters) and `n_clusters` (tasks with clusters only), `df` (of the t
    quantiles; absent: normal), `reported_stderr` (the SE the CI and MDE use), `ci_low`, `ci_high`, `mde`, `n`."""
    metrics: dict[str, float] = {"n": record.counts.n, "scored": record.counts.scored, "errored": record.counts.errored,
                                 "duration_s": record.duration_s}
    for name, score in record.scores.items():
        metrics[name] = score.value
        if record.aggregate_only:  # no per-question scores: no SE, CI or MDE to log
            metrics[f"{name}.n"] = score.n
            continue
        for field in ("stderr", "clustered_stderr", "n_clusters", "df", "ci_low", "ci_high", "mde", "n"):
            value = getattr(score, field)
            if value is not None:
                metrics[f"{name}.{field}"] = float(value)
        metrics[f"{name}.reported_stderr"] = float(score.reported_stderr)
    if record.agent is not None:  # what a tool-using harness's model did (docs/architecture.md, "Agents that use tools")
        metrics.update(record.agent.metrics())
    # MLflow rejects NaN in some stores, and names outside [A-Za-z0-9_-. :/]: pass@1 is pass_at_1.
    return {metric_name(k): float(v) for k, v in metrics.items() if v == v}


def metric_name(name: str) -> str:
    """A score name as MLflow accepts it (`pass@10` → `pass_at_10`)."""
    return re.sub(r"[^0-9A-Za-z_\-. :/]", "_", name.replace("@", "_at_"))


def _instance_table(instances: list[InstanceRecord]) -> dict[str, list[Any]]:
    metrics = sorted({m for r in instances for m in r.scores})
    table: dict[str, list[Any]] = {k: [] for k in ("instance_id", "sample_index", "gold", "extracted_answer", "output_text", "error", "latency_s", "cached")}
    table.update({f"score.{m}": [] for m in metrics})
    for r in instances:
        table["instance_id"].append(r.instance_id)
        table["sample_index"].append(r.sample_index)
        table["gold"].append(str(r.gold))
        table["extracted_answer"].append(str(r.extracted_answer))
        table["output_text"].append((r.output_text or "")[:2000])
        table["error"].append(r.error.message[:500] if r.error else "")
        table["latency_s"].append(r.latency_s or 0.0)
        table["cached"].append(r.cached)
        for m in metrics:
            table[f"score.{m}"].append(r.scores.get(m))
    return table


def finish_mlflow_run(
    tracking: TrackingConfig, record: RunRecord, instances: list[InstanceRecord], run_dir: Path
) -> None:
    """Params, one batched metrics call, tags, the run folder as artifacts, the instance table, the
    traces, then the terminal status. Each store call is retried; all of them are safe to repeat."""
    from mlflow.entities import Metric, Param, RunTag  # heavy; only when tracking is on

    client = _client(tracking)
    run_id = record.mlflow_run_id
    assert run_id is not None
    ts = int(time.time() * 1000)
    params = [Param(k, v) for k, v in flatten(record.config).items()]
    for start in range(0, len(params), 100):  # log_batch takes at most 100 params per call
        store.retry(partial(client.log_batch, run_id, params=params[start : start + 100], synchronous=True),
                    "log params")
    metrics = [Metric(k, v, ts, 0) for k, v in run_metrics(record).items()]
    tags = [RunTag(k, v) for k, v in {**run_tags(record), "evalbench.run_dir": str(run_dir.resolve())}.items()]
    store.retry(lambda: client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True), "log metrics")
    store.retry(lambda: client.log_artifacts(run_id, str(run_dir), artifact_path="run"), "log run folder")
    if tracking.log_instance_table and instances:
        # log_table appends to an existing table: a re-push must not double it.
        if not any(f.path == TABLE_FILE for f in store.retry(lambda: client.list_artifacts(run_id), "list artifacts")):
            store.retry(lambda: client.log_table(run_id, data=_instance_table(instances), artifact_file=TABLE_FILE),
                        "log instance table")
    logged_tags = store.retry(lambda: client.get_run(run_id).data.tags, "read run")
    # An interrupted run skips them: a scheduler's stop leaves seconds before SIGKILL, and tracing's
    # exporter costs several (docs/architecture.md, "Stopping a run"); the resumed run logs them.
    if record.status != "interrupted" and any(r.trajectory for r in instances) and TRACES_TAG not in logged_tags:
        try:  # traces are a view of instances.jsonl, which the artifacts already hold
            traces = log_trajectory_traces(tracking, record, instances)
            client.set_tag(run_id, TRACES_TAG, str(len(traces)))
        except Exception as err:  # noqa: BLE001
            log.warning("MLflow traces of %s were not logged (%s); the run folder has the trajectories",
                        record.task_spec, err)
    status = mlflow_status(record.status)
    store.retry(lambda: client.set_terminated(run_id, status=status), "finish run")


# The run folder's status → MLflow's terminal status; the folder's own word is the tag
# `evalbench.status` (docs/architecture.md, "MLflow mirrors the run folder"). MLflow has no
# "partial": a partial run finished, with its errors counted in its metrics.
MLFLOW_STATUS = {"finished": "FINISHED", "partial": "FINISHED", "failed": "FAILED", "interrupted": "KILLED",
                 "killed": "KILLED"}


def mlflow_status(folder_status: str) -> str:
    return MLFLOW_STATUS.get(folder_status, "FAILED")


def close_mlflow_run(tracking: TrackingConfig, run_id: str, folder_status: str) -> None:
    """End a run that will get no record (bad input found after it started, a Ctrl-C before any
    answer): its status tag and terminal status, so no RUNNING run outlives its process."""
    client = _client(tracking)
    store.retry(lambda: client.set_tag(run_id, STATUS_TAG, folder_status), "tag run status")
    store.retry(lambda: client.set_terminated(run_id, status=mlflow_status(folder_status)), "close run")


# -- trajectories as MLflow traces ------------------------------------------------------------------

_SPAN_TYPES = {"model": "LLM", "tool_call": "TOOL", "sandbox": "TOOL", "judge": "EVALUATOR", "limit": "UNKNOWN",
               "user": "UNKNOWN"}
MAX_TRACES = 2000  # a run with more trajectories logs the first ones (the run folder has them all)


def _ns(t: float | None, default: int) -> int:
    return int(t * 1e9) if t is not None else default


def log_trajectory_traces(tracking: TrackingConfig, record: RunRecord, instances: list[InstanceRecord]) -> list[str]:
    """One trace per instance with a trajectory: a root span (question → answer, scores) with child
    spans for model calls, tool calls (their sandbox executions nested) and the judge, on the
    recorded timeline. Traces are linked to the run, so the MLflow UI shows them on its Traces tab."""
    mlflow = _mlflow(tracking)
    from mlflow.entities import SpanStatusCode  # deferred: mlflow loads only when tracking is on

    client = _client(tracking)
    run = client.get_run(record.mlflow_run_id)
    exp_id = run.info.experiment_id
    trace_ids: list[str] = []
    for inst in [r for r in instances if r.trajectory][:MAX_TRACES]:
        steps = inst.trajectory
        starts = [s.started for s in steps if s.started is not None]
        t0 = min(starts) if starts else time.time()
        t_end = max(((s.started or t0) + (s.duration_s or 0.0)) for s in steps)
        root = mlflow.start_span_no_context(
            name=f"{record.task_spec} {inst.instance_id}#{inst.sample_index}", span_type="AGENT",
            inputs={"prompt": inst.prompt_text, "request": inst.request}, experiment_id=exp_id,
            start_time_ns=_ns(t0, 0),
            attributes={"evalbench.instance_id": inst.instance_id, "evalbench.task_hash": inst.task_hash,
                        "evalbench.harness": record.harness, "evalbench.cached": str(inst.cached)},
            metadata={"mlflow.sourceRun": record.mlflow_run_id or ""},
            tags={"evalbench.instance_id": inst.instance_id, "evalbench.run_id": record.run_id},
        )
        open_tools: dict[str, Any] = {}
        for step in steps:
            start = _ns(step.started, _ns(t0, 0))
            end = start + int((step.duration_s or 0.0) * 1e9)
            c = step.content
            if step.type == "tool_call":
                span = mlflow.start_span_no_context(
                    name=f"tool {c.get('name')}", span_type="TOOL", parent_span=root, start_time_ns=start,
                    inputs={"arguments": c.get("arguments"), **({"error": c["error"]} if c.get("error") else {})},
                    attributes={"turn": c.get("turn"), "call_id": c.get("id")})
                open_tools[str(c.get("id"))] = span
                continue
            if step.type == "tool_result":
                span = open_tools.pop(str(c.get("id")), None)
                if span is None:
                    span = mlflow.start_span_no_context(name=f"tool {c.get('name')}", span_type="TOOL",
                                                        parent_span=root, start_time_ns=start)
                span.end(outputs={k: c.get(k) for k in ("content", "ok", "error", "final", "data")},
                         status=SpanStatusCode.OK if c.get("ok") else SpanStatusCode.ERROR, end_time_ns=end)
                continue
            parent = root
            if step.type == "sandbox" and open_tools:
                parent = list(open_tools.values())[-1]
            name = {"model": f"model turn {c.get('turn')}", "sandbox": f"sandbox {c.get('pool', '')}",
                    "judge": "judge", "limit": f"limit {c.get('reason')}", "user": "user turn"}.get(step.type, step.type)
            inputs = {"input": c.get("input")} if step.type == "model" else (
                {"prompt": c.get("prompt")} if step.type == "judge" else {"command": c.get("command")} if step.type == "sandbox" else None)
            span = mlflow.start_span_no_context(name=name, span_type=_SPAN_TYPES.get(step.type, "UNKNOWN"),
                                                parent_span=parent, start_time_ns=start, inputs=inputs,
                                                attributes={"tokens": step.tokens} if step.tokens else None)
            span.end(outputs=c, end_time_ns=end,
                     status=SpanStatusCode.ERROR if (step.type == "sandbox" and not c.get("ok", True)) else SpanStatusCode.OK)
        for span in open_tools.values():
            span.end(end_time_ns=_ns(t_end, 0))
        root.end(outputs={"output_text": inst.output_text, "extracted_answer": inst.extracted_answer,
                          "scores": inst.scores, "gold": inst.gold,
                          "error": inst.error.model_dump() if inst.error else None},
                 status=SpanStatusCode.ERROR if inst.error else SpanStatusCode.OK, end_time_ns=_ns(t_end, 0))
        trace_ids.append(root.trace_id)
    if hasattr(mlflow, "flush_trace_async_logging"):  # traces export in the background by default
        mlflow.flush_trace_async_logging()
    if trace_ids and hasattr(client, "link_traces_to_run"):
        for start in range(0, len(trace_ids), 100):
            try:
                client.link_traces_to_run(trace_ids[start : start + 100], run_id=record.mlflow_run_id)
            except Exception:  # noqa: BLE001 - metadata already links them on stores without this call
                break
    return trace_ids
