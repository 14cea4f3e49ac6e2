"""Hydra composition helpers: config names, task specs (`task:variant:variant`), validation.

Config groups are looked up in every folder of `engine.config.paths.config_sources()` (the user's
folders first, the built-in `conf/` last); Hydra sees the same folders through the search-path
plugin (docs/architecture.md, "Paths").
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.config.errors import ConfigError, format_validation_error, unknown_name_error
from engine.config.paths import (
    conf_dir,
    config_sources,
    parse_searchpath_value,
    project_root,
    set_cli_searchpath,
)
from engine.config.plugins import load_plugins
from engine.config.schema import DataConfig, Experiment, SuiteConfig, TaskConfig
from engine.config.variants import check_variant_conflicts, load_variant_files

GROUPS = ("task", "variant", "suite", "harness", "model", "tracking")
TASK_DEFAULTS = "_task_defaults"  # conf/config.yaml lists it first in its defaults


def task_defaults() -> dict[str, Any]:
    """Every optional TaskConfig field with its default, under `task`: merged beneath every task file
    so that `task.num_fewshot=3` works on a task whose YAML does not set it (no `+` needed)."""
    out: dict[str, Any] = {}
    for name, field in TaskConfig.model_fields.items():
        if name == "data":
            out[name] = DataConfig().model_dump(mode="json")
        if field.is_required() or name == "variants":
            continue
        value = field.get_default(call_default_factory=True)
        out[field.alias or name] = value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value
    return {"task": out}


ConfigStore.instance().store(name=TASK_DEFAULTS, node=task_defaults())


class Entry(BaseModel):
    """One named config file of a group, and the folder it comes from."""

    model_config = ConfigDict(frozen=True)

    group: str
    name: str
    path: Path
    origin: str  # "builtin" or the user's folder
    overrides_builtin: bool = False

    @property
    def builtin(self) -> bool:
        return self.origin == "builtin"


_noticed: set[tuple[str, str]] = set()


def variant_paths() -> dict[str, Path]:
    return {name: e.path for name, e in entries("variant").items()}


def entries(group: str) -> dict[str, Entry]:
    """name → Entry of a group; for a name found in several folders, the highest-precedence one."""
    found: dict[str, Entry] = {}
    for source in config_sources():
        folder = source.path / group
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            if path.stem.startswith("_"):
                continue
            if path.stem not in found:
                found[path.stem] = Entry(group=group, name=path.stem, path=path, origin=source.origin)
            elif source.builtin:
                found[path.stem] = found[path.stem].model_copy(update={"overrides_builtin": True})
    return dict(sorted(found.items()))


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
    if found.overrides_builtin and (group, name) not in _noticed:
        _noticed.add((group, name))
        print(f"notice: {group} '{name}' is {found.path}, which overrides the built-in one.", file=sys.stderr)
    return found


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
    data = OmegaConf.to_container(OmegaConf.load(found.path), resolve=False)
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


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
        return data
    found = entry(group, name)
    base = project_root() if found.builtin else found.path.parent
    raw = _file_values(found)
    out = dict(data)
    if group == "task" and isinstance(out.get("data"), dict) and not _typed(typed, "task.data.data_files"):
        raw_files = (raw.get("data") or {}).get("data_files")
        out["data"] = {**out["data"], "data_files": _anchor(out["data"].get("data_files"), raw_files, base, found.builtin)}
    if group == "harness" and isinstance(out.get("tool_options"), dict):
        raw_opts = raw.get("tool_options") or {}
        out["tool_options"] = {
            tool: {**opts, "corpus": _anchor(opts["corpus"], (raw_opts.get(tool) or {}).get("corpus"), base, found.builtin)}
            if isinstance(opts, dict) and "corpus" in opts and not _typed(typed, f"harness.tool_options.{tool}.corpus")
            else opts
            for tool, opts in out["tool_options"].items()
        }
    return out


def parse_task_spec(spec: str) -> tuple[str, list[str]]:
    """`mmlu:rc:5shot` → ("mmlu", ["rc", "5shot"]); each name is checked."""
    parts = [p.strip() for p in spec.split(":")]
    if not all(parts):
        raise ConfigError(f"Task spec {spec!r} has an empty part: write `task` or `task:variant[:variant...]`, "
                          "e.g. `mmlu:rc` (no leading, trailing or doubled `:`).")
    check_name("task", parts[0])
    for v in parts[1:]:
        check_name("variant", v)
    check_variant_conflicts(load_variant_files(variant_paths(), parts[1:]))
    return parts[0], parts[1:]


def task_spec_string(task: str, variants: list[str]) -> str:
    return ":".join([task, *variants])


def _check_plugin() -> None:
    """Hydra must see the user's folders too: they reach it only through the search-path plugin."""
    seen = {s.path.removeprefix("file://") for s in GlobalHydra.instance().config_loader().get_sources()}
    missing = [s for s in config_sources() if not s.builtin and str(s.path) not in seen]
    if missing:
        raise ConfigError(
            f"Hydra does not see the config folder {missing[0].origin!r} ({missing[0].via}): the module "
            "hydra_plugins/evalbench_searchpath.py is not importable. Fix: reinstall evalbench (`make install`)."
        )


