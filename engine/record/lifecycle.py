"""Who owns a RUNNING MLflow run, and closing the runs whose owner died.

An MLflow run is created when a task run starts recording, tagged with its process (host, pid and
the pid's start time, so a recycled pid is not mistaken for the owner). A process killed before it
finishes the run (SIGKILL, OOM, power cut) leaves it RUNNING; the next run of the same experiment
on the same host marks such runs KILLED: liveness (pid and the pid's start time, on this host), never
age, so a long healthy run is never touched. Runs of other hosts are left alone: their liveness
cannot be known from here (docs/architecture.md, "MLflow mirrors the run folder").
"""

from __future__ import annotations

import os
import socket
from typing import Any

HOST_TAG = "evalbench.host"
PID_TAG = "evalbench.pid"
PID_START_TAG = "evalbench.pid_start"
STATUS_TAG = "evalbench.status"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None off Linux."""
    try:
        text = open(f"/proc/{pid}/stat").read()  # one short read
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_start(pid: int) -> str:
    """The start time of `pid` in clock ticks since boot ('' where /proc is not available)."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: process_start(pid)}


def is_alive(pid: int, started: str = "") -> bool:
    """Whether process `pid` (started at `started`, when known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return True
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    return not started or fields[19] == started


def stale_owner(tags: dict[str, str]) -> bool:
    """True when the tags name a process of this host that is gone."""
    if tags.get(HOST_TAG) != socket.gethostname():
        return False
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return False
    return not is_alive(pid, tags.get(PID_START_TAG, ""))


def reap_stale_runs(mlflow_client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of the experiment whose owning process died; their ids."""
    killed = []
    token = None
    while True:
        page = mlflow_client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                         max_results=1000, page_token=token)
        for run in page:
            if stale_owner(run.data.tags) and still_running(mlflow_client, run.info.run_id):
                mlflow_client.set_tag(run.info.run_id, STATUS_TAG, "killed")
                mlflow_client.set_terminated(run.info.run_id, status="KILLED")
                killed.append(run.info.run_id)
        token = page.token
        if not token:
            return killed


def still_running(mlflow_client: Any, run_id: str) -> bool:
    """Whether the run is RUNNING now. The search above is a snapshot: its owner may have finished the
    run and exited between the search and the liveness check, and a dead owner was no proof that the
    run is unfinished (issue 24: a finished run flipped to KILLED). Read after the owner is known dead,
    the status cannot change any more (only the owner finishes its run)."""
    return bool(mlflow_client.get_run(run_id).info.status == "RUNNING")
