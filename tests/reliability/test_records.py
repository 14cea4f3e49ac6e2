"""Records that are right and never lost (evalbench issue 10): real MLflow stores, real processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config.schema import TrackingConfig
from engine.record import store
from engine.record.atomic import atomic_open
from engine.record.folder import read_run_folder, write_run_folder
from engine.record.lifecycle import PID_TAG
from engine.record.mlflow_writer import run_metrics, run_tags, start_mlflow_run
from engine.record.publish import RecordNotTracked, push_run_folder, record_and_log, run_name
from engine.record.suite import SUITE_FILE, SuiteNotTracked, record_suite
from engine.types import InstanceRecord
from tests.conftest import REPO
from tests.reliability.records import instances, make_record

CHILD = [sys.executable, "-m", "tests.reliability.records"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, experiment: str = "reliability"):
    from mlflow.entities import ViewType

    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)


def _record_concurrently(tmp_path: Path, uri: str, n: int = 8) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([*CHILD, "record", str(tmp_path), uri, str(i)], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    try:
        deadline = time.monotonic() + 180
        while not all((tmp_path / f"ready-{i}").exists() for i in range(n)):
            assert time.monotonic() < deadline, "child processes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
            time.sleep(0.05)
        (tmp_path / "go").touch()
        return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _assert_all_landed(tmp_path: Path, uri: str, results, n: int = 8) -> None:
    assert [r.returncode for r in results] == [0] * n, [r.stderr[-2000:] for r in results]
    runs = _runs(uri)
    assert len(runs) == n
    assert {r.info.status for r in runs} == {"FINISHED"}
    folders = {read_run_folder(tmp_path / "runs" / f"task{i}")[0].run_id for i in range(n)}
    assert {r.data.tags["evalbench.run_id"] for r in runs} == folders


# -- item 9: concurrent runs all land -----------------------------------------------------------
def test_eight_processes_on_a_fresh_sqlite_store_all_land(tmp_path):
    uri = "sqlite:///mlruns.db"  # relative, as the default config has it
    results = _record_concurrently(tmp_path, uri)
    _assert_all_landed(tmp_path, f"sqlite:///{tmp_path / 'mlruns.db'}", results)
    with sqlite3.connect(tmp_path / "mlruns.db") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert not [t for t in tables if t.startswith("_alembic_tmp_")]


@pytest.mark.slow
def test_eight_processes_against_a_real_mlflow_server_all_land(tmp_path):
    from tests.test_e2e import _free_port, _stop, _wait_http

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", 90, server)
        uri = f"http://127.0.0.1:{port}"
        results = _record_concurrently(tmp_path, uri)
        _assert_all_landed(tmp_path, uri, results)
    finally:
        _stop(server)


def test_a_store_left_half_migrated_is_repaired(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    store.client(uri).search_experiments()
    with sqlite3.connect(tmp_path / "mlruns.db") as conn:  # what a migration race leaves behind
        conn.execute("CREATE TABLE _alembic_tmp_metrics (x INTEGER)")
    store._prepared.discard(uri)  # a new process, as far as the store is concerned
    run_dir = tmp_path / "runs" / "mmlu"
    record = record_and_log(TrackingConfig(tracking_uri=uri), make_record(run_dir), instances("mmlu:mc"), run_dir)
    assert _client(uri).get_run(record.mlflow_run_id).info.status == "FINISHED"
    with sqlite3.connect(tmp_path / "mlruns.db") as conn:
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp_%'").fetchall()


def test_experiment_created_by_another_process_is_reused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    first, second = store.client(uri), _client(uri)
    exp_id = second.create_experiment("shared")
    assert store.get_or_create_experiment(first, "shared") == exp_id


def _schema(db: Path) -> tuple[list, list]:
    """Tables, indexes and their definitions (clauses sorted: MLflow's own migration orders the
    constraints of a rebuilt table differently from run to run)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index')")
        tables = sorted((name, sorted((sql or "").replace("(", "(\n").split("\n"))) for name, sql in rows)
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return tables, version


