"""Suites and task specs expanded into TaskRuns.

- A suite lists task specs (`sciq:mc:3shot`) and nested suites (`suites: [olmes_core10]`); the
  flattened, de-duplicated task specs are what runs.
- A task whose config has `best_of` (the `olmes` variant: `[mc, rc]`) expands into one run per
  formulation, spec `<spec>:mc`, `<spec>:rc`; its reported score is the better of the two
  (engine/scoring/suites.py).
"""

from __future__ import annotations

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.config.compose import compose_task, entry, task_spec_string
from engine.config.errors import ConfigError, format_validation_error
from engine.config.schema import Experiment, SuiteConfig, TaskConfig


class TaskRun(BaseModel):
    """One task spec with its fully composed task config: what one run evaluates."""

    model_config = ConfigDict(frozen=True)

    spec: str
    task: TaskConfig


def load_suite(name: str) -> SuiteConfig:
    """The suite file a name selects, from the user's config folders or the built-in ones."""
    path = entry("suite", name).path
    assert path is not None  # only Python-registered variants have no file
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    try:
        return SuiteConfig.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err, SuiteConfig, where=f"suite[{name}]") from None


def suite_specs(suite: SuiteConfig, _stack: tuple[str, ...] = ()) -> list[str]:
    """All task specs of a suite, nested suites included, first occurrence order."""
    if suite.name in _stack:
        raise ConfigError(f"suite '{suite.name}' includes itself: {' -> '.join((*_stack, suite.name))}")
    out: list[str] = list(suite.tasks)
    for name in suite.suites:
        out += suite_specs(load_suite(name), (*_stack, suite.name))
    return list(dict.fromkeys(out))


def expand_task(spec: str, cfg: TaskConfig) -> list[TaskRun]:
    if not cfg.best_of:
        return [TaskRun(spec=spec, task=cfg)]
    return [
        TaskRun(
            spec=f"{spec}:{form}",
            task=cfg.model_copy(update={"formulation": form, "best_of": [], "variants": [*cfg.variants, form]}),
        )
        for form in cfg.best_of
    ]


def expand_spec(spec: str) -> list[TaskRun]:
    return expand_task(spec, compose_task(spec))


def expand_experiment(exp: Experiment) -> list[TaskRun]:
    """The TaskRuns of an experiment: a suite (nested, best-of expanded) or one task."""
    if exp.suite is not None:
        runs = [run for spec in suite_specs(exp.suite) for run in expand_spec(spec)]
    else:
        assert exp.task is not None
        runs = expand_task(task_spec_string(exp.task.name, exp.task.variants), exp.task)
    return list({r.spec: r for r in runs}.values())
