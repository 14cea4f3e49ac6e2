"""`python -m engine.list [group]`: what exists — tasks, variants, suites, harnesses, models — and
where each comes from (`builtin`, or the user's config folder; docs/architecture.md, "Paths").
Per-task variants are listed as `<task>:<name>` (the spec that selects them), after the global ones."""

from __future__ import annotations

import sys

import yaml

from engine.config.compose import GROUPS, Entry, entries, use_cli_searchpath
from engine.config.entries import all_task_variants
from engine.config.errors import ConfigError
from engine.config.project_imports import preload_plugins


def describe(found: Entry) -> str:
    if found.path is None:  # registered from Python: what it sets
        return ", ".join(f"{k}={v}" for k, v in found.content().items())
    text = found.path.read_text()
    lines = text.splitlines()
    comment = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("#") and "@package" not in ln), "")
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


def main(argv: list[str]) -> int:
    try:
        use_cli_searchpath(argv)  # `python -m engine.list hydra.searchpath=[file:///my/evals]` lists them too
        preload_plugins(argv)  # variants registered from Python (`evalbench.yaml` imports, `imports=[...]`)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    groups = [a for a in argv if "=" not in a and not a.startswith("-")] or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"error: unknown group {unknown[0]!r}; groups are {', '.join(GROUPS)}.", file=sys.stderr)
        return 2
    for group in groups:
        found = entries(group)
        if group == "variant":
            found |= {f"{task}:{name}": e for task, own in all_task_variants().items() for name, e in own.items()}
        print(f"{group} ({len(found)}):")
        width = max((len(n) for n in found), default=0)
        origin_width = max((len(origin(e)) for e in found.values()), default=0)
        for name, e in found.items():
            print(f"  {name.ljust(width)}  {origin(e).ljust(origin_width)}  {describe(e)}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