def test_a_new_store_is_a_copy_of_the_migrated_schema_and_gets_its_own_default_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    plain = tmp_path / "plain.db"
    _client(f"sqlite:///{plain}").search_experiments()  # MLflow's own migration, for reference
    copies = [tmp_path / "a" / "mlruns.db", tmp_path / "b" / "mlruns.db"]
    for db in copies:
        store.client(f"sqlite:///{db}").search_experiments()
    [template] = (tmp_path / "home" / "mlflow-schema").glob("mlflow-*.db")
    built = template.stat().st_mtime_ns
    for db in copies:
        assert _schema(db) == _schema(plain)
        default = _client(f"sqlite:///{db}").get_experiment("0")
        assert default.name == "Default"
        assert default.artifact_location == _client(f"sqlite:///{plain}").get_experiment("0").artifact_location
    assert template.stat().st_mtime_ns == built  # built once, then only copied
    run_dir = tmp_path / "runs" / "mmlu"
    uri = f"sqlite:///{copies[0]}"
    record = record_and_log(TrackingConfig(tracking_uri=uri), make_record(run_dir), instances("mmlu:mc"), run_dir)
    assert _client(uri).get_run(record.mlflow_run_id).info.status == "FINISHED"


# -- item 5: the standard errors, named --------------------------------------------------------
def test_both_standard_errors_are_logged_and_named(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    run_dir = tmp_path / "runs" / "mmlu"
    insts = instances("mmlu:mc", 15)  # 5 clusters: the CR1 clustered SE (fewer: the plain SE, with a note)
    record = make_record(run_dir, insts=insts)
    acc = record.scores["acc"]
    assert acc.clustered_stderr is not None and acc.clustered_stderr != pytest.approx(acc.stderr)
    logged = record_and_log(TrackingConfig(tracking_uri=uri), record, insts, run_dir)
    metrics = _client(uri).get_run(logged.mlflow_run_id).data.metrics
    assert metrics["acc.stderr"] == pytest.approx(acc.stderr)
    assert metrics["acc.clustered_stderr"] == pytest.approx(acc.clustered_stderr)
    assert metrics["acc.reported_stderr"] == pytest.approx(acc.clustered_stderr)
    assert metrics["acc.n_clusters"] == 5 and metrics["acc.df"] == 4
    # the CI and MDE beside it use the clustered SE, on t with 4 df (tests/test_stats_recorded.py checks the figures)
    assert metrics["acc.mde"] == pytest.approx(acc.mde) and metrics["acc.ci_high"] == pytest.approx(acc.ci_high)
    unclustered = record.model_copy(update={"scores": {"acc": acc.model_copy(update={"clustered_stderr": None,
                                                                                        "n_clusters": None})}})
    plain = run_metrics(unclustered)
    assert plain["acc.reported_stderr"] == plain["acc.stderr"] and "acc.clustered_stderr" not in plain


# -- item 10: atomic folders, stale runs ------------------------------------------------------
def test_a_write_failing_midway_leaves_the_previous_folder_intact(tmp_path):
    run_dir = tmp_path / "runs" / "mmlu"
    first = make_record(run_dir)
    write_run_folder(run_dir, first, instances("mmlu:mc"))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}

    def full_disk(items: list[InstanceRecord]):
        yield from items[:3]
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_run_folder(run_dir, make_record(run_dir), full_disk(instances("mmlu:mc", 50)))
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # no partial file, no temp file
    assert read_run_folder(run_dir)[0].run_id == first.run_id
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in run_dir.iterdir()} == {0o666 & ~umask}  # as a plain write gives

    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("new, half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["runs", "x.json"]


def test_a_killed_run_is_marked_killed_by_the_next_run_and_sync_completes_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    child = subprocess.Popen([*CHILD, "start-and-hang", str(tmp_path), uri, "0"], cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        killed_id = child.stdout.readline().strip()
        assert killed_id, child.stderr.read()[-2000:]
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    client = _client(uri)
    assert client.get_run(killed_id).info.status == "RUNNING"  # visible while (and after) it was killed
    # A run of this process that is still going must be left alone.
    run_dir = tmp_path / "runs" / "live"
    live = make_record(run_dir, "live:mc")
    tracking = TrackingConfig(tracking_uri=uri)
    live_id = start_mlflow_run(tracking, live.experiment_name, run_name(live), run_tags(live))
    assert client.get_run(killed_id).info.status == "KILLED"
    assert client.get_run(killed_id).data.tags["evalbench.status"] == "killed"
    assert client.get_run(live_id).info.status == "RUNNING"
    assert client.get_run(live_id).data.tags[PID_TAG] == str(os.getpid())
    # The killed run's folder was complete: sync finishes that same MLflow run, no duplicate.
    killed_dir = tmp_path / "runs" / "task0"
    outcome = push_run_folder(killed_dir)
    assert (outcome.action, outcome.mlflow_run_id) == ("pushed", killed_id)
    assert client.get_run(killed_id).info.status == "FINISHED"
    assert len([r for r in _runs(uri) if r.data.tags.get("evalbench.task_spec") == "task0:mc"]) == 1


# -- item 9: a record that missed the store, then engine.sync -------------------------------------
def _sync(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.sync", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_a_record_that_missed_the_store_is_reported_and_synced_once(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    broken = f"sqlite:///{tmp_path / 'not-a-dir' / 'mlruns.db'}"  # a store that cannot be opened
    good = f"sqlite:///{tmp_path / 'mlruns.db'}"
    job = tmp_path / "runs"
    records = []
    for spec in ("arc:mc", "sciq:mc"):
        run_dir = job / spec.replace(":", "__")
        with pytest.raises(RecordNotTracked) as caught:
            record_and_log(TrackingConfig(tracking_uri=broken), make_record(run_dir, spec), instances(spec), run_dir)
        assert caught.value.run_dirs == [run_dir] and "python -m engine.sync" in str(caught.value)
        records.append(caught.value.record)
        assert read_run_folder(run_dir)[0] == caught.value.record  # the folder is complete
    aggregate = {"name": "core", "kind": "suite", "metric": "acc", "value": 0.5, "stderr": 0.1, "ci_low": 0.3,
                 "ci_high": 0.7, "mde": 0.28, "n": 12, "missing": [],
                 "parts": [{"name": r.task_spec, "kind": "task", "metric": "acc", "value": 0.5, "stderr": 0.14,
                            "ci_low": 0.2, "ci_high": 0.8, "mde": 0.4, "n": 6} for r in records]}
    with pytest.raises(SuiteNotTracked):
        record_suite(job, aggregate, records, TrackingConfig(tracking_uri=broken))
    assert json.loads((job / SUITE_FILE).read_text())["aggregate"]["value"] == 0.5

    assert _sync("nowhere", cwd=tmp_path).returncode == 2
    first = _sync(str(job), "--tracking-uri", good, "--create", cwd=tmp_path)  # a new store: asked for
    assert first.returncode == 0, first.stderr
    assert "3 of 3 record(s) in the store" in first.stdout and first.stdout.count("pushed to") == 3
    runs = _runs(good)
    (parent,) = [r for r in runs if r.data.tags.get("evalbench.kind") == "suite"]
    children = [r for r in runs if r is not parent]
    assert sorted(r.data.tags["evalbench.run_id"] for r in children) == sorted(r.run_id for r in records)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.data.metrics["core"] == 0.5 and parent.data.metrics["core.reported_stderr"] == 0.1
    assert parent.data.metrics["arc:mc.n"] == 6
    assert {r.info.status for r in runs} == {"FINISHED"}
    for r in children:  # the folder now names the MLflow run that holds it
        assert read_run_folder(Path(r.data.tags["evalbench.run_dir"]))[0].mlflow_run_id == r.info.run_id

    again = _sync(str(job), "--tracking-uri", good, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("already in") == 3
    assert len(_runs(good)) == 3


def test_a_suite_is_recorded_as_a_parent_run_with_its_file(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    job = tmp_path / "runs"
    tracking = TrackingConfig(tracking_uri=uri)
    records = [record_and_log(tracking, make_record(job / s, s), instances(s), job / s) for s in ("a:mc", "b:mc")]
    aggregate = {"name": "duo", "kind": "suite", "metric": "acc", "value": 0.5, "stderr": 0.1, "ci_low": 0.3,
                 "ci_high": 0.7, "mde": 0.28, "n": 12, "parts": [], "missing": ["c:mc"]}
    suite = record_suite(job, aggregate, records, tracking)
    saved = json.loads((job / SUITE_FILE).read_text())
    assert saved["mlflow_run_id"] == suite.mlflow_run_id and [r["run_id"] for r in saved["runs"]] == [r.run_id for r in records]
    client = _client(uri)
    parent = client.get_run(suite.mlflow_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["suite.missing"] == "c:mc"
    assert all(client.get_run(r.mlflow_run_id).data.tags["mlflow.parentRunId"] == suite.mlflow_run_id for r in records)
