"""Named checks a README block's command can run (`check NAME` in its annotation): the assertions of
the end-to-end tests the README's journeys replaced, over the run folders and the MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.record import store


@dataclass(frozen=True)
class Ran:
    """A README command that exited as expected: its folder, environment, output and printed run folders."""

    cwd: Path
    env: dict[str, str]
    stdout: str
    runs: list[str]


def _record(cwd: Path, run: str) -> dict[str, Any]:
    return dict(json.loads((cwd / run / "experiment.json").read_text()))


def _mlflow_runs(cwd: Path) -> list[Any]:
    client = store.client(f"sqlite:///{cwd / 'mlruns.db'}")
    return list(client.search_runs([e.experiment_id for e in client.search_experiments()]))


def check_suite_of_four(run: Ran) -> None:
    """`suite=base_qa`: its four task specs ran, and the table adds their mean with a CI."""
    assert sorted(_record(run.cwd, r)["task_spec"] for r in run.runs) == [
        "gsm8k:3shot", "hellaswag:rc", "mmlu:mc", "truthfulqa_mc1:mc"]
    (suite_line,) = [ln for ln in run.stdout.splitlines() if ln.startswith("base_qa")]
    assert "mean of 4" in suite_line and "95% CI" in suite_line


def check_sweep_nested(steps: list[str]) -> Callable[[Ran], None]:
    """A checkpoint sweep: one run folder per checkpoint under runs/multirun, and in MLflow one sweep parent
    run with every job's run nested under it, tagged with its checkpoint step, all of one task hash."""

    def check(run: Ran) -> None:
        assert len(run.runs) == len(steps) and all(r.startswith("runs/multirun/") for r in run.runs), run.runs
        found = _mlflow_runs(run.cwd)
        [parent] = [r for r in found if r.data.tags.get("evalbench.kind") == "sweep"]
        jobs = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags.get("evalbench.checkpoint_step", "") for r in jobs) == sorted(steps)
        assert len({r.data.tags["evalbench.task_hash"] for r in jobs}) == 1
        assert {r.info.run_id for r in jobs} == {_record(run.cwd, r)["mlflow_run_id"] for r in run.runs}

    return check


def _instances(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "instances.jsonl").read_text().splitlines()]


def check_own_evals_sweep(run: Ran) -> None:
    """README "Bring your own evals": both checkpoints ran both task specs through our task class, tool,
    scorer, corpus metric (bootstrap SE) and per-task variants (from tests/test_packaging.py)."""
    for job, name in (("0", "ckpt-a"), ("1", "ckpt-b")):
        found = {json.loads(p.read_text())["task_spec"]: p.parent
                 for p in (run.cwd / "runs" / "sweep" / job).rglob("experiment.json")}
        assert set(found) == {"capitals:3shot", "capitals_shouted:brief"}
        for spec, folder in found.items():
            rec, instances = json.loads((folder / "experiment.json").read_text()), _instances(folder)
            assert rec["model"]["name"] == name and rec["harness"] == "with_tools", spec
            assert rec["config"]["harness"]["tools"] == ["word_count", "submit"]
            assert len(instances) == 2 and {i["instance_id"] for i in instances} <= {f"c{k}" for k in range(1, 6)}
            assert all(i["error"] is None and {"contains", "tp", "fp", "fn", "word_f1"} <= set(i["scores"])
                       for i in instances)
            f1 = rec["scores"]["word_f1"]
            assert f1["stderr_method"] == "bootstrap" and f1["n"] == 2 and {"ci_low", "ci_high", "mde"} <= set(f1)
            assert rec["scores"]["contains"]["stderr_method"] is None and rec["scores"]["contains"]["n"] == 2
        task = json.loads((found["capitals:3shot"] / "experiment.json").read_text())["config"]["task"]
        assert (task["num_fewshot"], task["fewshot"]["seed"]) == (3, 1)  # capitals' own 3shot, not the global one
        shouted = json.loads((found["capitals_shouted:brief"] / "experiment.json").read_text())["config"]["task"]
        assert shouted["_target_"] == "shouted_qa" and shouted["generation"]["max_tokens"] == 4  # Python variant
        assert all("WHAT IS THE CAPITAL OF" in i["prompt_text"] for i in _instances(found["capitals_shouted:brief"]))


def check_own_evals_compare(run: Ran) -> None:
    """The same comparison as JSON: both task specs, paired on their 2 questions by the primary metric."""
    out = subprocess.run([sys.executable, "-m", "engine.compare", "runs/sweep/1", "runs/sweep/0", "--format", "json"],
                         cwd=run.cwd, env=run.env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert {t["task_spec"] for t in report["tasks"]} == {"capitals:3shot", "capitals_shouted:brief"}
    assert all(t["metric"] == "contains" and t["alignment"]["n_paired"] == 2 for t in report["tasks"])


def check_failed_job_is_its_own(run: Ran) -> None:
    """The launchers' sweep over 3 checkpoints x 2 tasks, one checkpoint missing (joblib, 2 workers): the
    4 jobs of the present ones finish, the 2 of the missing one fail with their reason, and in MLflow each
    task's sweep parent (FAILED, jobs.failed 2) holds exactly the finished jobs' runs."""
    assert "6 job(s): 4 finished, 2 failed" in run.stdout
    failed = [ln.split() for ln in run.stdout.splitlines() if " failed " in f" {ln} " and "ckpt/step3000" in ln]
    assert len(failed) == 2 and all("does not exist" in " ".join(row) for row in failed), failed
    assert len(run.runs) == 4
    records = [_record(run.cwd, r) for r in run.runs]
    assert all(r["status"] == "finished" and r["counts"]["scored"] == 2 for r in records)
    found = _mlflow_runs(run.cwd)
    parents = [r for r in found if r.data.tags.get("evalbench.kind") == "sweep"]
    assert len(parents) == 2  # one per experiment (task) the sweep wrote to
    for parent in parents:
        assert parent.info.status == "FAILED" and parent.data.metrics["jobs.failed"] == 2
        jobs = {r.info.run_id for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert len(jobs) == 2 and jobs <= {r["mlflow_run_id"] for r in records}, jobs


CHECKS: dict[str, Callable[[Ran], None]] = {
    "suite_of_four": check_suite_of_four,
    "sweep_of_two_checkpoints": check_sweep_nested(["1000", "2000"]),
    "sweep_of_base_and_four_checkpoints": check_sweep_nested(["", "10", "20", "30", "40"]),
    "own_evals_sweep": check_own_evals_sweep,
    "own_evals_compare": check_own_evals_compare,
    "failed_job_is_its_own": check_failed_job_is_its_own,
}

