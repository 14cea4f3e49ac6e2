"""ExternalEval runs with a stand-in for lm-eval (a script given as `external.args.python`): per-sample
mapping with the gateway's requests as steps, aggregate-only output, crash, timeout, unreadable
output, unknown wrapper, tool not installed (docs/architecture.md, "External evals")."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeProvider

from engine.config.compose import compose_task
from engine.config.errors import ConfigError
from engine.config.schema import Experiment, ModelConfig, TrackingConfig
from engine.config.suites import TaskRun
from engine.external import lm_eval
from engine.external.run import check_external, run_external
from engine.record.mlflow_writer import run_metrics
from engine.report import results_table
from engine.runner.experiment import _run_record
from engine.scoring.metrics import aggregate_scores

REPO = Path(__file__).resolve().parents[2]

def _task_run(python: Path | str, timeout_s: float = 60.0, wrapper: str = "lm_eval") -> TaskRun:
    cfg = compose_task("lm_eval_hellaswag")
    ext = cfg.external.model_copy(update={"wrapper": wrapper, "timeout_s": timeout_s,
                                          "args": {**cfg.external.args, "python": str(python)}})
    return TaskRun(spec="lm_eval_hellaswag", task=cfg.model_copy(update={"external": ext}))


def _exp(tmp_path: Path, limit: int = 3) -> Experiment:
    return Experiment(model=ModelConfig(name="fake-model"), limit=limit, output_dir=str(tmp_path / "runs"),
                      tracking=TrackingConfig(mlflow=False), progress=False)


def _run(tmp_path, make_core, monkeypatch, mode: str, timeout_s: float = 60.0, python=None, core=None):
    monkeypatch.setenv("FAKE_LM_EVAL", mode)
    run = _task_run(python, timeout_s)
    core = core or make_core(FakeProvider())
    return run, asyncio.run(run_external(run, _exp(tmp_path), core)), core


def test_per_sample_output_becomes_instance_records_scored_by_our_stats(tmp_path, make_core, monkeypatch,
                                                                         fake_lm_eval) -> None:
    run, result, core = _run(tmp_path, make_core, monkeypatch, "samples", python=fake_lm_eval)
    assert result.status == "finished" and result.counts.n == 3 and result.scores is None
    native_hash = __import__("engine.tasks", fromlist=["build_task"]).build_task(compose_task("hellaswag:rc")).task_hash
    assert {r.task_hash for r in result.instances} == {native_hash} == {result.task_hash}  # compare_as
    rec = result.instances[0]
    assert rec.instance_id.startswith("hellaswag-val-") and rec.logprobs == [-1.5, -2.5]
    per_char = [lp / len(c) for lp, c in zip(rec.logprobs, rec.choices, strict=True)]
    assert rec.extracted_answer == per_char.index(max(per_char))  # `prediction: acc_norm`, lm-eval's rule
    assert rec.scores == {"acc_none": 0.0, "acc": 1.0}  # renamed: acc_norm -> acc, acc -> acc_none
    assert [s.type for s in rec.trajectory] == ["model", "model"]  # its two gateway requests, mapped by text
    assert all(s.content["cache_key"] for s in rec.trajectory)
    assert result.extra["unmatched_requests"] == 0 and result.extra["gateway_requests"] == 6
    record = _run_record(_exp(tmp_path), run, result, core.provider, None)
    ours = aggregate_scores(result.instances, "mean")
    assert record.scores["acc_none"].value == pytest.approx(1 / 3) and record.scores == ours
    assert record.scores["acc_none"].stderr > 0  # a real SE from the per-sample scores
    log = [json.loads(line) for line in (tmp_path / "runs" / "lm_eval_hellaswag" / "gateway.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(e["instance_id"] for e in log)
    # A re-run with the same cache calls no model.
    _, again, core2 = _run(tmp_path, make_core, monkeypatch, "samples", python=fake_lm_eval,
                           core=make_core(FakeProvider()))
    assert core2.model_calls == 0 and again.extra["cached_requests"] == 6 and all(r.cached for r in again.instances)


def test_a_benchmark_without_per_sample_scores_is_recorded_aggregate_only(tmp_path, make_core, monkeypatch,
                                                                         fake_lm_eval) -> None:
    run, result, core = _run(tmp_path, make_core, monkeypatch, "aggregate", python=fake_lm_eval)
    assert result.status == "finished" and result.instances == [] and result.extra["aggregate_only"] is True
    assert result.scores is not None and result.scores["acc"].value == 0.25 and result.scores["acc_none"].value == 0.5
    assert result.scores["acc"].n == 3
    # Shown and logged as what it is: a value and its n, with no invented SE, CI or MDE.
    record = _run_record(_exp(tmp_path), run, result, core.provider, None)
    assert record.aggregate_only
    [row] = results_table([record]).splitlines()[2:]
    cells = row.split()
    assert "(aggregate" in cells and cells[cells.index("only)") + 1 :][:5] == ["3", "0.2500", "-", "-", "-"]
    assert {k for k in run_metrics(record) if k.startswith("acc.")} == {"acc.n"}


@pytest.mark.parametrize("mode,expect", [("crash", "exited with code 3"), ("garbage", "cannot be read"),
                                         ("hang", "timed out after 2.0 s")])
def test_crash_timeout_or_unreadable_output_is_a_failed_run_with_the_stderr_tail(tmp_path, make_core, monkeypatch,
                                                                                 fake_lm_eval, mode, expect) -> None:
    _, result, _ = _run(tmp_path, make_core, monkeypatch, mode, timeout_s=2.0, python=fake_lm_eval)
    assert result.status == "failed" and result.instances == []
    assert expect in result.extra["error"]
    if mode == "crash":
        assert "something broke inside the benchmark" in result.extra["stderr_tail"]


def test_unknown_wrapper_and_missing_tool_name_the_fix(tmp_path) -> None:
    cfg = compose_task("lm_eval_hellaswag")
    bad = TaskRun(spec="x", task=cfg.model_copy(update={"external": cfg.external.model_copy(update={"wrapper": "lm_evl"})}))
    with pytest.raises(ConfigError, match="not a known external eval wrapper.*lm_eval"):
        check_external(bad)
    with pytest.raises(ConfigError, match="engine.external.venvs lm_eval"):
        check_external(_task_run(tmp_path / "no-such-python"))


def test_a_loglikelihood_benchmark_through_a_remote_model_is_refused_up_front(tmp_path, fake_lm_eval) -> None:
    exp = Experiment(model=ModelConfig(name="gpt", provider="litellm", api_base="http://127.0.0.1:9"))
    with pytest.raises(ConfigError, match="only for provider hf"):
        check_external(_task_run(fake_lm_eval), exp)


def test_cli_exits_2_with_the_fix_when_the_tool_is_missing(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "EVALBENCH_LM_EVAL_PYTHON": str(tmp_path / "missing" / "python")}
    done = subprocess.run([sys.executable, "-m", "engine", "task=lm_eval_hellaswag", "limit=2", "tracking.mlflow=false",
                           f"output_dir={tmp_path / 'runs'}", f"cache.path={tmp_path / 'c.sqlite'}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "engine.external.venvs lm_eval" in done.stderr and "Traceback" not in done.stderr


def test_requirements_file_pins_what_the_venv_installs() -> None:
    lines = [ln.strip() for ln in (REPO / "benchmarks" / "requirements-lm-eval.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert tuple(lines) == lm_eval.REQUIREMENTS
