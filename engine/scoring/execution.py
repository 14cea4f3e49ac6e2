"""Execution scoring: run each completion's tests in a sandbox pool that covers the task's needs.

Only tasks that declare `requires` get here; everything else never touches a sandbox. A sandbox
that fails to run (not the code under test failing) makes the instance an error, never a 0.
"""

from __future__ import annotations

import asyncio

from engine.api import InstanceError, InstanceRecord
from engine.config.schema import Experiment
from engine.tasks import Instance, Task

DEFAULT_POOL = {"name": "local", "backend": "local", "provides": ["python", "bash"], "instances": 2}


async def score_by_execution(
    task: Task, records: list[InstanceRecord], instances: list[Instance], exp: Experiment
) -> list[InstanceRecord]:
    from engine.sandbox import Demand, SandboxError, SandboxRouter, pools_from_config

    cfg = task.config
    by_id = {i.id: i for i in instances}
    todo = [r for r in records if r.error is None]
    if not todo:
        return records
    pools = pools_from_config(exp.harness.sandboxes or [DEFAULT_POOL])
    samples = max(1, cfg.generation.samples)
    demand = Demand(requires=list(cfg.requires), instances=len(instances), samples=samples, executions=1)
    scored: dict[int, InstanceRecord] = {}

    async def one(idx: int, rec: InstanceRecord) -> None:
        try:
            scores, extracted, step = await task.score_execution(by_id[rec.instance_id], rec.output_text or "", router)
        except SandboxError as err:
            error = InstanceError(kind="sandbox", message=str(err)[:1000], attempts=1)
            scored[idx] = rec.model_copy(update={"error": error, "scores": {}})
            return
        scored[idx] = rec.model_copy(
            update={"scores": {**rec.scores, **scores}, "extracted_answer": extracted,
                    "trajectory": [*rec.trajectory, step]}
        )

    async with SandboxRouter(pools, demands=[demand]) as router:
        await asyncio.gather(*(one(i, r) for i, r in enumerate(records) if r.error is None))
    return [scored.get(i, r) for i, r in enumerate(records)]