def _compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        _check_plugin()
        return compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)


def compose_task(spec: str) -> TaskConfig:
    """The task config a spec names: the task file with its variant files merged, as the CLI does."""
    name, variants = parse_task_spec(spec)
    for v in variants:
        entry("variant", v)
    overrides = [f"task={name}"] + ([f"variant=[{','.join(variants)}]"] if variants else [])
    cfg = _compose(overrides)
    data: dict[str, Any] = OmegaConf.to_container(cfg.task, resolve=True)  # type: ignore[assignment]
    data = anchor_paths("task", name, data)
    data["variants"] = variants
    try:
        return TaskConfig.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err, TaskConfig, where=f"task[{spec}]") from None


def variants_of(choice: Any) -> list[str]:
    if choice in (None, "null", ""):
        return []
    if isinstance(choice, str):
        text = choice.strip("[]")
        return [v.strip() for v in text.split(",") if v.strip()]
    return [str(v) for v in choice]


def experiment_from_cfg(
    cfg: DictConfig, variants: list[str] | None = None, choices: dict[str, Any] | None = None, overrides: Sequence[str] = ()
) -> Experiment:
    """The validated experiment of a composed config; `choices` (Hydra's runtime choices, group →
    name) anchor the file paths of the chosen task and harness files (`anchor_paths`), except the
    keys the `overrides` set."""
    data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    data.pop("variant", None)
    load_plugins(data.get("imports"))  # before validation: user modules register their task/scorer/tool names
    choices = choices or {}
    if choices.get("task") is None and isinstance(data.get("task"), dict) and "name" not in data["task"]:
        data["task"] = None  # `~task` (a suite alone): only the shared task defaults are left
    for group in ("task", "suite", "harness", "model", "tracking"):
        if isinstance(choices.get(group), str) and choices[group] in entries(group):
            entry(group, choices[group])  # the notice, when a user's file replaces a built-in one
    for v in variants or []:
        entry("variant", v)
    for group in ("task", "harness"):
        if isinstance(data.get(group), dict):
            data[group] = anchor_paths(group, choices.get(group), data[group], typed_keys(overrides))
    if data.get("task") is not None:
        data["task"]["variants"] = variants or []
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err, Experiment) from None


def typed_keys(overrides: Sequence[str]) -> frozenset[str]:
    return frozenset(o.partition("=")[0].lstrip("+~") for o in overrides if "=" in o)


def validate_cli_names(args: list[str]) -> None:
    """Catch unknown group names before Hydra does (Hydra silently drops an unknown optional variant)."""
    for arg in args:
        if "=" not in arg or arg.startswith(("hydra.", "hydra/", "-")):
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key not in GROUPS or value in ("", "null"):
            continue
        names = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        for name in names:
            if key in ("task", "suite") and ":" in name:
                continue
            check_name(key, name)


def searchpath_args(args: list[str]) -> list[str]:
    return [a for a in args if a.lstrip("+").startswith("hydra.searchpath=")]


def use_cli_searchpath(args: list[str]) -> None:
    """Make the command line's `hydra.searchpath=[...]` folders part of `config_sources()`: listing,
    validation and suites see them, and the search-path plugin puts them before the built-ins."""
    given = searchpath_args(args)
    set_cli_searchpath(parse_searchpath_value(given[-1].partition("=")[2]) if given else [])
    config_sources()  # a folder that does not exist is a clear error now, not a Hydra warning later


