"""Names a config may use that code defines: task classes, scorers, metrics, tools, scaffolds.

Config sits below the packages that define them (docs/architecture.md, "Extensions"), so it lists
the built-in names here and each package's registry declares every name it adds (`on_add`): a
user's `@task`, `@scorer`, `@metric`, `@tool` or `@scaffold`, imported by `engine.config.plugins` before the
experiment is validated, is then a known name. `tests/test_plugins.py` checks that the built-in
lists match the registries.
"""

from __future__ import annotations

from typing import Literal

from engine.types import unknown_name_message

Kind = Literal["task", "scorer", "metric", "tool", "scaffold"]

DECORATORS: dict[str, str] = {"task": "@task", "scorer": "@scorer", "metric": "@metric", "tool": "@tool",
                              "scaffold": "@scaffold"}

# What the engine itself writes per instance (engine/scoring/scorers.py, code_exec.py): a `@metric` may
# not take one of these names, or it would replace the engine's own score.
ENGINE_METRICS = frozenset({"acc", "acc_none", "acc_per_token", "acc_per_char", "acc_uncond", "bpb", "exact_match",
                            "pass", "contains", "relaxed_match", "judge", "logprob_margin"})

# The declared range of the engine's per-instance scores: a 0/1 score (or a mean of 0/1 samples) lies in
# [0, 1], bits per byte is non-negative. A score from outside the engine (an external benchmark's
# per-sample output) is checked against it (engine/external/validate.py).
UNIT_INTERVAL_METRICS = ENGINE_METRICS - {"bpb"}


def metric_range(name: str) -> tuple[float, float]:
    """(low, high) a score of this name must lie in; (-inf, inf) for a name the engine does not define."""
    if name in UNIT_INTERVAL_METRICS or (name.startswith("pass@") and name[5:].isdigit()):
        return 0.0, 1.0
    if name == "bpb":
        return 0.0, float("inf")
    return float("-inf"), float("inf")


# A sandbox pool of `harness.sandboxes` (engine/sandbox/models.py SandboxPoolConfig, above config): its keys and
# backends, so a typo is refused when the experiment is validated, not as a traceback when the pool is built.
# tests/test_bad_input.py keeps these equal to the sandbox package's model.
SANDBOX_BACKENDS = ("local", "bwrap", "docker")
SANDBOX_POOL_KEYS = ("name", "backend", "provides", "instances", "concurrency", "limits", "image", "cost",
                     "docker_hosts")

# `harness.auxiliary`: the auxiliary providers and the keys of each (engine/scoring/judge.py JudgeConfig; kept
# equal by tests/test_bad_input.py). `judge.model` is a ModelConfig, validated as one.
AUXILIARY_KEYS: dict[str, tuple[str, ...]] = {"judge": ("mode", "rubric", "scale", "model", "max_tokens", "prompt")}


# Built-in scorers with the metric each writes (engine/scoring/scorers.py, engine/scoring/judge.py).
BUILTIN_SCORERS: dict[str, tuple[str, ...]] = {
    "contains": ("contains",), "relaxed_match": ("relaxed_match",), "judge": ("judge",)}

BUILTIN: dict[str, frozenset[str]] = {
    "task": frozenset({"hellaswag", "winogrande", "humaneval"}),  # engine/tasks/{olmes,code}.py
    "scorer": frozenset(BUILTIN_SCORERS),
    "metric": frozenset(),  # the engine's own metrics are no `@metric`s (engine/scoring/metrics.py)
    "tool": frozenset({"python_exec", "bash", "search", "fetch_page", "submit"}),  # engine/harness/builtin.py
    # single_turn is no scaffold class: one request, no loop (engine/harness/build.py).
    "scaffold": frozenset({"single_turn", "tool_loop", "multi_turn", "openai_agents"}),
}

_declared: dict[str, dict[str, tuple[str, ...]]] = {kind: {} for kind in BUILTIN}


def declare(kind: Kind, name: str, metrics: tuple[str, ...] = ()) -> None:
    """A registry added `name` (a scorer also says which metrics it writes, a metric which it reads)."""
    _declared[kind][name] = metrics


def known(kind: Kind) -> set[str]:
    return set(BUILTIN[kind]) | set(_declared[kind])


def scorer_metrics(name: str) -> tuple[str, ...]:
    """The metrics a known scorer writes (a user scorer declares them: `@scorer(metrics=[...])`)."""
    if name in _declared["scorer"]:
        return _declared["scorer"][name]
    return BUILTIN_SCORERS.get(name, (name,))


def user_scorers() -> set[str]:
    return set(_declared["scorer"]) - set(BUILTIN_SCORERS)


def check_known(kind: Kind, name: str, where: str) -> None:
    """ValueError (a pydantic validator's error) naming the closest known names and how to register one."""
    if name not in known(kind):
        raise ValueError(unknown_name_message(kind, name, known(kind), DECORATORS[kind], where).rstrip("."))


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
