"""Execution scoring through the engine: humaneval in a sandbox pool, pass@k, and the light path."""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.config.compose import compose_task
from engine.config.schema import Experiment, ModelConfig, TrackingConfig
from engine.runner.cache import ResultCache
from engine.runner.core import RunnerCore
from engine.runner.task_run import score_by_execution
from engine.sandbox import default_pool  # the strongest backend here (bwrap, docker or local)
from engine.scoring.metrics import aggregate_scores
from engine.tasks import build_task
from engine.types import InstanceRecord, LoglikelihoodResponse, ModelIdentity
from tests.conftest import run_engine


def _exp(tmp_path, **kw) -> Experiment:
    return Experiment(model=ModelConfig(name="scripted"), tracking=TrackingConfig(mlflow=False),
                      output_dir=str(tmp_path / "run"), progress=False, **kw)


def test_humaneval_completions_are_executed_in_a_sandbox_and_scored(tmp_path):
    task = build_task(compose_task("humaneval"))
    instances = task.load_instances()
    assert len(instances) == 164
    chosen = instances[:4]
    completions = [i.row["canonical_solution"] for i in chosen[:3]] + ["    return None\n"]
    records = [
        InstanceRecord(task_hash=task.task_hash, task_spec="humaneval", instance_id=i.id, output_text=c)
        for i, c in zip(chosen, completions, strict=True)
    ]
    exp = _exp(tmp_path)
    core = RunnerCore(_ScriptedChoices(), exp.harness, ResultCache(None), progress=False)
    scored = asyncio.run(score_by_execution(task, records, chosen, exp, core))
    assert [r.scores["pass"] for r in scored] == [1.0, 1.0, 1.0, 0.0]
    assert scored[3].extracted_answer.startswith("failed")
    step = scored[0].trajectory[-1]
    assert step.type == "sandbox" and step.content["backend"] == default_pool().backend and step.content["status"] == "passed"


def test_pass_at_k_from_samples():
    recs = [InstanceRecord(task_hash="t", task_spec="s", instance_id=q, sample_index=k, scores={"pass": p})
            for q, passes in {"a": [1, 0, 0, 0], "b": [0, 0, 0, 0], "c": [1, 1, 1, 1]}.items()
            for k, p in enumerate(passes)]
    out = aggregate_scores(recs, pass_at_k=[1, 2])
    assert out["pass@1"].value == pytest.approx((0.25 + 0 + 1) / 3)
    assert out["pass@2"].value == pytest.approx((0.5 + 0 + 1) / 3)  # 1 - C(3,2)/C(4,2) = 0.5
    assert out["pass@1"].n == 3  # questions, not samples


class _ScriptedChoices:
    identity = ModelIdentity(name="scripted", provider="test", content_hash="x")
    max_batch = 8

    async def loglikelihood(self, requests):
        return [LoglikelihoodResponse(logprobs=tuple(-float(i) for i in range(len(r.continuations))),
                                      token_counts=(1,) * len(r.continuations),
                                      is_greedy=(False,) * len(r.continuations)) for r in requests]

    async def aclose(self):
        return None


def test_a_task_that_requires_nothing_never_touches_a_sandbox(tmp_path, monkeypatch):
    import engine.harness.build
    import engine.runner.experiment as experiment

    def refuse(*a, **k):
        raise AssertionError("a sandbox was started for a task that requires nothing")

    monkeypatch.setattr(engine.harness.build, "SandboxRouter", refuse)
    monkeypatch.setattr(experiment, "build_provider", lambda cfg: _ScriptedChoices())
    exp = _exp(tmp_path, task=compose_task("truthfulqa_mc1"), limit=5)
    exp = exp.model_copy(update={"cache": exp.cache.model_copy(update={"enabled": False})})
    (record,) = experiment.run_experiment(exp)
    assert record.counts.n == 5 and record.counts.errored == 0
    lines = (tmp_path / "run" / "truthfulqa_mc1" / "instances.jsonl").read_text().splitlines()
    assert all(json.loads(line)["trajectory"] == [] for line in lines)


@pytest.mark.slow
def test_humaneval_end_to_end_on_smollm2(workdir):
    res = run_engine(["task=humaneval", "limit=2", "task.generation.max_tokens=64", "tracking=none"], workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    (inst_file,) = list(workdir.glob("runs/*/humaneval/instances.jsonl"))
    rows = [json.loads(line) for line in inst_file.read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["error"] is None and r["scores"]["pass"] in (0.0, 1.0)
        assert r["trajectory"][-1]["type"] == "sandbox"
    assert "pass@1" in res.stdout
