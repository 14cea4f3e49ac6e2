"""Variants: global ones (`conf/variant/<name>.yaml`), per-task ones, and their conflicts.

- A per-task variant applies to one task only: a file `variant/<task>/<name>.yaml` in any config
  folder, or `register_variant(task, name, **overrides)` in a plugin module. For that task it is
  picked over a global variant of the same name (engine/config/entries.py resolves the name;
  docs/architecture.md, "Extensions").
- Hydra merges variant files in order, so `variant=[rc,mc]` would silently run whichever came
  last: `check_variant_conflicts` refuses that before composition (called from
  engine/config/compose.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from engine.config.errors import ConfigError
from engine.config.keys import dotted_leaves

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

# (task, name) → (the task keys it sets, where it was registered)
_registered: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}


def _nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`{"fewshot.seed": 1234, "num_fewshot": 3}` → `{"fewshot": {"seed": 1234}, "num_fewshot": 3}`."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def register_variant(task: str, name: str, /, **overrides: Any) -> None:
    """A variant of one task, from Python: `register_variant("internal_freshqa", "3shot", num_fewshot=3,
    fewshot={"seed": 1234})` (a dotted key works too: `**{"fewshot.seed": 1234}`). Selected as
    `task=internal_freshqa:3shot` or `variant=3shot` with that task. A file
    `variant/<task>/<name>.yaml` of the same task and name wins over it."""
    for what, value in (("task", task), ("variant", name)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ConfigError(f"register_variant: the {what} name {value!r} is not a plain name. Fix: use letters, "
                              "digits, `_`, `-` or `.` (no `:`, `/`, `,`), e.g. register_variant(\"my_task\", \"3shot\", "
                              "num_fewshot=3).")
    if not overrides:
        raise ConfigError(f"register_variant({task!r}, {name!r}) sets no task key. Fix: pass the keys it changes, "
                          "e.g. register_variant(\"my_task\", \"3shot\", num_fewshot=3).")
    caller = sys._getframe(1).f_globals.get("__name__", "?")
    origin = f"{caller}:register_variant({task!r}, {name!r})"
    content = _nested(overrides)
    old = _registered.get((task, name))
    if old is not None and old[1] != origin:
        raise ConfigError(f"Two variants '{name}' of task '{task}' are registered: {old[1]} and {origin}. Names must "
                          "be unique per task. Fix: rename one, or stop importing one of the two modules.")
    _registered[(task, name)] = (content, origin)
    # Hydra reads the ConfigStore as one more config folder: option `<task>/<name>` of group `variant`.
    ConfigStore.instance().store(group=f"variant/{task}", name=name, node=content, package="task")


def registered_variants() -> dict[tuple[str, str], tuple[dict[str, Any], str]]:
    return dict(_registered)


def load_variant_files(paths: Mapping[str, Path], names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """name → content of its YAML file (the task keys it sets), in the order given; `paths` maps
    each variant name to its file (built-in or a user's folder)."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        out[name] = read_variant(paths[name])
    return out


def read_variant(path: Path) -> dict[str, Any]:
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {str(k): v for k, v in content.items()} if isinstance(content, dict) else {}


def _covers(a: str, b: str) -> bool:
    """One key is the other or contains it (`generation` and `generation.max_tokens`)."""
    return a == b or b.startswith(f"{a}.") or a.startswith(f"{b}.")


def check_variant_conflicts(variants: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Raise ConfigError if two variants set one task key to different values.

    `variants`: variant name → its YAML content (the task keys it sets, as OmegaConf loads
    conf/variant/<name>.yaml, converted to plain containers), in the order given.
    Variants that agree on a key (`rc` and `norm_per_char` both set `formulation: rc`) are fine.
    """
    leaves = {name: dotted_leaves(content or {}) for name, content in variants.items()}
    names = list(leaves)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            for key_a, value_a in leaves[first].items():
                for key_b, value_b in leaves[second].items():
                    if _covers(key_a, key_b) and (key_a != key_b or value_a != value_b):
                        key = key_a if len(key_a) <= len(key_b) else key_b
                        raise ConfigError(
                            f"Variants '{first}' and '{second}' conflict: '{first}' sets `{key_a}: {value_a!r}` "
                            f"and '{second}' sets `{key_b}: {value_b!r}`, and only one can hold (merged in order, the last "
                            f"would silently win). Fix: keep one of the two variants, or drop both and set "
                            f"`task.{key}` explicitly."
                        )
