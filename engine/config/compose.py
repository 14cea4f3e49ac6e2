"""Hydra composition: the one config path of a run, and of a task spec alone.

`compose_experiment` takes the overrides the CLI parsed and prepared once (engine/config/prepare.py:
search path, plugins, task specs, variants; strings are prepared here), composes them with Hydra's
compose API once and validates the result into an `Experiment` (docs/architecture.md, "The flow of
one run"). Which names exist and where their files are: engine/config/entries.py; file paths inside
them: engine/config/anchors.py (docs/architecture.md, "Paths").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import ValidationError

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
from engine.config.overrides import Override, ParsedOverrides
from engine.config.paths import conf_dir, config_sources
from engine.config.plugins import load_plugins, project_imports
from engine.config.prepare import parse_task_spec, prepare, task_list, task_spec_string, validate_cli_names, variants_of
from engine.config.schema import Experiment, SuiteConfig, TaskConfig
from engine.config.variants import check_variant_conflicts

TASK_DEFAULTS = "_task_defaults"  # conf/config.yaml lists it first in its defaults


def task_defaults() -> dict[str, Any]:
    """Every optional TaskConfig field with its default, under `task`: merged beneath every task file
    so that `task.num_fewshot=3` works on a task whose YAML does not set it (no `+` needed)."""
    return {"task": TaskConfig.flat_defaults()}


ConfigStore.instance().store(name=TASK_DEFAULTS, node=task_defaults())


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


def experiment_from_cfg(
    cfg: DictConfig, variants: list[str] | None = None, choices: dict[str, Any] | None = None, typed: Iterable[str] = ()
) -> Experiment:
    """The validated experiment of a composed config; `choices` (Hydra's runtime choices, group →
    name) anchor the file paths of the chosen task and harness files (`anchor_paths`), except the
    keys `typed` on the command line."""
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
            data[group] = anchor_paths(group, choices.get(group), data[group], frozenset(typed))
    if data.get("task") is not None:
        data["task"]["variants"] = variants or []
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err, Experiment) from None


def _compose_checked(parsed: ParsedOverrides, plussed: list[Override]) -> DictConfig:
    """Hydra's composition; a schema key the chosen file does not set is composed as `+key=...` and
    added to `plussed` (engine/config/keys.py)."""
    try:
        return _compose(parsed.strings(), with_hydra=True)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - Hydra's own composition errors: unknown keys, bad syntax
        text = " ".join(str(err).split()) or type(err).__name__
        missing = NOT_IN_CONFIG.search(text)  # a key the chosen file does not set: the schema decides
        if missing and (retried := with_plus(missing.group(1), parsed)) is not None:
            plussed += [o for o in retried if o not in parsed.items]
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


def _adhoc_suite(specs: list[str], parsed: ParsedOverrides) -> SuiteConfig:
    """`task=[a,b:rc]` as a suite; a `variant=` given beside it applies to every spec."""
    keys = [o.key for o in parsed]
    if any(k.startswith("task.") for k in keys) or "suite" in keys:
        raise ConfigError(
            "A task list (`task=[...]`) runs each task as its own file composes it: `task.<key>=` overrides and "
            "`suite=` cannot be combined with it. Fix: run the tasks one at a time, or write a suite file."
        )
    given = parsed.last("variant")
    extra = variants_of(given.names if given else ())
    full = [task_spec_string(*parse_task_spec(s)) + "".join(f":{v}" for v in extra) for s in specs]
    for spec in full:
        parse_task_spec(spec)
    return SuiteConfig(name="+".join(full), tasks=list(dict.fromkeys(full)), aggregate="none",
                       description="ad-hoc suite from the command line")


def compose_experiment(overrides: Sequence[str] | ParsedOverrides) -> Experiment:
    """Compose the configuration the overrides name and validate it: the one config path of a run.
    Overrides the CLI prepared (`prepare`) are composed as they are; strings are prepared first."""
    parsed = prepare(overrides)
    specs = task_list(parsed)
    suite = _adhoc_suite(specs, parsed) if specs else None
    if specs:
        parsed = parsed.without("task", "variant")
    validate_cli_names(parsed)
    plussed: list[Override] = []
    cfg = _compose_checked(parsed, plussed)
    given = parsed.last("variant")
    variants = variants_of(given.names if given else ())
    task = OmegaConf.select(cfg, "hydra.runtime.choices.task")
    check_variant_conflicts(variant_contents(task if isinstance(task, str) else None, variants))
    if "output_dir" not in parsed.typed_keys():
        cfg.output_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))  # what Hydra's own run would use
    choices = dict(OmegaConf.to_container(cfg.hydra.runtime.choices))  # type: ignore[arg-type]
    with open_dict(cfg):
        del cfg["hydra"]
    if suite is not None:
        with open_dict(cfg):
            cfg["task"] = None
        rest = {k: v for k, v in choices.items() if k != "task"}
        exp = experiment_from_cfg(cfg, choices=rest, typed=parsed.typed_keys()).model_copy(update={"suite": suite})
    else:
        exp = experiment_from_cfg(cfg, variants, choices, parsed.typed_keys())
    if plussed:  # valid with the `+`: say so, since Hydra (and a sweep's launcher) needs it written
        raise ConfigError(
            f"{', '.join(f'`{o.key}`' for o in plussed)}: a key the chosen config file does not set, so Hydra needs "
            f"it added with a `+` (the configuration is valid with it). Fix: write {' '.join(f'`{o.text}`' for o in plussed)}.")
    return exp
