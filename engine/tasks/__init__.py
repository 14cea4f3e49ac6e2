"""Tasks: instances, few-shot selection, formulations, answer extraction."""

from engine.tasks import code, olmes  # noqa: F401 - registers the built-in task classes (`_target_: winogrande`)
from engine.tasks.instance import Instance
from engine.tasks.task import TASK_REGISTRY, TASKS, Task, build_task, register_task, task_class

__all__ = ["Instance", "Task", "TASKS", "TASK_REGISTRY", "build_task", "register_task", "task_class"]
