"""Config errors: one clear paragraph naming the problem and the fix (exit code 2, no traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import ValidationError


class ConfigError(Exception):
    """Bad user input: printed as one paragraph, exit code 2."""

    exit_code = 2


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    known = list(known)
    found = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    return found or [k for k in known if name.lower() in k.lower()][:n]


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> ConfigError:
    known = sorted(known)
    near = closest(name, known)
    hint = f" Did you mean {', '.join(repr(k) for k in near)}?" if near else ""
    return ConfigError(
        f"Unknown {kind} '{name}'.{hint} Known {kind}s: {', '.join(known) or '(none)'}. "
        f"Add {kind}/{name}.yaml to conf/ or to a folder on EVALBENCH_CONFIG_PATH to define a new one, "
        "or list what exists with `python -m engine.list`."
    )


def _field_names(model_cls, path: tuple) -> list[str]:
    cls = model_cls
    for part in path[:-1]:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cls = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), None)
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


def format_validation_error(err: ValidationError, model_cls, where: str = "") -> ConfigError:
    lines = []
    for e in err.errors()[:6]:
        path = tuple(e["loc"])
        dotted = ".".join(str(p) for p in path)
        if where:
            dotted = f"{where}.{dotted}" if dotted else where
        if e["type"] == "extra_forbidden":
            valid = _field_names(model_cls, tuple(str(p) for p in e["loc"]))
            near = closest(str(e["loc"][-1]), valid)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            lines.append(f"unknown key `{dotted}`{hint}; valid keys there: {', '.join(valid)}")
        elif e["type"] == "missing":
            lines.append(f"`{dotted}` is required but missing")
        else:
            got = e.get("input")
            lines.append(f"`{dotted}`: {e['msg']} (got {got!r})")
    more = f" (and {len(err.errors()) - 6} more)" if len(err.errors()) > 6 else ""
    return ConfigError(
        "Invalid configuration: " + "; ".join(lines) + more + ". Fix the override on the command line or the YAML file "
        "under conf/ that sets it."
    )
