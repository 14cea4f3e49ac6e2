"""The suite record: suite.json in the job folder and an MLflow parent run over the task runs.

The aggregate (engine/scoring/suites.py `suite_score`: mean of task and nested-suite scores with its SE)
is computed by the caller and passed in as a pydantic model or a dict of the same shape; this
module only records it (the record package sits below the suite logic; docs/architecture.md,
"Layers"). The parent run's metrics are `<entry>` (value) and `<entry>.reported_stderr`,
`.ci_low`, `.ci_high`, `.mde`, `.n` for the suite itself and every entry of its tree (task specs,
best-of tasks, nested suites); the task runs become its children (tag `mlflow.parentRunId`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.config.schema import TrackingConfig
from engine.record import sidecar, store
from engine.record.atomic import atomic_write_text
from engine.record.folder import SUITE_FILE
from engine.record.mlflow_writer import KIND_TAG, start_mlflow_run
from engine.record.publish import DONE, RUN_ID_TAG, SyncOutcome, TrackingError, find_tagged_runs, tracking_of
from engine.types import SUITE_RUN, RunRecord

SUITE_RUN_TAG = "evalbench.suite_run_id"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by


class SuiteRunRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_spec: str
    run_id: str
    run_dir: str
    status: str
    mlflow_run_id: str | None = None


class SuiteRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["suite"] = SUITE_RUN  # docs/architecture.md, "Run kinds"
    suite_run_id: str
    suite: str
    experiment_id: str
    experiment_name: str
    created: str
    models: list[str]
    tracking: dict[str, Any]
    aggregate: dict[str, Any]
    runs: list[SuiteRunRef]
    mlflow_run_id: str | None = None


class SuiteNotTracked(TrackingError):
    """suite.json is written but the MLflow parent run is not (CLI: exit code 3)."""


def build_suite_record(aggregate: BaseModel | Mapping[str, Any], records: Sequence[RunRecord],
                       tracking: TrackingConfig | None = None) -> SuiteRecord:
    agg = aggregate.model_dump(mode="json") if isinstance(aggregate, BaseModel) else dict(aggregate)
    first = records[0] if records else None
    return SuiteRecord(
        suite_run_id=uuid.uuid4().hex[:16],
        suite=str(agg["name"]),
        experiment_id=first.experiment_id if first else "",
        experiment_name=first.experiment_name if first else str(agg["name"]),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        models=list(dict.fromkeys(r.model.label for r in records)),
        tracking=(tracking or TrackingConfig(mlflow=False)).model_dump(mode="json"),
        aggregate=agg,
        runs=[SuiteRunRef(task_spec=r.task_spec, run_id=r.run_id, run_dir=r.run_dir, status=r.status,
                          mlflow_run_id=r.mlflow_run_id) for r in records],
    )


def write_suite_file(job_dir: Path, rec: SuiteRecord) -> Path:
    path = job_dir / SUITE_FILE
    atomic_write_text(path, rec.model_dump_json(indent=2))
    return path


def record_suite(job_dir: Path, aggregate: BaseModel | Mapping[str, Any], records: Sequence[RunRecord],
                 tracking: TrackingConfig | None) -> SuiteRecord:
    """Write `<job_dir>/suite.json` and, when tracking is on, the MLflow parent run of the task runs.

    Raises `SuiteNotTracked` (after suite.json is written) when MLflow did not take it."""
    rec = build_suite_record(aggregate, records, tracking)
    write_suite_file(job_dir, rec)
    if tracking is None or not tracking.mlflow or not records:
        return rec
    try:
        parent = sidecar.call(log_suite_run, tracking, rec)  # log_suite_run, in the tracking helper
    except Exception as err:  # suite.json has it; engine.sync pushes it later
        raise SuiteNotTracked(
            f"The suite aggregate of {rec.suite} did not reach the MLflow store {tracking.tracking_uri} "
            f"({sidecar.describe(err)}). {job_dir / SUITE_FILE} has it; push it with "
            f"`python -m engine.sync {job_dir}`.", [job_dir], tracking.tracking_uri) from err
    rec = rec.model_copy(update={"mlflow_run_id": parent})
    write_suite_file(job_dir, rec)
    return rec


def _nodes(agg: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield agg
    for part in agg.get("parts") or []:
        yield from _nodes(part)


def _key(name: str) -> str:
    return re.sub(r"[^/\w.\- :]", "_", name)  # the characters MLflow accepts in a metric name


def suite_metrics(agg: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in _nodes(agg):
        key = _key(str(node["name"]))
        for field, suffix in (("value", ""), ("stderr", ".reported_stderr"), ("ci_low", ".ci_low"),
                              ("ci_high", ".ci_high"), ("mde", ".mde"), ("n", ".n")):
            value = node.get(field)
            if isinstance(value, (int, float)) and not math.isnan(value):
                out[key + suffix] = float(value)
    return out


def suite_params(agg: Mapping[str, Any]) -> dict[str, str]:
    params = {"suite.metric": str(agg.get("metric", "")), "suite.missing": ", ".join(agg.get("missing") or [])}
    for node in _nodes(agg):
        if node.get("kind") == "best_of" and node.get("chosen"):
            params[f"best_of.{_key(str(node['name']))}"] = str(node["chosen"])
    return {k: v[:500] for k, v in params.items()}


def log_suite_run(tracking: TrackingConfig, rec: SuiteRecord) -> str:
    """The parent run (created, or completed if an earlier attempt left it unfinished); its id."""
    from mlflow.entities import Metric, Param, RunTag  # heavy; only when tracking is on

    client = store.client(tracking.tracking_uri)
    exp_id = store.get_or_create_experiment(client, rec.experiment_name)
    found = find_tagged_runs(client, exp_id, SUITE_RUN_TAG, rec.suite_run_id)
    if found and found[0].info.status in DONE:
        return str(found[0].info.run_id)
    tags = {KIND_TAG: SUITE_RUN, "evalbench.suite_name": rec.suite, SUITE_RUN_TAG: rec.suite_run_id,
            "evalbench.experiment_id": rec.experiment_id, "evalbench.models": ", ".join(rec.models)}
    parent = found[0].info.run_id if found else start_mlflow_run(
        tracking, rec.experiment_name, f"{', '.join(rec.models)} suite {rec.suite}", tags)
    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, 0) for k, v in suite_metrics(rec.aggregate).items()]
    params = [Param(k, v) for k, v in suite_params(rec.aggregate).items()]
    all_tags = [RunTag(k, v) for k, v in {**tags, "evalbench.status": "finished"}.items()]
    store.retry(partial(client.log_batch, parent, tags=all_tags, synchronous=True), "log suite tags")
    for start in range(0, len(params), 100):  # log_batch takes at most 100 params, 1000 metrics per call
        store.retry(partial(client.log_batch, parent, params=params[start : start + 100], synchronous=True),
                    "log suite params")
    for start in range(0, len(metrics), 1000):
        store.retry(partial(client.log_batch, parent, metrics=metrics[start : start + 1000], synchronous=True),
                    "log suite metrics")
    suite_json = json.loads(rec.model_copy(update={"mlflow_run_id": parent}).model_dump_json())
    store.retry(lambda: client.log_dict(parent, suite_json, "suite.json"), "log suite.json")
    for ref in rec.runs:
        for child in find_tagged_runs(client, exp_id, RUN_ID_TAG, ref.run_id):
            store.retry(partial(client.set_tag, child.info.run_id, PARENT_TAG, parent), "link child run")
    store.retry(lambda: client.set_terminated(parent, status="FINISHED"), "finish suite run")
    return parent


def push_suite_file(job_dir: Path, tracking_uri: str | None = None) -> SyncOutcome:
    """`python -m engine.sync`: log a job folder's suite.json unless its parent run is finished."""
    rec = SuiteRecord.model_validate_json((job_dir / SUITE_FILE).read_text())
    tracking = tracking_of({"tracking": rec.tracking}, tracking_uri)
    client = store.client(tracking.tracking_uri)
    exp_id = store.get_or_create_experiment(client, rec.experiment_name)
    found = find_tagged_runs(client, exp_id, SUITE_RUN_TAG, rec.suite_run_id)
    if found and found[0].info.status in DONE:
        return SyncOutcome(path=str(job_dir), kind="suite", action="skipped", mlflow_run_id=found[0].info.run_id)
    parent = log_suite_run(tracking, rec)
    if parent != rec.mlflow_run_id:
        write_suite_file(job_dir, rec.model_copy(update={"mlflow_run_id": parent}))
    return SyncOutcome(path=str(job_dir), kind="suite", action="pushed", mlflow_run_id=parent)
