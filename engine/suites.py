"""Suites: expansion into TaskRuns and aggregation of their scores.

Expansion
- A suite lists task specs (`sciq:mc:3shot`) and nested suites (`suites: [olmes_core10]`); the
  flattened, de-duplicated task specs are what runs.
- A task whose config has `best_of` (the `olmes` variant: `[mc, rc]`) expands into one run per
  formulation, spec `<spec>:mc`, `<spec>:rc`; its reported score is the better of the two, as
  OLMES reports for each task.

Aggregation (`suite_score`)
- task: its primary metric (value, SE) from its RunRecord;
- best-of task: the better formulation's score (higher, or lower for bpb), SE of that run;
- suite: unweighted mean over its entries, where a nested suite counts as one entry (mean of
  means), SE = sqrt(Σ SE_j²)/k (independent estimates; Miller 2024).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.config.compose import check_name, compose_task, conf_dir, task_spec_string
from engine.config.errors import ConfigError, format_validation_error
from engine.config.schema import Experiment, SuiteConfig, TaskConfig
from engine.runner.task_run import TaskRun
from engine.stats import ScoreSummary, summarize_means

LOWER_IS_BETTER = {"bpb"}


# -- expansion ---------------------------------------------------------------------------------
def load_suite(name: str) -> SuiteConfig:
    check_name("suite", name)
    data = OmegaConf.to_container(OmegaConf.load(conf_dir() / "suite" / f"{name}.yaml"), resolve=True)
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


# -- aggregation -------------------------------------------------------------------------------
class AggregateScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kind: str  # task | best_of | suite
    metric: str
    value: float
    stderr: float
    ci_low: float
    ci_high: float
    mde: float
    n: int
    chosen: str | None = None  # best_of: the spec whose score is reported
    parts: list[AggregateScore] = []
    missing: list[str] = []  # specs with no score (failed or not run)


def _from_summary(name: str, kind: str, metric: str, s: ScoreSummary, **extra) -> AggregateScore:
    return AggregateScore(name=name, kind=kind, metric=metric, value=s.value, stderr=s.reported_stderr,
                          ci_low=s.ci_low, ci_high=s.ci_high, mde=s.mde, n=s.n, **extra)


def _summary(a: AggregateScore) -> ScoreSummary:
    return ScoreSummary(value=a.value, n=a.n, stderr=a.stderr, ci_low=a.ci_low, ci_high=a.ci_high, mde=a.mde)


def _record_score(rec) -> AggregateScore | None:
    s = rec.scores.get(rec.primary_metric)
    if s is None or s.n == 0:
        return None
    summary = ScoreSummary(**s.model_dump())
    return _from_summary(rec.task_spec, "task", rec.primary_metric, summary)


def task_score(spec: str, by_spec: dict) -> AggregateScore | None:
    """The reported score of a task spec: its record's primary metric, or the best of its runs."""
    if spec in by_spec:
        return _record_score(by_spec[spec])
    children = [s for s in by_spec if s.startswith(spec + ":") and s.count(":") == spec.count(":") + 1]
    scored = [a for a in (_record_score(by_spec[c]) for c in children) if a is not None]
    if not scored:
        return None
    lower = scored[0].metric in LOWER_IS_BETTER
    best = (min if lower else max)(scored, key=lambda a: a.value)
    return best.model_copy(update={"name": spec, "kind": "best_of", "chosen": best.name, "parts": scored})


def mean_of(name: str, parts: Sequence[AggregateScore], missing: Iterable[str] = ()) -> AggregateScore:
    metric = parts[0].metric if parts and len({p.metric for p in parts}) == 1 else "mean of primary metrics"
    if not parts:
        nan = math.nan
        return AggregateScore(name=name, kind="suite", metric=metric, value=nan, stderr=nan, ci_low=nan,
                              ci_high=nan, mde=nan, n=0, missing=list(missing))
    s = summarize_means([_summary(p) for p in parts])
    return _from_summary(name, "suite", metric, s, parts=list(parts), missing=list(missing))


def suite_score(suite: SuiteConfig, records: Sequence, _stack: tuple[str, ...] = ()) -> AggregateScore:
    """Mean of the suite's task scores and nested-suite aggregates, with SE."""
    by_spec = {r.task_spec: r for r in records}
    parts, missing = [], []
    for spec in suite.tasks:
        score = task_score(spec, by_spec)
        (parts.append(score) if score is not None else missing.append(spec))
    for name in suite.suites:
        if name in _stack:
            continue
        nested = suite_score(load_suite(name), records, (*_stack, suite.name))
        (parts.append(nested) if nested.n > 0 else missing.append(f"suite {name}"))
    return mean_of(suite.name, parts, missing)


def best_of_scores(records: Sequence) -> list[AggregateScore]:
    """For a run without a suite: the best-of rows of every expanded (olmes) task."""
    by_spec = {r.task_spec: r for r in records}
    parents = sorted({s.rsplit(":", 1)[0] for s in by_spec if s.rsplit(":", 1)[-1] in ("mc", "rc")})
    out = []
    for parent in parents:
        runs = [s for s in by_spec if s.rsplit(":", 1)[0] == parent]
        if len(runs) > 1 and parent not in by_spec:
            score = task_score(parent, by_spec)
            if score is not None:
                out.append(score)
    return out


def _fmt(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:.4f}"


def aggregate_lines(agg: AggregateScore, depth: int = 0) -> list[str]:
    """An indented text tree of an aggregate (suite → nested suites / tasks)."""
    pad = "  " * depth
    what = {"suite": f"mean of {len(agg.parts)}", "best_of": f"best: {agg.chosen}", "task": ""}[agg.kind]
    line = (f"{pad}{agg.name:<{max(40 - len(pad), 1)}} {agg.metric:<10} {_fmt(agg.value)}  SE {_fmt(agg.stderr)}"
            f"  95% CI [{_fmt(agg.ci_low)}, {_fmt(agg.ci_high)}]  {what}")
    lines = [line.rstrip()]
    if agg.kind == "suite":
        for part in agg.parts:
            lines += aggregate_lines(part, depth + 1)
        if agg.missing:
            lines.append(f"{pad}  (no score: {', '.join(agg.missing)})")
    return lines


def aggregate_report(records: Sequence, suite: SuiteConfig | None) -> str:
    """The text the results table appends: the suite tree, or the best-of rows of olmes tasks."""
    if suite is not None and suite.aggregate != "none":
        return "\n".join(aggregate_lines(suite_score(suite, records)))
    rows = best_of_scores(records)
    return "\n".join(line for r in rows for line in aggregate_lines(r))


__all__ = [
    "AggregateScore",
    "aggregate_lines",
    "aggregate_report",
    "best_of_scores",
    "expand_experiment",
    "expand_spec",
    "expand_task",
    "load_suite",
    "mean_of",
    "suite_score",
    "suite_specs",
    "task_score",
]
