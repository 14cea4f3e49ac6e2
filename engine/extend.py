"""The extension API in one import (docs/architecture.md, "Extensions").

    from engine.extend import Instance, Response, Task, TaskConfig, scorer, task, tool

    @task                       # YAML: `_target_: my_qa`
    class MyQATask(Task): ...

    @scorer(metrics=["has_unit"])   # YAML: `scorers: [has_unit]`
    def has_unit(cfg: TaskConfig, inst: Instance, response: Response) -> dict[str, float]: ...

    @metric(inputs=["tp", "fp", "fn"])  # YAML: `metrics: [micro_f1]` (corpus-level, bootstrap SE)
    def micro_f1(rows: list[dict[str, float]]) -> float: ...

    register_variant("my_qa", "3shot", num_fewshot=3, fewshot={"seed": 1234})  # `task=my_qa:3shot`

    @tool                       # YAML: `harness.tools: [calculator]`
    def calculator(expression: str) -> str: ...

    @scaffold                   # YAML: `harness.scaffold: my_loop`
    class MyLoop(ToolLoop): ...

Import the module through the config (`imports: [mypkg.evals]`) or an installed entry point of
group `evalbench.plugins` (`[project.entry-points."evalbench.plugins"] mypkg = "mypkg.evals"`).
"""

from engine.config.schema import TaskConfig
from engine.config.variants import register_variant
from engine.harness import ToolContext, ToolFailure, ToolLoop, ToolResult, scaffold, tool
from engine.scoring import scorer
from engine.scoring.registry import metric
from engine.tasks import Instance, Task
from engine.tasks.task import task
from engine.types import GenerateResponse, LoglikelihoodResponse, Response

__all__ = [
    "GenerateResponse", "Instance", "LoglikelihoodResponse", "Response", "Task", "TaskConfig", "ToolContext",
    "ToolFailure", "ToolLoop", "ToolResult", "metric", "register_variant", "scaffold", "scorer", "task", "tool",
]
