"""Loading user extensions: installed `evalbench.plugins` entry points and the modules `imports:` names.

An extension module defines tasks, scorers, tools and scaffolds with `@task`, `@scorer`, `@tool`,
`@scaffold` (all in `engine.extend`); importing it registers them. The entry points, the `imports:`
of the project's `evalbench.yaml` and `imports=[...]` on the command line load before Hydra composes
(engine/config/prepare.py: a module may register variants); the config's own `imports:` after
composition and before validation, so the names they register are known to validation
(docs/architecture.md, "Extensions"). Any failure is a ConfigError naming the module and the fix.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata

import yaml

from engine.config.errors import ConfigError
from engine.config.paths import PROJECT_FILE, find_project_config

ENTRY_POINT_GROUP = "evalbench.plugins"

_entry_points_loaded = False


def load_plugins(imports: Sequence[str] | str | None = None) -> None:
    """Load every installed entry point of group `evalbench.plugins` (once per process), then
    import each module `imports` names (importing twice is a no-op)."""
    _load_entry_points()
    if isinstance(imports, str):
        imports = [imports]
    for module in imports or ():
        if not isinstance(module, str) or not module.strip():
            raise ConfigError(f"`imports` lists {module!r}, which is not a module name. Fix: list dotted module "
                              "names, e.g. `imports: [mypkg.evals]`.")
        _import(module.strip())


def project_imports() -> list[str]:
    """`imports: [evals.plugin]` of the nearest `evalbench.yaml`; its folder goes on `sys.path`, so the
    project's modules import from any folder below it."""
    folder = find_project_config()
    file = folder / PROJECT_FILE if folder else None
    if file is None or not file.is_file():
        return []
    data = yaml.safe_load(file.read_text()) or {}  # valid YAML: paths.config_sources() read it first
    given = data.get("imports", []) if isinstance(data, dict) else []
    given = [given] if isinstance(given, str) else given
    if not isinstance(given, list) or not all(isinstance(m, str) for m in given):
        raise ConfigError(f"{file}: `imports` must be a list of module names, e.g. `imports: [evals.plugin]`.")
    if given and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return given


def _where(err: BaseException) -> str:
    """` (at file:line)` of the innermost frame outside importlib, for an error inside a user's module."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "importlib" not in f.filename]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _import(module: str) -> None:
    if module in sys.modules:
        return
    try:
        importlib.import_module(module)
    except ConfigError:
        raise  # a duplicate name, say: its message already names both definitions and the fix
    except ModuleNotFoundError as err:
        if err.name and (module == err.name or module.startswith(f"{err.name}.")):
            raise ConfigError(
                f"The module `{module}` listed under `imports:` cannot be found (no module named {err.name!r}). "
                "Fix: correct the name, install the package that provides it (`pip install -e .` in its folder), "
                "or run from the folder that holds it (or add that folder to PYTHONPATH)."
            ) from None
        raise _failed(module, err) from None
    except Exception as err:  # noqa: BLE001 - any error in a user's module becomes one clear paragraph
        raise _failed(module, err) from None


def _failed(module: str, err: BaseException) -> ConfigError:
    return ConfigError(
        f"The module `{module}` listed under `imports:` failed to import: {type(err).__name__}: {err}{_where(err)}. "
        f"Fix that error in the module (`python -c 'import {module}'` shows the traceback), or remove it from "
        "`imports:`."
    )


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            ep.load()
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - a broken plugin is one clear paragraph, not a traceback
            raise ConfigError(
                f"The evalbench plugin {ep.name!r} (entry point `{ep.value}` of group {ENTRY_POINT_GROUP}, "
                f"package {dist}) failed to load: {type(err).__name__}: {err}{_where(err)}. Fix the plugin, or "
                f"uninstall it (`pip uninstall {dist}`)."
            ) from None
