"""End to end with the real SmolLM2-135M-Instruct (slow): the engine must record what the small
model does, not make it succeed. Kept small: 2 instances, short generations."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import engine.tasks  # noqa: F401  - import order (tasks <-> scoring)
from engine.sandbox import default_pool  # the strongest backend here (bwrap, docker or local)
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

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns.db")
    run = mlflow.get_run(agent["mlflow_run_id"])
    traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id, return_type="list")
    assert len(traces) == len(agent_inst)
    assert all(any(s.name.startswith("model turn") for s in t.data.spans) for t in traces)


CODE_ARITH_TASK = """\
name: code_arith
data: {{path: json, split: train, data_files: {data}}}
fields: {{id: id, query: "{{question}}", gold: answer}}
formulation: generate
scorers: [contains]
primary_metric: contains
generation: {{max_tokens: 96}}
"""


def _check_trajectory(inst: dict, max_turns: int) -> str:
    """The recorded trajectory is complete and consistent; returns its end reason."""
    steps = inst["trajectory"]
    assert steps and steps[0]["type"] == "model"
    ends = [s["content"]["end_reason"] for s in steps if "end_reason" in s["content"]]
    assert len(ends) == 1 and ends[0] in END_REASONS and "end_reason" in steps[-1]["content"], ends
    models = [s for s in steps if s["type"] == "model"]
    assert [s["content"]["turn"] for s in models] == list(range(1, len(models) + 1))
    assert len(models) <= max_turns
    # Every tool call has its result, and a python_exec/bash that ran has its sandbox execution
    # recorded between the call and the result.
    for i, s in enumerate(steps):
        if s["type"] != "tool_call":
            continue
        j = next(k for k in range(i + 1, len(steps)) if steps[k]["type"] == "tool_result"
                 and steps[k]["content"]["id"] == s["content"]["id"])
        result = steps[j]["content"]
        if s["content"].get("error"):
            assert result["error"] == "malformed_call" and not result["ok"]
        elif s["content"]["name"] in ("python_exec", "bash") and result["error"] != "invalid_arguments":
            sandboxed = [x for x in steps[i + 1 : j] if x["type"] == "sandbox"]
            assert len(sandboxed) == 1 and sandboxed[0]["content"]["tool"] == s["content"]["name"], steps[i : j + 1]
            assert sandboxed[0]["content"]["backend"] == default_pool().backend
    if ends[0] == "answer":
        assert steps[-1]["type"] == "model" and inst["output_text"] == steps[-1]["content"]["text"]
    if ends[0] == "max_turns":
        assert steps[-1]["type"] == "limit" and len(models) == max_turns
    return ends[0]


def test_code_agent_on_a_small_code_task(workdir):
    """A task defined in YAML only (a conf dir of its own), run by the CLI with the code agent."""
    conf = workdir / "conf"
    shutil.copytree(REPO / "conf", conf)
    data = Path(__file__).parent / "fixtures" / "code_arith.jsonl"
    (conf / "task" / "code_arith.yaml").write_text(CODE_ARITH_TASK.format(data=data))
    args = ["task=code_arith", "harness=code_agent", "harness.max_turns=3", "limit=2", "progress=false",
            "tracking=none", f"cache.path={workdir}/cache.sqlite", f"hydra.run.dir={workdir}/runs/code"]
    out = run_engine(args, cwd=REPO, timeout=1200, env={"EVALBENCH_CONF": str(conf)})
    assert out.returncode == 0, out.stderr[-3000:]
    folder = workdir / "runs" / "code" / "code_arith"
    record = json.loads((folder / "experiment.json").read_text())
    instances = [json.loads(line) for line in (folder / "instances.jsonl").read_text().splitlines()]
    assert record["harness"] == "code_agent" and record["counts"] == {"n": 2, "scored": 2, "errored": 0}
    gold = {json.loads(line)["id"]: json.loads(line)["answer"] for line in data.read_text().splitlines()}
    for inst in instances:
        assert inst["error"] is None
        _check_trajectory(inst, max_turns=3)
        # The tools were offered: SmolLM2's template has none, so the text protocol's instructions
        # come as a system message before the question.
        first = inst["trajectory"][0]["content"]
        assert first["protocol"] == "text" and first["n_messages"] == 2
        # The score is what the model answered, faithfully: the gold number inside its final text.
        said = re.sub(r"[^\w\s]", "", (inst["output_text"] or "").lower())
        assert inst["scores"]["contains"] == float(gold[inst["instance_id"]] in said)
    mean = sum(i["scores"]["contains"] for i in instances) / 2
    assert record["scores"]["contains"]["value"] == pytest.approx(mean)


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
    assert inst["error"] is None
    steps = inst["trajectory"]
    # The agent's steps (ending with its end reason), then the execution scoring in a sandbox.
    scoring = steps[-1]
    assert scoring["type"] == "sandbox" and scoring["content"]["status"] in ("passed", "failed", "timed out")
    assert scoring["content"]["backend"] == default_pool().backend and inst["extracted_answer"] == scoring["content"]["result"]
    _check_trajectory({**inst, "trajectory": steps[:-1]}, max_turns=2)
    # pass@1 of one sample is whether the scoring execution passed.
    passed = float(scoring["content"]["status"] == "passed")
    assert inst["scores"]["pass"] == passed and record["scores"]["pass@1"]["value"] == passed
