"""Variant conflicts: two variants of one spec that set the same key to different values.

Hydra merges variant files in order, so `variant=[rc,mc]` would silently run whichever came last.
`check_variant_conflicts` refuses that before composition (called from engine/config/compose.py;
see docs/architecture.md, configuration).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from engine.config.errors import ConfigError


def load_variant_files(paths: Mapping[str, Path], names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """name → content of its YAML file (the task keys it sets), in the order given; `paths` maps
    each variant name to its file (built-in or a user's folder)."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        content = OmegaConf.to_container(OmegaConf.load(paths[name]), resolve=True)
        out[name] = {str(k): v for k, v in content.items()} if isinstance(content, dict) else {}
    return out


def _leaves(content: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{generation: {max_tokens: 512}}` → `{"generation.max_tokens": 512}`; lists are one value."""
    out: dict[str, Any] = {}
    for key, value in content.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _covers(a: str, b: str) -> bool:
    """One key is the other or contains it (`generation` and `generation.max_tokens`)."""
    return a == b or b.startswith(f"{a}.") or a.startswith(f"{b}.")


def check_variant_conflicts(variants: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Raise ConfigError if two variants set one task key to different values.

    `variants`: variant name → its YAML content (the task keys it sets, as OmegaConf loads
    conf/variant/<name>.yaml, converted to plain containers), in the order given.
    Variants that agree on a key (`rc` and `norm_per_char` both set `formulation: rc`) are fine.
    """
    leaves = {name: _leaves(content or {}) for name, content in variants.items()}
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
