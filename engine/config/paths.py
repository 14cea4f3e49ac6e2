"""Where the Hydra config tree lives; dependency-free so that any layer can ask (docs/architecture.md)."""

from __future__ import annotations

import os
from pathlib import Path


def conf_dir() -> Path:
    """`$EVALBENCH_CONF`, else the `conf/` folder of the project; its parent is the project root."""
    env = os.environ.get("EVALBENCH_CONF")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
