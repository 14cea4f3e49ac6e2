"""Where things are: the project root (with the built-in `conf/`) and the evalbench home (caches).

The one place that knows; every other module asks here (docs/architecture.md, "Paths").
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder holding `engine/` and `conf/` (repository checkout or installed package data)."""
    return Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    env = os.environ.get("EVALBENCH_CONF")
    return Path(env) if env else project_root() / "conf"


def evalbench_home() -> Path:
    """Converted models and memoized hashes (`EVALBENCH_HOME`, default ~/.cache/evalbench)."""
    return Path(os.environ.get("EVALBENCH_HOME", Path.home() / ".cache" / "evalbench"))


def resolve_project_path(path: str | os.PathLike[str]) -> Path:
    """A path as given when it exists (absolute, or relative to the working directory), else
    relative to the project root: shipped configs name project-relative files."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    beside = project_root() / p
    return beside if beside.exists() else p
