"""The plugin modules known before composition: `imports:` of the project's `evalbench.yaml` and
`imports=[...]` on the command line (docs/architecture.md, "Extensions").

They are imported before Hydra composes, so what they register is there for composition itself
(`register_variant` adds Hydra config options) and for the name checks of the command line; the
config's own `imports:` load again after composition (a no-op for modules already imported).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import yaml

from engine.config.errors import ConfigError
from engine.config.paths import PROJECT_FILE, find_project_config
from engine.config.plugins import load_plugins


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


def cli_imports(args: Sequence[str]) -> list[str]:
    given = [a.partition("=")[2] for a in args if a.partition("=")[0].lstrip("+") == "imports"]
    return [m.strip().strip("'\"") for m in given[-1].strip("[]").split(",") if m.strip()] if given else []


def preload_plugins(args: Sequence[str]) -> None:
    load_plugins([*project_imports(), *cli_imports(args)])
