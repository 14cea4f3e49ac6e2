"""`python -m engine.list [group]`: what exists — tasks, variants, suites, harnesses, models."""

from __future__ import annotations

import sys

import yaml

from engine.config.compose import GROUPS, conf_dir, known_names


def describe(group: str, name: str) -> str:
    path = conf_dir() / group / f"{name}.yaml"
    lines = path.read_text().splitlines()
    comment = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("#") and "@package" not in ln), "")
    if group == "suite":
        data = yaml.safe_load(path.read_text()) or {}
        comment = f"{', '.join(data.get('tasks', []))}" + (f"  — {comment}" if comment else "")
    return comment


def main(argv: list[str]) -> int:
    groups = argv or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"error: unknown group {unknown[0]!r}; groups are {', '.join(GROUPS)}.", file=sys.stderr)
        return 2
    for group in groups:
        names = known_names(group)
        print(f"{group} ({len(names)}):")
        width = max((len(n) for n in names), default=0)
        for name in names:
            print(f"  {name.ljust(width)}  {describe(group, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
