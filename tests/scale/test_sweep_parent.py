"""A sweep's MLflow parent run (engine/record/sweep.py log_sweep_parents): the jobs' runs nested under it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from engine.config.compose import conf_dir
from engine.config.schema import TrackingConfig
from engine.record import store
from engine.record.mlflow_writer import start_mlflow_run
from engine.record.suite import KIND_TAG, PARENT_TAG
from engine.record.sweep import SWEEP_ID_ENV, SWEEP_ID_TAG, JobResult, JobRun, log_sweep_parents
from engine.sweep import sweep_id_override


@pytest.mark.slow  # creates an MLflow SQLite store (~10 s on the shared CI machine)
def test_sweep_parent_run_nests_the_job_runs(tmp_path: Path) -> None:
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    client = store.client(tracking.tracking_uri)
    plain = start_mlflow_run(tracking, "core", "step100 truthfulqa")
    suite = start_mlflow_run(tracking, "core", "suite core")
    task = start_mlflow_run(tracking, "core", "step200 truthfulqa", {PARENT_TAG: suite})

    def job(i: int, status: str, runs: list[str]) -> JobResult:
        return JobResult(sweep_id="s1", job=i, job_dir=str(tmp_path / str(i)), model=f"/ck/step{i}", task_spec="core",
                         status=status, exit_code=0 if status == "finished" else 1,  # type: ignore[arg-type]
                         runs=[JobRun(task_spec="truthfulqa_mc1", status=status, metric="acc", score=0.5, se=0.1,
                                      mlflow_run_id=r, experiment_name="core") for r in runs])

    results = [job(0, "finished", [plain]), job(1, "finished", [task]), job(2, "failed", [])]
    [parent] = log_sweep_parents("s1", tmp_path, results, [tracking, tracking, tracking])
    run = client.get_run(parent)
    assert run.data.tags[KIND_TAG] == "sweep" and run.data.tags[SWEEP_ID_TAG] == "s1"
    assert run.info.status == "FAILED"  # one job failed
    assert run.data.metrics["jobs.finished"] == 2 and run.data.metrics["jobs.failed"] == 1
    assert client.get_run(plain).data.tags[PARENT_TAG] == parent
    assert client.get_run(suite).data.tags[PARENT_TAG] == parent  # the suite's run is nested ...
    assert client.get_run(task).data.tags[PARENT_TAG] == suite  # ... and its task runs stay under it
    summary = Path(client.download_artifacts(parent, "sweep_summary.txt", str(tmp_path))).read_text()
    assert "3 job(s): 2 finished, 1 failed" in summary
    assert log_sweep_parents("s2", tmp_path, results, [None, TrackingConfig(mlflow=False), None]) == []


@pytest.mark.parametrize("sweep_id", ["472e44854063", "000000000123", "1e5", "abcdef012345"])
def test_a_sweep_id_reaches_the_jobs_as_typed_even_when_it_reads_as_a_number(sweep_id: str) -> None:
    """uuid hex ids such as 472e44854063 read as the float inf in Hydra's grammar: every job then
    recorded sweep_id 'inf' and the parent reported all of its jobs missing (exit 1, roughly 1 sweep
    in 150)."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=[sweep_id_override(sweep_id)], return_hydra_config=True)
    assert cfg.hydra.job.env_set[SWEEP_ID_ENV] == sweep_id