def sweep_combinations(args: list[str], limit: int = 10_000) -> list[list[str]]:
    """Every job's overrides of a multirun (`a=1,2 b=x,y` → 4 lists), to validate before launching."""
    parsed = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("hydra")])
    choices: list[list[str]] = []
    for o in parsed:
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line or f"{o.get_key_element()}={o.get_value_string()}"])
    combos = [[*c, *searchpath_args(args)] for c in itertools.islice(itertools.product(*choices), limit)]
    return combos or [searchpath_args(args)]


def task_list(args: list[str]) -> list[str] | None:
    """The specs of `task=[mmlu:rc,gsm8k:3shot]` (several tasks run as an ad-hoc suite), else None."""
    given = [a.partition("=")[2].strip() for a in args if a.partition("=")[0] == "task"]
    if not given or not given[-1].startswith("["):
        return None
    return [s.strip() for s in given[-1].strip("[]").split(",") if s.strip()]


def expand_spec_overrides(args: list[str]) -> list[str]:
    """`task=freshqa:zero` (a task spec) → `task=freshqa variant=[zero]`, merged with any `variant=`."""
    out: list[str] = []
    extra: list[str] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "task" and ":" in value and "," not in value and "[" not in value:
            name, variants = parse_task_spec(value)
            out.append(f"{key}={name}")
            extra += variants
        else:
            out.append(arg)
    if not extra:
        return out
    given = [a for a in out if a.partition("=")[0].lstrip("+") == "variant"]
    before = variants_of(given[-1].partition("=")[2]) if given else []
    out = [a for a in out if a not in given]
    return [*out, f"variant=[{','.join([*extra, *before])}]"]


def _compose_checked(overrides: list[str]) -> DictConfig:
    try:
        return _compose(overrides, with_hydra=True)
    except ConfigError:
        raise
    except Exception as err:  # Hydra's own composition errors: unknown keys, bad syntax
        text = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(
            f"Cannot compose the configuration: {text.rstrip('.')}. Fix the override (an existing key is set as "
            "`key=value`; `python -m engine --cfg job` prints every key with its current value)."
        ) from None


def _adhoc_suite(specs: list[str], overrides: list[str]) -> SuiteConfig:
    """`task=[a,b:rc]` as a suite; a `variant=` given beside it applies to every spec."""
    keys = [o.partition("=")[0].lstrip("+~") for o in overrides]
    if any(k.startswith("task.") for k in keys) or "suite" in keys:
        raise ConfigError(
            "A task list (`task=[...]`) runs each task as its own file composes it: `task.<key>=` overrides and "
            "`suite=` cannot be combined with it. Fix: run the tasks one at a time, or write a suite file."
        )
    given = [o for o in overrides if o.partition("=")[0].lstrip("+") == "variant"]
    extra = variants_of(given[-1].partition("=")[2]) if given else []
    full = [task_spec_string(*parse_task_spec(s)) + "".join(f":{v}" for v in extra) for s in specs]
    for spec in full:
        parse_task_spec(spec)
    return SuiteConfig(name="+".join(full), tasks=list(dict.fromkeys(full)), aggregate="none",
                       description="ad-hoc suite from the command line")


def compose_experiment(overrides: list[str]) -> Experiment:
    """Compose the configuration the overrides name and validate it: the one config path of a run."""
    use_cli_searchpath(overrides)
    specs = task_list(overrides)
    suite = _adhoc_suite(specs, overrides) if specs else None
    if specs:
        overrides = [o for o in overrides if o.partition("=")[0].lstrip("+") not in ("task", "variant")]
    validate_cli_names(overrides)
    cfg = _compose_checked(overrides)
    choice = next((o.split("=", 1)[1] for o in reversed(overrides) if o.lstrip("+").startswith("variant=")), None)
    check_variant_conflicts(load_variant_files(variant_paths(), variants_of(choice)))
    if not any(o.lstrip("+").startswith("output_dir=") for o in overrides):
        cfg.output_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))  # what Hydra's own run would use
    choices = dict(OmegaConf.to_container(cfg.hydra.runtime.choices))  # type: ignore[arg-type]
    with open_dict(cfg):
        del cfg["hydra"]
    if suite is not None:
        with open_dict(cfg):
            cfg["task"] = None
        rest = {k: v for k, v in choices.items() if k != "task"}
        return experiment_from_cfg(cfg, choices=rest, overrides=overrides).model_copy(update={"suite": suite})
    return experiment_from_cfg(cfg, variants_of(choice), choices, overrides)
