"""The command line made ready to compose, once: task specs, variant names, the search path, plugins.

`prepare` takes the overrides (strings, or the `ParsedOverrides` the CLI parsed) and, once per
command line (docs/architecture.md, "The flow of one run"): makes `hydra.searchpath=[...]` part of
`config_sources()`, imports the plugin modules named before composition (they may register
variants), expands task specs (`task=mmlu:rc` → `task=mmlu variant=[rc]`) and resolves variant
names for their task. The result is marked `expanded`, so composing it again expands nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from engine.config.entries import GROUPS, check_name, default_task, variant_contents, variant_entry
from engine.config.errors import ConfigError
from engine.config.overrides import PREFIXES, Override, ParsedOverrides, parse_override
from engine.config.paths import config_sources, set_cli_searchpath
from engine.config.plugins import load_plugins, project_imports
from engine.config.variants import check_variant_conflicts

_OPTION = re.compile(r"[^\s\[\],'\"]+")


def prepare(args: Sequence[str] | ParsedOverrides) -> ParsedOverrides:
    """The overrides parsed, their search path and plugins in place, task specs expanded (once)."""
    parsed = args if isinstance(args, ParsedOverrides) else ParsedOverrides.parse(args)
    if parsed.expanded:
        return parsed
    use_cli_searchpath(parsed)  # the user's config folders, before any name is checked
    imports = parsed.last("imports")
    load_plugins([*project_imports(), *(imports.names if imports else ())])  # they may register variants
    return expand_specs(parsed)


def use_cli_searchpath(parsed: ParsedOverrides) -> None:
    """Make the command line's `hydra.searchpath=[...]` folders part of `config_sources()`: listing,
    validation and suites see them, and the search-path plugin puts them before the built-ins."""
    given = parsed.last("hydra.searchpath")
    set_cli_searchpath(list(given.names) if given else [])
    config_sources()  # a folder that does not exist is a clear error now, not a Hydra warning later


def parse_task_spec(spec: str) -> tuple[str, list[str]]:
    """`mmlu:rc:5shot` → ("mmlu", ["rc", "5shot"]); each name is checked."""
    parts = [p.strip() for p in spec.split(":")]
    if not all(parts):
        raise ConfigError(f"Task spec {spec!r} has an empty part: write `task` or `task:variant[:variant...]`, "
                          "e.g. `mmlu:rc` (no leading, trailing or doubled `:`).")
    check_name("task", parts[0])
    check_variant_conflicts(variant_contents(parts[0], parts[1:]))  # each name resolved for this task
    return parts[0], parts[1:]


def task_spec_string(task: str, variants: list[str]) -> str:
    return ":".join([task, *variants])


def variants_of(choice: Any) -> list[str]:
    """The variant names of a `variant=` choice, as a spec writes them (`<task>/3shot` → `3shot`)."""
    if isinstance(choice, str):
        choice = _OPTION.findall(choice)
    return [str(v).rpartition("/")[2] for v in choice or () if str(v) not in ("null", "")]


def expand_specs(parsed: ParsedOverrides) -> ParsedOverrides:
    """`task=freshqa:zero` (a task spec) → `task=freshqa variant=[zero]`, merged with any `variant=`;
    variant names resolved for the task (`resolve_variants`). A swept or listed spec stays: each job
    of a sweep expands its own, a task list is a suite."""
    items: list[Override] = []
    extra: list[str] = []
    for o in parsed:
        spec = o.plain if o.key == "task" else None
        if spec is not None and ":" in spec:
            name, variants = parse_task_spec(spec)
            items.append(parse_override(f"{PREFIXES[o.kind]}task={name}"))
            extra += variants
        else:
            items.append(o)
    out = ParsedOverrides(items=tuple(items))
    if extra:
        given = out.last("variant")
        out = out.without("variant").plus(f"variant=[{','.join([*extra, *variants_of(given.names if given else ())])}]")
    return resolve_variants(out).model_copy(update={"expanded": True})


def chosen_tasks(parsed: ParsedOverrides) -> list[str] | None:
    """The task names the overrides select (several for a sweep `task=a,b`; the default task when none
    is named), or None for a task list `task=[a,b]` (each spec resolves its own variants)."""
    given = parsed.last("task")
    if given is None or given.value is None:
        return [t] if (t := default_task()) else []
    if any(c.is_list for c in given.choices):
        return None
    return [t for t in given.names if t not in ("", "null")]


def resolve_variants(parsed: ParsedOverrides) -> ParsedOverrides:
    """`variant=` names as Hydra options for the chosen task: with `task=internal_freshqa`,
    `variant=[3shot,rc]` → `variant=[internal_freshqa/3shot,rc]` when that task has its own `3shot`
    (a per-task variant wins over the global one of the same name). Unknown names: ConfigError."""
    tasks = chosen_tasks(parsed)
    if tasks is None:
        return parsed

    def option(match: re.Match[str]) -> str:
        name = match.group()
        if "/" in name:
            return variant_entry(None, name).option
        found = {variant_entry(t, name).option for t in tasks} if tasks else {variant_entry(None, name).option}
        if len(found) > 1:
            raise ConfigError(
                f"Variant '{name}' is a per-task variant of some of the swept tasks ({', '.join(sorted(found))}), so "
                f"one `variant={name}` cannot select it for each job. Fix: run one sweep per task "
                f"(`-m task={tasks[0]} variant={name} ...`)."
            )
        return found.pop()

    items = [parse_override(f"{PREFIXES[o.kind]}variant={_OPTION.sub(option, o.value)}")
             if o.key == "variant" and o.value not in (None, "", "null") else o for o in parsed]
    return parsed.model_copy(update={"items": tuple(items)})


def task_list(parsed: ParsedOverrides) -> list[str] | None:
    """The specs of `task=[mmlu:rc,gsm8k:3shot]` (several tasks run as an ad-hoc suite), else None."""
    given = parsed.last("task")
    return list(given.names) if given is not None and given.kind == "assign" and given.is_list else None


def validate_cli_names(parsed: ParsedOverrides) -> None:
    """Catch unknown group names before Hydra does (Hydra silently drops an unknown optional variant)."""
    for o in parsed:
        if o.key not in GROUPS:
            continue
        for name in o.names:
            if name in ("", "null") or (o.key in ("task", "suite") and ":" in name):
                continue
            if o.key == "variant":
                variant_entry(None, name)  # `<task>/<name>` (resolved by `resolve_variants`) or global
            else:
                check_name(o.key, name)
