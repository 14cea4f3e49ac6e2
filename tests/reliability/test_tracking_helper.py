"""MLflow in a helper process (docs/architecture.md, "MLflow off the critical path"): the helper
logs what the run folder says, under the run's process as owner; a run killed outright has its MLflow
run closed KILLED by its helper at once; a helper that died leaves its calls to the run's process;
a helper started on a guess is stopped when the configuration turns tracking off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from engine.config.schema import TrackingConfig
from engine.record import sidecar
from engine.record.folder import read_run_folder
from engine.record.lifecycle import PID_TAG, owner_tags
from engine.record.mlflow_writer import run_metrics, start_mlflow_run
from engine.record.publish import record_and_log, run_name
from tests.conftest import REPO
from tests.reliability.records import instances, make_record

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _record_through(tracking: TrackingConfig, tmp_path, spec: str = "helped:mc"):
    run_dir = tmp_path / "runs" / spec.replace(":", "__")
    record = make_record(run_dir, spec, tracking_uri=tracking.tracking_uri)
    started = sidecar.submit(start_mlflow_run, tracking, record.experiment_name, run_name(record), {}, owner_tags())
    return run_dir, record_and_log(tracking, record, instances(spec), run_dir, started)


def test_the_helper_logs_what_the_run_folder_says_under_the_runs_process(tmp_path):
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    with sidecar.session(tracking):
        helper = sidecar.helper(tracking.tracking_uri)
        assert helper is not None and helper.proc.poll() is None
        run_dir, logged = _record_through(tracking, tmp_path)
    assert helper.proc.poll() == 0  # the session's end said goodbye and the helper left
    folder_record, _ = read_run_folder(run_dir)
    assert folder_record.mlflow_run_id == logged.mlflow_run_id is not None
    run = _client(tracking.tracking_uri).get_run(logged.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["evalbench.status"] == "finished"
    assert run.data.tags[PID_TAG] == str(os.getpid()) != str(helper.proc.pid)  # the owner is the run's process
    assert run.data.metrics == run_metrics(folder_record)


def test_a_run_killed_outright_is_closed_killed_by_its_helper_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    child = subprocess.Popen([sys.executable, "-m", "tests.reliability.records", "helper-start-and-hang",
                              str(tmp_path), uri, "0"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = child.stdout.readline().split()
        assert len(line) == 2, child.stderr.read()[-2000:]
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the run's process only: no goodbye reaches its helper
        child.wait(timeout=30)
    run_id, helper_pid = line[0], int(line[1])
    client = _client(uri)
    deadline = time.monotonic() + 60
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags["evalbench.status"]) == ("KILLED", "killed")  # no later run needed
    assert run.data.tags[PID_TAG] == str(child.pid)
    while time.monotonic() < deadline:
        try:
            os.kill(helper_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the helper outlived its run")


def test_a_helper_that_died_leaves_the_calls_to_the_runs_process(tmp_path):
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    with sidecar.session(tracking):
        helper = sidecar.helper(tracking.tracking_uri)
        assert helper is not None
        helper.proc.kill()
        helper.proc.wait()
        run_dir, logged = _record_through(tracking, tmp_path)
    run = _client(tracking.tracking_uri).get_run(logged.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == run_metrics(read_run_folder(run_dir)[0])


def test_a_helper_started_on_a_guess_stops_when_tracking_is_off():
    assert sidecar.likely_tracked(["task=mmlu", "limit=5"])
    for argv in (["tracking=none"], ["tracking.mlflow=false"], ["-m", "model.path=a,b"], ["--help"]):
        assert not sidecar.likely_tracked(argv), argv
    sidecar.start_spare()
    spare = sidecar._spare[0]
    with sidecar.session(TrackingConfig(mlflow=False)):
        assert spare.proc.wait(timeout=10) != 0  # stopped, never given a store
        assert sidecar.helper("sqlite:///mlruns.db") is None
