"""Where things are: the project root (built-in `conf/`, shipped data), the user's config folders,
and the evalbench home (caches).

The one place that knows; every other module asks here (docs/architecture.md, "Paths").

- In a checkout (editable install) the project root is the repository. In an installed wheel the
  build copies `conf/` and `data/` into the package (`engine/_shipped/`, see setup.py) and that
  folder is the project root.
- The user's folders ADD to the built-in groups and win over them for the same name. Sources,
  highest precedence first: `EVALBENCH_CONFIG_PATH=dir1:dir2`, `hydra.searchpath=[file:///dir]`
  on the command line, the `config_path` of a project-local `evalbench.yaml` or a `.evalbench/`
  folder found from the working directory upward. Hydra sees them through the search-path plugin
  `hydra_plugins/evalbench_searchpath.py`; listing, validation and suites read `config_sources()`.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from engine.config.errors import ConfigError

PROJECT_FILE = "evalbench.yaml"
PROJECT_DIR = ".evalbench"
BUILTIN = "builtin"

_cli_searchpath: list[str] = []  # `hydra.searchpath=[...]` of this process's command line


class ConfigSource(BaseModel):
    """One folder of config groups (`task/`, `suite/`, ...) and where it was named."""

    model_config = ConfigDict(frozen=True)

    path: Path
    origin: str  # "builtin", or the folder as the user named it
    via: str  # what named it: builtin, EVALBENCH_CONFIG_PATH, hydra.searchpath, evalbench.yaml, .evalbench

    @property
    def builtin(self) -> bool:
        return self.via == BUILTIN


def project_root() -> Path:
    """The folder holding `conf/` and `data/`: the installed package's shipped copy, else the checkout."""
    shipped = Path(str(importlib.resources.files("engine") / "_shipped"))
    if (shipped / "conf").is_dir():
        return shipped
    return Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    env = os.environ.get("EVALBENCH_CONF")
    return Path(env) if env else project_root() / "conf"


def evalbench_home() -> Path:
    """Converted models and memoized hashes (`EVALBENCH_HOME`, default ~/.cache/evalbench)."""
    return Path(os.environ.get("EVALBENCH_HOME", Path.home() / ".cache" / "evalbench"))


def resolve_project_path(path: str | os.PathLike[str]) -> Path:
    """A path as given when it exists (absolute, or relative to the working directory), else
    relative to the project root. Paths written in config files are anchored when composed
    (engine/config/compose.py), so this order only matters for paths typed by the user."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    beside = project_root() / p
    return beside if beside.exists() else p


def set_cli_searchpath(entries: list[str]) -> None:
    """Record the command line's `hydra.searchpath` entries for this process (engine/config/prepare.py)."""
    _cli_searchpath[:] = entries


def _entry_path(entry: str, base: Path) -> Path | None:
    """A search-path entry as a folder: `file://dir`, `pkg://module.sub` or a plain path."""
    if entry.startswith("pkg://"):
        module = entry.removeprefix("pkg://").replace("/", ".")
        try:
            return Path(str(importlib.resources.files(module)))
        except (ModuleNotFoundError, TypeError):
            return None
    p = Path(entry.removeprefix("file://")).expanduser()
    return p if p.is_absolute() else base / p


def find_project_config(start: Path | None = None) -> Path | None:
    """The nearest folder, from `start` (the working directory) upward, holding `evalbench.yaml`
    or `.evalbench/`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file() or (folder / PROJECT_DIR).is_dir():
            return folder
    return None


def _project_sources(folder: Path) -> list[tuple[str, Path | None, str]]:
    out: list[tuple[str, Path | None, str]] = []
    file = folder / PROJECT_FILE
    if file.is_file():
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{file} is not valid YAML ({' '.join(str(err).split())}). Fix the file.") from None
        dirs = data.get("config_path", []) if isinstance(data, dict) else None
        if isinstance(dirs, str):
            dirs = [dirs]
        if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
            raise ConfigError(f"{file}: `config_path` must be a list of folders relative to the file, e.g. "
                              "`config_path: [evals]`.")
        out += [(d, _entry_path(d, folder), str(file)) for d in dirs]
    if (folder / PROJECT_DIR).is_dir():
        out.append((str(folder / PROJECT_DIR), folder / PROJECT_DIR, PROJECT_DIR))
    return out


def config_sources(cwd: Path | None = None) -> list[ConfigSource]:
    """Every config folder, highest precedence first; the built-in `conf/` is last."""
    base = (cwd or Path.cwd()).resolve()
    named: list[tuple[str, Path | None, str]] = []
    env = os.environ.get("EVALBENCH_CONFIG_PATH", "")
    named += [(d, _entry_path(d, base), "EVALBENCH_CONFIG_PATH") for d in env.split(os.pathsep) if d.strip()]
    named += [(e, _entry_path(e, base), "hydra.searchpath") for e in _cli_searchpath]
    if project := find_project_config(base):
        named += _project_sources(project)
    builtin = conf_dir().resolve()
    seen = {builtin}
    out: list[ConfigSource] = []
    for given, path, via in named:
        if path is None or not path.is_dir():
            raise ConfigError(
                f"Config folder {given!r} (from {via}) does not exist or is not a folder. Fix: point {via} at a "
                "folder holding config groups (task/, suite/, harness/, ...) or remove the entry."
            )
        if path.resolve() not in seen:
            seen.add(path.resolve())
            out.append(ConfigSource(path=path.resolve(), origin=given, via=via))
    return [*out, ConfigSource(path=builtin, origin=BUILTIN, via=BUILTIN)]
