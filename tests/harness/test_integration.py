"""The harness inside a run, with a scripted model: task_run hook, cache, records, judge, MLflow traces.

The same task under the baseline and under search_agent: same task hash, different harness, and
the search_agent records carry trajectories that MLflow shows as traces.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

from engine.config.compose import compose_task, conf_dir, task_spec_string
from engine.config.schema import CacheConfig, Experiment, HarnessConfig, ModelConfig, TrackingConfig
from engine.config.suites import TaskRun
from engine.runner.cache import ResultCache
from engine.runner.core import RunnerCore
from engine.runner.experiment import judge_provider, record_run
from engine.runner.task_run import execute, prepare
from engine.scoring.judge import JudgeConfig, judge_config, parse_verdict
from engine.tasks import build_task

from .test_tool_loop import ScriptedModel, call


def preset(name: str, **over) -> HarnessConfig:
    data = yaml.safe_load((conf_dir() / "harness" / f"{name}.yaml").read_text())
    data.update(over)
    return HarnessConfig.model_validate(data)


def experiment(tmp: Path, harness: HarnessConfig, spec: str = "freshqa:zero", limit: int = 2) -> Experiment:
    task = compose_task(spec)
    return Experiment(task=task, model=ModelConfig(name="scripted", provider="hf"), harness=harness,
                      tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp}/mlruns.db"),
                      cache=CacheConfig(path=str(tmp / "cache.sqlite")), output_dir=str(tmp / "runs"),
                      limit=limit, progress=False)


def run(exp: Experiment, model):
    task_run = TaskRun(spec=task_spec_string(exp.task.name, exp.task.variants), task=exp.task)

    async def go():
        cache = ResultCache(exp.cache.path)
        try:
            return await execute(task_run, exp, RunnerCore(model, exp.harness, cache, progress=False))
        finally:
            cache.close()

    result = asyncio.run(go())
    return result, record_run(exp, task_run, result, model)


GOLD = {json.loads(line)["question"]: json.loads(line)["answer"]
        for line in (Path(__file__).parents[2] / "data" / "freshqa" / "freshqa.jsonl").read_text().splitlines()}


def agent_reply(req) -> str:
    """Search with the question, then submit the gold (a test double: the loop is under test)."""
    question = next(q for q in GOLD if q in req.messages[1].content)
    if req.messages[-1].content.startswith("<tool_response"):
        return call("submit", answer=GOLD[question])
    return call("search", query=question)


def test_baseline_and_search_agent_same_task_hash_trajectories_cached_and_traced(tmp_path):
    base_model = ScriptedModel([lambda req: "I do not know."])
    base_result, base_rec = run(experiment(tmp_path, preset("default")), base_model)
    assert all(not r.trajectory for r in base_result.instances)

    agent_model = ScriptedModel([agent_reply])
    exp = experiment(tmp_path, preset("search_agent", concurrency=1))
    agent_result, agent_rec = run(exp, agent_model)

    assert base_rec.task_hash == agent_rec.task_hash
    assert (base_rec.harness, agent_rec.harness) == ("default", "search_agent")
    assert [r.instance_id for r in base_result.instances] == [r.instance_id for r in agent_result.instances]
    assert base_rec.scores["contains"].value == 0.0 and agent_rec.scores["contains"].value == 1.0
    first = agent_result.instances[0]
    assert [s.type for s in first.trajectory] == ["model", "tool_call", "tool_result", "model", "tool_call", "tool_result"]
    assert first.output_text == first.gold and first.trajectory[-1].content["end_reason"] == "submit"

    # the run folder has the trajectories
    lines = (Path(agent_rec.run_dir) / "instances.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["trajectory"][0]["type"] == "model"

    # MLflow: one trace per instance, linked to the run, with model and tool spans
    import mlflow

    mlflow.set_tracking_uri(exp.tracking.tracking_uri)
    def traces_of(run_id):
        exp_id = mlflow.get_run(run_id).info.experiment_id
        return mlflow.search_traces(locations=[exp_id], run_id=run_id, return_type="list")

    traces = traces_of(agent_rec.mlflow_run_id)
    assert len(traces) == 2
    names = sorted(s.name for t in traces for s in t.data.spans)
    assert "model turn 1" in names and "tool search" in names and "tool submit" in names
    tool_span = next(s for t in traces for s in t.data.spans if s.name == "tool search")
    assert "corpus://" in json.dumps(tool_span.outputs)
    assert not traces_of(base_rec.mlflow_run_id)

    # a re-run calls no model and still records the trajectories
    again_model = ScriptedModel([])
    again, _ = run(exp, again_model)
    assert again_model.requests == []
    assert all(r.cached for r in again.instances)
    assert [s.type for s in again.instances[0].trajectory] == [s.type for s in first.trajectory]

    # changing a limit is a different cache key: the loop runs again
    rerun_model = ScriptedModel([lambda req: "an answer"])
    run(experiment(tmp_path, preset("search_agent", max_turns=2)), rerun_model)
    assert len(rerun_model.requests) == 2


def test_code_agent_runs_python_in_the_sandbox(tmp_path):
    exp = experiment(tmp_path, preset("code_agent", concurrency=1), limit=1)
    def reply(req):
        question = next(q for q in GOLD if q in req.messages[1].content)
        if req.messages[-1].content.startswith("<tool_response"):
            return call("submit", answer=GOLD[question])
        return call("python_exec", code="print(len('Saturn'))")

    model = ScriptedModel([reply])
    result, rec = run(exp, model)
    steps = result.instances[0].trajectory
    assert [s.type for s in steps][:4] == ["model", "tool_call", "sandbox", "tool_result"]
    assert steps[2].content["stdout"].strip() == "6" and steps[2].content["pool"] == "default"
    assert rec.scores["contains"].value == 1.0

    import mlflow

    mlflow.set_tracking_uri(exp.tracking.tracking_uri)
    run_info = mlflow.get_run(rec.mlflow_run_id).info
    [trace] = mlflow.search_traces(locations=[run_info.experiment_id], run_id=run_info.run_id, return_type="list")
    spans = {s.name: s for s in trace.data.spans}
    assert spans["sandbox default"].parent_id == spans["tool python_exec"].span_id
    assert spans["sandbox default"].outputs["exit_code"] == 0


def test_judge_preset_reuses_the_evaluated_model(tmp_path):
    model = ModelConfig.model_validate(yaml.safe_load((conf_dir() / "model" / "smollm2.yaml").read_text()))
    exp = experiment(tmp_path, preset("judge"), spec="freshqa:zero:judge").model_copy(update={"model": model})
    cfg = judge_config(exp.harness.auxiliary)
    runs = [TaskRun(spec="freshqa:zero:judge", task=exp.task)]
    assert judge_provider(exp, object(), runs) is None  # None: the evaluated model's own core judges
    assert cfg.mode == "reference"


def test_judge_variant_scores_and_records_the_verdict(tmp_path):
    def reply(req):
        text = req.render_text()
        if "Reference answer:" in text:  # the judge: correct for the first question only
            return ("Matches the reference.\nVERDICT: CORRECT" if first_q in text
                    else "It does not match.\nVERDICT: INCORRECT")
        return "an answer"

    model = ScriptedModel([reply])
    exp = experiment(tmp_path, preset("default"), spec="freshqa:zero:judge")
    first_q = prepare(TaskRun(spec="freshqa:zero:judge", task=exp.task), exp)[1][0].query
    result, rec = run(exp, model)
    assert rec.primary_metric == "judge" and rec.scores["judge"].value == 0.5
    step = result.instances[0].trajectory[-1]
    assert step.type == "judge" and step.content["verdict"] == "correct"
    assert f"Reference answer: {result.instances[0].gold}" in step.content["prompt"]
    assert step.content["reasoning"] == "Matches the reference."
    assert result.instances[1].scores["judge"] == 0.0


def test_judge_unparsable_verdict_is_an_error_not_a_score(tmp_path):
    model = ScriptedModel([lambda req: "I think it is right." if "Reference answer:" in req.render_text() else "an answer"])
    result, rec = run(experiment(tmp_path, preset("default"), spec="freshqa:zero:judge"), model)
    assert all(r.error is not None and r.error.kind == "judge_unparsed" and r.scores == {} for r in result.instances)
    assert rec.status == "failed" and rec.counts.errored == 2 and "judge" not in rec.scores


def test_judge_unparsable_verdict_is_recorded_not_guessed():
    v = parse_verdict("I think it is right.", JudgeConfig())
    assert (v.score, v.verdict) == (0.0, "unparsed")
    r = parse_verdict("Good.\nSCORE: 4", JudgeConfig(mode="rubric", scale=5))
    assert (r.score, r.verdict) == (0.75, "4")


def test_task_hash_is_independent_of_the_harness():
    task = compose_task("freshqa:zero")
    assert build_task(task).task_hash == build_task(compose_task("freshqa:zero")).task_hash
    assert build_task(compose_task("freshqa:zero:judge")).task_hash != build_task(task).task_hash
