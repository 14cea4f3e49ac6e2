"""Hydra composition helpers: task specs (`task:variant:variant`), validation, the one config path.

Which names exist and where their files are: engine/config/entries.py (the user's folders first,
the built-in `conf/` last; per-task variants); file paths inside them: engine/config/anchors.py
(docs/architecture.md, "Paths").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import BaseModel, ValidationError

from engine.config.anchors import anchor_paths
from engine.config.entries import (  # noqa: F401 - re-exported: the lookups callers know from here
    GROUPS,
    Entry,
    check_name,
    default_task,
    entries,
    entry,
    known_names,
    task_variants,
    variant_contents,
    variant_entry,
)
from engine.config.errors import ConfigError, format_validation_error
from engine.config.keys import NOT_IN_CONFIG, with_plus
from engine.config.paths import conf_dir, config_sources, parse_searchpath_value, set_cli_searchpath
from engine.config.plugins import load_plugins
from engine.config.project_imports import preload_plugins, project_imports
from engine.config.schema import DataConfig, Experiment, SuiteConfig, TaskConfig
from engine.config.variants import check_variant_conflicts

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


def parse_task_spec(spec: str) -> tuple[str, list[str]]:
    """`mmlu:rc:5shot` → ("mmlu", ["rc", "5shot"]); each name is checked."""
    parts = [p.strip() for p in spec.split(":")]
    if not all(parts):
        raise ConfigError(f"Task spec {spec!r} has an empty part: write `task` or `task:variant[:variant...]`, "
                          "e.g. `mmlu:rc` (no leading, trailing or doubled `:`).")
    check_name("task", parts[0])
    check_variant_conflicts(variant_contents(parts[0], parts[1:]))  # each name resolved for this task
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
    options = [variant_entry(name, v).option for v in variants]
    overrides = [f"task={name}"] + ([f"variant=[{','.join(options)}]"] if variants else [])
    cfg = _compose(overrides)
    data: dict[str, Any] = OmegaConf.to_container(cfg.task, resolve=True)  # type: ignore[assignment]
    data = anchor_paths("task", name, data)
    data["variants"] = variants
    try:
        return TaskConfig.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err, TaskConfig, where=f"task[{spec}]") from None


def variants_of(choice: Any) -> list[str]:
    """The variant names of a `variant=` choice, as a spec writes them (`<task>/3shot` → `3shot`)."""
    if choice in (None, "null", ""):
        return []
    if isinstance(choice, str):
        text = choice.strip("[]")
        return [v.strip().rpartition("/")[2] for v in text.split(",") if v.strip()]
    return [str(v).rpartition("/")[2] for v in choice]


def experiment_from_cfg(
    cfg: DictConfig, variants: list[str] | None = None, choices: dict[str, Any] | None = None, overrides: Sequence[str] = ()
) -> Experiment:
    """The validated experiment of a composed config; `choices` (Hydra's runtime choices, group →
    name) anchor the file paths of the chosen task and harness files (`anchor_paths`), except the
    keys the `overrides` set."""
    data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    data.pop("variant", None)
    given = data.get("imports") or []
    data["imports"] = list(dict.fromkeys([*project_imports(), *([given] if isinstance(given, str) else given)]))
    load_plugins(data["imports"])  # before validation: user modules register their task/scorer/tool names
    choices = choices or {}
    if choices.get("task") is None and isinstance(data.get("task"), dict) and "name" not in data["task"]:
        data["task"] = None  # `~task` (a suite alone): only the shared task defaults are left
    for group in ("task", "suite", "harness", "model", "tracking"):
        if isinstance(choices.get(group), str) and choices[group] in entries(group):
            entry(group, choices[group])  # the notice, when a user's file replaces a built-in one
    task_choice = choices.get("task") if isinstance(choices.get("task"), str) else None
    for v in variants or []:
        variant_entry(task_choice, v)
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
            if key == "variant":
                variant_entry(None, name)  # `<task>/<name>` (resolved by `resolve_variant_overrides`) or global
            else:
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


def _chosen_tasks(args: Sequence[str]) -> list[str] | None:
    """The task names the overrides select (several for a sweep `task=a,b`; the default task when none
    is named), or None for a task list `task=[a,b]` (each spec resolves its own variants)."""
    given = [a.partition("=")[2].strip() for a in args if a.partition("=")[0].lstrip("+") == "task"]
    if not given:
        return [t] if (t := default_task()) else []
    if given[-1].startswith("["):
        return None
    return [t.strip() for t in given[-1].split(",") if t.strip() and t.strip() != "null"]


_OPTION = re.compile(r"[^\s\[\],'\"]+")


def resolve_variant_overrides(args: list[str]) -> list[str]:
    """`variant=` names as Hydra options for the chosen task: with `task=internal_freshqa`,
    `variant=[3shot,rc]` → `variant=[internal_freshqa/3shot,rc]` when that task has its own `3shot`
    (a per-task variant wins over the global one of the same name). Unknown names: ConfigError."""
    tasks = _chosen_tasks(args)
    if tasks is None:
        return args

    def option(match: re.Match[str]) -> str:
        name = match.group()
        if "/" in name:
            return variant_entry(None, name).option
        found = {variant_entry(t, name).option for t in tasks} if tasks else {variant_entry(None, name).option}
        if len(found) > 1:
            raise ConfigError(
                f"Variant '{name}' is a per-task variant of some of the swept tasks ({', '.join(sorted(found))}), so "
                f"one `variant={name}` cannot select it for each job. Fix: run one sweep per task "
                f"(`-m task={tasks[0]} variant={name} ...`)."
            )
        return found.pop()

    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "variant" and value not in ("", "null"):
            arg = f"{key}={_OPTION.sub(option, value)}"
        out.append(arg)
    return out


def expand_spec_overrides(args: list[str]) -> list[str]:
    """`task=freshqa:zero` (a task spec) → `task=freshqa variant=[zero]`, merged with any `variant=`;
    variant names resolved for the task (`resolve_variant_overrides`). Plugin modules named before
    composition (`evalbench.yaml`, `imports=`) load first: they may register variants."""
    preload_plugins(args)
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
        return resolve_variant_overrides(out)
    given = [a for a in out if a.partition("=")[0].lstrip("+") == "variant"]
    before = variants_of(given[-1].partition("=")[2]) if given else []
    out = [a for a in out if a not in given]
    return resolve_variant_overrides([*out, f"variant=[{','.join([*extra, *before])}]"])


def _compose_checked(overrides: list[str], plussed: list[str]) -> DictConfig:
    """Hydra's composition; a schema key the chosen file does not set is composed as `+key=...` and
    added to `plussed` (engine/config/keys.py)."""
    try:
        return _compose(overrides, with_hydra=True)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - Hydra's own composition errors: unknown keys, bad syntax
        text = " ".join(str(err).split()) or type(err).__name__
        missing = NOT_IN_CONFIG.search(text)  # a key the chosen file does not set: the schema decides
        if missing and (retried := with_plus(missing.group(1), overrides)) is not None:
            plussed += [o for o in retried if o not in overrides]
            return _compose_checked(retried, plussed)
        if _yaml_error(err):
            raise ConfigError(
                f"Cannot compose the configuration: a YAML file does not parse: {text.rstrip('.')}. Fix that file "
                "at the line named (indentation, an unclosed bracket or quote, a `:` inside an unquoted value)."
            ) from None
        if "Could not find" in text:  # a config group option that does not exist (`hydra/launcher=nope`)
            text = text.split(" Config search path:")[0]
            raise ConfigError(f"Cannot compose the configuration: {text.rstrip('.')}. Fix: choose one of the options "
                              "listed (`python -m engine.list` lists evalbench's groups).") from None
        raise ConfigError(
            f"Cannot compose the configuration: {text.rstrip('.')}. Fix the override (an existing key is set as "
            "`key=value`; `python -m engine --cfg job` prints every key with its current value)."
        ) from None


def _yaml_error(err: BaseException) -> bool:
    """A YAML syntax error anywhere in the exception's chain (Hydra wraps the parser's)."""
    seen: BaseException | None = err
    while seen is not None:
        if type(seen).__module__.startswith("yaml"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
    overrides = expand_spec_overrides(overrides)  # idempotent: the CLI has expanded them already
    specs = task_list(overrides)
    suite = _adhoc_suite(specs, overrides) if specs else None
    if specs:
        overrides = [o for o in overrides if o.partition("=")[0].lstrip("+") not in ("task", "variant")]
    validate_cli_names(overrides)
    plussed: list[str] = []
    cfg = _compose_checked(overrides, plussed)
    choice = next((o.split("=", 1)[1] for o in reversed(overrides) if o.lstrip("+").startswith("variant=")), None)
    task = OmegaConf.select(cfg, "hydra.runtime.choices.task")
    check_variant_conflicts(variant_contents(task if isinstance(task, str) else None, variants_of(choice)))
    if not any(o.lstrip("+").startswith("output_dir=") for o in overrides):
        cfg.output_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))  # what Hydra's own run would use
    choices = dict(OmegaConf.to_container(cfg.hydra.runtime.choices))  # type: ignore[arg-type]
    with open_dict(cfg):
        del cfg["hydra"]
    if suite is not None:
        with open_dict(cfg):
            cfg["task"] = None
        rest = {k: v for k, v in choices.items() if k != "task"}
        exp = experiment_from_cfg(cfg, choices=rest, overrides=overrides).model_copy(update={"suite": suite})
    else:
        exp = experiment_from_cfg(cfg, variants_of(choice), choices, overrides)
    if plussed:  # valid with the `+`: say so, since Hydra (and a sweep's launcher) needs it written
        raise ConfigError(
            f"{', '.join(f'`{o.partition(chr(61))[0][1:]}`' for o in plussed)}: a key the chosen config file does not "
            f"set, so Hydra needs it added with a `+` (the configuration is valid with it). Fix: write "
            f"{' '.join(f'`{o}`' for o in plussed)}.")
    return exp
