"""A task's configuration in three parts (docs/architecture.md, "Task configuration"):

    task.dataset   TaskData     rows: `data` (as `source`), `fields`, `sample_size`, `sample_threshold`
    task.prompt    TaskPrompt   what the model is shown and how it answers (`mc_template`, `generation`, ...)
    task.scoring   TaskScoring  how answers are scored (`scorers`, `metrics`, `primary_metric`, ...)

A task file keeps its keys flat, as every task file and `task.xxx=...` override always wrote them:
validation routes each key into its part, and a dump writes them flat again, so a config dumps and
hashes exactly as before the parts existed (the task hash and experiment id are unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator
from pydantic.fields import FieldInfo

from engine.config import names
from engine.config.task_data import DataConfig, FrozenConfig, TaskData
from engine.config.task_prompt import TaskPrompt
from engine.config.task_scoring import Formulation, TaskScoring, drop_engine_scores

PARTS: dict[str, type[FrozenConfig]] = {"dataset": TaskData, "prompt": TaskPrompt, "scoring": TaskScoring}
_SOURCE_KEY = "data"  # the YAML key of `task.dataset.source`


def _flat_key(name: str, alias: str | None) -> str:
    return _SOURCE_KEY if name == "source" else alias or name


# YAML key -> (part, the key inside the part as it validates).
ROUTES: dict[str, tuple[str, str]] = {
    _flat_key(n, f.alias): (part, f.alias or n) for part, cls in PARTS.items() for n, f in cls.model_fields.items()}


# YAML key -> the field name inside its part (`data` is `source`, `metrics` is `metric_names`).
_FIELD: dict[str, str] = {
    _flat_key(n, f.alias): n for cls in PARTS.values() for n, f in cls.model_fields.items()}


class ExternalConfig(FrozenConfig):
    """An external eval: a benchmark's own loop run in a subprocess against the model gateway
    (engine/external, docs/architecture.md "External evals")."""

    wrapper: str  # e.g. lm_eval (engine/external/wrappers.py lists them)
    args: dict[str, Any] = {}  # the wrapper's own arguments
    # A native task spec evaluating the same instances with the same prompts: the record then carries
    # that task's hash, so `engine.compare` pairs the external run with native runs of it.
    compare_as: str | None = None
    timeout_s: float = Field(default=3600.0, gt=0.0)  # the whole benchmark subprocess


class TaskConfig(FrozenConfig):
    name: str
    formulation: Formulation = "mc"
    # OLMES: run each of these formulations and report the better primary metric (variant `olmes`).
    best_of: list[Literal["mc", "rc"]] = []
    target: str | None = Field(default=None, alias="_target_")
    variants: list[str] = []  # filled by composition: the variant names applied
    external: ExternalConfig | None = None  # run by a benchmark's own loop, not the engine's
    dataset: TaskData
    prompt: TaskPrompt = TaskPrompt()
    scoring: TaskScoring = TaskScoring()

    @model_validator(mode="before")
    @classmethod
    def _route_flat_keys(cls, raw: Any) -> Any:
        """Flat YAML keys into their parts; a part may also be given whole (`dataset=TaskData(...)`)."""
        if not isinstance(raw, dict):
            return raw
        out = {k: v for k, v in raw.items() if k not in ROUTES}
        for part in PARTS:
            given = out.get(part)
            out[part] = _as_input(given) if given is not None else {}
        for key, value in raw.items():
            part, inner = ROUTES.get(key, ("", ""))
            if isinstance(out.get(part), dict):  # a part given as something else: its own error below
                out[part][inner] = value
        scoring = out["scoring"]
        if isinstance(scoring, dict) and isinstance(scoring.get("scorers"), list):
            scoring["scorers"] = drop_engine_scores(scoring["scorers"], str(out.get("formulation", "mc")),
                                                    str(scoring.get("normalization", "none")))
        return out

    @model_serializer(mode="wrap")
    def _flat_dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for part in PARTS:
            for key, value in (out.pop(part, None) or {}).items():
                out[_SOURCE_KEY if key == "source" else key] = value
        return out

    @field_validator("target")
    @classmethod
    def _known_task_class(cls, v: str | None) -> str | None:
        # A dotted path (`my.module.MyTask`) is imported when the task is built; a short name must be
        # registered (`@task`) by now: built-in, or in a module `imports:` loaded.
        if v is not None and "." not in v:
            names.check_known("task", v, "`task._target_`")
        return v

    @classmethod
    def flat_fields(cls) -> dict[str, FieldInfo]:
        """The keys a task file may set, as YAML writes them, with the field each sets."""
        top = {f.alias or n: f for n, f in cls.model_fields.items() if n not in PARTS and n != "variants"}
        return top | {key: PARTS[part].model_fields[_FIELD[key]] for key, (part, _) in ROUTES.items()}

    @classmethod
    def flat_keys(cls) -> list[str]:
        return list(cls.flat_fields())

    @classmethod
    def flat_defaults(cls) -> dict[str, Any]:
        """Every optional key with its default, flat (`data` too: its fields all have defaults)."""
        fields = [(n, f) for n, f in cls.model_fields.items() if n not in PARTS and n not in ("name", "variants")]
        fields += [(n, f) for part in PARTS.values() for n, f in part.model_fields.items()]
        out: dict[str, Any] = {}
        for name, field in fields:
            value = DataConfig() if name == "source" else field.get_default(call_default_factory=True)
            out[_flat_key(name, field.alias)] = (
                value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value)
        return out

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with keys replaced, unvalidated as pydantic's is; a flat key (`data`, `num_fewshot`)
        replaces that field of its part, as a task file would set it."""
        top = {k: v for k, v in (update or {}).items() if k not in ROUTES}
        parts: dict[str, dict[str, Any]] = {}
        for key, value in (update or {}).items():
            if key in ROUTES:
                parts.setdefault(ROUTES[key][0], {})[_FIELD[key]] = value
        top |= {part: (top.get(part) or getattr(self, part)).model_copy(update=vals) for part, vals in parts.items()}
        return super().model_copy(update=top, deep=deep)

    @property
    def data(self) -> DataConfig:
        """Where the rows come from (YAML `data:`)."""
        return self.dataset.source

    def formulations(self) -> list[str]:
        """One per run: the `best_of` formulations, else the formulation."""
        return list(self.best_of) or [self.formulation]

    def metrics(self) -> set[str] | None:
        """The metrics every run of this config produces (each best_of formulation is a run);
        None for a user task class (`_target_`) or an external eval, which may score anything."""
        per_form = names.task_metrics(self.target)
        if self.external is not None or per_form is None:
            return None
        return self.scoring.produced(self.name, self.formulations(), dict(per_form))

    @model_validator(mode="after")
    def _parts_fit_together(self) -> TaskConfig:
        self.scoring.check_pass_at_k(self.prompt.generation.samples)
        produced = self.metrics()
        if produced is not None:
            self.scoring.check_primary(self.name, self.formulations(), produced)
        return self


def _as_input(part: Any) -> dict[str, Any]:
    """A part given whole, as the dict it validates from (its keys as they validate: aliases)."""
    if isinstance(part, BaseModel):
        return {f.alias or n: getattr(part, n) for n, f in type(part).model_fields.items()}
    return dict(part) if isinstance(part, dict) else part
