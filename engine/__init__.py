"""evalbench: an evaluation workbench for LLM training runs.

The public Python API (docs/architecture.md, "The public API"):

    from engine import evaluate, compare
    records = evaluate("mmlu:mc", model="smollm2", limit=20)
    report = compare("runs/new/mmlu__mc", "runs/old/mmlu__mc")

Everything else under `engine.` is internal. The names load on first use (PEP 562): `python -m
engine` imports this package first, and must not pay for the composition and runner imports twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine.environment import apply_defaults

__version__ = "0.1.0"
apply_defaults()  # before any library that reads them is imported

# public name → the module that defines it
_EXPORTS = {
    "evaluate": "engine.public",
    "experiment": "engine.public",
    "Experiment": "engine.config.schema",
    "RunRecord": "engine.types",
    "InstanceRecord": "engine.types",
    "ComparisonReport": "engine.compare.models",
    "ConfigError": "engine.config.errors",
}
__all__ = [  # compare: the package engine.compare itself, callable (engine/compare/__init__.py)
    "ComparisonReport", "ConfigError", "Experiment", "InstanceRecord", "RunRecord", "__version__", "compare",
    "evaluate", "experiment",
]

if TYPE_CHECKING:
    from engine import compare
    from engine.compare.models import ComparisonReport
    from engine.config.errors import ConfigError
    from engine.config.schema import Experiment
    from engine.public import evaluate, experiment
    from engine.types import InstanceRecord, RunRecord


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
