"""Hydra composition helpers: config names, task specs (`task:variant:variant`), validation."""

from __future__ import annotations

import itertools
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import ValidationError

from engine.config.errors import ConfigError, format_validation_error, unknown_name_error
from engine.config.paths import conf_dir
from engine.config.schema import Experiment, TaskConfig
from engine.config.variants import check_variant_conflicts, load_variant_files

GROUPS = ("task", "variant", "suite", "harness", "model", "tracking")


def known_names(group: str) -> list[str]:
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_name(group: str, name: str) -> None:
    if name not in known_names(group):
        raise unknown_name_error(group, name, known_names(group))


def parse_task_spec(spec: str) -> tuple[str, list[str]]:
    """`mmlu:rc:5shot` → ("mmlu", ["rc", "5shot"]); each name is checked."""
    parts = [p.strip() for p in spec.split(":")]
    if not all(parts):
        raise ConfigError(f"Task spec {spec!r} has an empty part: write `task` or `task:variant[:variant...]`, "
                          "e.g. `mmlu:rc` (no leading, trailing or doubled `:`).")
    check_name("task", parts[0])
    for v in parts[1:]:
        check_name("variant", v)
    check_variant_conflicts(load_variant_files(conf_dir() / "variant", parts[1:]))
    return parts[0], parts[1:]


def task_spec_string(task: str, variants: list[str]) -> str:
    return ":".join([task, *variants])


def _compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)


def compose_task(spec: str) -> TaskConfig:
    """The task config a spec names: the task file with its variant files merged, as the CLI does."""
    name, variants = parse_task_spec(spec)
    overrides = [f"task={name}"] + ([f"variant=[{','.join(variants)}]"] if variants else [])
    cfg = _compose(overrides)
    data: dict[str, Any] = OmegaConf.to_container(cfg.task, resolve=True)  # type: ignore[assignment]
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


def experiment_from_cfg(cfg: DictConfig, variants: list[str] | None = None) -> Experiment:
    data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    data.pop("variant", None)
    if data.get("task") is not None:
        data["task"]["variants"] = variants or []
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err, Experiment) from None


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


def sweep_combinations(args: list[str], limit: int = 10_000) -> list[list[str]]:
    """Every job's overrides of a multirun (`a=1,2 b=x,y` → 4 lists), to validate before launching."""
    parsed = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("hydra")])
    choices: list[list[str]] = []
    for o in parsed:
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line or f"{o.get_key_element()}={o.get_value_string()}"])
    combos = [list(c) for c in itertools.islice(itertools.product(*choices), limit)]
    return combos or [[]]


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


def compose_experiment(overrides: list[str]) -> Experiment:
    """Compose the configuration the overrides name and validate it: the one config path of a run."""
    validate_cli_names(overrides)
    try:
        cfg = _compose(overrides, with_hydra=True)
    except ConfigError:
        raise
    except Exception as err:  # Hydra's own composition errors: unknown keys, bad syntax
        text = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(
            f"Cannot compose the configuration: {text.rstrip('.')}. Fix the override (an existing key is set as "
            "`key=value`; `python -m engine --cfg job` prints every key with its current value)."
        ) from None
    choice = next((o.split("=", 1)[1] for o in reversed(overrides) if o.lstrip("+").startswith("variant=")), None)
    check_variant_conflicts(load_variant_files(conf_dir() / "variant", variants_of(choice)))
    if not any(o.lstrip("+").startswith("output_dir=") for o in overrides):
        cfg.output_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))  # what Hydra's own run would use
    with open_dict(cfg):
        del cfg["hydra"]
    return experiment_from_cfg(cfg, variants_of(choice))
