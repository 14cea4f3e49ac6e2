"""Execution scoring: a completion's tests run in a sandbox; the verdict is its score.

Only tasks that declare `requires` get here; the runner core runs each execution as a work item
(docs/architecture.md, "One execution layer") inside the pools opened for it. A sandbox that
fails to run (not the code under test failing) raises `SandboxError`: the instance is an error,
never a 0.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config import names
from engine.config.schema import TaskConfig
from engine.sandbox import SandboxRouter
from engine.scoring.code_exec import HumanEvalProblem, run_humaneval_check
from engine.tasks import Instance
from engine.types import TrajectoryStep

names.declare_engine_scores(None, ["pass"])  # 1 when the completion passes its tests (config checks names)


class ExecutionScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    scores: dict[str, float]
    extracted: Any = None
    step: TrajectoryStep


async def humaneval_execution(cfg: TaskConfig, inst: Instance, completion: str, router: SandboxRouter) -> ExecutionScore:
    started = time.time()
    problem = HumanEvalProblem.model_validate(inst.row)
    verdict = await run_humaneval_check(router, problem, completion, timeout=cfg.scoring.execution_timeout_s, requires=cfg.scoring.requires)
    ex = verdict.execution
    step = TrajectoryStep(
        type="sandbox",
        content={
            "status": verdict.status, "result": verdict.result, "reason": verdict.reason,
            "pool": ex.pool if ex else None, "backend": ex.backend if ex else None,
            "host": ex.host if ex else None,
            "exit_code": ex.exit_code if ex else None,
            "stdout": (ex.stdout[-2000:] if ex else ""), "stderr": (ex.stderr[-2000:] if ex else ""),
        },
        started=started,
        duration_s=verdict.duration_s,
    )
    return ExecutionScore(scores={"pass": float(verdict.passed)}, extracted=verdict.result, step=step)


ExecutionScorer = Callable[[TaskConfig, Instance, str, SandboxRouter], Awaitable[ExecutionScore]]
EXECUTION_SCORERS: dict[str, ExecutionScorer] = {"humaneval": humaneval_execution}


def execution_scorer(name: str) -> ExecutionScorer:
    if name not in EXECUTION_SCORERS:
        raise KeyError(f"unknown execution scorer {name!r}; known: {sorted(EXECUTION_SCORERS)}")
    return EXECUTION_SCORERS[name]
