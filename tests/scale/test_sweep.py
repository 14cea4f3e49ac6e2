"""Sweeps on Hydra launchers: a failing job is its own, the parent prints one summary (engine/sweep.py).

The launcher plugins come with the `scale` extra; tests that need one are skipped without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from engine.record.sweep import JobResult, JobRun, read_job_results, summary_table, sweep_exit_code, write_job_result
from engine.sweep import missing_jobs
from tests.conftest import run_engine


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def needs(plugin: str):
    return pytest.mark.skipif(not _installed(f"hydra_plugins.{plugin}"),
                              reason=f"{plugin} is not installed (pip install -e '.[scale]')")


def _results(sweep_root: Path) -> list[JobResult]:
    """The results of the one sweep a test ran under `sweep_root`."""
    return read_job_results(sweep_root)


def _sweep_root(workdir: Path) -> Path:
    return workdir / "sweep"


def test_results_summary_and_exit_code(tmp_path: Path) -> None:
    def result(job: int, status: str, code: int, sweep: str = "s1", runs: list[JobRun] | None = None,
               reason: str | None = None) -> JobResult:
        return JobResult(sweep_id=sweep, job=job, job_dir=str(tmp_path / str(job)), overrides=[f"model.path=/ck/step{job}"],
                         model=f"/ck/step{job}", task_spec="truthfulqa_mc1", status=status, exit_code=code,  # type: ignore[arg-type]
                         reason=reason, runs=runs or [])

    ok = JobRun(task_spec="truthfulqa_mc1", status="finished", metric="acc", score=0.5, se=0.25, scored=4)
    write_job_result(tmp_path / "0", result(0, "finished", 0, runs=[ok]))
    write_job_result(tmp_path / "1", result(1, "failed", 2, reason="model.path '/ck/step1' does not exist"))
    write_job_result(tmp_path / "2", result(2, "finished", 0, sweep="an-older-sweep", runs=[ok]))

    found = read_job_results(tmp_path, "s1")
    assert [r.job for r in found] == [0, 1]  # job 2 belongs to another sweep that used the same folder
    gone = missing_jobs(found, [["a=1"], ["a=2"], ["a=3"]], tmp_path)
    assert [(r.job, r.status) for r in gone] == [(2, "missing")]
    table = summary_table([*found, *gone])
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["job", "checkpoint", "/", "model"]
    assert any(line.split()[:6] == ["0", "/ck/step0", "truthfulqa_mc1", "finished", "0.5000", "0.2500"] for line in lines)
    assert any(line.split()[:4] == ["1", "/ck/step1", "truthfulqa_mc1", "failed"] for line in lines)
    assert "3 job(s): 1 finished, 1 failed, 1 missing" in table
    assert "model.path '/ck/step1' does not exist" in table

    assert sweep_exit_code(found) == 1
    assert sweep_exit_code([found[0]]) == 0
    assert sweep_exit_code([found[0], result(3, "partial", 3)]) == 3
    assert sweep_exit_code([found[0], result(3, "untracked", 4)]) == 4
    assert sweep_exit_code([result(3, "partial", 3), result(4, "untracked", 4)]) == 3


def test_a_failing_job_does_not_end_the_sweep(workdir: Path) -> None:
    """Hydra's own launcher, in process: the missing checkpoint fails alone, the other job runs, exit 1."""
    res = run_engine(["-m", "model.path=/no/such/step7,null", "task=truthfulqa_mc1", "limit=1", "inspect=true",
                      "tracking=none", f"hydra.sweep.dir={_sweep_root(workdir)}"], workdir, timeout=300)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    results = _results(_sweep_root(workdir))
    assert [(r.job, r.status) for r in results] == [(0, "failed"), (1, "finished")]
    assert "model.path '/no/such/step7' does not exist" in (results[0].reason or "")
    assert results[0].model == "/no/such/step7" and results[0].task_spec == "truthfulqa_mc1"
    assert "2 job(s): 1 finished, 1 failed" in res.stdout
    assert all((Path(r.job_dir) / "job_result.json").is_file() for r in results)


def test_a_launcher_whose_plugin_is_missing_is_a_clear_error(workdir: Path) -> None:
    conf = workdir / "myconf" / "hydra" / "launcher"
    conf.mkdir(parents=True)
    (conf / "faraway.yaml").write_text("_target_: hydra_plugins.hydra_faraway_launcher.launcher.FarawayLauncher\n")
    res = run_engine(["-m", "hydra/launcher=faraway", "task=truthfulqa_mc1", "limit=1", "inspect=true", "tracking=none"],
                     workdir, timeout=300, env={"EVALBENCH_CONFIG_PATH": str(workdir / "myconf")})
    assert res.returncode == 2, res.stderr[-3000:]
    assert "not installed (package hydra-faraway-launcher)" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (workdir / "runs").exists()  # nothing launched


def test_an_unknown_launcher_is_a_clear_error(workdir: Path) -> None:
    res = run_engine(["-m", "hydra/launcher=nope", "task=truthfulqa_mc1", "limit=1", "inspect=true", "tracking=none"],
                     workdir, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Cannot compose the sweep's Hydra configuration" in res.stderr and "hydra/launcher=joblib" in res.stderr
    assert "Traceback" not in res.stderr


def _checkpoint_sweep(workdir: Path, smollm2_dir: Path, launcher: list[str], models: list[str], tasks: str):
    return run_engine(["-m", *launcher, f"model.path={','.join(models)}", f"task={tasks}", "limit=2",
                       f"cache.path={workdir / 'cache.sqlite'}", f"hydra.sweep.dir={_sweep_root(workdir)}"],
                      workdir, timeout=900)


# The joblib and Ray sweeps over checkpoints (one missing: a job's failure is its own) run as README
# "Sweeps on launchers" is written: tests/test_readme.py, journey `launchers`, check failed_job_is_its_own.


@needs("hydra_submitit_launcher")
def test_submitit_slurm_config_composes(workdir: Path) -> None:
    res = run_engine(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.array_parallelism=4",
                      "--cfg", "hydra", "-p", "hydra.launcher"], workdir, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout
    for line in ("_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "partition: gpu",
                 "array_parallelism: 4", "gpus_per_node: 1", "timeout_min: 240"):
        assert line in text, text


@pytest.mark.slow
@needs("hydra_submitit_launcher")
def test_submitit_pickled_job_runs_in_a_fresh_process(workdir: Path) -> None:
    """submitit pickles the launcher with its job function (cloudpickle) and runs it in a new Python
    process; `submitit_local` does exactly what SLURM would, on this machine."""
    res = run_engine(["-m", "hydra/launcher=submitit_local", "model.path=/no/such/step9,null", "task=truthfulqa_mc1",
                      "limit=1", "inspect=true", "tracking=none", f"hydra.sweep.dir={_sweep_root(workdir)}"],
                     workdir, timeout=600)
    assert res.returncode == 1, res.stderr[-3000:]
    results = _results(_sweep_root(workdir))
    assert [(r.job, r.status) for r in results] == [(0, "failed"), (1, "finished")]
    assert list((_sweep_root(workdir) / ".submitit").rglob("*_submitted.pkl"))  # the pickled job
