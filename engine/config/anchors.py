"""File paths written in config files, anchored beside the file that names them (docs/architecture.md,
"Paths"): a user's task names its data relative to its own folder, a built-in one relative to the
project root; a value typed on the command line is left as typed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from engine.config.entries import Entry, entries, entry
from engine.config.errors import ConfigError
from engine.config.paths import project_root

# `datasets` builders that read local files: given no `data_files`, `datasets` would read whatever
# matching files lie in the working directory (docs/architecture.md, "Boundaries").
LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow"})


def names_no_data(data: Any) -> bool:
    """Whether a composed `task.data` names nothing to read: no hub id or builder with files."""
    if not isinstance(data, dict):
        return True
    return data.get("path") in (None, *LOCAL_BUILDERS) and not data.get("data_files")


def check_task_names_data(found: Entry | None, name: str, task: dict[str, Any]) -> None:
    """A task must name its data: nothing is read from the working directory implicitly. A task class
    (`_target_`) may make its own instances; if it reads `task.data` anyway, the data layer refuses."""
    if task.get("_target_") or not names_no_data(task.get("data")):
        return
    where = f"file {found.path}" if found is not None and found.path is not None else "the command line"
    raise ConfigError(
        f"Task '{name}' names no data (its {where} has no `data:` with `data_files`, or a hub id in `data.path`), "
        "and evalbench never reads files from the working directory implicitly. Fix: add to the task file "
        "`data: {path: json, data_files: <file.jsonl>, split: train}` (a path relative to the task file), or a hub "
        "dataset `data: {path: <owner/name>, split: test}`, or set `task.data.data_files=<file>` on the command line."
    )


def _anchor(value: Any, raw: Any, base: Path, builtin: bool) -> Any:
    """A relative file path written in a config file, resolved beside the file, never from the working
    directory: a user's file names paths relative to its own folder (made absolute when they exist
    there); a built-in file names paths relative to the project root, which `resolve_project_path`
    finds unless the working directory holds the same relative path, so only then is it made
    absolute (a built-in task's hash stays the same in every checkout and install). Values the
    command line changed are left as typed."""
    if isinstance(value, str) and value == raw and "://" not in value and not Path(value).expanduser().is_absolute():
        here = base / value
        if here.exists() and (not builtin or Path(value).exists() and not Path(value).resolve() == here.resolve()):
            return str(here)
        return value
    if isinstance(value, list) and isinstance(raw, list) and len(value) == len(raw):
        return [_anchor(v, r, base, builtin) for v, r in zip(value, raw, strict=True)]
    if isinstance(value, dict) and isinstance(raw, dict):
        return {k: _anchor(v, raw.get(k), base, builtin) for k, v in value.items()}
    return value


def _file_values(found: Entry) -> dict[str, Any]:
    assert found.path is not None  # group files (only Python-registered variants have no file)
    data = OmegaConf.to_container(OmegaConf.load(found.path), resolve=False)
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def _lineage(found: Entry, seen: tuple[str, ...] = ()) -> list[tuple[Entry, dict[str, Any]]]:
    """The file and the files of its group it extends through its defaults list (`- capitals` or
    `- /task/capitals`), nearest first: an inherited path is anchored beside the file that wrote it."""
    raw = _file_values(found)
    out = [(found, raw)]
    for item in raw.get("defaults") or []:
        name = item.removeprefix(f"/{found.group}/") if isinstance(item, str) else None
        parent = entries(found.group).get(name) if name and name != "_self_" and name not in seen else None
        if parent is not None:
            out += _lineage(parent, (*seen, found.name, parent.name))
    return out


def _base(found: Entry) -> Path:
    assert found.path is not None
    return project_root() if found.builtin else found.path.parent


def _typed(keys: frozenset[str], dotted: str) -> bool:
    """Whether the command line set `dotted` or a key above it (`task.data=...`); `task=NAME` selects a
    file and sets no key."""
    parts = dotted.split(".")
    return any(".".join(parts[:i]) in keys for i in range(2, len(parts) + 1))


def anchor_paths(group: str, name: str | None, data: dict[str, Any], typed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """`data` (a composed task or harness) with the file paths its config file names anchored:
    a task's `data.data_files`, a harness's `tool_options.<tool>.corpus`; a key in `typed` (set on
    the command line, e.g. `task.data.data_files`) is left as typed."""
    if not name or name not in entries(group):
        if group == "task" and name:
            check_task_names_data(None, name, data)
        return data
    found = entry(group, name)
    base = _base(found)
    raw = _file_values(found)
    out = dict(data)
    if group == "task" and isinstance(out.get("data"), dict) and not _typed(typed, "task.data.data_files"):
        setter, raw_files = next(((f, files) for f, r in _lineage(found)
                                  if (files := (r.get("data") or {}).get("data_files")) is not None), (found, None))
        out["data"] = {**out["data"],
                       "data_files": _anchor(out["data"].get("data_files"), raw_files, _base(setter), setter.builtin)}
    if group == "harness" and isinstance(out.get("tool_options"), dict):
        raw_opts = raw.get("tool_options") or {}
        out["tool_options"] = {
            tool: {**opts, "corpus": _anchor(opts["corpus"], (raw_opts.get(tool) or {}).get("corpus"), base, found.builtin)}
            if isinstance(opts, dict) and "corpus" in opts and not _typed(typed, f"harness.tool_options.{tool}.corpus")
            else opts
            for tool, opts in out["tool_options"].items()
        }
    if group == "task":
        check_task_names_data(found, name, out)
    return out
