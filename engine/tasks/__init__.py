"""Tasks: instances, few-shot selection, formulations, answer extraction."""

from engine.tasks.instance import Instance
from engine.tasks.task import TASK_REGISTRY, Task, build_task, register_task

__all__ = ["Instance", "Task", "TASK_REGISTRY", "build_task", "register_task"]
