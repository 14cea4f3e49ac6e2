"""Hydra composition helpers: config names, task specs (`task:variant:variant`), validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pydantic import ValidationError

from engine.config.errors import ConfigError, format_validation_error, unknown_name_error
from engine.config.schema import Experiment, TaskConfig

GROUPS = ("task", "variant", "suite", "harness", "model", "tracking")


def conf_dir() -> Path:
    env = os.environ.get("EVALBENCH_CONF")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "conf"


def known_names(group: str) -> list[str]:
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_name(group: str, name: str) -> None:
    if name not in known_names(group):
        raise unknown_name_error(group, name, known_names(group))


def parse_task_spec(spec: str) -> tuple[str, list[str]]:
    """`mmlu:rc:5shot` → ("mmlu", ["rc", "5shot"]); each name is checked."""
    parts = [p.strip() for p in spec.split(":") if p.strip()]
    if not parts:
        raise ConfigError(f"Empty task spec {spec!r}: write `task` or `task:variant[:variant...]`, e.g. `mmlu:rc`.")
    check_name("task", parts[0])
    for v in parts[1:]:
        check_name("variant", v)
    return parts[0], parts[1:]


def task_spec_string(task: str, variants: list[str]) -> str:
    return ":".join([task, *variants])


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose(config_name="config", overrides=overrides)


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


def first_sweep_combination(args: list[str]) -> list[str]:
    """The overrides of a multirun's first job (`a=1,2` → `a=1`), to validate before launching."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("hydra")])
    out = []
    for o in parsed:
        if o.is_sweep_override():
            first = next(iter(o.sweep_string_iterator()))
            out.append(f"{o.get_key_element()}={first}")
        else:
            out.append(o.input_line)
    return out


def precheck(args: list[str]) -> None:
    """Compose and validate the (first) experiment the command names; raise ConfigError on bad input."""
    validate_cli_names(args)
    try:
        overrides = first_sweep_combination(args)
        cfg = _compose(overrides)
    except ConfigError:
        raise
    except Exception as err:  # Hydra's own composition errors: unknown keys, bad syntax
        text = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(
            f"Cannot compose the configuration: {text.rstrip('.')}. Fix the override (an existing key is set as "
            "`key=value`; `python -m engine --cfg job` prints every key with its current value)."
        ) from None
    choice = next((o.split("=", 1)[1] for o in overrides if o.startswith("variant=")), None)
    if not any(o.startswith("output_dir=") for o in overrides):
        cfg.output_dir = "runs/precheck"  # ${hydra:runtime.output_dir} only resolves inside the app
    experiment_from_cfg(cfg, variants_of(choice))
