"""Agent-run reporting and the refusals around it, with scripted models (fast: no real model).

A run with a tool loop reports what the model did (tool calls, turns, end reasons, per-tool
questions), in the record, MLflow metrics and the results table; a run where no question used a
tool prints a warning; a likelihood task with a tool harness is refused before any compute; the
tool-calling checkpoint, untrained, is refused with the command that trains it.
"""

from __future__ import annotations

import json

import pytest

from engine.config.compose import compose_task
from engine.config.errors import ConfigError
from engine.config.schema import Experiment, HarnessConfig, ModelConfig, TrackingConfig
from engine.harness.agent_report import agent_summary
from engine.models.tool_caller import with_tool_model
from engine.record.mlflow_writer import run_metrics
from engine.report import results_table
from engine.types import AgentSummary, ModelIdentity
from tests.harness.test_tool_loop import CORPUS, ScriptedModel, call


def _exp(tmp_path, **kw) -> Experiment:
    h = HarnessConfig(name="search_agent", scaffold="tool_loop", tools=["search", "fetch_page", "submit"],
                      max_turns=3, tool_options=CORPUS, retry_backoff_s=0.0)
    return Experiment(model=ModelConfig(name="scripted"), harness=h, tracking=TrackingConfig(mlflow=False),
                      output_dir=str(tmp_path / "run"), progress=False, task=compose_task("ellisande_qa"), limit=4,
                      cache={"enabled": False}, **kw)


def _run(tmp_path, monkeypatch, model):
    import engine.runner.experiment as experiment

    monkeypatch.setattr(experiment, "build_provider", lambda cfg: model)
    (record,) = experiment.run_experiment(_exp(tmp_path))
    return record


def _agent_reply(req):
    """Search on the first turn, submit on the second, loop on the third question (max_turns)."""
    user = next(m.content for m in req.messages if m.role == "user")
    turns = sum(1 for m in req.messages if m.role == "assistant")
    if "employ" in user:  # one question never stops searching: it ends at max_turns
        return call("search", query=user)
    return call("search", query=user) if turns == 0 else call("submit", answer="x")


def test_agent_metrics_in_the_record_the_table_and_mlflow(tmp_path, monkeypatch):
    record = _run(tmp_path, monkeypatch, ScriptedModel([_agent_reply]))
    a = record.agent
    assert a is not None and a.questions == 4 and a.questions_without_tool_call == 0
    assert a.questions_by_tool == {"search": 4, "submit": 3}
    assert a.end_reasons == {"answered": 3, "max_turns": 1}
    assert a.turns_per_question == pytest.approx((2 * 3 + 3) / 4)
    assert a.tool_calls_per_question == pytest.approx((2 * 3 + 3) / 4)
    assert record.agent_protocol == "text" and [s["function"]["name"] for s in record.tool_schemas] == [
        "search", "fetch_page", "submit"]
    assert "<tool_call>" in record.agent_system_prompt and "search(" in record.agent_system_prompt
    table = results_table([record])
    assert "tool calls/question 2.25" in table and "questions without a tool call 0/4" in table
    assert "max_turns 1" in table and "WARNING" not in table
    metrics = run_metrics(record)
    assert metrics["agent.tool_calls_per_question"] == 2.25 and metrics["agent.end_reason.max_turns"] == 1.0
    assert metrics["agent.questions_calling.search"] == 4.0
    saved = json.loads((tmp_path / "run" / "ellisande_qa" / "experiment.json").read_text())
    assert saved["agent"]["questions_without_tool_call"] == 0 and saved["agent_system_prompt"]


def test_a_model_that_never_calls_a_tool_gets_a_warning(tmp_path, monkeypatch):
    record = _run(tmp_path, monkeypatch, ScriptedModel([lambda req: "Brithemport"]))
    assert record.agent.questions_without_tool_call == 4 and record.agent.end_reasons == {"answered": 4}
    assert record.agent.tool_calls_per_question == 0.0
    table = results_table([record])
    assert "WARNING: no question of ellisande_qa used a tool" in table


def test_an_old_record_without_agent_fields_still_loads():
    from engine.types import RunRecord

    rec = RunRecord.model_validate({
        "run_id": "r", "experiment_id": "e", "experiment_name": "x", "created": "now", "engine_version": "0",
        "git_revision": None, "config": {}, "model": ModelIdentity(name="m", provider="hf").model_dump(),
        "task_spec": "t", "task_name": "t", "task_hash": "h", "harness": "default", "suite": None, "seeds": {},
        "status": "finished", "duration_s": 1.0, "counts": {"n": 1, "scored": 1, "errored": 0},
        "primary_metric": "acc", "scores": {}, "run_dir": "d"})
    assert rec.agent is None and rec.tool_schemas is None and "agent." not in " ".join(run_metrics(rec))


def test_summary_counts_errors_and_limits():
    from engine.types import InstanceError, InstanceRecord, TrajectoryStep

    def rec(i, steps, error=None):
        return InstanceRecord(task_hash="t", task_spec="s", instance_id=str(i), trajectory=steps, error=error)

    model = TrajectoryStep(type="model", content={"turn": 1})
    limit = TrajectoryStep(type="limit", content={"reason": "max_tokens", "end_reason": "max_tokens"})
    out = agent_summary([rec(0, [model, limit]), rec(1, [model], InstanceError(kind="timeout", message="", attempts=4))])
    assert out == AgentSummary(questions=2, tool_calls_per_question=0.0, questions_without_tool_call=2,
                               turns_per_question=1.0, end_reasons={"error": 1, "max_tokens": 1})


def test_a_likelihood_task_with_a_tool_harness_is_refused(tmp_path):
    from engine.config.schema import DataConfig, TaskConfig
    from engine.config.suites import expand_experiment
    from engine.runner.experiment import check_capabilities

    mc = TaskConfig(name="quiz", data=DataConfig(), formulation="mc")
    exp = _exp(tmp_path)
    with pytest.raises(ValueError, match=r"harness 'search_agent'.*cannot run task 'quiz'.*likelihood.*harness=default"):
        Experiment.model_validate({**exp.model_dump(by_alias=True), "task": mc.model_dump(by_alias=True)})
    Experiment.model_validate({**exp.model_dump(by_alias=True), "task": mc.model_dump(by_alias=True),
                               "harness": HarnessConfig().model_dump()})  # the default harness runs it
    # a suite's task is checked before any compute (model_copy bypasses validation, as a suite's task does)
    check_capabilities(exp, expand_experiment(exp))
    bad = exp.model_copy(update={"task": mc})
    with pytest.raises(ConfigError, match="cannot run task 'quiz'"):
        check_capabilities(bad, expand_experiment(bad))


def test_the_untrained_tool_model_names_make_tool_model(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALBENCH_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError, match=r"not trained yet.*make tool-model"):
        with_tool_model(ModelConfig(name="smollm2-135m-tools"))
    other = ModelConfig(name="smollm2-135m-instruct")
    assert with_tool_model(other) is other
