"""The records of a sweep: each job's `job_result.json`, the summary table, and the sweep parent
(`sweep.json` and its MLflow parent runs). engine/sweep.py runs the sweep and writes these
(docs/architecture.md, "Sweeps on launchers" and "Run kinds").
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from engine.config.schema import TrackingConfig
from engine.record import store
from engine.record.atomic import atomic_write_text
from engine.record.mlflow_writer import KIND_TAG, start_mlflow_run
from engine.record.suite import PARENT_TAG
from engine.stats import number  # the one number formatter of tables (a missing number prints "—")
from engine.types import SWEEP_RUN, RunRecord

RESULT_FILE = "job_result.json"
SWEEP_FILE = "sweep.json"  # the sweep parent's record in the sweep folder (SweepRecord)
SWEEP_ID_TAG = "evalbench.sweep_id"
SWEEP_ID_ENV = "EVALBENCH_SWEEP_ID"  # set in every job by `hydra.job.env_set` (Hydra carries it to any launcher)

EXIT_FAILED = 1  # engine/cli.py's codes, over a whole sweep
EXIT_PARTIAL = 3
EXIT_UNTRACKED = 4
JobStatus = Literal["finished", "partial", "untracked", "failed", "missing"]


class JobRun(BaseModel):
    """One task run of a job, as the summary shows it."""

    model_config = ConfigDict(frozen=True)

    task_spec: str
    status: str
    metric: str
    score: float | None = None
    se: float | None = None
    scored: int = 0
    errored: int = 0
    run_dir: str | None = None
    mlflow_run_id: str | None = None  # nested under the sweep's parent run afterwards
    experiment_name: str | None = None


class JobResult(BaseModel):
    """What one job of a sweep did: written by the job, read by the parent."""

    model_config = ConfigDict(frozen=True)

    sweep_id: str | None = None
    job: int
    job_dir: str
    overrides: list[str] = []
    model: str  # the checkpoint directory, or the model's name when it has no path
    task_spec: str  # the task spec, or the suite's name
    status: JobStatus
    exit_code: int
    reason: str | None = None
    runs: list[JobRun] = []
    host: str = ""  # where the job ran (a worker process, a SLURM node)
    pid: int = 0
    wall_s: float = 0.0  # the job function's wall time (composition, model load, runs, records)


class SweepRecord(BaseModel):
    """The sweep parent (docs/architecture.md, "Run kinds"): written to `<sweep dir>/sweep.json`
    beside the jobs' folders, with the MLflow parent run ids once they are logged."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["sweep"] = SWEEP_RUN
    sweep_id: str
    sweep_dir: str
    jobs: dict[str, int]  # job status → count
    mlflow_run_ids: list[str] = []


def write_sweep_record(sweep_id: str, sweep_dir: Path, results: Sequence[JobResult],
                       mlflow_run_ids: Sequence[str] = ()) -> Path:
    counts = {s: sum(r.status == s for r in results) for s in ("finished", "partial", "untracked", "failed", "missing")}
    rec = SweepRecord(sweep_id=sweep_id, sweep_dir=str(sweep_dir), jobs=counts, mlflow_run_ids=list(mlflow_run_ids))
    path = sweep_dir / SWEEP_FILE
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, rec.model_dump_json(indent=2))
    return path


def new_sweep_id() -> str:
    return uuid.uuid4().hex[:12]


def current_sweep_id() -> str | None:
    return os.environ.get(SWEEP_ID_ENV) or None


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def job_run(record: RunRecord) -> JobRun:
    s = record.scores.get(record.primary_metric)
    return JobRun(task_spec=record.task_spec, status=record.status, metric=record.primary_metric,
                  score=_finite(s.value) if s else None, se=_finite(s.reported_stderr) if s else None,
                  scored=record.counts.scored, errored=record.counts.errored, run_dir=record.run_dir,
                  mlflow_run_id=record.mlflow_run_id, experiment_name=record.experiment_name)


def write_job_result(job_dir: Path, result: JobResult) -> Path:
    path = job_dir / RESULT_FILE
    atomic_write_text(path, result.model_dump_json(indent=2))
    return path


def read_job_results(sweep_dir: Path, sweep_id: str | None = None) -> list[JobResult]:
    """The results under a sweep folder (of one sweep when `sweep_id` is given), by job number."""
    found: dict[int, JobResult] = {}
    for path in sorted(sweep_dir.rglob(RESULT_FILE)) if sweep_dir.is_dir() else []:
        try:
            result = JobResult.model_validate_json(path.read_text())
        except (OSError, ValidationError):
            continue
        if sweep_id is None or result.sweep_id == sweep_id:
            found[result.job] = result
    return [found[k] for k in sorted(found)]


