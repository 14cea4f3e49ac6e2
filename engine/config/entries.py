"""The named config files of each group, in every config folder, and the per-task variants.

Config groups are looked up in every folder of `engine.config.paths.config_sources()` (the user's
folders first, the built-in `conf/` last); Hydra sees the same folders through the search-path
plugin (docs/architecture.md, "Paths"). `entries(group)` is the one lookup that composition,
validation, suggestions, suites and `engine.list` share.

A variant name is resolved per task: `variant/<task>/<name>.yaml` (any folder) or a variant
registered with `register_variant(task, name, ...)` is picked over the global `variant/<name>.yaml`
for that task; Hydra selects it as option `<task>/<name>` of group `variant`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict

from engine.config.errors import ConfigError, closest, unknown_name_error
from engine.config.paths import conf_dir, config_sources
from engine.config.variants import read_variant, registered_variants

GROUPS = ("task", "variant", "suite", "harness", "model", "tracking")


class Entry(BaseModel):
    """One named config of a group, and the folder (or module) it comes from."""

    model_config = ConfigDict(frozen=True)

    group: str
    name: str
    path: Path | None  # None: a variant registered from Python (`register_variant`)
    origin: str  # "builtin", the user's folder, or `module:register_variant(...)`
    overrides_builtin: bool = False
    task: str | None = None  # a per-task variant: the task file it applies to

    @property
    def builtin(self) -> bool:
        return self.origin == "builtin"

    @property
    def option(self) -> str:
        """The name Hydra selects it by: `<task>/<name>` for a per-task variant."""
        return f"{self.task}/{self.name}" if self.task else self.name

    def content(self) -> dict[str, Any]:
        """What a variant sets (the task keys)."""
        if self.path is not None:
            return read_variant(self.path)
        return registered_variants()[(self.task or "", self.name)][0]


_noticed: set[tuple[str, str]] = set()


def _files(folder: Path, group: str, found: dict[str, Entry], origin: str, builtin: bool, task: str | None = None) -> None:
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        if path.stem.startswith("_"):
            continue
        if path.stem not in found:
            found[path.stem] = Entry(group=group, name=path.stem, path=path, origin=origin, task=task)
        elif builtin:
            found[path.stem] = found[path.stem].model_copy(update={"overrides_builtin": True})


def entries(group: str) -> dict[str, Entry]:
    """name → Entry of a group; for a name found in several folders, the highest-precedence one.
    Variants: the global ones only (`task_variants` has the per-task ones)."""
    found: dict[str, Entry] = {}
    for source in config_sources():
        _files(source.path / group, group, found, source.origin, source.builtin)
    return dict(sorted(found.items()))


def task_variants(task: str) -> dict[str, Entry]:
    """name → the variant of one task: files `variant/<task>/<name>.yaml` (highest-precedence folder),
    then the variants registered from Python for it."""
    found: dict[str, Entry] = {}
    for source in config_sources():
        _files(source.path / "variant" / task, "variant", found, source.origin, source.builtin, task)
    for (t, name), (_, origin) in registered_variants().items():
        if t == task and name not in found:
            found[name] = Entry(group="variant", name=name, path=None, origin=origin, task=task)
    return dict(sorted(found.items()))


def all_task_variants() -> dict[str, dict[str, Entry]]:
    """task → its per-task variants, for every task that has one (listing)."""
    tasks = {p.name for s in config_sources() for p in (s.path / "variant").glob("*/") if p.is_dir()}
    tasks |= {t for t, _ in registered_variants()}
    return {t: found for t in sorted(tasks) if (found := task_variants(t))}


def known_names(group: str) -> list[str]:
    return list(entries(group))


def check_name(group: str, name: str) -> None:
    if name not in entries(group):
        raise unknown_name_error(group, name, known_names(group))


def entry(group: str, name: str) -> Entry:
    """The file a name selects; a user's file replacing a built-in one is noticed once, on stderr."""
    found = entries(group).get(name)
    if found is None:
        raise unknown_name_error(group, name, known_names(group))
    _notice(found)
    return found


def _notice(found: Entry) -> None:
    key = (found.group, found.option)
    if found.overrides_builtin and key not in _noticed:
        _noticed.add(key)
        print(f"notice: {found.group} '{found.option}' is {found.path}, which overrides the built-in one.",
              file=sys.stderr)


def variant_entry(task: str | None, name: str) -> Entry:
    """The variant `name` selects for `task`: the task's own one, else the global one. `name` may be
    written `<task>/<name>` (what Hydra sees)."""
    if "/" in name:
        task, _, name = name.rpartition("/")
    own = task_variants(task).get(name) if task else None
    found = own or entries("variant").get(name)
    if found is None:
        raise unknown_variant_error(task, name)
    _notice(found)
    return found


def variant_contents(task: str | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """name → what each variant sets, resolved for `task`, in order (for the conflict check)."""
    return {name: variant_entry(task, name).content() for name in names}


def unknown_variant_error(task: str | None, name: str) -> ConfigError:
    own = list(task_variants(task)) if task else []
    known = sorted(set(entries("variant")) | set(own))
    near = closest(name, known)
    hint = f" Did you mean {', '.join(repr(k) for k in near)}?" if near else ""
    mine = f" (task '{task}' has its own: {', '.join(own)})" if own else ""
    where = f"variant/{task}/{name}.yaml (task '{task}' only) or " if task else ""
    return ConfigError(
        f"Unknown variant '{name}'{f' for task {task!r}' if task else ''}.{hint} Known variants: "
        f"{', '.join(known) or '(none)'}{mine}. Add {where}variant/{name}.yaml (every task) to a folder on "
        "EVALBENCH_CONFIG_PATH, or call engine.extend.register_variant(task, name, ...) in a plugin module; "
        "`python -m engine.list variant` lists what exists."
    )


def default_task() -> str | None:
    """The task `conf/config.yaml` selects when the command line names none."""
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir() / "config.yaml")).get("defaults", [])  # type: ignore[union-attr]
    for item in defaults if isinstance(defaults, list) else []:
        if isinstance(item, dict) and "task" in item:
            return str(item["task"])
    return None
