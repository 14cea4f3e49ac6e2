"""MLflow mirrors the run folder (docs/architecture.md, "MLflow mirrors the run folder").

The MLflow status always equals the folder's: no RUNNING run is left by an exit 2 found after the
MLflow run started, an interrupted run is KILLED (never FINISHED), the reaper closes only runs whose
process is gone (a run that finished while the reaper looked stays FINISHED; a live one is never
touched), and `engine.sync` run from another folder neither resolves `sqlite:///mlruns.db` against
it nor creates a new, empty store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.config.schema import TrackingConfig
from engine.record import store
from engine.record.folder import write_run_folder
from engine.record.lifecycle import reap_stale_runs
from engine.record.publish import push_run_folder, record_and_log
from engine.types import RunRecord
from tests.conftest import run_engine
from tests.reliability.records import instances, make_record

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
EXPERIMENT = "reliability"  # tests/reliability/records.py's records


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlruns.db'}"


def _runs(uri: str, experiment: str = EXPERIMENT) -> list[Any]:
    from mlflow.entities import ViewType  # heavy: only the tests that read a store

    client = store.client(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)


# -- no RUNNING run after an exit 2 ------------------------------------------------------------------
BAD_INPUT = {
    "missing data file": (["task.data.data_files=/nonexistent/evalbench/cases.jsonl"], "data_files"),
    "bad template": (["task.generate_template='Q: {{ doc.nope.deeper }}'"], "generate_template"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_found_after_the_mlflow_run_started_leaves_it_failed_not_running(tmp_path, case):
    overrides, named = BAD_INPUT[case]
    res = run_engine(["task=gsm8k", "limit=2", f"tracking.tracking_uri={_uri(tmp_path)}",
                      f"tracking.experiment_name={EXPERIMENT}", *overrides], tmp_path, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and named in res.stderr
    (run,) = _runs(_uri(tmp_path))  # the run was created before the bad input was found...
    assert run.info.status == "FAILED"  # ...and is closed, as the exit says
    assert run.data.tags["evalbench.status"] == "failed"


# -- interrupted runs are KILLED, never FINISHED -----------------------------------------------------
def _running_run(db: Path) -> bool:
    if not db.is_file():
        return False
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return bool(conn.execute("SELECT 1 FROM runs WHERE status = 'RUNNING'").fetchall())
    except sqlite3.Error:  # the schema is still being made
        return False


@pytest.mark.slow
def test_ctrl_c_leaves_the_mlflow_run_killed_and_tagged_interrupted(tmp_path):
    db = tmp_path / "mlruns.db"
    args = [sys.executable, "-m", "engine", "limit=64", "model.batch_size=2", f"tracking.tracking_uri=sqlite:///{db}",
            f"tracking.experiment_name={EXPERIMENT}"]
    # SIGINT at its default in the child even when a non-interactive parent left it ignored.
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not _running_run(db) and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # while the model loads or answers: either way before the end
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    (run,) = _runs(f"sqlite:///{db}")
    assert (run.info.status, run.data.tags["evalbench.status"]) == ("KILLED", "interrupted"), err[-2000:]


def test_an_interrupted_record_is_killed_in_mlflow_and_sync_leaves_it_so(tmp_path):
    uri = _uri(tmp_path)
    run_dir = tmp_path / "runs" / "mmlu__mc"
    record = make_record(run_dir, tracking_uri=uri).model_copy(update={"status": "interrupted"})
    logged = record_and_log(TrackingConfig(tracking_uri=uri), record, instances("mmlu:mc"), run_dir)
    client = store.client(uri)
    run = client.get_run(logged.mlflow_run_id)
    assert (run.info.status, run.data.tags["evalbench.status"]) == ("KILLED", "interrupted")
    assert push_run_folder(run_dir).action == "skipped"  # already mirrored
    client.set_terminated(logged.mlflow_run_id, status="FINISHED")  # what older versions logged
    assert push_run_folder(run_dir).action == "pushed"
    assert client.get_run(logged.mlflow_run_id).info.status == "KILLED"


# -- the reaper: liveness, and a run that finished while it looked ------------------------------------
OWNER = """
import sys, time
from pathlib import Path
from engine.config.schema import TrackingConfig
from engine.record.mlflow_writer import run_tags, start_mlflow_run
from engine.record.publish import record_and_log, run_name
from engine.types import RunRecord
from tests.reliability.records import instances, make_record
root, uri = Path(sys.argv[1]), sys.argv[2]
run_dir = root / "runs" / "owner"
record = make_record(run_dir, "owner:mc", tracking_uri=uri)
tracking = TrackingConfig(tracking_uri=uri)
run_id = start_mlflow_run(tracking, record.experiment_name, run_name(record), run_tags(record))
print(run_id, flush=True)
while not (root / "finish").exists():
    time.sleep(0.02)
