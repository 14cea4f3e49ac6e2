"""One TaskRun: a task spec × a model × a harness, from instances to instance records.

Every piece of work goes through the runner core (engine/runner/core.py): the model requests
(or, under a multi-step scaffold, whole trajectories), the sandboxed executions of tasks that
declare `requires`, and the judge's calls.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config.schema import Experiment
from engine.config.suites import TaskRun
from engine.harness.build import build_scaffold, execution_resources, policy_signature, sandbox_resources
from engine.harness.scaffolds import ToolLoop
from engine.record.folder import spec_dirname
from engine.runner.cache import WorkResult, cache_key
from engine.runner.core import RunnerCore
from engine.runner.work import Interrupted, Job, JobContext, Outcome, WorkItem
from engine.sandbox import SandboxError
from engine.scoring import score_response
from engine.scoring.execution import execution_scorer
from engine.scoring.judge import judge_config, judge_request, judged
from engine.tasks import Instance, Task, build_task
from engine.types import (
    GenerateRequest,
    GenerateResponse,
    InstanceError,
    InstanceRecord,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Provider,
    RunCounts,
    ScoreSummary,
    TokenLogprobsResponse,
    WorkRequest,
    request_hash,
    stable_hash,
)


class TaskResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: str
    task_hash: str
    instances: list[InstanceRecord]
    counts: RunCounts
    duration_s: float
    status: str
    prompt_tokens: int
    completion_tokens: int
    # External evals (engine/external): scores when the benchmark gave no per-sample ones, and what the
    # record keeps of the benchmark's run (command, stderr tail, gateway counts) as config["external_run"].
    scores: dict[str, ScoreSummary] | None = None
    extra: dict[str, Any] = {}


class PlannedItem(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    instance: Instance
    sample: int
    item: WorkItem


def prepare(task_run: TaskRun, exp: Experiment) -> tuple[Task, list[Instance]]:
    task = build_task(task_run.task)
    instances = task.load_instances()
    if exp.limit is not None and exp.limit < len(instances):
        # A seeded sample, not the first N: the first N of a sorted file is one subject of MMLU.
        keep = sorted(random.Random(exp.seed).sample(range(len(instances)), exp.limit))
        instances = [instances[i] for i in keep]
    return task, instances


def plan_items(task: Task, instances: list[Instance], exp: Experiment, provider: Provider) -> list[PlannedItem]:
    """One work item per instance and sample: a model request, or a trajectory job."""
    h = exp.harness
    generate = task.config.formulation == "generate"
    samples = task.config.prompt.generation.samples if generate else 1
    agent = h.scaffold != "single_turn" and generate
    scaffold = build_scaffold(h, provider) if agent else None
    signature = policy_signature(h) if agent else h.scaffold
    plan = []
    for inst in instances:
        base = task.build_request(inst)
        for k in range(samples):
            req = base
            if isinstance(base, GenerateRequest) and samples > 1:
                req = base.model_copy(update={"sampling": base.sampling.model_copy(update={"seed": exp.seed + k})})
            key = cache_key(provider.identity, req, signature, h.tools, k)
            job: Job | None = None
            if scaffold is not None and isinstance(req, GenerateRequest):
                job = _trajectory_job(scaffold, req, inst)
            plan.append(PlannedItem(instance=inst, sample=k, item=WorkItem(key=key, request=req, job=job)))
    return plan


SHARED_CHARS = 128  # prompts sharing a prefix this long (a subject's few-shot block) are batched together


def batch_order(plan: list[PlannedItem]) -> list[PlannedItem]:
    """The order the runner core batches requests in: longest first, so batches hold similar lengths
    and the progress bar's rate does not collapse at the end, except that prompts sharing a long
    prefix stay adjacent (groups by their longest member, longest first within), so the hf provider
    computes a shared few-shot block once and reuses it for the next batches (docs/architecture.md,
    "The loglikelihood path")."""
    texts = [_prompt(p.item.request) for p in plan]
    if not texts:
        return plan
    by_text = sorted(range(len(plan)), key=texts.__getitem__)
    group = [0] * len(plan)
    for a, b in zip(by_text, by_text[1:], strict=False):
        shared = len(os.path.commonprefix([texts[a], texts[b]]))
        group[b] = group[a] + (shared < SHARED_CHARS)
    longest: dict[int, int] = {}
    for i, g in enumerate(group):
        longest[g] = max(longest.get(g, 0), len(texts[i]))
    order = sorted(range(len(plan)), key=lambda i: (-longest[group[i]], group[i], -len(texts[i])))
    return [plan[i] for i in order]


def _prompt(req: WorkRequest | None) -> str:
    if isinstance(req, GenerateRequest):
        return req.render_text()
    return req.context if isinstance(req, LoglikelihoodRequest) else ""


def _trajectory_job(scaffold: ToolLoop, request: GenerateRequest, inst: Instance) -> Job:
    async def run(ctx: JobContext) -> WorkResult:
        traj = await scaffold.run(request, ctx.call_model, ctx.resources, inst)
        return WorkResult(response=traj.response, steps=tuple(traj.steps), error=traj.error)

    return run


def _record(task: Task, spec: str, p: PlannedItem, out: Outcome, task_hash: str | None = None) -> InstanceRecord:
    """`task_hash`: computed once per run by the caller (hashing the task config per record cost
    as much as the rest of the record)."""
    req, inst = p.item.request, p.instance
    assert isinstance(req, GenerateRequest | LoglikelihoodRequest)  # what tasks build (not the gateway's kind)
    prompt = req.render_text() if isinstance(req, GenerateRequest) else req.context
    steps = list(out.result.steps) if out.result is not None else []
    base = InstanceRecord(
        task_hash=task_hash or task.task_hash, task_spec=spec, instance_id=inst.id, sample_index=p.sample,
        request_hash=request_hash(req), request=req.model_dump(mode="json"), prompt_text=prompt,
        gold=inst.gold, choices=list(inst.choices) if inst.choices else None, cluster=inst.cluster,
        latency_s=out.latency_s, cached=out.cached, attempts=out.attempts, trajectory=steps,
    )
    resp = out.response
    if resp is None or out.error is not None or isinstance(resp, TokenLogprobsResponse):
        return base.model_copy(update={"error": out.error})
    scores, extracted = score_response(task, inst, resp)
    update: dict[str, Any] = {"extracted_answer": extracted, "scores": scores, "prompt_tokens": resp.usage.prompt_tokens}
    if isinstance(resp, LoglikelihoodResponse):
        update["logprobs"] = list(resp.logprobs)
    else:
        update.update(output_text=resp.text, completion_tokens=resp.usage.completion_tokens)
    return base.model_copy(update=update)


async def score_by_execution(task: Task, records: list[InstanceRecord], instances: list[Instance], exp: Experiment,
                             core: RunnerCore) -> list[InstanceRecord]:
    """Each completion's tests in a sandbox, one work item each (not cached: cheap, and a sandbox
    failure must never be remembered as a verdict)."""
    scorer = execution_scorer(task.execution or "")
    by_id = {i.id: i for i in instances}
    items: dict[int, WorkItem] = {}
    for i, rec in enumerate(records):
        if rec.error is not None:
            continue

        async def run(ctx: JobContext, rec: InstanceRecord = rec) -> WorkResult:
            try:
                ex = await scorer(task.config, by_id[rec.instance_id], rec.output_text or "", ctx.resources)
            except SandboxError as err:
                return WorkResult(error=InstanceError(kind=err.kind, message=str(err)[:1000], attempts=1))
            return WorkResult(scores=ex.scores, extracted=ex.extracted, steps=(ex.step,))

        key = stable_hash({"execution": task.execution, "instance": rec.instance_id, "sample": rec.sample_index,
                           "completion": rec.output_text})
        items[i] = WorkItem(key=key, job=run, cacheable=False, uses_model=False)
    if not items:
        return records
    cfg = task.config
    resources = execution_resources(exp.harness, list(cfg.scoring.requires), len(instances), cfg.prompt.generation.samples)
    outcomes = await core.run(list(items.values()), label=f"{cfg.name} execution", resources=resources)
    out = list(records)
    for i, item in items.items():
        o, rec = outcomes[item.key], records[i]
        if o.error is not None or o.result is None:
            out[i] = rec.model_copy(update={"error": o.error, "scores": {}})
            continue
        out[i] = rec.model_copy(update={"scores": {**rec.scores, **(o.result.scores or {})},
                                        "extracted_answer": o.result.extracted,
                                        "trajectory": [*rec.trajectory, *o.result.steps]})
    return out


async def apply_judge(records: list[InstanceRecord], queries: dict[str, str], exp: Experiment,
                      judge_core: RunnerCore) -> list[InstanceRecord]:
    """`scores.judge` and a `judge` step on every record with an output; the judge's calls are
    plain work items of the judge's own core (same cache, same limits)."""
    cfg = judge_config(exp.harness.auxiliary)
    identity = judge_core.provider.identity
    items: dict[int, WorkItem] = {}
    for i, r in enumerate(records):
        if r.error is None and r.output_text is not None:
            req = judge_request(cfg, queries.get(r.instance_id, r.prompt_text or ""), r.output_text,
                                None if r.gold is None else str(r.gold))
            items[i] = WorkItem(key=cache_key(identity, req, "judge", [], 0), request=req)
    started = time.time()
    outcomes = await judge_core.run(list(items.values()), label="judge") if items else {}
    out = list(records)
    for i, item in items.items():
        o = outcomes[item.key]
        resp = o.response if isinstance(o.response, GenerateResponse) else None
        prompt = item.request.messages[0].content if isinstance(item.request, GenerateRequest) and item.request.messages else ""
        out[i] = judged(records[i], resp, o.error, cfg, identity.label, prompt, o.cached, started, o.latency_s)
    return out


