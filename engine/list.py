"""`python -m engine.list [group ...] [--json]`: what exists, where each comes from and what it is.

Config groups (task, variant, suite, harness, model, tracking) come from the YAML files, built in or
in the user's config folders (docs/architecture.md, "Paths"); per-task variants are listed as
`<task>:<name>` (the spec that selects them). Registries (tool, scaffold, scorer, metric) come from
code, the engine's own and what `imports:` / `evalbench.plugins` entry points register
(docs/architecture.md, "Extensions"). Each entry's description is whole: a YAML file's leading
comment, a function's or class's docstring summary.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from engine.config import names
from engine.config.compose import GROUPS, Entry, entries
from engine.config.entries import all_task_variants
from engine.config.errors import ConfigError
from engine.config.prepare import prepare
from engine.harness import SCAFFOLDS, TOOLS  # the package registers the built-in tools and scaffolds
from engine.scoring import SCORERS  # the package registers the built-in scorers
from engine.scoring.registry import METRICS
from engine.types import Registry

REGISTRIES: dict[str, Registry[Any]] = {"tool": TOOLS, "scaffold": SCAFFOLDS, "scorer": SCORERS, "metric": METRICS}
ALL_GROUPS = (*GROUPS, *REGISTRIES)


class Listed(BaseModel):
    """One line of the listing (and one object of `--json`)."""

    model_config = ConfigDict(frozen=True)

    group: str
    name: str
    origin: str
    description: str
    path: str | None = None


def leading_comment(text: str) -> str:
    """A YAML file's description: its leading `#` lines (the `@package` directive left out), joined."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            lines.append(line.lstrip("#").strip())
    return " ".join(x for x in lines if x)


def describe(found: Entry) -> str:
    if found.path is None:  # registered from Python: what it sets
        return ", ".join(f"{k}={v}" for k, v in found.content().items())
    text = found.path.read_text()
    comment = leading_comment(text)
    if found.group == "task" and "\nexternal:" in text:  # an external eval: the benchmark's own loop runs it
        wrapper = ((yaml.safe_load(text) or {}).get("external") or {}).get("wrapper", "?")
        comment = f"[external: {wrapper}] {comment}"
    if found.group == "suite":
        data = yaml.safe_load(text) or {}
        comment = f"{', '.join(data.get('tasks', []))}" + (f"  — {comment}" if comment else "")
    return comment


def origin(found: Entry) -> str:
    if found.builtin:
        return "builtin"
    return f"{found.origin} (overrides builtin)" if found.overrides_builtin else found.origin


def summary(obj: Any) -> str:
    """The first paragraph of what documents an object (a tool's description, a docstring)."""
    text = getattr(obj, "description", None) or inspect.getdoc(getattr(obj, "fn", obj)) or ""
    return " ".join(text.split("\n\n")[0].split())


def config_entries(group: str) -> Iterator[Listed]:
    found = entries(group)
    if group == "variant":
        found |= {f"{task}:{name}": e for task, own in all_task_variants().items() for name, e in own.items()}
    for name, e in found.items():
        yield Listed(group=group, name=name, origin=origin(e), description=describe(e),
                     path=str(e.path) if e.path else None)


def registry_entries(group: str) -> Iterator[Listed]:
    registry = REGISTRIES[group]
    for name in registry:
        where = registry.origin(name)
        builtin = where.startswith("engine.") and name in names.builtin(group)
        yield Listed(group=group, name=name, origin="builtin" if builtin else where,
                     description=summary(registry.get(name)))
    if group == "metric":  # what the engine writes itself (no `@metric`: engine/scoring/scorers.py)
        for name in sorted(names.engine_metrics() - set(registry)):
            yield Listed(group=group, name=name, origin="builtin", description="written by the engine's own scoring")
    if group == "scaffold" and "single_turn" not in registry:
        yield Listed(group=group, name="single_turn", origin="builtin",
                     description="One request, no loop: the runner core sends it straight to the provider.")


def listing(groups: list[str]) -> list[Listed]:
    return [x for g in groups for x in (registry_entries(g) if g in REGISTRIES else config_entries(g))]


def table(rows: list[Listed], groups: list[str]) -> str:
    out = []
    for group in groups:
        found = [r for r in rows if r.group == group]
        out.append(f"{group} ({len(found)}):")
        width = max((len(r.name) for r in found), default=0)
        origin_width = max((len(r.origin) for r in found), default=0)
        out += [f"  {r.name.ljust(width)}  {r.origin.ljust(origin_width)}  {r.description}".rstrip() for r in found]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    try:
        # `hydra.searchpath=[file:///my/evals]` lists them too; what `evalbench.yaml` imports, `imports=[...]`
        # and entry points register, as well
        prepare([a for a in argv if "=" in a])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    groups = [a for a in argv if "=" not in a and not a.startswith("-")] or list(ALL_GROUPS)
    unknown = [g for g in groups if g not in ALL_GROUPS]
    if unknown:
        print(f"error: unknown group {unknown[0]!r}; groups are {', '.join(ALL_GROUPS)}.", file=sys.stderr)
        return 2
    rows = listing(groups)
    try:
        print(json.dumps([r.model_dump() for r in rows], indent=1) if "--json" in argv else table(rows, groups))
    except BrokenPipeError:  # `| head`: the reader has gone
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
