"""Names a config may use that code defines: task classes, scorers, tools, scaffolds.

Config sits below the packages that define them (docs/architecture.md, "Extensions"), so it lists
the built-in names here and each package's registry declares every name it adds (`on_add`): a
user's `@task`, `@scorer`, `@tool` or `@scaffold`, imported by `engine.config.plugins` before the
experiment is validated, is then a known name. `tests/test_plugins.py` checks that the built-in
lists match the registries.
"""

from __future__ import annotations

from typing import Literal

from engine.api import unknown_name_message

Kind = Literal["task", "scorer", "tool", "scaffold"]

DECORATORS: dict[str, str] = {"task": "@task", "scorer": "@scorer", "tool": "@tool", "scaffold": "@scaffold"}

# Built-in scorers with the metric each writes (engine/scoring/scorers.py, engine/scoring/judge.py).
BUILTIN_SCORERS: dict[str, tuple[str, ...]] = {
    "contains": ("contains",), "relaxed_match": ("relaxed_match",), "judge": ("judge",)}

BUILTIN: dict[str, frozenset[str]] = {
    "task": frozenset({"hellaswag", "winogrande", "humaneval"}),  # engine/tasks/{olmes,code}.py
    "scorer": frozenset(BUILTIN_SCORERS),
    "tool": frozenset({"python_exec", "bash", "search", "fetch_page", "submit"}),  # engine/harness/builtin.py
    # single_turn is no scaffold class: one request, no loop (engine/harness/build.py).
    "scaffold": frozenset({"single_turn", "tool_loop", "multi_turn", "openai_agents"}),
}

_declared: dict[str, dict[str, tuple[str, ...]]] = {kind: {} for kind in BUILTIN}


def declare(kind: Kind, name: str, metrics: tuple[str, ...] = ()) -> None:
    """A registry added `name` (a scorer also says which metrics it writes)."""
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