async def execute(task_run: TaskRun, exp: Experiment, core: RunnerCore, judge_core: RunnerCore | None = None) -> TaskResult:
    start = time.monotonic()
    task, instances = prepare(task_run, exp)
    plan = plan_items(task, instances, exp, core.provider)
    task_hash = task.task_hash
    agent = any(p.item.job is not None for p in plan)
    resources = sandbox_resources(exp.harness) if agent else None
    try:
        outcomes = await core.run([p.item for p in batch_order(plan)], label=task_run.spec, resources=resources,
                                  keep_order=True)
    except Interrupted as stop:  # Ctrl-C: the instances that finished are recorded, marked interrupted
        done = [_record(task, task_run.spec, p, stop.outcomes[p.item.key], task_hash) for p in plan
                if p.item.key in stop.outcomes]
        raise TaskInterrupted(_result(task_run, task_hash, done, start, "interrupted")) from None
    records = [_record(task, task_run.spec, p, outcomes[p.item.key], task_hash) for p in plan]
    try:
        if task.config.scoring.requires:  # execution scoring in sandboxes; nothing else starts one
            records = await score_by_execution(task, records, instances, exp, core)
        if "judge" in task.config.scoring.scorers:
            records = await apply_judge(records, {i.id: i.query for i in instances}, exp, judge_core or core)
    except Interrupted:  # Ctrl-C while scoring: the answers are kept, their scores not finished
        raise TaskInterrupted(_result(task_run, task_hash, records, start, "interrupted")) from None
    return _result(task_run, task_hash, records, start)


def _result(task_run: TaskRun, task_hash: str, records: list[InstanceRecord], start: float,
            status: str | None = None) -> TaskResult:
    errored = sum(1 for r in records if r.error is not None)
    n = len(records)
    status = status or ("failed" if n and errored == n else ("finished" if errored == 0 else "partial"))
    return TaskResult(
        spec=task_run.spec,
        task_hash=task_hash,
        instances=records,
        counts=RunCounts(n=n, scored=n - errored, errored=errored),
        duration_s=time.monotonic() - start,
        status=status,
        prompt_tokens=sum(r.prompt_tokens for r in records),
        completion_tokens=sum(r.completion_tokens for r in records),
    )


class TaskInterrupted(Exception):
    """Ctrl-C during a task run: `result` holds the instances that finished (status interrupted)."""

    def __init__(self, result: TaskResult):
        super().__init__("interrupted")
        self.result = result


def run_dir_for(exp: Experiment, spec: str) -> Path:
    return Path(exp.output_dir) / spec_dirname(spec)
