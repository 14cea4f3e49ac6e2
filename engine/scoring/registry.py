"""`@scorer`: a per-instance scorer a task names in its `scorers:` list.

    @scorer(metrics=["has_unit"])
    def has_unit(cfg: TaskConfig, inst: Instance, response: Response) -> dict[str, float]:
        return {"has_unit": float("km" in response.text)} if isinstance(response, GenerateResponse) else {}

A scorer sees the task config, the instance and the response, and returns scores by metric name;
they join the standard scores of the instance (engine/scoring/scorers.py `score_response`). The
metrics it declares (default: its own name) let `task.primary_metric` be checked before the run.
Registering declares the name to config (engine/config/names.py), so a YAML `scorers: [has_unit]`
validates once the module is imported (`imports: [mypkg.scorers]`, docs/architecture.md "Extensions").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.api import Registry, Response, origin_of
from engine.config import names
from engine.config.errors import ConfigError
from engine.config.schema import TaskConfig
from engine.tasks.instance import Instance

ScorerFn = Callable[[TaskConfig, Instance, Response], dict[str, float]]


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScorerFn
    metrics: tuple[str, ...]

    def __call__(self, cfg: TaskConfig, inst: Instance, response: Response) -> dict[str, float]:
        return self.fn(cfg, inst, response)


SCORERS: Registry[Scorer] = Registry(
    "scorer", "@scorer", ConfigError, on_add=lambda name, s: names.declare("scorer", name, s.metrics))


def scorer(fn: ScorerFn | None = None, *, name: str | None = None, metrics: Iterable[str] | None = None) -> Any:
    """`@scorer` or `@scorer(name=..., metrics=[...])`: register a per-instance scorer (returns the function)."""

    def wrap(f: ScorerFn) -> ScorerFn:
        key = name or f.__name__
        declared = tuple(metrics) if metrics is not None else (key,)
        SCORERS.add(key, Scorer(key, f, declared), origin=origin_of(f))
        return f

    return wrap(fn) if fn is not None else wrap


def apply_scorers(cfg: TaskConfig, inst: Instance, response: Response, scores: dict[str, float]) -> dict[str, float]:
    """`scores` plus what each registered scorer the task names returns (in the order named)."""
    out = dict(scores)
    for key in cfg.scorers:
        if key in SCORERS:
            out.update(SCORERS.get(key)(cfg, inst, response))
    return out
