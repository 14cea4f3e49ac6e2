"""`python -m engine` end to end, as a user runs it: real SmolLM2, real MLflow, real servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_engine

pytestmark = pytest.mark.slow


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("runs/**/experiment.json"))


def _load(run_dir: Path):
    record = json.loads((run_dir / "experiment.json").read_text())
    instances = [json.loads(line) for line in (run_dir / "instances.jsonl").read_text().splitlines()]
    return record, instances


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def test_default_run_prints_table_records_everything_and_reruns_from_cache(workdir):
    res = run_engine(["limit=12"], workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    for column in ("task spec", "model", "n", "score", "SE", "95% CI", "MDE", "errors", "time"):
        assert column in res.stdout
    assert "mlflow ui --backend-store-uri sqlite:///mlruns.db" in res.stdout
    (run_dir,) = _run_dirs(workdir)
    record, instances = _load(run_dir)
    assert record["counts"] == {"n": 12, "scored": 12, "errored": 0}
    assert record["task_spec"] == "mmlu" and record["model"]["content_hash"]
    acc = record["scores"]["acc"]
    assert acc["n"] == 12 and acc["ci_low"] <= acc["value"] <= acc["ci_high"] and acc["mde"] > 0
    assert acc["clustered_stderr"] is not None  # MMLU subject is the cluster
    assert all(i["logprobs"] and len(i["logprobs"]) == 4 and not i["cached"] for i in instances)
    assert json.loads((run_dir / "metrics.json").read_text())["acc"]["value"] == acc["value"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlruns.db'}")
    run = client.get_run(record["mlflow_run_id"])
    # An experiment per task (no suite), holding this one run, finished.
    assert client.get_experiment(run.info.experiment_id).name == "mmlu"
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [run.info.run_id]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["acc"] == pytest.approx(acc["value"])
    assert run.data.metrics["acc.stderr"] == pytest.approx(acc["stderr"])
    assert run.data.tags["evalbench.task_spec"] == "mmlu"
    assert run.data.params["task.formulation"] == "mc"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/experiment.json", "run/instances.jsonl", "run/metrics.json"} <= artifacts

    again = run_engine(["limit=12"], workdir)
    assert again.returncode == 0, again.stderr[-2000:]
    newest = _run_dirs(workdir)[-1]
    rec2, inst2 = _load(newest)
    assert newest != run_dir and all(i["cached"] for i in inst2)  # no model call
    assert rec2["scores"]["acc"]["value"] == acc["value"]


def test_killed_run_resumes_from_cache(workdir):
    args = [sys.executable, "-m", "engine", "task=truthfulqa_mc1", "limit=60", "model.batch_size=2", "tracking=none",
            "progress=false"]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = workdir / ".cache/evalbench/responses.sqlite"
    deadline = time.monotonic() + 300
    rows = 0
    while time.monotonic() < deadline and rows < 6:
        time.sleep(0.5)
        if db.exists():
            try:
                rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results_v2").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 6 <= rows < 60, rows
    done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results_v2").fetchone()[0]
    res = run_engine(["task=truthfulqa_mc1", "limit=60", "model.batch_size=8", "tracking=none"], workdir)
    assert res.returncode == 0, res.stderr[-2000:]
    _, instances = _load(_run_dirs(workdir)[-1])
    assert len(instances) == 60
    assert sum(i["cached"] for i in instances) == done  # everything computed before the kill was kept


def test_an_unreachable_server_is_refused_before_any_request(workdir):
    """Requests that fail at a reachable server are errored instances, exit 1 (the fault table of
    tests/reliability/test_fault_table.py); a server that is not there stops the run at once."""
    port = _free_port()  # nothing listens there
    start = time.monotonic()
    res = run_engine(
        ["model=litellm", "model.name=openai/nothing", f"model.api_base=http://127.0.0.1:{port}/v1",
         "task=gsm8k", "variant=0shot", "limit=3", "harness.max_retries=3", "harness.retry_backoff_s=5",
         "tracking=none"],
        workdir, timeout=300,
    )
    assert res.returncode == 2 and "cannot reach the model server" in res.stderr, res.stderr[-2000:]
    assert time.monotonic() - start < 60  # not the retry schedule of every request
    assert not _run_dirs(workdir)


# The checkpoint sweep nested in one MLflow experiment and `suite=base_qa` (its four task specs, the
# mean of 4 with its CI) run as README "A short tour" in tests/test_readme.py (checks in readme_checks.py).


def test_records_reach_a_real_mlflow_server(workdir):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
         "--artifacts-destination", str(workdir / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", 90, server)
        res = run_engine(["task=truthfulqa_mc1", "limit=4", f"tracking.tracking_uri=http://127.0.0.1:{port}"], workdir)
        assert res.returncode == 0, res.stderr[-3000:]
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        exp = json.load(urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=truthfulqa_mc1"))
        body = json.dumps({"experiment_ids": [exp["experiment"]["experiment_id"]]}).encode()
        req = urllib.request.Request(f"{base}/runs/search", data=body, headers={"Content-Type": "application/json"})
        (run,) = json.load(urllib.request.urlopen(req))["runs"]
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        record, _ = _load(_run_dirs(workdir)[0])
        assert metrics["acc"] == pytest.approx(record["scores"]["acc"]["value"])
        assert metrics["n"] == 4 and "acc.mde" in metrics
        assert tags["evalbench.task_hash"] == record["task_hash"] and tags["evalbench.model"] == "smollm2-135m-instruct"
        assert params["task.name"] == "truthfulqa_mc1"
        assert run["info"]["status"] == "FINISHED"
    finally:
        _stop(server)


def test_litellm_provider_against_a_real_openai_compatible_server(workdir, smollm2_dir):
    port = _free_port()
    server = subprocess.Popen(
        ["transformers", "serve", "--host", "127.0.0.1", "--port", str(port), str(smollm2_dir)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    common = ["task=gsm8k", "variant=0shot", "limit=2", "task.generation.max_tokens=24", "tracking=none"]
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/models", 180, server)
        res = run_engine(["model=litellm", f"model.name=openai/{smollm2_dir}", f"model.api_base=http://127.0.0.1:{port}/v1",
                          *common], workdir)
        assert res.returncode == 0, res.stderr[-3000:]
        served = {i["instance_id"]: i for i in _load(_run_dirs(workdir)[-1])[1]}
        assert all(i["error"] is None and i["output_text"] for i in served.values())
        assert all(i["completion_tokens"] > 0 for i in served.values())
        # Text completions (a raw prompt, no chat template) go to /v1/completions.
        text = run_engine(["model=litellm", f"model.name=text-completion-openai/{smollm2_dir}",
                           f"model.api_base=http://127.0.0.1:{port}/v1", *common, "task.chat=false"], workdir)
        assert text.returncode == 0, text.stderr[-3000:]
        completed = _load(_run_dirs(workdir)[-1])[1]
        assert all(i["error"] is None and i["request"]["prompt"] for i in completed)
        assert any(i["output_text"].strip() for i in completed)
        # Loglikelihood through a server without prompt logprobs: a clear error, no approximation.
        refused = run_engine(["model=litellm", f"model.name=openai/{smollm2_dir}",
                              f"model.api_base=http://127.0.0.1:{port}/v1", "task=mmlu", "limit=2"], workdir)
        assert refused.returncode == 2 and "prompt logprobs" in refused.stderr
    finally:
        _stop(server)
    # The same greedy chat request in-process gives the same text.
    local = run_engine(common, workdir)
    assert local.returncode == 0, local.stderr[-2000:]
    inproc = {i["instance_id"]: i for i in _load(_run_dirs(workdir)[-1])[1]}
    for key, inst in served.items():
        assert inproc[key]["output_text"].strip()[:40] == inst["output_text"].strip()[:40]


@pytest.mark.slow
@pytest.mark.parametrize(("how", "code", "said"), [(signal.SIGINT, 130, "interrupted;"),
                                                  (signal.SIGTERM, 143, "terminated (SIGTERM);")], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(workdir, how, code, said):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop) mid-run: no traceback, what finished recorded
    as interrupted, the resume hint, exit 130 or 143; the re-run reuses what was cached."""
    args = [sys.executable, "-m", "engine", "task=mmlu", "limit=64", "model.batch_size=2", "tracking=none"]
    # A Ctrl-C at a terminal: SIGINT at its default in the child even when a non-interactive parent
    # (CI started in the background) left it ignored, which the child would inherit.
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    cache = workdir / ".cache" / "evalbench" / "responses.sqlite"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not _cached_rows(cache):
        time.sleep(0.5)
    proc.send_signal(how)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and f"{said} every finished response is cached: re-run the same command to resume" in err
    done = _cached_rows(cache)
    assert 0 < done < 64
    (first,) = workdir.glob("runs/*/mmlu/experiment.json")  # what finished is recorded, marked interrupted
    record = json.loads(first.read_text())
    assert record["status"] == "interrupted" and 0 < record["counts"]["n"] < 64
    assert "interrupted" in out and "mmlu" in out  # the partial table
    res = run_engine(["task=mmlu", "limit=64", "model.batch_size=2", "tracking=none"], workdir)
    assert res.returncode == 0, res.stderr[-2000:]
    inst = max(workdir.glob("runs/*/mmlu/instances.jsonl"), key=lambda p: p.stat().st_mtime)  # the resumed run
    rows = [json.loads(line) for line in inst.read_text().splitlines()]
    assert sum(r["cached"] for r in rows) >= done and len(rows) == 64


def _cached_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(path, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM results_v2").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0
