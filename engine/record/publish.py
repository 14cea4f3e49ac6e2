"""Record a run: the run folder (the source of truth), then the tracking store.

`record_and_log` is what the runner calls for each finished task run; `push_run_folder` is what
`python -m engine.sync` calls for a folder that missed the store. A record that did not reach the
store raises `RecordNotTracked` after its folder is complete, so the CLI can exit non-zero and name
the folders to sync (docs/architecture.md, "Records that are never lost").
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from engine.config.schema import TrackingConfig
from engine.record import sidecar, store
from engine.record.folder import read_run_folder, write_run_folder, write_run_record
from engine.record.lifecycle import HOST_TAG, PID_TAG, STATUS_TAG, owner_tags, stale_owner
from engine.record.mlflow_writer import finish_mlflow_run, mlflow_status, run_tags, start_mlflow_run
from engine.types import InstanceRecord, RunRecord

RUN_ID_TAG = "evalbench.run_id"
DONE = ("FINISHED", "FAILED")  # terminal states evalbench sets after logging everything


class TrackingError(Exception):
    """A record is complete on disk but not in the tracking store (CLI: exit code 3)."""

    def __init__(self, message: str, run_dirs: Sequence[Path], tracking_uri: str):
        super().__init__(message)
        self.run_dirs = list(run_dirs)
        self.tracking_uri = tracking_uri


class RecordNotTracked(TrackingError):
    """One task run's record missed the store; `.record` is the record as written to its folder."""

    def __init__(self, record: RunRecord, run_dir: Path, tracking_uri: str, cause: BaseException):
        super().__init__(
            f"The record of {record.task_spec} did not reach the MLflow store {tracking_uri} "
            f"({sidecar.describe(cause)}). The run folder {run_dir} has everything; "
            f"push it once the store is reachable with `python -m engine.sync {run_dir}`.",
            [run_dir], tracking_uri)
        self.record = record
        self.cause = cause


def run_name(record: RunRecord) -> str:
    return f"{record.model.label} {record.task_spec}"


def record_and_log(tracking: TrackingConfig | None, record: RunRecord, instances: list[InstanceRecord],
                   run_dir: Path, started: sidecar.PendingCall | str | None = None) -> RunRecord:
    """Write the run folder atomically and, when tracking is on, log it to MLflow.

    `started`: the run created when the task run started (`start_tracking`, a call the tracking helper
    may still be making); None creates it now. The helper logs the folder as written (MLflow says what
    the folder says; engine/record/sidecar.py). Returns the record as written (with its MLflow run id);
    raises `RecordNotTracked` (after the folder is written) when the store did not take the record."""
    if tracking is None or not tracking.mlflow:
        write_run_folder(run_dir, record, instances)
        return record
    error: BaseException | None = None
    mlflow_run_id: str | None = None
    try:
        mlflow_run_id = started_run_id(started)
        if mlflow_run_id is None:
            mlflow_run_id = sidecar.call(start_mlflow_run, tracking, record.experiment_name, run_name(record),
                                         run_tags(record), owner_tags())
    except Exception as err:  # noqa: BLE001 - the folder is written regardless
        error = err
    record = record.model_copy(update={"mlflow_run_id": mlflow_run_id})
    write_run_folder(run_dir, record, instances)
    if error is None:
        try:
            sidecar.call(log_run_folder, tracking, str(run_dir))
        except Exception as err:  # noqa: BLE001
            error = err
    if error is not None:
        raise RecordNotTracked(record, run_dir, tracking.tracking_uri, error) from error
    return record


def log_run_folder(tracking: TrackingConfig, run_dir: str) -> str | None:
    """Log the run folder as written (MLflow says what the folder says) into the run it names; its id.
    The tracking helper's call (engine/record/sidecar.py)."""
    record, instances = read_run_folder(Path(run_dir))
    finish_mlflow_run(tracking, record, instances, Path(run_dir))
    return record.mlflow_run_id