record_and_log(tracking, record, instances("owner:mc"), run_dir, run_id)
"""


class _OwnerFinishesDuringTheSearch:
    """The store's client, except that right after the reaper's search its owner finishes the run and
    exits: the interleaving that flipped 1 of 37 finished runs to KILLED, made certain."""

    def __init__(self, client: Any, root: Path, owner: subprocess.Popen):
        self._client, self._root, self._owner = client, root, owner

    def search_runs(self, *args: Any, **kwargs: Any) -> Any:
        page = self._client.search_runs(*args, **kwargs)
        (self._root / "finish").touch()
        self._owner.wait(timeout=120)
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_run_that_finishes_while_the_reaper_looks_stays_finished(tmp_path):
    uri = _uri(tmp_path)
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path), uri], cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = owner.stdout.readline().strip()
    assert run_id, owner.stderr.read()[-2000:]
    client = store.client(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    killed = reap_stale_runs(_OwnerFinishesDuringTheSearch(client, tmp_path, owner), exp_id)
    assert owner.returncode == 0, owner.stderr.read()[-2000:]
    assert killed == [] and client.get_run(run_id).info.status == "FINISHED"


def test_a_run_reaping_beside_a_live_run_leaves_it_running_and_closes_it_once_it_is_gone(tmp_path):
    """Two concurrent runs of one experiment: `python -m engine` starts (and reaps) while another
    process's run is live; that run stays RUNNING, and is closed KILLED only once its process is gone."""
    uri = _uri(tmp_path)
    live = subprocess.Popen([sys.executable, "-m", "tests.reliability.records", "start-and-hang", str(tmp_path), uri,
                             "0"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    reaping = ["task=gsm8k", "limit=2", f"tracking.tracking_uri={uri}", f"tracking.experiment_name={EXPERIMENT}",
               *BAD_INPUT["missing data file"][0]]  # a run that starts its MLflow run (and reaps), then stops
    try:
        live_id = live.stdout.readline().strip()
        assert live_id, live.stderr.read()[-2000:]
        assert run_engine(reaping, tmp_path, timeout=300).returncode == 2
        client = store.client(uri)
        assert client.get_run(live_id).info.status == "RUNNING"
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait(timeout=30)
    assert run_engine(reaping, tmp_path, timeout=300).returncode == 2
    run = client.get_run(live_id)
    assert (run.info.status, run.data.tags["evalbench.status"]) == ("KILLED", "killed")


# -- engine.sync: the store a record names, never a new one by accident --------------------------------
def _sync(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.sync", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def _started_in_origin(run_dir: Path, spec: str) -> RunRecord:
    """A record as `python -m engine output_dir=runs` started in `origin` writes it: the store named
    `sqlite:///mlruns.db`, relative to `origin`."""
    record = make_record(run_dir, spec, tracking_uri="sqlite:///mlruns.db")
    return record.model_copy(update={"config": {**record.config, "output_dir": "runs"}})


def _folders(origin: Path) -> tuple[Path, Path]:
    """A run recorded in `origin/mlruns.db` and one that missed it."""
    tracked, missed = origin / "runs" / "a__mc", origin / "runs" / "b__mc"
    record_and_log(TrackingConfig(tracking_uri=_uri(origin)), _started_in_origin(tracked, "a:mc"), instances("a:mc"),
                   tracked)
    write_run_folder(missed, _started_in_origin(missed, "b:mc"), instances("b:mc"))
    return tracked, missed


def test_sync_from_another_folder_pushes_into_the_store_the_records_name(tmp_path):
    origin, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    _folders(origin)
    res = _sync(str(origin / "runs"), cwd=elsewhere)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (elsewhere / "mlruns.db").exists()  # no new, empty store beside the caller
    assert res.stdout.count("already in") == 1 and res.stdout.count("pushed to") == 1
    assert sorted(r.data.tags["evalbench.task_spec"] for r in _runs(_uri(origin))) == ["a:mc", "b:mc"]


def test_a_record_that_does_not_say_where_its_run_started_finds_the_store_above_it(tmp_path):
    """A record whose `output_dir` was absolute (Hydra's default run folder): the nearest `mlruns.db`
    above the run folder."""
    origin, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    run_dir = origin / "runs" / "2026-01-01_00-00-00" / "c__mc"
    record_and_log(TrackingConfig(tracking_uri=_uri(origin)), make_record(origin / "runs" / "x", "x:mc"),
                   instances("x:mc"), origin / "runs" / "x")  # the store exists in `origin`
    record = make_record(run_dir, "c:mc", tracking_uri="sqlite:///mlruns.db")
    write_run_folder(run_dir, record.model_copy(update={"config": {**record.config, "output_dir": str(run_dir.parent)}}),
                     instances("c:mc"))
    res = _sync(str(run_dir), cwd=elsewhere)
    assert res.returncode == 0 and "pushed to" in res.stdout, res.stderr[-2000:]
    assert not (elsewhere / "mlruns.db").exists()
    assert "c:mc" in {r.data.tags["evalbench.task_spec"] for r in _runs(_uri(origin))}


def test_sync_refuses_a_store_that_does_not_exist_unless_asked_to_create_it(tmp_path):
    origin, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    _folders(origin)
    (origin / "mlruns.db").rename(origin / "moved.db")  # the store the records name is gone
    res = _sync(str(origin / "runs"), cwd=elsewhere)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (message,) = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert "does not exist" in message and "--create" in message and str(origin / "mlruns.db") in message
    assert not (elsewhere / "mlruns.db").exists()
    typed = _sync(str(origin / "runs"), "--tracking-uri", "sqlite:///typo.db", cwd=elsewhere)
    assert typed.returncode == 2 and not (elsewhere / "typo.db").exists()
    created = _sync(str(origin / "runs"), "--tracking-uri", "sqlite:///new.db", "--create", cwd=elsewhere)
    assert created.returncode == 0, created.stderr[-2000:]
    assert created.stdout.count("pushed to") == 2 and len(_runs(f"sqlite:///{elsewhere / 'new.db'}")) == 2
