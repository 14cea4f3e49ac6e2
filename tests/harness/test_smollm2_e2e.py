"""End to end with the real SmolLM2-135M-Instruct (slow): the engine must record what the small
model does, not make it succeed. Kept small: 2 instances, short generations."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import engine.tasks  # noqa: F401  - import order (tasks <-> scoring)
from tests.conftest import REPO, run_engine

pytestmark = pytest.mark.slow

END_REASONS = {"answer", "submit", "max_turns", "max_tokens", "max_time", "error"}


def _cli(workdir: Path, *args: str):
    common = [f"tracking.tracking_uri=sqlite:///{workdir}/mlruns.db", f"cache.path={workdir}/cache.sqlite",
              "limit=2", "task.generation.max_tokens=48", "progress=false"]
    out = run_engine([*args, *common, f"hydra.run.dir={workdir}/runs/{args[-1].split('=')[-1]}"], cwd=REPO, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _record(workdir: Path, name: str):
    folder = next((workdir / "runs" / name).glob("freshqa*"))
    record = json.loads((folder / "experiment.json").read_text())
    instances = [json.loads(line) for line in (folder / "instances.jsonl").read_text().splitlines()]
    return record, instances


def test_freshqa_baseline_vs_search_agent(workdir):
    _cli(workdir, "task=freshqa", "variant=zero", "harness=default")
    _cli(workdir, "task=freshqa", "variant=zero", "harness=search_agent")
    base, base_inst = _record(workdir, "default")
    agent, agent_inst = _record(workdir, "search_agent")
    assert base["task_hash"] == agent["task_hash"]
    assert (base["harness"], agent["harness"]) == ("default", "search_agent")
    assert [i["instance_id"] for i in base_inst] == [i["instance_id"] for i in agent_inst]
    assert all(not i["trajectory"] for i in base_inst)
    for inst in agent_inst:
        steps = inst["trajectory"]
        assert steps and steps[0]["type"] == "model"
        assert steps[0]["content"]["protocol"] == "text"  # SmolLM2's chat template has no tools
        assert steps[-1]["content"]["end_reason"] in END_REASONS
        assert inst["error"] is None
        print(inst["instance_id"], [s["type"] for s in steps], repr(inst["output_text"][:120]), inst["scores"])

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns.db")
    run = mlflow.get_run(agent["mlflow_run_id"])
    traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
    assert len(traces) == len(agent_inst)
    assert all(any(s.name.startswith("model turn") for s in t.data.spans) for t in traces)


def test_code_agent_on_a_small_code_task(workdir):
    from engine.config.schema import CacheConfig, Experiment, HarnessConfig, ModelConfig, TaskConfig, TrackingConfig
    from engine.models import build_provider
    from engine.runner.cache import ResponseCache
    from engine.runner.schedule import Runner
    from engine.runner.task_run import TaskRun, execute

    from .test_integration import preset

    task = TaskConfig.model_validate({
        "name": "code_arith", "data": {"path": "json", "split": "train",
                                       "data_files": str(Path(__file__).parent / "fixtures" / "code_arith.jsonl")},
        "fields": {"id": "id", "query": "{question}", "gold": "answer"}, "formulation": "generate",
        "scorers": ["contains"], "primary_metric": "contains", "generation": {"max_tokens": 96}})
    harness: HarnessConfig = preset("code_agent", max_turns=3)
    exp = Experiment(task=task, model=ModelConfig(name="smollm2-135m-instruct"), harness=harness,
                     tracking=TrackingConfig(mlflow=False), cache=CacheConfig(path=str(workdir / "c.sqlite")),
                     output_dir=str(workdir), limit=2, progress=False)
    provider = build_provider(exp.model)

    async def go():
        cache = ResponseCache(exp.cache.path)
        try:
            return await execute(TaskRun(spec="code_arith", task=task), exp, provider, Runner(provider, harness, cache, progress=False))
        finally:
            cache.close()

    result = asyncio.run(go())
    assert result.counts.n == 2 and result.counts.errored == 0
    for inst in result.instances:
        kinds = [s.type for s in inst.trajectory]
        assert kinds[0] == "model" and inst.trajectory[-1].content["end_reason"] in END_REASONS
        # every python_exec that ran has its sandbox execution recorded right after the call
        for i, s in enumerate(inst.trajectory):
            if s.type == "tool_call" and s.content.get("name") == "python_exec" and not s.content.get("error"):
                assert inst.trajectory[i + 1].type in ("sandbox", "tool_result")
        print(inst.instance_id, kinds, repr((inst.output_text or "")[:120]), inst.scores)


def test_code_agent_on_humaneval(workdir):
    args = ["task=humaneval", "harness=code_agent", "limit=1", "task.generation.max_tokens=128", "harness.max_turns=2",
            f"tracking.tracking_uri=sqlite:///{workdir}/mlruns.db", f"cache.path={workdir}/cache.sqlite",
            "progress=false", f"hydra.run.dir={workdir}/runs/he"]
    out = run_engine(args, cwd=REPO, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = workdir / "runs" / "he" / "humaneval"
    record = json.loads((folder / "experiment.json").read_text())
    [inst] = [json.loads(line) for line in (folder / "instances.jsonl").read_text().splitlines()]
    assert record["harness"] == "code_agent" and "pass@1" in record["scores"]
    kinds = [s["type"] for s in inst["trajectory"]]
    assert kinds[0] == "model" and kinds[-1] == "sandbox"  # the agent's steps, then the execution scoring
    assert any(s["content"].get("end_reason") in END_REASONS for s in inst["trajectory"])
    print(inst["instance_id"], kinds, inst["scores"], repr((inst["output_text"] or "")[:120]))
