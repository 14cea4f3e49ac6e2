"""Keys typed on the command line, checked against the schema before Hydra's own advice is shown.

Hydra refuses `model.max_length=4096` when the chosen model file does not set that key, and advises
`+model.max_length=4096`, whether or not the schema has such a key or the configuration is valid
with it (`+model.api_base=...` on an in-process model was then silently ignored). Here a key the
schema does not define is refused at once, naming the valid keys; a key it defines is composed with
`+` and validated, so a key the provider does not read is refused by validation, and only a
configuration valid with the `+` is answered with "write `+key=...`" (a sweep's launcher composes
each job from the command line as typed, so the `+` must be typed; docs/architecture.md, "Boundaries").
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from engine.config.errors import ConfigError, closest
from engine.config.overrides import ParsedOverrides, parse_override
from engine.config.schema import Experiment

NOT_IN_CONFIG = re.compile(r"Could not override '([^']+)'")


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (through `X | None`), else None."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(
        annotation) is typing.Union else (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _fields(cls: type[BaseModel]) -> dict[str, FieldInfo]:
    """Key as written in YAML (a field's alias: `metrics`, `_target_`) → its field; a task's keys are flat
    (engine/config/task.py `flat_fields`)."""
    flat = getattr(cls, "flat_fields", None)
    return flat() if flat is not None else {(f.alias or n): f for n, f in cls.model_fields.items() if n != "variants"}


def check_schema_key(key: str) -> None:
    """ConfigError when the dotted key is not a key of the experiment schema; a key under a free-form
    field (a dict such as `task.data.data_files` or `harness.tool_options`) is accepted."""
    cls: type[BaseModel] | None = Experiment
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if cls is None:
            return  # below a free-form field
        known = _fields(cls)
        if part not in known:
            where = ".".join(parts[:depth]) or "the top level"
            near = closest(part, known)
            hint = f" (did you mean {', '.join(f'`{n}`' for n in near)}?)" if near else ""
            raise ConfigError(
                f"Unknown key `{key}`{hint}: there is no `{part}` under {where}; valid keys there: "
                f"{', '.join(known)}. Fix: correct the key (`python -m engine --cfg job` prints every key with its "
                "current value)."
            )
        cls = _model_class(known[part].annotation)


def with_plus(key: str, parsed: ParsedOverrides) -> ParsedOverrides | None:
    """The overrides with the one that sets `key` written `+key=...` (a schema key the chosen file does
    not set); None when no plain override sets it, or the key is Hydra's own. Unknown keys: ConfigError."""
    if key == "hydra" or key.startswith("hydra."):
        return None  # Hydra's settings are no part of the experiment schema: Hydra's own message stands
    check_schema_key(key)
    first = next((o for o in parsed if o.key == key and o.kind == "assign"), None)
    if first is None:
        return None
    items = tuple(parse_override("+" + o.text) if o is first else o for o in parsed)
    return parsed.model_copy(update={"items": items})


def dotted_leaves(content: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{generation: {max_tokens: 512}}` → `{"generation.max_tokens": 512}`; lists are one value."""
    out: dict[str, Any] = {}
    for key, value in content.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(dotted_leaves(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out
