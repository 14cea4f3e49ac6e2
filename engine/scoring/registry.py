"""`@scorer`: a per-instance scorer a task names in its `scorers:` list; `@metric`: a metric over the
per-instance scores, named in `metrics:`.

    @scorer(metrics=["has_unit"])
    def has_unit(cfg: TaskConfig, inst: Instance, response: Response) -> dict[str, float]:
        return {"has_unit": float("km" in response.text)} if isinstance(response, GenerateResponse) else {}

A scorer sees the task config, the instance and the response, and returns scores by metric name;
they join the standard scores of the instance (engine/scoring/scorers.py `score_response`). The
metrics it declares (default: its own name) let `task.primary_metric` be checked before the run.
Registering declares the name to config (engine/config/names.py), so a YAML `scorers: [has_unit]`
validates once the module is imported (`imports: [mypkg.scorers]`, docs/architecture.md "Extensions").

    @metric(inputs=["tp", "fp", "fn"])                    # corpus-level: over all questions at once
    def micro_f1(rows: list[dict[str, float]]) -> float:
        tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
        return 2 * tp / max(2 * tp + fp + fn, 1)

    @metric(inputs=["tp", "fp", "fn"], per_instance=True)  # a mean of per-question values
    def f1(row: dict[str, float]) -> float: ...

A metric reads the per-instance scores `inputs` names (written by the task's scorers; none named:
all of them). Each instance gets the metric's own value (a corpus metric: over that one question),
which `engine.compare` pairs. The reported score of a per-instance metric is their mean, with the
analytic SE; of a corpus metric, the metric over all questions with a bootstrap SE, marked
`stderr_method: bootstrap` (engine/scoring/metrics.py, engine/stats/bootstrap.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.config import names
from engine.config.errors import ConfigError
from engine.config.schema import TaskConfig
from engine.tasks.instance import Instance
from engine.types import Registry, Response, origin_of

ScorerFn = Callable[[TaskConfig, Instance, Response], dict[str, float]]


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScorerFn
    metrics: tuple[str, ...]

    def __call__(self, cfg: TaskConfig, inst: Instance, response: Response) -> dict[str, float]:
        return self.fn(cfg, inst, response)


SCORERS: Registry[Scorer] = Registry(
    "scorer", "@scorer", ConfigError, on_add=lambda name, s: names.declare("scorer", name, s.metrics, origin_of(s.fn)))


def scorer(fn: ScorerFn | None = None, *, name: str | None = None, metrics: Iterable[str] | None = None) -> Any:
    """`@scorer` or `@scorer(name=..., metrics=[...])`: register a per-instance scorer (returns the function)."""

    def wrap(f: ScorerFn) -> ScorerFn:
        key = name or f.__name__
        declared = tuple(metrics) if metrics is not None else (key,)
        SCORERS.add(key, Scorer(key, f, declared), origin=origin_of(f))
        return f

    return wrap(fn) if fn is not None else wrap


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float]
    inputs: tuple[str, ...]  # the per-instance scores it reads; () for all of them
    per_instance: bool  # fn(row) per question, reported as the mean; else fn(rows) over all questions

    def row(self, scores: Mapping[str, float]) -> dict[str, float] | None:
        if not self.inputs:
            return {k: v for k, v in scores.items() if k != self.name}
        return {k: scores[k] for k in self.inputs} if all(k in scores for k in self.inputs) else None

    def of_rows(self, rows: Sequence[Mapping[str, float]]) -> float:
        return float(self.fn(list(rows)))

    def instance_value(self, scores: Mapping[str, float]) -> float | None:
        """The metric of one instance (a corpus metric over that one question); None when its inputs are
        missing or the value is not finite (records hold finite numbers)."""
        row = self.row(scores)
        if row is None:
            return None
        value = float(self.fn(row) if self.per_instance else self.fn([row]))
        return value if math.isfinite(value) else None


def _declare_metric(name: str, m: Metric) -> None:
    if name in names.engine_metrics():
        raise ConfigError(f"`@metric` {m.name!r} ({origin_of(m.fn)}) has the name of a score the engine writes itself. "
                          f"Fix: name it otherwise (`@metric(name=\"my_{name}\")`).")
    names.declare("metric", name, m.inputs, origin_of(m.fn))


METRICS: Registry[Metric] = Registry("metric", "@metric", ConfigError, on_add=_declare_metric)


def metric(fn: Callable[..., float] | None = None, *, name: str | None = None, inputs: Iterable[str] | None = None,
           per_instance: bool = False) -> Any:
    """`@metric` or `@metric(name=..., inputs=[...], per_instance=True)`: register a metric over per-instance
    scores; a task names it in `metrics:` (returns the function)."""

    def wrap(f: Callable[..., float]) -> Callable[..., float]:
        key = name or f.__name__
        METRICS.add(key, Metric(key, f, tuple(inputs or ()), per_instance), origin=origin_of(f))
        return f

    return wrap(fn) if fn is not None else wrap


def apply_scorers(cfg: TaskConfig, inst: Instance, response: Response, scores: dict[str, float]) -> dict[str, float]:
    """`scores` plus what each registered scorer the task names returns (in the order named), then the
    value of each `@metric` the task names."""
    out = dict(scores)
    for key in cfg.scoring.scorers:
        if key in SCORERS:
            out.update(SCORERS.get(key)(cfg, inst, response))
    for key in cfg.scoring.metric_names:
        value = METRICS.get(key, "`task.metrics`").instance_value(out)
        if value is not None:
            out[key] = value
    return out
