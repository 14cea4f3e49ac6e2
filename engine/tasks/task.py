"""Task: a benchmark config made executable: instances, few-shot, requests, scoring.

Most tasks are pure YAML; a YAML `_target_` names a subclass when instances need code (override
`load_instances`, `build_request` or `score`): a short name registered with `@task`
(`_target_: winogrande`), or a dotted path (`_target_: my.module.MyTask`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar

from hydra.utils import get_class

from engine.config import names
from engine.config.errors import ConfigError
from engine.config.schema import TaskConfig
from engine.data.source import load_rows
from engine.tasks.fewshot import select_fewshot
from engine.tasks.formulations import build_request
from engine.tasks.instance import Instance, row_to_instance, rows_to_instances
from engine.types import Registry, Request, Response, stable_hash

# Task classes by short name, for YAML `_target_: <name>` (docs/architecture.md, "Extensions").
# Each class tells config its name and its own metrics (`formulation_metrics`), so a task's primary metric
# is checked before the run (engine/config/names.py).
TASKS: Registry[type[Task]] = Registry("task", "@task", ConfigError, on_add=lambda name, cls: names.declare_task(
    name, f"{cls.__module__}.{cls.__qualname__}", cls.__dict__.get("formulation_metrics")))
TASK_REGISTRY = TASKS  # the former name


def _snake(name: str) -> str:
    """`MyQATask` -> `my_qa`: the name `@task` gives a class when none is given."""
    name = name.removesuffix("Task") or name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def task(target: type[Task] | str | None = None, /, *, name: str | None = None) -> Any:
    """Register a Task subclass for YAML `_target_: <name>`: `@task`, `@task("name")` or `@task(name="name")`
    (bare: the class name in snake case without `Task`, `MyQATask` -> `my_qa`)."""

    def wrap(cls: type[Task], given: str | None) -> type[Task]:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"@task decorates a subclass of engine.tasks.Task, not {cls!r}")
        return TASKS.add(given or _snake(cls.__name__), cls)

    if isinstance(target, type):
        return wrap(target, name)
    return lambda cls: wrap(cls, target or name)


register_task = task  # the former name: `@register_task("winogrande")`


class Task:
    # The execution scorer (engine.scoring.execution) that scores a task declaring `requires`.
    execution: ClassVar[str | None] = None
    # What the class writes per formulation, where it differs from the engine's generic scoring (a
    # formulation not listed keeps the generic metrics); a class that does not set it (a user's) may score
    # anything, so its primary metric is not checked up front.
    formulation_metrics: ClassVar[Mapping[str, frozenset[str]] | None] = None

    def __init__(self, config: TaskConfig):
        self.config = config

    @property
    def task_hash(self) -> str:
        """What is measured: the task config without which harness ran it (same for any model)."""
        return stable_hash(self.config.model_dump(mode="json", by_alias=True, exclude={"variants"}))[:16]

    # -- data ----------------------------------------------------------------------------------
    def preprocess_row(self, row: dict) -> dict:
        """Hook for subclasses: clean or derive columns before the field map applies."""
        return row

    def to_instances(self, rows: list[dict]) -> list[Instance]:
        return rows_to_instances([self.preprocess_row(dict(r)) for r in rows], self.config.dataset.fields)

    def load_instances(self) -> list[Instance]:
        rows = load_rows(self.config.data)
        instances = self.to_instances(rows)
        cfg = self.config
        if cfg.dataset.sample_size and len(instances) > cfg.dataset.sample_threshold:
            # OLMES: a fixed random sample (seed 1234) of large splits, in original order.
            keep = sorted(random.Random(cfg.prompt.fewshot.seed).sample(range(len(instances)), cfg.dataset.sample_size))
            self._fewshot_pool_cache = instances
            instances = [instances[i] for i in keep]
        return instances

    @cached_property
    def fewshot_pool(self) -> list[Instance]:
        cfg = self.config
        if cfg.prompt.num_fewshot == 0:
            return []
        if cfg.prompt.fewshot.split is not None:
            return self.to_instances(load_rows(cfg.data, cfg.prompt.fewshot.split))
        cached = getattr(self, "_fewshot_pool_cache", None)
        return cached if cached is not None else self.to_instances(load_rows(cfg.data))

    @cached_property
    def curated(self) -> list[Instance]:
        return [
            row_to_instance(self.preprocess_row(dict(r)), i, self.config.dataset.fields)
            for i, r in enumerate(self.config.prompt.fewshot.curated)
        ]

    # -- requests ------------------------------------------------------------------------------
    def fewshot_for(self, inst: Instance) -> list[Instance]:
        cfg = self.config
        if cfg.prompt.num_fewshot > 0 and len(self.curated) >= cfg.prompt.num_fewshot:
            # enough curated examples: the few-shot split is never loaded
            shots = select_fewshot(inst, [], cfg.prompt.num_fewshot, seed=cfg.prompt.fewshot.seed, curated=self.curated)
            if len(shots) == cfg.prompt.num_fewshot:
                return shots
        return select_fewshot(
            inst,
            self.fewshot_pool,
            cfg.prompt.num_fewshot,
            seed=cfg.prompt.fewshot.seed,
            curated=self.curated,
            same_cluster=cfg.prompt.fewshot.same_cluster,
            fixed=cfg.prompt.fewshot.fixed,
        )

    def build_request(self, inst: Instance) -> Request:
        return build_request(self.config, inst, self.fewshot_for(inst))

    # -- scoring -------------------------------------------------------------------------------
    def score(self, inst: Instance, response: Response) -> tuple[dict[str, float], object] | None:
        """Hook: (scores, extracted answer) when this task scores in its own way; None lets the
        standard scorers of `engine.scoring` decide (they call this first)."""
        return None


def task_class(target: str) -> type[Task]:
    """The class a YAML `_target_` names: a registered short name, else a dotted import path."""
    if target in TASKS or "." not in target:
        return TASKS.get(target, "`task._target_`")
    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001 - Hydra wraps import errors in its own types
        raise ConfigError(
            f"task `_target_: {target}` cannot be imported ({' '.join(str(err).split())}). Fix the dotted path "
            "(`my.module.MyTask`, importable from where you run), or register the class with `@task` and name it "
            "by its short name"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task `_target_: {target}` names {cls!r}, which is not a subclass of engine.tasks.Task. "
                          "Fix: point `_target_` at a Task subclass")
    return cls


def build_task(config: TaskConfig) -> Task:
    return Task(config) if config.target is None else task_class(config.target)(config)
