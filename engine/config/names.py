"""Names a config may use that code defines: task classes, scorers, metrics, tools, scaffolds, and
the scores and keys the engine's own packages write or read.

Config sits below the packages that define them (docs/architecture.md, "Extensions"), so it keeps no
list of them: each package's registry declares every name it adds (`Registry(on_add=...)`), and
the packages that write scores or read keys declare those when imported. The first question asked
here imports the engine's own extension modules (`BUILTIN_MODULES`), exactly as `imports:` loads a
user's (engine/config/plugins.py), so a built-in name and a user's `@scorer` are known the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import AfterValidator

from engine.types import unknown_name_message

Kind = Literal["task", "scorer", "metric", "tool", "scaffold"]

DECORATORS: dict[str, str] = {"task": "@task", "scorer": "@scorer", "metric": "@metric", "tool": "@tool",
                              "scaffold": "@scaffold"}

# The modules whose import registers the engine's own names (by string: config never imports them).
BUILTIN_MODULES = ("engine.tasks.olmes", "engine.tasks.code", "engine.scoring.scorers", "engine.scoring.execution",
                   "engine.scoring.judge", "engine.harness", "engine.sandbox.models")

_declared: dict[str, dict[str, tuple[str, ...]]] = {kind: {} for kind in DECORATORS}
_origins: dict[str, dict[str, str]] = {kind: {} for kind in DECORATORS}
_task_metrics: dict[str, Mapping[str, frozenset[str]] | None] = {}  # task name or class path -> its own metrics
_formulation_scores: dict[str, set[str]] = {}  # formulation -> what the engine writes for every task of it
_uncond_scores: dict[str, set[str]] = {}  # formulation -> written in addition under normalization uncond
_other_scores: set[str] = set()  # engine scores of no formulation (pass: execution scoring)
_keys: dict[str, tuple[str, ...]] = {}  # e.g. "sandbox_pool" -> the keys a pool of `harness.sandboxes` reads
_loading = False


def _load_builtins() -> None:
    global _loading
    if not _loading:
        _loading = True  # first: a module being imported may ask again
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def declare(kind: Kind, name: str, metrics: tuple[str, ...] = (), origin: str = "") -> None:
    """A registry added `name` (a scorer also says which metrics it writes, a metric which it reads)."""
    _declared[kind][name] = metrics
    _origins[kind][name] = origin


def declare_task(name: str, class_path: str, metrics: Mapping[str, frozenset[str]] | None) -> None:
    """A task class: its metrics per formulation ({} the engine's own; None: it may score anything)."""
    declare("task", name, origin=class_path)
    _task_metrics[name] = _task_metrics[class_path] = metrics


def declare_engine_scores(formulation: str | None, scores: Iterable[str], uncond: Iterable[str] = ()) -> None:
    """Scores the engine writes per instance: for every task of a formulation, or (None) of some tasks."""
    if formulation is None:
        _other_scores.update(scores)
        return
    _formulation_scores.setdefault(formulation, set()).update(scores)
    _uncond_scores.setdefault(formulation, set()).update(uncond)


def declare_keys(what: str, keys: Iterable[str]) -> None:
    _keys[what] = tuple(keys)


def keys_of(what: str) -> tuple[str, ...]:
    _load_builtins()
    return _keys.get(what, ())


def auxiliaries() -> list[str]:
    """The auxiliary providers of `harness.auxiliary` (each declared its keys as `auxiliary.<name>`)."""
    _load_builtins()
    return sorted(k.removeprefix("auxiliary.") for k in _keys if k.startswith("auxiliary."))


def known(kind: Kind) -> set[str]:
    _load_builtins()
    return set(_declared[kind])


def builtin(kind: str) -> set[str]:
    """The names of a kind that the engine itself defines."""
    _load_builtins()
    return {n for n, origin in _origins.get(kind, {}).items() if origin.startswith("engine.")}


def formulation_metrics(formulation: str, normalization: str) -> set[str]:
    """What the engine writes per instance for every task of a formulation (engine/scoring/scorers.py)."""
    _load_builtins()
    extra = _uncond_scores.get(formulation, set()) if normalization == "uncond" else set()
    return set(_formulation_scores.get(formulation, set())) | extra


def engine_metrics() -> frozenset[str]:
    """Every score the engine writes itself: a `@metric` may not take one of these names."""
    _load_builtins()
    scorers = {m for n in builtin("scorer") for m in _declared["scorer"][n]}
    return frozenset(set().union(*_formulation_scores.values(), *_uncond_scores.values(), _other_scores, scorers))


def task_metrics(target: str | None) -> Mapping[str, frozenset[str]] | None:
    """A task class's own metrics per formulation; {} without a class; None for a class that may score
    anything (a user's `_target_`)."""
    if target is None:
        return {}
    _load_builtins()
    return _task_metrics.get(target)


def metric_range(name: str) -> tuple[float, float]:
    """(low, high) a score of this name must lie in; (-inf, inf) for a name the engine does not define.
    Every engine score but bits per byte is 0/1 (or a mean of 0/1 samples); a score from outside the
    engine (an external benchmark's per-sample output) is checked against it (engine/external/validate.py)."""
    if name == "bpb":
        return 0.0, float("inf")
    if name in engine_metrics() or (name.startswith("pass@") and name[5:].isdigit()):
        return 0.0, 1.0
    return float("-inf"), float("inf")


def scorer_metrics(name: str) -> tuple[str, ...]:
    """The metrics a known scorer writes (a user scorer declares them: `@scorer(metrics=[...])`)."""
    _load_builtins()
    return _declared["scorer"].get(name, (name,))


def user_scorers() -> set[str]:
    return known("scorer") - builtin("scorer")


def check_known(kind: Kind, name: str, where: str) -> None:
    """ValueError (a pydantic validator's error) naming the closest known names and how to register one."""
    if name not in known(kind):
        raise ValueError(unknown_name_message(kind, name, known(kind), DECORATORS[kind], where).rstrip("."))


def registered(kind: Kind, where: str) -> AfterValidator:
    """A field's validator (`Annotated[list[str], registered("tool", "`harness.tools`")]`): every name
    the field holds (one name or a list) is registered as `kind`."""
    def check(value: Any) -> Any:
        for name in [value] if isinstance(value, str) else value:
            check_known(kind, name, where)
        return value
    return AfterValidator(check)


def check_metric_inputs(metrics: list[str], produced: set[str] | None, task: str) -> None:
    """ValueError if a `@metric` the task names reads a per-instance score the task does not produce."""
    for name in metrics:
        missing = sorted(set(_declared["metric"].get(name, ())) - produced) if produced is not None else []
        if missing:
            raise ValueError(
                f"`task.metrics` names {name!r}, which reads the per-instance score(s) {', '.join(missing)}, but task "
                f"'{task}' produces only {', '.join(sorted(produced or ())) or '(none)'}. Fix: add the scorer that "
                f"writes {missing[0]!r} to `task.scorers`, or change the metric's `inputs`"
            )