def started_run_id(started: sidecar.PendingCall | str | None) -> str | None:
    """The id of the run created at the task run's start; None when that failed (the start's own
    warning said so; the record tries once more)."""
    if started is None or isinstance(started, str):
        return started
    try:
        return str(started.result())
    except Exception:  # noqa: BLE001
        return None


# -- sync: a run folder into a store ------------------------------------------------------------
class SyncOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    kind: Literal["run", "suite"]
    action: Literal["pushed", "skipped", "in_progress"]
    mlflow_run_id: str


def tracking_of(config: dict[str, Any], tracking_uri: str | None) -> TrackingConfig:
    """The tracking settings a run was recorded with, its URI replaced by `tracking_uri` if given."""
    base = TrackingConfig.model_validate(config.get("tracking") or {})
    return base.model_copy(update={"mlflow": True, **({"tracking_uri": tracking_uri} if tracking_uri else {})})


def find_tagged_runs(client: Any, experiment_id: str, tag: str, value: str) -> list[Any]:
    """Runs of the experiment with tag `tag` = `value`, finished ones first."""
    from mlflow.entities import ViewType  # heavy; only when tracking is on

    runs = store.retry(lambda: client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'",
                                                  run_view_type=ViewType.ALL, max_results=100), "search runs")
    return sorted(runs, key=lambda r: r.info.status not in DONE)


def reusable_run(client: Any, experiment_id: str, mlflow_run_id: str | None) -> str | None:
    """The run a folder names, if this store has it, in this experiment, not already terminated."""
    if mlflow_run_id is None:
        return None
    try:
        run = client.get_run(mlflow_run_id)
    except Exception as err:
        if store.error_code(err) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if run.info.experiment_id != experiment_id or run.info.status in DONE:
        return None
    return mlflow_run_id


def mirrors_folder(run: Any, record: RunRecord) -> bool:
    """Whether an MLflow run already holds the folder's record: its status tag is the folder's status
    and its terminal status that status's (an interrupted run logged FINISHED by an older version is
    pushed again and becomes KILLED; docs/architecture.md, "MLflow mirrors the run folder")."""
    return bool(run.data.tags.get(STATUS_TAG) == record.status and run.info.status == mlflow_status(record.status))


def _owner_alive(run: Any) -> bool:
    """A RUNNING run whose process still works on it, on this host: not ours to complete."""
    tags = run.data.tags
    return (run.info.status == "RUNNING" and tags.get(HOST_TAG) == socket.gethostname()
            and not stale_owner(tags) and tags.get(PID_TAG) != str(os.getpid()))


def push_run_folder(run_dir: Path, tracking_uri: str | None = None) -> SyncOutcome:
    """Log a run folder to the store unless a finished run with its evalbench.run_id is there.

    An unfinished MLflow run of the same record (created at start, then the process died or the
    store failed) is completed instead of duplicated."""
    record, instances = read_run_folder(run_dir)
    tracking = tracking_of(record.config, tracking_uri)
    client = store.client(tracking.tracking_uri)
    exp_id = store.get_or_create_experiment(client, record.experiment_name)
    found = find_tagged_runs(client, exp_id, RUN_ID_TAG, record.run_id)
    if found and mirrors_folder(found[0], record):
        return SyncOutcome(path=str(run_dir), kind="run", action="skipped", mlflow_run_id=found[0].info.run_id)
    target = found[0].info.run_id if found else reusable_run(client, exp_id, record.mlflow_run_id)
    if target is not None and _owner_alive(client.get_run(target)):
        return SyncOutcome(path=str(run_dir), kind="run", action="in_progress", mlflow_run_id=target)
    if target is None:
        target = start_mlflow_run(tracking, record.experiment_name, run_name(record), run_tags(record))
    if target != record.mlflow_run_id:
        record = record.model_copy(update={"mlflow_run_id": target})
        write_run_record(run_dir, record)  # the folder names the MLflow run that now holds it
    finish_mlflow_run(tracking, record, instances, run_dir)
    return SyncOutcome(path=str(run_dir), kind="run", action="pushed", mlflow_run_id=target)
