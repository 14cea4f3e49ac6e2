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
    """The keys valid where `path` points, as YAML writes them (a task's keys are flat: `flat_keys`)."""
    cls = model_cls
    for part in path[:-1]:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cls = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), None)
        if cls is None:
            return []
    if hasattr(cls, "flat_keys"):
        return cls.flat_keys()
    return [f.alias or n for n, f in getattr(cls, "model_fields", {}).items() if n != "variants"]


# A task validates its flat YAML keys in three parts (engine/config/task.py); an error names the key as
# written: `task.prompt.mc_template` is `task.mc_template`, `task.dataset.source.path` is `task.data.path`.
_PART_NAMES = {"dataset", "prompt", "scoring"}


def _as_written(loc: tuple) -> tuple:
    out: list = []
    for i, part in enumerate(loc):
        if part in _PART_NAMES and (i == 0 or loc[i - 1] == "task") and i < len(loc) - 1:
            continue  # (a part itself is named: `prompt: "..."` in a task file is a key of its own)
        if part == "source" and i > 0 and loc[i - 1] == "dataset":
            part = "data"
        out.append(part)
    return tuple(out)


# What to write instead, for the numeric limits users most often get wrong (matched on the key's tail).
_FIXES = {
    "limit": "set `limit=N` with N ≥ 1, or leave it unset (`limit=null`) to evaluate every instance",
    "concurrency": "it is how many requests run at once, e.g. `harness.concurrency=4`",
    "max_retries": "it is how often a failed request is retried; `harness.max_retries=0` turns retries off",
    "request_timeout_s": "it is how many seconds one request may take, e.g. `harness.request_timeout_s=600`",
    "max_tokens": "it is the most tokens one answer may have, e.g. `task.generation.max_tokens=256`",
    "samples": "it is how many answers are sampled per question, e.g. `task.generation.samples=1`",
    "max_length": "it is the model's context window in tokens (prompts longer than it lose tokens on the left), "
                  "e.g. `model.max_length=2048`",
    "batch_size": "it is how many requests the model scores at once, e.g. `model.batch_size=8`",
    "timeout_s": "it is how many seconds the model (or an external eval) may take, e.g. `model.timeout_s=120`",
    "execution_timeout_s": "it is the time limit per executed program, e.g. `task.execution_timeout_s=3`",
}
_BOUNDS = {"greater_than_equal": ("ge", "≥"), "greater_than": ("gt", ">"), "less_than_equal": ("le", "≤"),
           "less_than": ("lt", "<")}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(err: ValidationError, model_cls, where: str = "") -> ConfigError:
    """One paragraph for all problems (up to 6): each names its key and, where known, the fix."""
    lines = []
    own_fix = True  # every line already says how to fix it: no generic advice needed
    for e in err.errors()[:6]:
        dotted = ".".join(str(p) for p in _as_written(e["loc"]))
        if where:
            dotted = f"{where}.{dotted}" if dotted else where
        if e["type"] == "extra_forbidden":
            valid = _field_names(model_cls, tuple(str(p) for p in e["loc"]))
            near = closest(str(e["loc"][-1]), valid)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            lines.append(f"unknown key `{dotted}`{hint}; valid keys there: {', '.join(valid)}")
            own_fix = False
        elif e["type"] == "missing":
            lines.append(f"`{dotted}` is required but missing")
            own_fix = False
        elif e["type"] == "value_error":  # our validators: the message names the key and the fix
            lines.append(str(e.get("ctx", {}).get("error", e["msg"])).rstrip("."))
        elif e["type"] in _BOUNDS and e["loc"]:
            key, sign = _BOUNDS[e["type"]]
            bound = e.get("ctx", {}).get(key)
            fix = _FIXES.get(str(e["loc"][-1]))
            lines.append(f"`{dotted}` must be {sign} {bound} (got {_short(e.get('input'))})" + (f": {fix}" if fix else ""))
            own_fix = own_fix and fix is not None
        else:
            lines.append(f"`{dotted}`: {e['msg']} (got {_short(e.get('input'))})")
            own_fix = False
    more = f" (and {len(err.errors()) - 6} more)" if len(err.errors()) > 6 else ""
    advice = "" if own_fix else (
        " Fix the override on the command line or the YAML file under conf/ that sets it."
    )
    return ConfigError("Invalid configuration: " + "; ".join(lines) + more + "." + advice)
