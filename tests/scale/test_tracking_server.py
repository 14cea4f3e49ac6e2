"""`tracking=server`: a local PostgreSQL + `mlflow server` (scripts/tracking_server.sh) takes the records of
four evalbench processes started at once; every run, metric and instance table is read back over REST."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "tracking_server.sh"
JOBS = [("truthfulqa_mc1", 1), ("truthfulqa_mc1", 2), ("hellaswag", 1), ("hellaswag", 2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="psycopg is not installed (extra `scale`)"),
    pytest.mark.skipif(shutil.which("pg_ctl") is None and not Path("/usr/local/bin/pg_ctl").exists(),
                       reason="PostgreSQL (pg_ctl) is not installed"),
]


def test_four_concurrent_runs_reach_the_shared_server(workdir: Path) -> None:
    # The database runs as `postgres` when the tests run as root: its home must be reachable by that user.
    home = Path(tempfile.mkdtemp(prefix="evalbench-tracking-"))
    home.chmod(0o755)
    port, pg_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EVALBENCH_TRACKING_HOME": str(home / "server"), "EVALBENCH_TRACKING_PORT": str(port),
           "EVALBENCH_PG_PORT": str(pg_port), "PYTHON": sys.executable, "EVALBENCH_TRACKING_URI": url}
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stderr
        assert f"MLflow tracking server on {url}" in started.stdout and "tracking_server.sh stop" in started.stdout
        procs = [subprocess.Popen([sys.executable, "-m", "engine", f"task={task}", f"seed={seed}", "limit=2", "tracking=server",
                                   f"cache.path={workdir / 'cache.sqlite'}", f"output_dir={workdir / 'runs' / f'{task}-{seed}'}"],
                                  cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for task, seed in JOBS]
        outs = [p.communicate(timeout=900) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err[-3000:]

        for task, seed in JOBS:
            record = json.loads((workdir / "runs" / f"{task}-{seed}" / task / "experiment.json").read_text())
            run_id = record["mlflow_run_id"]
            assert run_id
            run = _get(f"{url}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
            assert run["info"]["status"] == "FINISHED"
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            assert tags["evalbench.run_id"] == record["run_id"] and tags["evalbench.task_spec"] == task
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            for key in ("acc", "acc.stderr", "acc.ci_low", "acc.ci_high", "acc.mde", "acc.n", "scored"):
                assert key in metrics, (task, seed, sorted(metrics))
            assert metrics["scored"] == 2
            assert metrics["acc"] == pytest.approx(record["scores"]["acc"]["value"])
            listed = _get(f"{url}/api/2.0/mlflow/artifacts/list?run_id={run_id}")["files"]
            assert {f["path"] for f in listed} >= {"instances_table.json", "run"}
            inside = _get(f"{url}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=run")["files"]
            assert {f["path"] for f in inside} == {"run/experiment.json", "run/instances.jsonl", "run/metrics.json"}
            query = urllib.parse.urlencode({"path": "instances_table.json", "run_uuid": run_id})
            table = _get(f"{url}/get-artifact?{query}")
            assert len(table["data"]) == 2 and "score.acc" in table["columns"]

        for task in ("truthfulqa_mc1", "hellaswag"):
            exp = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={task}")["experiment"]
            runs = _post(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
            assert len(runs) == 2 and all(r["info"]["status"] == "FINISHED" for r in runs)
    finally:
        stopped = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)
        status = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert "mlflow: stopped" in status.stdout and "postgres: stopped" in status.stdout
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=5)
