"""One TaskRun: a task spec × a model × a harness, from instances to a RunRecord."""

from __future__ import annotations

import random
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engine.api import GenerateRequest, InstanceRecord, LoglikelihoodResponse, Provider, RunCounts, request_hash
from engine.config.schema import Experiment, TaskConfig
from engine.runner.cache import cache_key
from engine.runner.schedule import Outcome, Runner, WorkItem
from engine.scoring.metrics import aggregate_scores
from engine.tasks import Instance, Task, build_task


class TaskRun(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: str
    task: TaskConfig


class TaskResult(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: str
    task_hash: str
    instances: list[InstanceRecord]
    counts: RunCounts
    duration_s: float
    status: str
    prompt_tokens: int
    completion_tokens: int


def prepare(task_run: TaskRun, exp: Experiment) -> tuple[Task, list[Instance]]:
    task = build_task(task_run.task)
    instances = task.load_instances()
    if exp.limit is not None and exp.limit < len(instances):
        # A seeded sample, not the first N: the first N of a sorted file is one subject of MMLU.
        keep = sorted(random.Random(exp.seed).sample(range(len(instances)), exp.limit))
        instances = [instances[i] for i in keep]
    return task, instances


def _requests(task: Task, instances: list[Instance], exp: Experiment, provider: Provider):
    samples = task.config.generation.samples if task.config.formulation == "generate" else 1
    h = exp.harness
    plan = []
    for inst in instances:
        base = task.build_request(inst)
        for k in range(samples):
            req = base
            if isinstance(base, GenerateRequest) and samples > 1:
                req = base.model_copy(update={"sampling": base.sampling.model_copy(update={"seed": exp.seed + k})})
            key = cache_key(provider.identity, req, h.scaffold, h.tools, k)
            plan.append((inst, k, WorkItem(key=key, request=req)))
    return plan


def _record(task: Task, spec: str, inst: Instance, k: int, item: WorkItem, out: Outcome) -> InstanceRecord:
    req = item.request
    prompt = req.render_text() if isinstance(req, GenerateRequest) else req.context
    base = dict(
        task_hash=task.task_hash, task_spec=spec, instance_id=inst.id, sample_index=k,
        request_hash=request_hash(req), request=req.model_dump(mode="json"), prompt_text=prompt,
        gold=inst.gold, choices=list(inst.choices) if inst.choices else None, cluster=inst.cluster,
        latency_s=out.latency_s, cached=out.cached,
    )
    if out.response is None:
        return InstanceRecord(**base, error=out.error)
    scores, extracted = task.score(inst, out.response)
    resp = out.response
    usage = resp.usage
    if isinstance(resp, LoglikelihoodResponse):
        return InstanceRecord(**base, logprobs=list(resp.logprobs), extracted_answer=extracted, scores=scores,
                              prompt_tokens=usage.prompt_tokens)
    return InstanceRecord(**base, output_text=resp.text, extracted_answer=extracted, scores=scores,
                          prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


async def execute(task_run: TaskRun, exp: Experiment, provider: Provider, runner: Runner) -> TaskResult:
    start = time.monotonic()
    task, instances = prepare(task_run, exp)
    if exp.harness.scaffold != "single_turn" and task.config.formulation == "generate":
        # Multi-step scaffolds (engine/harness): one trajectory per instance and sample.
        from engine.harness.run import run_trajectories

        plan, outcomes, steps = await run_trajectories(task, instances, exp, provider, runner)
        records = [_record(task, task_run.spec, inst, k, item, outcomes[item.key]).model_copy(
            update={"trajectory": steps.get(item.key, [])}) for inst, k, item in plan]
    else:
        plan = _requests(task, instances, exp, provider)
        outcomes = await runner.run([item for _, _, item in plan], label=task_run.spec)
        records = [_record(task, task_run.spec, inst, k, item, outcomes[item.key]) for inst, k, item in plan]
    if task.config.requires:  # execution scoring in sandboxes; nothing else starts one
        from engine.scoring.execution import score_by_execution

        records = await score_by_execution(task, records, instances, exp)
    if "judge" in task.config.scorers:  # LLM-as-judge (engine/harness/judge.py), an auxiliary provider
        from engine.harness.judge import apply_judge

        records = await apply_judge(records, {i.id: i.query for i in instances}, exp, provider, runner)
    errored = sum(1 for r in records if r.error is not None)
    n = len(records)
    status = "failed" if n and errored == n else ("finished" if errored == 0 else "partial")
    return TaskResult(
        spec=task_run.spec,
        task_hash=task.task_hash,
        instances=records,
        counts=RunCounts(n=n, scored=n - errored, errored=errored),
        duration_s=time.monotonic() - start,
        status=status,
        prompt_tokens=sum(r.prompt_tokens for r in records),
        completion_tokens=sum(r.completion_tokens for r in records),
    )


def scores_of(result: TaskResult, task: TaskConfig):
    return aggregate_scores(result.instances, task.aggregation, pass_at_k=task.pass_at_k)


def run_dir_for(exp: Experiment, spec: str) -> Path:
    from engine.record.folder import spec_dirname

    return Path(exp.output_dir) / spec_dirname(spec)