def sweep_exit_code(results: Sequence[JobResult]) -> int:
    """1 when a job failed or is missing; else 3 when some instances errored; else 4 when a record
    missed the store; else 0 (engine/cli.py's codes, over the whole sweep)."""
    statuses = {r.status for r in results}
    if statuses & {"failed", "missing"}:
        return EXIT_FAILED
    if "partial" in statuses:
        return EXIT_PARTIAL
    return EXIT_UNTRACKED if "untracked" in statuses else 0


def _short(text: str | None, width: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_table(results: Sequence[JobResult]) -> str:
    """One row per task run (one per job when it recorded none): job, checkpoint, task spec, status,
    score, SE, and why it failed; then each failure's full reason."""
    header = ["job", "checkpoint / model", "task spec", "status", "score", "SE", "reason"]
    rows: list[list[str]] = []
    for r in results:
        if not r.runs:
            rows.append([str(r.job), r.model, r.task_spec, r.status, "-", "-", _short(r.reason)])
        for run in r.runs:
            status = "untracked" if r.status == "untracked" else run.status
            rows.append([str(r.job), r.model, run.task_spec, status, number(run.score), number(run.se),
                         _short(r.reason if status != "finished" else None)])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]
    failed = [r for r in results if r.status in ("failed", "missing")]
    counts = {s: sum(r.status == s for r in results) for s in ("finished", "partial", "untracked", "failed", "missing")}
    out += ["", f"{len(results)} job(s): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    for r in failed:
        out.append(f"  job {r.job} ({' '.join(r.overrides)}): {r.reason}  [{r.job_dir}]")
    return "\n".join(out)


def log_sweep_parents(sweep_id: str, sweep_dir: Path, results: Sequence[JobResult],
                      trackings: Sequence[TrackingConfig | None]) -> list[str]:
    """One MLflow parent run per experiment the sweep wrote to (`evalbench.kind=sweep`), with the
    jobs' runs nested under it (`mlflow.parentRunId`; a suite job's parent run is nested, its task
    runs stay under it), the job counts as metrics and the summary table as an artifact. Nested after
    the launcher returns: jobs may run anywhere and write their runs themselves. `trackings[i]` is
    job i's tracking config (None or mlflow off: not tracked). `sweep.json` (SweepRecord) in the sweep
    folder records the sweep parent there, with these ids once logged. Returns the parent run ids."""
    write_sweep_record(sweep_id, sweep_dir, results)  # the folder's record first: MLflow may be down
    from mlflow.entities import Metric, Param, RunTag  # heavy; only when a sweep is tracked

    groups: dict[tuple[str, str], tuple[TrackingConfig, list[JobRun]]] = {}
    for r in results:
        tracking = trackings[r.job] if r.job < len(trackings) else None
        if tracking is None or not tracking.mlflow:
            continue
        for run in r.runs:
            if run.mlflow_run_id and run.experiment_name:
                groups.setdefault((tracking.tracking_uri, run.experiment_name), (tracking, []))[1].append(run)
    parents: list[str] = []
    counts = {s: sum(r.status == s for r in results) for s in ("finished", "partial", "untracked", "failed", "missing")}
    summary = summary_table(results)
    for (uri, name), (tracking, runs) in groups.items():
        client = store.client(uri)
        parent = start_mlflow_run(tracking, name, f"sweep {sweep_id} ({len(results)} jobs)",
                                  {KIND_TAG: SWEEP_RUN, SWEEP_ID_TAG: sweep_id, "evalbench.sweep_dir": str(sweep_dir)})
        children: dict[str, None] = {}
        for run in runs:
            tags = store.retry(partial(client.get_run, run.mlflow_run_id), "read a job's run").data.tags
            children[tags.get(PARENT_TAG) or str(run.mlflow_run_id)] = None  # a suite's task runs stay under it
        for child in children:
            store.retry(partial(client.set_tag, child, PARENT_TAG, parent), "nest a job's run")
        ts = int(time.time() * 1000)
        metrics = [Metric(f"jobs.{s}", float(n), ts, 0) for s, n in counts.items()]
        params = [Param("sweep.jobs", str(len(results))), Param("sweep.dir", str(sweep_dir)[:500])]
        store.retry(partial(client.log_batch, parent, metrics=metrics, params=params,
                            tags=[RunTag("evalbench.status", "finished")], synchronous=True), "log the sweep")
        store.retry(partial(client.log_text, parent, summary + "\n", "sweep_summary.txt"), "log the sweep summary")
        status = "FINISHED" if sweep_exit_code(results) == 0 else "FAILED"
        store.retry(partial(client.set_terminated, parent, status=status), "finish the sweep run")
        parents.append(parent)
    if parents:
        write_sweep_record(sweep_id, sweep_dir, results, parents)
    return parents
