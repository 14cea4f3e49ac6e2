"""The Python entry point: `evaluate(...)` runs what `python -m engine ...` runs (docs/architecture.md,
"The public API").

`compare` is the package `engine.compare` itself, made callable (engine/compare/pairwise.py).
`evaluate` sits on the command line's own path: `evaluate` turns its arguments into override strings and
hands them to `compose_experiment` (the one config path), then `execute` (which the CLI calls too)
claims the output folder, runs every task kind (native and external), and writes the run folders,
the suite record and MLflow exactly as the CLI does. Errors are raised, not printed: a user error
is a `ConfigError` (the CLI's exit 2), a failed provider a `ProviderError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.config.compose import compose_experiment
from engine.config.errors import ConfigError, format_validation_error
from engine.config.overrides import quote
from engine.config.schema import Experiment, check_harness_fits
from engine.external.run import check_external, run_external
from engine.record import sidecar
from engine.record.publish import TrackingError
from engine.record.suite import record_suite
from engine.runner.experiment import ExternalHooks, claim_output, run_experiment
from engine.scoring.suites import suite_score
from engine.types import RunRecord

EXTERNAL = ExternalHooks(check=check_external, run=run_external)
TaskArg = str | Mapping[str, Any] | BaseModel


def check_writable(folder: Path) -> None:
    """Refuse before any compute an output folder the records could not be written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".evalbench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"The output folder {folder} is not writable ({err.strerror or err}). Fix: make it writable, or "
            "write the records elsewhere with `output_dir=/a/writable/folder`."
        ) from None


def execute(exp: Experiment, records: list[RunRecord], untracked: list[TrackingError]) -> None:
    """Run a validated experiment and record it (run folders, suite record, MLflow). `records`
    receives each finished task run's record as it lands, so an interrupted caller keeps them;
    `untracked` receives every record that missed the tracking store."""
    with sidecar.session(exp.tracking):  # one tracking helper for the task runs and the suite
        check_writable(Path(exp.output_dir))
        exp = claim_output(exp)  # another live run writing there: this one writes beside it
        run_experiment(exp, records, untracked, EXTERNAL)  # type: ignore[arg-type]
        if exp.suite is not None and exp.suite.aggregate != "none":
            try:  # suite.json beside the run folders, and an MLflow parent run over them
                record_suite(Path(exp.output_dir), suite_score(exp.suite, records), records, exp.tracking)
            except TrackingError as err:
                untracked.append(err)


def override_value(value: Any) -> str:
    """A Python value in Hydra's override grammar (strings quoted: a path may hold reserved characters)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, Sequence):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"evaluate(): the setting value {value!r} ({type(value).__name__}) has no override form. "
                      "Fix: pass a string, number, boolean, None, list or dict.")


def _names(tasks: TaskArg | Sequence[TaskArg]) -> tuple[list[str], BaseModel | Mapping[str, Any] | None]:
    """Task override strings for the names given, and the one task config object (if one was given)."""
    if isinstance(tasks, str | Mapping | BaseModel):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ConfigError("evaluate() was given no task. Fix: name one, e.g. evaluate('mmlu', limit=10).")
    if all(isinstance(t, str) for t in tasks):
        return ([f"task={tasks[0]}"] if len(tasks) == 1 else [f"task=[{','.join(map(str, tasks))}]"]), None
    if len(tasks) > 1:
        raise ConfigError("evaluate() takes one task config object at a time (a list only of task names). Fix: call "
                          "evaluate once per config object, or name the tasks (`evaluate(['mmlu', 'gsm8k'])`).")
    return [], tasks[0]  # type: ignore[return-value]


def _with_objects(exp: Experiment, objects: Mapping[str, BaseModel | Mapping[str, Any]]) -> Experiment:
    """The composed experiment with whole config objects put in place of groups (each validated as
    its group's model), and the cross-group check a composed experiment passes (check_harness_fits)."""
    fields = Experiment.model_fields
    parts: dict[str, BaseModel] = {}
    for group, value in objects.items():
        model = fields[group].annotation
        model = next((a for a in getattr(model, "__args__", (model,)) if isinstance(a, type)
                      and issubclass(a, BaseModel)), model)
        try:
            parts[group] = value if isinstance(value, BaseModel) else model.model_validate(dict(value))  # type: ignore[union-attr]
        except ValidationError as err:
            raise format_validation_error(err, model) from None
    exp = exp.model_copy(update=parts)
    if exp.task is not None and exp.suite is None:
        try:
            check_harness_fits(exp.harness, exp.task)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return exp


def experiment(tasks: TaskArg | Sequence[TaskArg], model: TaskArg | None = None, harness: TaskArg | None = None, *,
               overrides: Sequence[str] = (), **settings: Any) -> Experiment:
    """The validated `Experiment` that `evaluate` would run: names compose through the CLI's path
    (same overrides, same checks); a config object replaces its group after composition."""
    args, task_object = _names(tasks)
    objects = {"task": task_object} if task_object is not None else {}
    for group, value in (("model", model), ("harness", harness)):
        if isinstance(value, str):
            args.append(f"{group}={value}")
        elif value is not None:
            objects[group] = value
    args += [f"{k}={override_value(v)}" for k, v in settings.items()]
    exp = compose_experiment([*args, *overrides])
    return _with_objects(exp, objects) if objects else exp


def evaluate(tasks: TaskArg | Sequence[TaskArg], model: TaskArg | None = None, harness: TaskArg | None = None, *,
             overrides: Sequence[str] = (), **settings: Any) -> list[RunRecord]:
    """Run tasks and return their records, as `python -m engine` would.

    `tasks`: a task spec (`"mmlu:mc"`), a list of specs (run as one ad-hoc suite), or a whole task
    config (a `TaskConfig`, or a dict validated as one).
    `model`, `harness`: a config group name or a config object. `settings`: top-level keys
    (`limit=4`, `output_dir="runs/x"`, `suite="core"`). `overrides`: any further override strings,
    exactly as typed on the command line (`"model.path=ckpt/step20"`).
    """
    exp = experiment(tasks, model, harness, overrides=overrides, **settings)
    records: list[RunRecord] = []
    untracked: list[TrackingError] = []
    execute(exp, records, untracked)
    if untracked:
        raise untracked[0]
    return records
