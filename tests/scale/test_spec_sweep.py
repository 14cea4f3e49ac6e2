"""Sweeping task specs and task lists (`-m task=a:rc,b`, `-m task=[a,b],[c]`): engine/sweep.py carries
them to the launcher under one key, validates every job up front, and each job composes its spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.compose import compose_experiment
from engine.config.errors import ConfigError
from engine.config.prepare import prepare
from engine.record.sweep import read_job_results
from engine.sweep import SPEC_KEY, launcher_overrides, sweep_jobs
from tests.conftest import run_engine


def test_swept_specs_expand_to_one_job_each() -> None:
    args = ["task=truthfulqa_mc1:rc,[truthfulqa_mc1,mmlu:mc],mmlu", "model.path=/a,/b", "limit=1"]
    jobs = sweep_jobs(prepare(args))
    assert len(jobs) == 6
    assert jobs[0].strings() == ["task=truthfulqa_mc1", "model.path=/a", "limit=1", "variant=[rc]"]
    assert jobs[2].items[0].names == ("truthfulqa_mc1", "mmlu:mc") and jobs[4].strings()[0] == "task=mmlu"
    exps = [compose_experiment(j) for j in jobs[:4:2]]
    assert exps[0].task is not None and (exps[0].task.name, exps[0].task.variants) == ("truthfulqa_mc1", ["rc"])
    assert exps[1].suite is not None and exps[1].suite.tasks == ["truthfulqa_mc1", "mmlu:mc"]
    # what the launcher gets: specs and lists under SPEC_KEY, a plain group sweep untouched
    assert launcher_overrides(prepare([args[0], "task=mmlu,gsm8k"])) == [f"+{SPEC_KEY}={args[0][5:]}", "task=mmlu,gsm8k"]


def test_a_bad_spec_in_a_sweep_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="nosuchvariant"):
        for job in sweep_jobs(prepare(["task=truthfulqa_mc1:nosuchvariant,mmlu"])):
            compose_experiment(job)


@pytest.mark.slow
def test_each_job_runs_its_spec(workdir: Path) -> None:
    """Both jobs fail fast on the missing checkpoint, after composing: their results name their specs."""
    sweep = workdir / "sweep"
    res = run_engine(["-m", "model.path=/no/such/step1", "task=truthfulqa_mc1:rc,[truthfulqa_mc1,mmlu:mc]", "limit=1",
                      "inspect=true", "tracking=none", f"hydra.sweep.dir={sweep}"], workdir, timeout=300)
    assert res.returncode == 1, res.stderr[-3000:]
    results = read_job_results(sweep)
    assert [r.task_spec for r in results] == ["truthfulqa_mc1:rc", "truthfulqa_mc1+mmlu:mc"]
    assert all("does not exist" in (r.reason or "") for r in results)
    assert "task=[truthfulqa_mc1,mmlu:mc]" in results[1].overrides
